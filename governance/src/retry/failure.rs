//! Failure retry: call again after retryable errors, with backoff, within limits.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringrpc_engine::time::timeout_at;
use ringrpc_engine::Engine;

use super::{CallMethod, PerMethod, RetryBudget, RetryConfig, RetryPolicy};
use crate::balance::FastRng;
use crate::clock::{Clock, SystemClock};
use crate::timeout::{deadline_within, TimeoutError};
use crate::{CallDeadline, CallTarget, Layer, Service};

/// Builds [`Retry`] services on engine `E` (used for the backoff sleeps).
pub struct RetryLayer<E, P, C = SystemClock> {
    configs: PerMethod<RetryConfig>,
    policy: P,
    clock: C,
    budget: Option<Rc<RetryBudget<C>>>,
    rng: FastRng,
    _engine: PhantomData<fn() -> E>,
}

impl<E, P: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug for RetryLayer<E, P, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("configs", &self.configs)
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<E, P> RetryLayer<E, P> {
    /// Retries the methods `configs` covers (a bare [`RetryConfig`] covers every method), for
    /// errors `policy` accepts (a closure `Fn(&Error) -> bool` works). No budget until
    /// [`RetryLayer::budget`] is called.
    pub fn new(configs: impl Into<PerMethod<RetryConfig>>, policy: P) -> Self {
        Self {
            configs: configs.into(),
            policy,
            clock: SystemClock,
            budget: None,
            rng: FastRng::from_entropy(),
            _engine: PhantomData,
        }
    }
}

impl<E, P, C> RetryLayer<E, P, C> {
    /// Reads time (deadline and `max_duration` checks) from `clock`; drops any budget set before,
    /// since the budget must use the same clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> RetryLayer<E, P, C2> {
        RetryLayer {
            configs: self.configs,
            policy: self.policy,
            clock,
            budget: None,
            rng: self.rng,
            _engine: PhantomData,
        }
    }

    /// Takes every retry from `budget` (this core's, shared with the [`super::BackupLayer`]).
    pub fn budget(mut self, budget: Rc<RetryBudget<C>>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Draws backoff jitter from `rng` (seed it for reproducible tests). Default: from entropy.
    pub fn rng(mut self, rng: FastRng) -> Self {
        self.rng = rng;
        self
    }
}

impl<S, E, P, C> Layer<S> for RetryLayer<E, P, C> {
    type Service = Retry<S, E, P, C>;

    fn layer(self, inner: S) -> Self::Service {
        Retry { inner, layer: self }
    }
}

/// A service that retries failed calls; see [`RetryLayer`] and the [module docs](super).
pub struct Retry<S, E, P, C> {
    inner: S,
    layer: RetryLayer<E, P, C>,
}

impl<S: std::fmt::Debug, E, P: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug
    for Retry<S, E, P, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<E, P, C> RetryLayer<E, P, C> {
    /// One attempt: bounded by `timeout` (and by the call's deadline `overall`) if set, with
    /// the context carrying the attempt's deadline while it runs.
    ///
    /// An attempt cut by its timeout is dropped inside the stages below, so they cannot undo
    /// what they set in the context: the caller's deadline and target (`pinned`) are put back
    /// here, and an instance a balancer picked for it is noted as failed, so the next attempt
    /// goes elsewhere when it can (what [`Balance`](crate::balance::Balance) does for an
    /// attempt that ends).
    async fn attempt<Cx, Req, S>(
        &self,
        inner: &S,
        cx: &mut Cx,
        req: Req,
        timeout: Option<Duration>,
        overall: Option<Instant>,
        pinned: Option<SocketAddr>,
    ) -> Result<S::Response, S::Error>
    where
        Cx: CallDeadline + CallTarget,
        S: Service<Cx, Req>,
        S::Error: From<TimeoutError>,
        E: Engine,
        C: Clock,
    {
        let Some(timeout) = timeout else {
            return inner.call(cx, req).await;
        };
        let began = self.clock.now();
        let deadline = deadline_within(began, timeout, overall);
        cx.set_deadline(Some(deadline));
        let result = timeout_at::<E, _>(deadline, inner.call(cx, req)).await;
        cx.set_deadline(overall);
        result.unwrap_or_else(|_| {
            if let (None, Some(picked)) = (pinned, cx.target()) {
                cx.note_failure(picked);
            }
            cx.set_target(pinned);
            Err(TimeoutError::between(began, deadline).into())
        })
    }

    /// Runs `inner`'s call of `req` with this layer's retries: what a [`Retry`] service does,
    /// for a pipeline that holds its stages side by side.
    pub fn around<'s, 'c, Cx, Req, S>(
        &'s self,
        inner: &'s S,
        cx: &'c mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, S::Error>> + use<'s, 'c, Cx, Req, S, E, P, C>
    where
        Cx: CallMethod + CallDeadline + CallTarget,
        Req: Clone,
        S: Service<Cx, Req>,
        S::Error: From<TimeoutError>,
        E: Engine,
        P: RetryPolicy<S::Error>,
        C: Clock,
    {
        let config = self.configs.get(cx.method()).copied();
        async move {
            let Some(config) = config.filter(|c| c.max_attempts > 1 || c.attempt_timeout.is_some())
            else {
                return inner.call(cx, req).await;
            };
            let retries = config.max_attempts > 1;
            if retries {
                if let Some(b) = &self.budget {
                    b.deposit();
                }
            }
            let start = self.clock.now();
            let overall = cx.deadline();
            let pinned = cx.target();
            let mut attempt = 1;
            loop {
                let result = self
                    .attempt(
                        inner,
                        cx,
                        req.clone(),
                        config.attempt_timeout,
                        overall,
                        pinned,
                    )
                    .await;
                let error = match result {
                    Ok(r) => return Ok(r),
                    Err(e) => e,
                };
                if attempt >= config.max_attempts || !self.policy.is_retryable(&error) {
                    return Err(error);
                }
                let delay = config.backoff.delay(attempt, &self.rng);
                let resume = self.clock.now() + delay;
                let too_late = config
                    .max_duration
                    .is_some_and(|m| resume.saturating_duration_since(start) >= m)
                    || overall.is_some_and(|d| resume >= d);
                if too_late || self.budget.as_ref().is_some_and(|b| !b.withdraw()) {
                    return Err(error);
                }
                if !delay.is_zero() {
                    E::sleep(delay).await;
                }
                attempt += 1;
            }
        }
    }
}

impl<Cx, Req, S, E, P, C> Service<Cx, Req> for Retry<S, E, P, C>
where
    Cx: CallMethod + CallDeadline + CallTarget,
    Req: Clone,
    S: Service<Cx, Req>,
    S::Error: From<TimeoutError>,
    E: Engine,
    P: RetryPolicy<S::Error>,
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
    use std::time::{Duration, Instant};

    use ringrpc_engine::baseline::Baseline;

    use super::*;
    use crate::clock::{block_on, ManualClock};
    use crate::retry::{Backoff, BudgetConfig};
    use crate::service_fn;

    #[derive(Default)]
    pub(crate) struct Cx {
        pub(crate) method: &'static str,
        pub(crate) deadline: Option<Instant>,
        pub(crate) target: Option<SocketAddr>,
        pub(crate) failed: Vec<SocketAddr>,
    }
    impl CallTarget for Cx {
        fn target(&self) -> Option<SocketAddr> {
            self.target
        }
        fn set_target(&mut self, t: Option<SocketAddr>) {
            self.target = t;
        }
        fn note_failure(&mut self, addr: SocketAddr) {
            self.failed.push(addr);
        }
    }
    impl CallMethod for Cx {
        fn method(&self) -> &str {
            self.method
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

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Error {
        Transient,
        Fatal,
        /// An attempt's own timeout.
        Timeout,
    }

    impl From<TimeoutError> for Error {
        fn from(_: TimeoutError) -> Self {
            Self::Timeout
        }
    }

    impl From<crate::balance::BalanceError> for Error {
        fn from(_: crate::balance::BalanceError) -> Self {
            Self::Fatal
        }
    }

    fn retryable(e: &Error) -> bool {
        *e == Error::Transient
    }

    fn immediate(attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts: attempts,
            max_duration: None,
            backoff: Backoff::NONE,
            attempt_timeout: None,
        }
    }

    /// A service failing its first `fails` calls with `error`, counting calls in `calls`.
    fn flaky(
        calls: &Cell<u32>,
        fails: u32,
        error: Error,
    ) -> impl Service<Cx, u32, Response = u32, Error = Error> + '_ {
        service_fn(move |_: &mut Cx, req: u32| {
            let n = calls.get() + 1;
            calls.set(n);
            async move {
                if n <= fails {
                    Err(error)
                } else {
                    Ok(req * 10)
                }
            }
        })
    }

    #[test]
    fn retries_a_service_that_fails_n_times() {
        let calls = Cell::new(0);
        let svc = RetryLayer::<Baseline, _>::new(immediate(3), retryable).layer(flaky(
            &calls,
            2,
            Error::Transient,
        ));
        assert_eq!(block_on(svc.call(&mut Cx::default(), 4)), Ok(40));
        assert_eq!(calls.get(), 3);

        // One failure too many: the last error comes back after max_attempts calls.
        let calls = Cell::new(0);
        let svc = RetryLayer::<Baseline, _>::new(immediate(3), retryable).layer(flaky(
            &calls,
            3,
            Error::Transient,
        ));
        assert_eq!(
            block_on(svc.call(&mut Cx::default(), 4)),
            Err(Error::Transient)
        );
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn only_retryable_errors_and_configured_methods_are_retried() {
        let calls = Cell::new(0);
        let svc = RetryLayer::<Baseline, _>::new(immediate(3), retryable).layer(flaky(
            &calls,
            1,
            Error::Fatal,
        ));
        assert_eq!(block_on(svc.call(&mut Cx::default(), 1)), Err(Error::Fatal));
        assert_eq!(calls.get(), 1);

        let calls = Cell::new(0);
        let configs = PerMethod::none().method("read", immediate(5));
        let svc = RetryLayer::<Baseline, _>::new(configs, retryable).layer(flaky(
            &calls,
            2,
            Error::Transient,
        ));
        let mut write = Cx {
            method: "write",
            ..Cx::default()
        };
        assert_eq!(block_on(svc.call(&mut write, 1)), Err(Error::Transient));
        let mut read = Cx {
            method: "read",
            ..Cx::default()
        };
        assert_eq!(block_on(svc.call(&mut read, 1)), Ok(10));
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn no_retry_would_start_past_the_deadline_or_max_duration() {
        let clock = ManualClock::new();
        let slow_backoff = Backoff {
            initial: Duration::from_millis(10),
            jitter: 0.0,
            ..Backoff::default()
        };
        let calls = Cell::new(0);
        let config = RetryConfig {
            max_attempts: 5,
            max_duration: None,
            backoff: slow_backoff,
            attempt_timeout: None,
        };
        let svc = RetryLayer::<Baseline, _>::new(config, retryable)
            .clock(clock.clone())
            .layer(flaky(&calls, 1, Error::Transient));
        let mut cx = Cx {
            method: "m",
            deadline: Some(clock.now() + Duration::from_millis(10)),
            ..Cx::default()
        };
        assert_eq!(block_on(svc.call(&mut cx, 1)), Err(Error::Transient));
        assert_eq!(calls.get(), 1);

        let calls = Cell::new(0);
        let config = RetryConfig {
            max_duration: Some(Duration::from_millis(10)),
            ..config
        };
        let svc = RetryLayer::<Baseline, _>::new(config, retryable)
            .clock(clock.clone())
            .layer(flaky(&calls, 1, Error::Transient));
        assert_eq!(
            block_on(svc.call(&mut Cx::default(), 1)),
            Err(Error::Transient)
        );
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn the_budget_caps_retries_at_its_share_of_calls() {
        let clock = ManualClock::new();
        let budget = Rc::new(RetryBudget::with_clock(
            BudgetConfig {
                ttl: Duration::from_secs(10),
                min_per_sec: 0,
                retry_ratio: 0.1,
            },
            clock.clone(),
        ));
        let calls = Cell::new(0);
        let svc = RetryLayer::<Baseline, _>::new(immediate(3), retryable)
            .clock(clock.clone())
            .budget(budget)
            .layer(flaky(&calls, u32::MAX, Error::Transient));
        for _ in 0..1000 {
            assert_eq!(
                block_on(svc.call(&mut Cx::default(), 1)),
                Err(Error::Transient)
            );
        }
        // 1000 first attempts and 10% of them in retries, instead of 2000 retries.
        assert_eq!(calls.get(), 1100);
    }

    #[test]
    fn backoff_sleeps_on_the_engine() {
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = Baseline::launch(ringrpc_engine::RuntimeConfig::with_cores(1), move |_| {
            let tx = tx.clone();
            async move {
                let calls = Cell::new(0);
                let config = RetryConfig {
                    max_attempts: 3,
                    max_duration: None,
                    backoff: Backoff {
                        initial: Duration::from_millis(5),
                        jitter: 0.0,
                        ..Backoff::default()
                    },
                    attempt_timeout: None,
                };
                let svc = RetryLayer::<Baseline, _>::new(config, retryable).layer(flaky(
                    &calls,
                    2,
                    Error::Transient,
                ));
                let start = Instant::now();
                let r = svc.call(&mut Cx::default(), 2).await;
                let _ = tx.send((r, calls.get(), start.elapsed()));
            }
        })
        .unwrap();
        let (r, calls, took) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        rt.stop(Duration::ZERO);
        assert_eq!((r, calls), (Ok(20), 3));
        // 5 ms, then 10 ms.
        assert!(took >= Duration::from_millis(15), "{took:?}");
    }

    /// A service that records the deadline each call sees, moves `clock` on by `takes` per
    /// call, and fails the first `fails` calls with `Transient`.
    fn timed<'a>(
        clock: &'a ManualClock,
        seen: &'a std::cell::RefCell<Vec<Option<Instant>>>,
        takes: Duration,
        fails: usize,
    ) -> impl Service<Cx, u32, Response = u32, Error = Error> + 'a {
        service_fn(move |cx: &mut Cx, req: u32| {
            seen.borrow_mut().push(cx.deadline);
            clock.advance(takes);
            let n = seen.borrow().len();
            async move {
                if n <= fails {
                    Err(Error::Transient)
                } else {
                    Ok(req)
                }
            }
        })
    }

    #[test]
    fn each_attempt_gets_its_own_deadline_capped_by_the_calls() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        let ms = Duration::from_millis;
        let config = immediate(3).attempt_timeout(ms(50));
        let seen = std::cell::RefCell::new(Vec::new());
        let svc = RetryLayer::<Baseline, _>::new(config, retryable)
            .clock(clock.clone())
            .layer(timed(&clock, &seen, ms(30), 2));
        let mut cx = Cx {
            method: "m",
            deadline: Some(t0 + ms(100)),
            ..Cx::default()
        };
        assert_eq!(block_on(svc.call(&mut cx, 7)), Ok(7));
        // Attempts start at 0, 30 and 60 ms: 50 ms each, the last cut to the call's 100 ms.
        assert_eq!(
            *seen.borrow(),
            vec![Some(t0 + ms(50)), Some(t0 + ms(80)), Some(t0 + ms(100))]
        );
        // The caller's deadline is back in the context.
        assert_eq!(cx.deadline, Some(t0 + ms(100)));

        // Attempts of 50 ms: the second ends at the call's deadline, so no third starts.
        let clock = ManualClock::new();
        let t0 = clock.now();
        let seen = std::cell::RefCell::new(Vec::new());
        let svc = RetryLayer::<Baseline, _>::new(config, retryable)
            .clock(clock.clone())
            .layer(timed(&clock, &seen, ms(50), 5));
        let mut cx = Cx {
            method: "m",
            deadline: Some(t0 + ms(100)),
            ..Cx::default()
        };
        assert_eq!(block_on(svc.call(&mut cx, 7)), Err(Error::Transient));
        assert_eq!(*seen.borrow(), vec![Some(t0 + ms(50)), Some(t0 + ms(100))]);

        // Without a call deadline, each attempt still has its own; one attempt is bounded too.
        let clock = ManualClock::new();
        let t0 = clock.now();
        let seen = std::cell::RefCell::new(Vec::new());
        let once = RetryConfig {
            max_attempts: 1,
            ..config
        };
        let svc = RetryLayer::<Baseline, _>::new(once, retryable)
            .clock(clock.clone())
            .layer(timed(&clock, &seen, ms(10), 0));
        let mut cx = Cx {
            method: "m",
            deadline: None,
            ..Cx::default()
        };
        assert_eq!(block_on(svc.call(&mut cx, 7)), Ok(7));
        assert_eq!(*seen.borrow(), vec![Some(t0 + ms(50))]);
        assert_eq!(cx.deadline, None);
    }

    /// Runs `f` on a one-core baseline runtime and returns its output.
    fn on_runtime<T: Send + 'static, F: Future<Output = T> + 'static>(
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let f = std::sync::Mutex::new(Some(f));
        let rt = Baseline::launch(ringrpc_engine::RuntimeConfig::with_cores(1), move |_| {
            let f = f.lock().unwrap().take().expect("one core");
            let tx = tx.clone();
            async move {
                let _ = tx.send(f().await);
            }
        })
        .unwrap();
        let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        rt.stop(Duration::ZERO);
        r
    }

    /// A service whose first `stalls` calls never answer; later ones answer at once.
    fn stalling(
        calls: &Cell<u32>,
        stalls: u32,
    ) -> impl Service<Cx, u32, Response = u32, Error = Error> + '_ {
        service_fn(move |_: &mut Cx, req: u32| {
            let n = calls.get() + 1;
            calls.set(n);
            async move {
                if n <= stalls {
                    std::future::pending::<()>().await;
                }
                Ok(req)
            }
        })
    }

    #[test]
    fn a_stalled_attempt_times_out_and_is_retried_when_the_policy_says_so() {
        let ms = Duration::from_millis;
        let config = immediate(3).attempt_timeout(ms(20));
        // Timeouts retryable: the stalled first attempt is cut at 20 ms, the second answers.
        let (r, calls, took) = on_runtime(move || async move {
            let calls = Cell::new(0);
            let policy = |e: &Error| matches!(e, Error::Transient | Error::Timeout);
            let svc = RetryLayer::<Baseline, _>::new(config, policy).layer(stalling(&calls, 1));
            let start = Instant::now();
            let mut cx = Cx {
                method: "m",
                deadline: Some(start + Duration::from_secs(2)),
                ..Cx::default()
            };
            let r = svc.call(&mut cx, 3).await;
            (r, calls.get(), start.elapsed())
        });
        assert_eq!((r, calls), (Ok(3), 2));
        assert!(took >= ms(20) && took < ms(1000), "{took:?}");

        // Timeouts not retryable: the timeout comes back after one attempt.
        let (r, calls, took) = on_runtime(move || async move {
            let calls = Cell::new(0);
            let svc = RetryLayer::<Baseline, _>::new(config, retryable).layer(stalling(&calls, 1));
            let start = Instant::now();
            let r = svc.call(&mut Cx::default(), 3).await;
            (r, calls.get(), start.elapsed())
        });
        assert_eq!((r, calls), (Err(Error::Timeout), 1));
        assert!(took >= ms(20) && took < ms(1000), "{took:?}");

        // The call's deadline (30 ms) cuts an attempt allowed 1 s, and no retry follows.
        let (r, calls, took) = on_runtime(move || async move {
            let calls = Cell::new(0);
            let policy = |e: &Error| matches!(e, Error::Timeout);
            let long = immediate(3).attempt_timeout(Duration::from_secs(1));
            let svc = RetryLayer::<Baseline, _>::new(long, policy).layer(stalling(&calls, 3));
            let start = Instant::now();
            let mut cx = Cx {
                method: "m",
                deadline: Some(start + ms(30)),
                ..Cx::default()
            };
            let r = svc.call(&mut cx, 3).await;
            (r, calls.get(), start.elapsed())
        });
        assert_eq!((r, calls), (Err(Error::Timeout), 1));
        assert!(took >= ms(30) && took < ms(500), "{took:?}");
    }

    #[test]
    fn a_cut_attempt_does_not_pin_the_retry_to_its_instance() {
        use crate::balance::{BalanceLayer, Instance, WeightedRoundRobin};
        let (a, b) = (
            SocketAddr::from(([10, 0, 0, 1], 1)),
            SocketAddr::from(([10, 0, 0, 2], 1)),
        );
        let (sent, after) = on_runtime(move || async move {
            let sent = std::cell::RefCell::new(Vec::new());
            // Instance `a` never answers.
            let transport = service_fn(|cx: &mut Cx, req: u32| {
                let to = cx.target.unwrap();
                sent.borrow_mut().push(to);
                async move {
                    if to == a {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Error>(req)
                }
            });
            let lb = Rc::new(WeightedRoundRobin::new(vec![
                Instance::new(a, 1),
                Instance::new(b, 1),
            ]));
            let config = immediate(3).attempt_timeout(Duration::from_millis(10));
            let policy = |e: &Error| matches!(e, Error::Timeout);
            let svc = RetryLayer::<Baseline, _>::new(config, policy)
                .layer(BalanceLayer::new(lb).layer(transport));
            let mut cx = Cx {
                method: "m",
                ..Cx::default()
            };
            for _ in 0..2 {
                assert_eq!(svc.call(&mut cx, 1).await, Ok(1));
            }
            let after = (cx.target, cx.failed.clone());
            (sent.into_inner(), after)
        });
        // Each call: `a` (cut at 10 ms, noted as failed), then `b`, never `a` twice in a row.
        assert!(sent.windows(2).all(|w| w != [a, a]), "{sent:?}");
        assert_eq!(sent.iter().filter(|t| **t == b).count(), 2, "{sent:?}");
        // The caller's (absent) target is back; the cut attempt's instance is noted.
        assert_eq!(after.0, None);
        assert!(after.1.contains(&a));
    }
}
