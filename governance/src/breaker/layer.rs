//! The breaker layers: per method around the whole call, per instance around the transport.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Instant;

use super::{Breaker, BreakerConfig, BreakerError, InstanceBreakers, Outcome, Ticket};
use crate::clock::{Clock, SystemClock};
use crate::hook::{reject, CallHook, Hooked};
use crate::{CallDeadline, CallMethod, CallTarget, Layer};

/// Which errors count as failures for a breaker.
pub trait FailurePolicy<E> {
    /// Whether `error` counts against the breaker. Errors that say nothing about the callee's
    /// health (business errors, rejections by the caller's own limits) should not.
    fn is_failure(&self, error: &E) -> bool;
}

/// Every error counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyError;

impl<E> FailurePolicy<E> for AnyError {
    fn is_failure(&self, _: &E) -> bool {
        true
    }
}

impl<E, F: Fn(&E) -> bool> FailurePolicy<E> for F {
    fn is_failure(&self, error: &E) -> bool {
        self(error)
    }
}

fn outcome<R, E>(result: Result<&R, &E>, policy: &impl FailurePolicy<E>) -> Outcome {
    match result {
        Err(e) if policy.is_failure(e) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// A call a breaker admitted, whose outcome is not recorded yet. Dropped unrecorded (the
/// call's future was dropped), it records a failure at or past the deadline and a cancellation
/// before it.
pub struct Admitted<'a, C: Clock> {
    breaker: Rc<Breaker>,
    clock: &'a C,
    ticket: Option<Ticket>,
    deadline: Option<Instant>,
}

impl<C: Clock> Admitted<'_, C> {
    fn finish(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            self.breaker.record(t, outcome, self.clock.now());
        }
    }
}

impl<C: Clock> Drop for Admitted<'_, C> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let now = self.clock.now();
            let outcome = if self.deadline.is_some_and(|d| now >= d) {
                Outcome::Failure
            } else {
                Outcome::Cancelled
            };
            self.breaker.record(t, outcome, now);
        }
    }
}

/// Builds [`BreakerService`]s: one breaker per method of the called service, on this core.
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = SystemClock, P = AnyError> {
    config: BreakerConfig,
    clock: C,
    policy: P,
}

impl BreakerLayer {
    /// A layer with `config`, the system clock, and every error counting as a failure.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            clock: SystemClock,
            policy: AnyError,
        }
    }
}

impl<C, P> BreakerLayer<C, P> {
    /// Reads time from `clock`.
    pub fn clock<C2: Clock>(self, clock: C2) -> BreakerLayer<C2, P> {
        BreakerLayer {
            config: self.config,
            clock,
            policy: self.policy,
        }
    }

    /// Counts only the errors `policy` says are failures (a closure `Fn(&E) -> bool` works).
    pub fn failure_policy<P2>(self, policy: P2) -> BreakerLayer<C, P2> {
        BreakerLayer {
            config: self.config,
            clock: self.clock,
            policy,
        }
    }

    /// The breakers as a hook, to share a stage with other hooks.
    pub fn into_hook(self) -> MethodBreakers<C, P> {
        MethodBreakers {
            config: self.config,
            clock: self.clock,
            policy: self.policy,
            breakers: RefCell::new(FxHashMap::default()),
        }
    }
}

impl<S, C, P> Layer<S> for BreakerLayer<C, P> {
    type Service = BreakerService<S, C, P>;

    fn layer(self, inner: S) -> Self::Service {
        Hooked::new(inner, self.into_hook())
    }
}

/// A service that fails fast with [`BreakerError::Open`] while its method's breaker is open.
pub type BreakerService<S, C, P> = Hooked<S, MethodBreakers<C, P>>;

/// One breaker per method, created on first call: the hook of [`BreakerService`].
#[derive(Debug)]
pub struct MethodBreakers<C, P> {
    config: BreakerConfig,
    clock: C,
    policy: P,
    breakers: RefCell<FxHashMap<String, Rc<Breaker>>>,
}

impl<C: Clock, P> MethodBreakers<C, P> {
    /// The breaker of `method`, if it was called on this core.
    pub fn breaker(&self, method: &str) -> Option<Rc<Breaker>> {
        self.breakers.borrow().get(method).cloned()
    }

    fn breaker_for(&self, method: &str, now: Instant) -> Rc<Breaker> {
        if let Some(b) = self.breakers.borrow().get(method) {
            return b.clone();
        }
        let b = Rc::new(Breaker::new(self.config, now));
        self.breakers
            .borrow_mut()
            .insert(method.to_owned(), b.clone());
        b
    }
}

impl<S, C: Clock, P> BreakerService<S, C, P> {
    /// The breaker of `method`, if it was called on this core.
    pub fn breaker(&self, method: &str) -> Option<Rc<Breaker>> {
        self.hook().breaker(method)
    }
}

impl<Cx, Req, Res, Err, C, P> CallHook<Cx, Req, Res, Err> for MethodBreakers<C, P>
where
    Cx: CallMethod + CallDeadline,
    Err: From<BreakerError>,
    C: Clock,
    P: FailurePolicy<Err>,
{
    type Token<'a>
        = Admitted<'a, C>
    where
        Self: 'a;

    fn before<'a>(
        &'a self,
        cx: &mut Cx,
        _: &Req,
    ) -> ControlFlow<Result<Res, Err>, Admitted<'a, C>> {
        let now = self.clock.now();
        let breaker = self.breaker_for(cx.method(), now);
        match breaker.try_acquire(now) {
            Ok(ticket) => ControlFlow::Continue(Admitted {
                breaker,
                clock: &self.clock,
                ticket: Some(ticket),
                deadline: cx.deadline(),
            }),
            Err(e) => reject(e),
        }
    }

    fn after(
        &self,
        admitted: Admitted<'_, C>,
        _: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err> {
        admitted.finish(outcome(result.as_ref(), &self.policy));
        result
    }
}

/// Builds [`InstanceBreakerService`]s recording into shared [`InstanceBreakers`].
#[derive(Debug)]
pub struct InstanceBreakerLayer<C = SystemClock, P = AnyError> {
    breakers: Rc<InstanceBreakers<C>>,
    policy: P,
}

impl<C> InstanceBreakerLayer<C> {
    /// A layer recording into `breakers` (the same `Rc` the balancer's filter reads), every error
    /// counting as a failure.
    pub fn new(breakers: Rc<InstanceBreakers<C>>) -> Self {
        Self {
            breakers,
            policy: AnyError,
        }
    }
}

impl<C, P> InstanceBreakerLayer<C, P> {
    /// Counts only the errors `policy` says are failures.
    pub fn failure_policy<P2>(self, policy: P2) -> InstanceBreakerLayer<C, P2> {
        InstanceBreakerLayer {
            breakers: self.breakers,
            policy,
        }
    }

    /// The breakers as a hook, to share a stage with other hooks.
    pub fn into_hook(self) -> InstanceBreakerHook<C, P> {
        InstanceBreakerHook {
            breakers: self.breakers,
            policy: self.policy,
        }
    }
}

impl<S, C, P> Layer<S> for InstanceBreakerLayer<C, P> {
    type Service = InstanceBreakerService<S, C, P>;

    fn layer(self, inner: S) -> Self::Service {
        Hooked::new(inner, self.into_hook())
    }
}

/// A service that records each call against the breaker of the instance in the context's
/// target, and rejects calls pinned to an instance whose breaker is open. Calls without a target
/// pass through unrecorded.
pub type InstanceBreakerService<S, C, P> = Hooked<S, InstanceBreakerHook<C, P>>;

/// The hook of [`InstanceBreakerService`].
#[derive(Debug)]
pub struct InstanceBreakerHook<C, P> {
    breakers: Rc<InstanceBreakers<C>>,
    policy: P,
}

impl<Cx, Req, Res, Err, C, P> CallHook<Cx, Req, Res, Err> for InstanceBreakerHook<C, P>
where
    Cx: CallTarget + CallDeadline,
    Err: From<BreakerError>,
    C: Clock,
    P: FailurePolicy<Err>,
{
    type Token<'a>
        = Option<Admitted<'a, C>>
    where
        Self: 'a;

    fn before<'a>(
        &'a self,
        cx: &mut Cx,
        _: &Req,
    ) -> ControlFlow<Result<Res, Err>, Option<Admitted<'a, C>>> {
        let Some(addr) = cx.target() else {
            return ControlFlow::Continue(None);
        };
        match self.breakers.try_acquire_at(addr) {
            Ok((breaker, ticket)) => ControlFlow::Continue(Some(Admitted {
                breaker,
                clock: self.breakers.clock(),
                ticket: Some(ticket),
                deadline: cx.deadline(),
            })),
            Err(e) => reject(e),
        }
    }

    fn after(
        &self,
        admitted: Option<Admitted<'_, C>>,
        _: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err> {
        if let Some(admitted) = admitted {
            admitted.finish(outcome(result.as_ref(), &self.policy));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::pin::pin;
    use std::task::{Context, Waker};
    use std::time::Duration;

    use super::*;
    use crate::balance::{BalanceError, BalanceLayer, WeightedRoundRobin};
    use crate::breaker::BreakerState;
    use crate::clock::{block_on, ManualClock};
    use crate::{service_fn, Service};

    #[derive(Default)]
    struct Cx {
        method: &'static str,
        target: Option<SocketAddr>,
        deadline: Option<Instant>,
    }

    impl CallMethod for Cx {
        fn method(&self) -> &str {
            self.method
        }
    }
    impl CallTarget for Cx {
        fn target(&self) -> Option<SocketAddr> {
            self.target
        }
        fn set_target(&mut self, t: Option<SocketAddr>) {
            self.target = t;
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

    #[derive(Debug, Clone, PartialEq)]
    enum Error {
        Down,
        Biz,
        Breaker(BreakerError),
        Balance(BalanceError),
    }
    impl From<BreakerError> for Error {
        fn from(e: BreakerError) -> Self {
            Self::Breaker(e)
        }
    }
    impl From<BalanceError> for Error {
        fn from(e: BalanceError) -> Self {
            Self::Balance(e)
        }
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            min_samples: 10,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn breaks_per_method_and_ignores_errors_the_policy_excludes() {
        let clock = ManualClock::new();
        let svc = BreakerLayer::new(config())
            .clock(clock.clone())
            .failure_policy(|e: &Error| *e != Error::Biz)
            .layer(service_fn(|cx: &mut Cx, fail: Option<Error>| {
                let m = cx.method;
                async move { fail.map_or(Ok(m), Err) }
            }));
        let call = |method, fail| {
            let mut cx = Cx {
                method,
                ..Cx::default()
            };
            block_on(svc.call(&mut cx, fail))
        };
        for _ in 0..20 {
            assert_eq!(call("b", Some(Error::Biz)), Err(Error::Biz));
        }
        for _ in 0..10 {
            assert_eq!(call("a", Some(Error::Down)), Err(Error::Down));
        }
        assert_eq!(call("a", None), Err(Error::Breaker(BreakerError::Open)));
        // "b" only had business errors: still closed.
        assert_eq!(call("b", None), Ok("b"));
        let now = clock.now();
        assert_eq!(svc.breaker("b").unwrap().state(now), BreakerState::Closed);
        clock.advance(Duration::from_secs(5));
        assert!(svc.breaker("a").unwrap().is_available(clock.now()));
    }

    #[test]
    fn a_call_dropped_at_its_deadline_counts_as_a_failure_and_before_it_as_nothing() {
        let clock = ManualClock::new();
        let svc = BreakerLayer::new(config())
            .clock(clock.clone())
            .layer(service_fn(|_: &mut Cx, ()| {
                std::future::pending::<Result<(), Error>>()
            }));
        let mut waker_cx = Context::from_waker(Waker::noop());
        for expire in [false, true] {
            let mut cx = Cx {
                method: "m",
                deadline: Some(clock.now() + Duration::from_secs(1)),
                ..Cx::default()
            };
            {
                let mut fut = pin!(svc.call(&mut cx, ()));
                assert!(fut.as_mut().poll(&mut waker_cx).is_pending());
                if expire {
                    clock.advance(Duration::from_secs(1));
                }
            }
        }
        let counts = svc.breaker("m").unwrap().counts(clock.now());
        assert_eq!((counts.successes, counts.failures), (0, 1));
    }

    #[test]
    fn an_instance_answering_60_percent_errors_trips_and_a_healthy_one_stays_closed() {
        let clock = ManualClock::new();
        let breakers = Rc::new(InstanceBreakers::with_clock(config(), clock.clone()));
        let sick = SocketAddr::from(([10, 0, 0, 1], 1));
        let healthy = SocketAddr::from(([10, 0, 0, 2], 1));
        let lb = Rc::new(WeightedRoundRobin::new(vec![
            crate::balance::Instance::new(sick, 1),
            crate::balance::Instance::new(healthy, 1),
        ]));
        let calls = std::cell::Cell::new(0u32);
        let filter = breakers.clone();
        let svc = BalanceLayer::new(lb)
            .filter(move |a| filter.is_available(a))
            .layer(
                InstanceBreakerLayer::new(breakers.clone()).layer(service_fn(|cx: &mut Cx, ()| {
                    let n = calls.get();
                    calls.set(n + 1);
                    // The sick instance fails 3 calls in 5.
                    let fail = cx.target == Some(sick) && (n / 2) % 5 < 3;
                    let t = cx.target;
                    async move {
                        if fail {
                            Err(Error::Down)
                        } else {
                            Ok(t)
                        }
                    }
                })),
            );
        let mut to_sick_after_trip = 0;
        let mut tripped = false;
        for _ in 0..200 {
            let r = block_on(svc.call(&mut Cx::default(), ()));
            if tripped && r == Ok(Some(sick)) {
                to_sick_after_trip += 1;
            }
            tripped |= !breakers.is_available(sick);
        }
        assert!(tripped);
        assert!(matches!(breakers.state(sick), BreakerState::Open { .. }));
        assert_eq!(breakers.state(healthy), BreakerState::Closed);
        assert_eq!(to_sick_after_trip, 0);

        // A call pinned to the open instance is rejected with its address.
        let mut cx = Cx {
            target: Some(sick),
            ..Cx::default()
        };
        assert_eq!(
            block_on(svc.call(&mut cx, ())),
            Err(Error::Breaker(BreakerError::InstanceOpen(sick)))
        );
        breakers.retain(|a| a != sick);
        assert!(breakers.is_available(sick));
    }
}
