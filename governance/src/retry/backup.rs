//! Backup requests: if a call is slow, send it again and take whichever answers first.

use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use ringrpc_engine::Engine;

use super::{CallMethod, PerMethod, RetryBudget};
use crate::clock::{Clock, SystemClock};
use crate::{CallDeadline, Layer, Service};

/// Configuration of backup requests for a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupConfig {
    /// How long the first call may run before the backup is sent. Default 50 ms. Set it near
    /// the method's p99 latency: lower cuts more tail latency but sends more duplicates
    /// (roughly the share of calls slower than `delay`).
    pub delay: Duration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(50),
        }
    }
}

/// Builds [`Backup`] services on engine `E` (used for the delay timer).
pub struct BackupLayer<E, C = SystemClock> {
    configs: PerMethod<BackupConfig>,
    clock: C,
    budget: Option<Rc<RetryBudget<C>>>,
    _engine: PhantomData<fn() -> E>,
}

impl<E, C: std::fmt::Debug> std::fmt::Debug for BackupLayer<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupLayer")
            .field("configs", &self.configs)
            .field("clock", &self.clock)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<E> BackupLayer<E> {
    /// Sends backups for the methods `configs` covers (a bare [`BackupConfig`] covers all).
    pub fn new(configs: impl Into<PerMethod<BackupConfig>>) -> Self {
        Self {
            configs: configs.into(),
            clock: SystemClock,
            budget: None,
            _engine: PhantomData,
        }
    }
}

impl<E, C> BackupLayer<E, C> {
    /// Reads time (the deadline check) from `clock`; drops any budget set before.
    pub fn clock<C2: Clock>(self, clock: C2) -> BackupLayer<E, C2> {
        BackupLayer {
            configs: self.configs,
            clock,
            budget: None,
            _engine: PhantomData,
        }
    }

    /// Takes every backup from `budget` (this core's, shared with the [`super::RetryLayer`]).
    pub fn budget(mut self, budget: Rc<RetryBudget<C>>) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<S, E, C> Layer<S> for BackupLayer<E, C> {
    type Service = Backup<S, E, C>;

    fn layer(self, inner: S) -> Self::Service {
        Backup { inner, layer: self }
    }
}

/// A service that races a delayed second call against a slow first one; see [`BackupLayer`].
///
/// The backup runs with a clone of the context as it was on entry (so a balancer inside may
/// pick another instance); when the backup wins, its context replaces the caller's. A first call
/// that ends (even in error) before the delay is returned as is, with no backup. Once both run,
/// the first successful reply wins; an error from one call waits for the other, and when both
/// fail the first call's error is returned. The losing call is dropped, which cancels it. No
/// backup is sent past the context's deadline or when the budget refuses it.
pub struct Backup<S, E, C> {
    inner: S,
    layer: BackupLayer<E, C>,
}

impl<S: std::fmt::Debug, E, C: std::fmt::Debug> std::fmt::Debug for Backup<S, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// How the first phase of a backup race ended.
enum Phase<T> {
    /// The first call finished before the delay.
    Done(T),
    /// The delay passed.
    Fire,
}

impl<E, C> BackupLayer<E, C> {
    /// Runs `inner`'s call of `req` with this layer's backup requests: what a [`Backup`]
    /// service does, for a pipeline that holds its stages side by side.
    pub fn around<'s, 'c, Cx, Req, S>(
        &'s self,
        inner: &'s S,
        cx: &'c mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, S::Error>> + use<'s, 'c, Cx, Req, S, E, C>
    where
        Cx: CallMethod + CallDeadline + Clone,
        Req: Clone,
        S: Service<Cx, Req>,
        E: Engine,
        C: Clock,
    {
        let config = self.configs.get(cx.method()).copied();
        async move {
            let Some(config) = config else {
                return inner.call(cx, req).await;
            };
            if let Some(b) = &self.budget {
                b.deposit();
            }
            let deadline = cx.deadline();
            let mut backup_cx = cx.clone();
            let backup_req = req.clone();
            let (backup_won, result) = {
                // Boxed: both attempts are alive at once, and inline they would double the size of
                // this future for every call, backed up or not.
                let mut first = Box::pin(inner.call(cx, req));
                let mut timer = pin!(E::sleep(config.delay));
                let phase = poll_fn(|task| {
                    if let Poll::Ready(r) = first.as_mut().poll(task) {
                        return Poll::Ready(Phase::Done(r));
                    }
                    timer.as_mut().poll(task).map(|()| Phase::Fire)
                })
                .await;
                match phase {
                    Phase::Done(r) => (false, r),
                    Phase::Fire => {
                        let late = deadline.is_some_and(|d| self.clock.now() >= d);
                        if late || self.budget.as_ref().is_some_and(|b| !b.withdraw()) {
                            (false, first.await)
                        } else {
                            let mut second = Box::pin(inner.call(&mut backup_cx, backup_req));
                            let mut first_err = None;
                            let mut second_err = None;
                            poll_fn(|task| {
                                if first_err.is_none() {
                                    if let Poll::Ready(r) = first.as_mut().poll(task) {
                                        match r {
                                            Ok(_) => return Poll::Ready((false, r)),
                                            Err(e) => first_err = Some(e),
                                        }
                                    }
                                }
                                if second_err.is_none() {
                                    if let Poll::Ready(r) = second.as_mut().poll(task) {
                                        match r {
                                            Ok(_) => return Poll::Ready((true, r)),
                                            Err(e) => second_err = Some(e),
                                        }
                                    }
                                }
                                match (first_err.take(), &second_err) {
                                    (Some(e), Some(_)) => Poll::Ready((false, Err(e))),
                                    (e, _) => {
                                        first_err = e;
                                        Poll::Pending
                                    }
                                }
                            })
                            .await
                        }
                    }
                }
            };
            if backup_won {
                *cx = backup_cx;
            }
            result
        }
    }
}

impl<Cx, Req, S, E, C> Service<Cx, Req> for Backup<S, E, C>
where
    Cx: CallMethod + CallDeadline + Clone,
    Req: Clone,
    S: Service<Cx, Req>,
    E: Engine,
    C: Clock,
{
    type Response = S::Response;
    type Error = S::Error;

    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        self.layer.around(&self.inner, cx, req)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Instant;

    use ringrpc_engine::baseline::Baseline;
    use ringrpc_engine::RuntimeConfig;

    use super::*;
    use crate::service_fn;

    #[derive(Debug, Clone, Default)]
    struct Cx {
        deadline: Option<Instant>,
        served_by: Option<u32>,
    }
    impl CallMethod for Cx {
        fn method(&self) -> &str {
            "get"
        }
    }
    impl CallDeadline for Cx {
        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn set_deadline(&mut self, d: Option<Instant>) {
            self.deadline = d;
        }
    }

    /// Sets a flag when dropped before completing.
    struct Cancelled<'a>(&'a Cell<bool>, bool);
    impl Drop for Cancelled<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.set(true);
            }
        }
    }

    /// What a test run saw: the result, calls made, whether a loser was cancelled, who served.
    type Seen = (Result<&'static str, &'static str>, u32, bool, Option<u32>);

    /// Runs `scenario` on a one-core baseline runtime. The service's n-th call (from 1) waits
    /// `latency[n-1]` ms and answers `answers[n-1]`.
    fn run(latency: [u64; 2], answers: [Result<&'static str, &'static str>; 2]) -> Seen {
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = Baseline::launch(RuntimeConfig::with_cores(1), move |_| {
            let tx = tx.clone();
            async move {
                let calls = Cell::new(0u32);
                let cancelled = Cell::new(false);
                let svc = BackupLayer::<Baseline>::new(BackupConfig {
                    delay: Duration::from_millis(20),
                })
                .layer(service_fn(|cx: &mut Cx, ()| {
                    let n = calls.get() + 1;
                    calls.set(n);
                    cx.served_by = Some(n);
                    let cancelled = &cancelled;
                    async move {
                        let mut guard = Cancelled(cancelled, false);
                        Baseline::sleep(Duration::from_millis(latency[n as usize - 1])).await;
                        guard.1 = true;
                        answers[n as usize - 1]
                    }
                }));
                let mut cx = Cx::default();
                let r = svc.call(&mut cx, ()).await;
                let _ = tx.send((r, calls.get(), cancelled.get(), cx.served_by));
            }
        })
        .unwrap();
        let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        rt.stop(Duration::ZERO);
        seen
    }

    #[test]
    fn the_backup_wins_when_the_first_call_is_slow_and_the_loser_is_cancelled() {
        let (r, calls, cancelled, served_by) = run([2_000, 1], [Ok("slow"), Ok("fast")]);
        assert_eq!(r, Ok("fast"));
        assert_eq!(calls, 2);
        assert!(cancelled);
        // The winner's context replaced the caller's.
        assert_eq!(served_by, Some(2));
    }

    #[test]
    fn no_backup_when_the_first_call_answers_within_the_delay() {
        let (r, calls, cancelled, served_by) = run([1, 1], [Ok("first"), Ok("second")]);
        assert_eq!(
            (r, calls, cancelled, served_by),
            (Ok("first"), 1, false, Some(1))
        );
    }

    #[test]
    fn an_error_waits_for_the_other_call() {
        // The backup fails fast; the first call's later success still wins.
        let (r, calls, _, served_by) = run([60, 1], [Ok("first"), Err("backup failed")]);
        assert_eq!((r, calls, served_by), (Ok("first"), 2, Some(1)));
        // Both fail: the first call's error.
        let (r, _, _, _) = run([60, 1], [Err("first failed"), Err("backup failed")]);
        assert_eq!(r, Err("first failed"));
    }
}
