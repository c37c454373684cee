//! Failure retry: call again after retryable errors, with backoff, within limits.

use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;

use ringrpc_engine::Engine;

use super::{CallMethod, PerMethod, RetryBudget, RetryConfig, RetryPolicy};
use crate::balance::FastRng;
use crate::clock::{Clock, SystemClock};
use crate::{CallDeadline, Layer, Service};

/// Builds [`Retry`] services on engine `E` (used for the backoff sleeps).
pub struct RetryLayer<E, P, C = SystemClock> {
    configs: PerMethod<RetryConfig>,
    policy: P,
    clock: C,
    budget: Option<Rc<RetryBudget<C>>>,
    rng: Option<FastRng>,
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
            rng: None,
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
        self.rng = Some(rng);
        self
    }
}

impl<S, E, P, C> Layer<S> for RetryLayer<E, P, C> {
    type Service = Retry<S, E, P, C>;

    fn layer(self, inner: S) -> Self::Service {
        Retry {
            inner,
            configs: self.configs,
            policy: self.policy,
            clock: self.clock,
            budget: self.budget,
            rng: self.rng.unwrap_or_else(FastRng::from_entropy),
            _engine: PhantomData,
        }
    }
}

/// A service that retries failed calls; see [`RetryLayer`] and the [module docs](super).
pub struct Retry<S, E, P, C> {
    inner: S,
    configs: PerMethod<RetryConfig>,
    policy: P,
    clock: C,
    budget: Option<Rc<RetryBudget<C>>>,
    rng: FastRng,
    _engine: PhantomData<fn() -> E>,
}

impl<S: std::fmt::Debug, E, P: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug
    for Retry<S, E, P, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("configs", &self.configs)
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<Cx, Req, S, E, P, C> Service<Cx, Req> for Retry<S, E, P, C>
where
    Cx: CallMethod + CallDeadline,
    Req: Clone,
    S: Service<Cx, Req>,
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
        let config = self.configs.get(cx.method()).copied();
        async move {
            let Some(config) = config.filter(|c| c.max_attempts > 1) else {
                return self.inner.call(cx, req).await;
            };
            if let Some(b) = &self.budget {
                b.deposit();
            }
            let start = self.clock.now();
            let mut attempt = 1;
            loop {
                let error = match self.inner.call(cx, req.clone()).await {
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
                    || cx.deadline().is_some_and(|d| resume >= d);
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
    }

    fn retryable(e: &Error) -> bool {
        *e == Error::Transient
    }

    fn immediate(attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts: attempts,
            max_duration: None,
            backoff: Backoff::NONE,
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
        };
        let svc = RetryLayer::<Baseline, _>::new(config, retryable)
            .clock(clock.clone())
            .layer(flaky(&calls, 1, Error::Transient));
        let mut cx = Cx {
            method: "m",
            deadline: Some(clock.now() + Duration::from_millis(10)),
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
}
