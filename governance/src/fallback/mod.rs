//! Fallback: turn selected errors into a reply (Kitex's `WithFallback`).
//!
//! A [`FallbackLayer`] runs its closure on every error of the calls it wraps. The closure gets the
//! context and the error and returns `Ok(reply)` to answer with a substitute (a cached value, a
//! default, a degraded answer) or `Err(error)` to pass the error on. Put it outermost on the
//! client, so it also sees timeouts, breaker and limiter rejections; on a server, around the
//! router to answer for failing handlers. The request is not passed (that would cost a clone of
//! every request); key the substitute on the context (method, metainfo).

use std::marker::PhantomData;
use std::ops::ControlFlow;

use crate::hook::{CallHook, Hooked};
use crate::Layer;

/// Builds [`Fallback`] services with the closure `f(&mut Cx, Error) -> Result<Response, Error>`.
pub struct FallbackLayer<F, Cx> {
    f: F,
    _cx: PhantomData<fn(&mut Cx)>,
}

impl<F: Clone, Cx> Clone for FallbackLayer<F, Cx> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _cx: PhantomData,
        }
    }
}

impl<F, Cx> std::fmt::Debug for FallbackLayer<F, Cx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer").finish_non_exhaustive()
    }
}

impl<F, Cx> FallbackLayer<F, Cx> {
    /// A layer calling `f` on every error: `Ok(reply)` replaces it, `Err(e)` passes `e` on.
    pub fn new<R, E>(f: F) -> Self
    where
        F: Fn(&mut Cx, E) -> Result<R, E>,
    {
        Self {
            f,
            _cx: PhantomData,
        }
    }
}

/// A fallback for the errors `select` picks, answered by `reply`; other errors pass through.
pub fn fallback_when<Cx, R, E>(
    select: impl Fn(&E) -> bool + Clone,
    reply: impl Fn(&mut Cx, &E) -> R + Clone,
) -> FallbackLayer<impl Fn(&mut Cx, E) -> Result<R, E> + Clone, Cx> {
    FallbackLayer::new(move |cx: &mut Cx, e: E| {
        if select(&e) {
            Ok(reply(cx, &e))
        } else {
            Err(e)
        }
    })
}

impl<F, Cx> FallbackLayer<F, Cx> {
    /// The fallback as a hook, to share a stage with other hooks (outside the ones whose
    /// rejections it should answer).
    pub fn into_hook(self) -> FallbackHook<F> {
        FallbackHook(self.f)
    }
}

impl<S, F, Cx> Layer<S> for FallbackLayer<F, Cx> {
    type Service = Fallback<S, F>;

    fn layer(self, inner: S) -> Self::Service {
        Hooked::new(inner, self.into_hook())
    }
}

/// A service whose errors go through a fallback closure; see [`FallbackLayer`].
pub type Fallback<S, F> = Hooked<S, FallbackHook<F>>;

/// The hook of [`Fallback`]: nothing before the call; its error, if any, through the closure.
pub struct FallbackHook<F>(F);

impl<F> std::fmt::Debug for FallbackHook<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackHook").finish_non_exhaustive()
    }
}

impl<Cx, Req, Res, Err, F> CallHook<Cx, Req, Res, Err> for FallbackHook<F>
where
    F: Fn(&mut Cx, Err) -> Result<Res, Err>,
{
    type Token<'a>
        = ()
    where
        Self: 'a;

    fn before(&self, _: &mut Cx, _: &Req) -> ControlFlow<Result<Res, Err>> {
        ControlFlow::Continue(())
    }

    fn after(&self, (): (), cx: &mut Cx, result: Result<Res, Err>) -> Result<Res, Err> {
        match result {
            Ok(r) => Ok(r),
            Err(e) => (self.0)(cx, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::block_on;
    use crate::{service_fn, Service};

    #[derive(Debug, PartialEq)]
    enum Error {
        Timeout,
        Invalid,
    }

    struct Cx {
        method: &'static str,
        degraded: bool,
    }

    fn failing(e: fn() -> Error) -> impl Service<Cx, (), Response = String, Error = Error> {
        service_fn(move |_: &mut Cx, ()| async move { Err::<String, _>(e()) })
    }

    #[test]
    fn selected_errors_become_replies_and_others_pass() {
        let layer = fallback_when(
            |e: &Error| *e == Error::Timeout,
            |cx: &mut Cx, _| {
                cx.degraded = true;
                format!("cached {}", cx.method)
            },
        );
        let mut cx = Cx {
            method: "get",
            degraded: false,
        };
        let svc = layer.clone().layer(failing(|| Error::Timeout));
        assert_eq!(block_on(svc.call(&mut cx, ())), Ok("cached get".to_owned()));
        assert!(cx.degraded);
        let svc = layer.layer(failing(|| Error::Invalid));
        assert_eq!(block_on(svc.call(&mut cx, ())), Err(Error::Invalid));
    }

    #[test]
    fn the_closure_sees_every_error_and_successes_pass_untouched() {
        let layer = FallbackLayer::new(|cx: &mut Cx, e: Error| match cx.method {
            "list" => Ok(String::new()),
            _ => Err(e),
        });
        let mut list = Cx {
            method: "list",
            degraded: false,
        };
        let svc = layer.layer(failing(|| Error::Invalid));
        assert_eq!(block_on(svc.call(&mut list, ())), Ok(String::new()));
        let ok = FallbackLayer::new(|_: &mut Cx, e: Error| Err::<String, _>(e)).layer(service_fn(
            |_: &mut Cx, ()| async { Ok::<_, Error>("x".to_owned()) },
        ));
        assert_eq!(block_on(ok.call(&mut list, ())), Ok("x".to_owned()));
    }

    /// The client stack docs/governance.md recommends, over a mock transport: it composes and
    /// each stage does its part.
    #[test]
    fn the_recommended_client_stack_composes() {
        use std::cell::Cell;
        use std::net::SocketAddr;
        use std::rc::Rc;
        use std::time::Instant;

        use ringrpc_engine::baseline::Baseline;

        use crate::acl::{AclError, AclLayer, AclRules};
        use crate::balance::{BalanceError, BalanceLayer, Instance, WeightedRoundRobin};
        use crate::breaker::InstanceBreakers;
        use crate::breaker::{BreakerConfig, BreakerError, BreakerLayer, InstanceBreakerLayer};
        use crate::retry::{Backoff, RetryConfig, RetryLayer};
        use crate::timeout::{TimeoutConfig, TimeoutError, TimeoutLayer};
        use crate::{CallDeadline, CallMethod, CallTarget};

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

        #[derive(Debug, PartialEq)]
        enum ClientError {
            Closed,
            Other(String),
        }
        macro_rules! other {
            ($($t:ty),*) => {$(
                impl From<$t> for ClientError {
                    fn from(e: $t) -> Self {
                        Self::Other(e.to_string())
                    }
                }
            )*};
        }
        other!(AclError, BalanceError, BreakerError, TimeoutError);

        let bad = SocketAddr::from(([10, 0, 0, 1], 1));
        let good = SocketAddr::from(([10, 0, 0, 2], 1));
        let breakers = Rc::new(InstanceBreakers::new(BreakerConfig::default()));
        let lb = Rc::new(WeightedRoundRobin::new(vec![
            Instance::new(bad, 1),
            Instance::new(good, 1),
        ]));
        let sent = Cell::new(0);
        // The transport: the bad instance drops every connection.
        let transport = service_fn(|cx: &mut Cx, req: u32| {
            sent.set(sent.get() + 1);
            let to = cx.target;
            async move {
                if to == Some(bad) {
                    Err(ClientError::Closed)
                } else {
                    Ok(format!("{req} from {}", to.unwrap()))
                }
            }
        });
        let filter = breakers.clone();
        let stack = InstanceBreakerLayer::new(breakers.clone()).layer(transport);
        let stack = BalanceLayer::new(lb)
            .filter(move |a| filter.is_available(a))
            .layer(stack);
        let stack = RetryLayer::<Baseline, _>::new(
            RetryConfig {
                backoff: Backoff::NONE,
                ..RetryConfig::default()
            },
            |e: &ClientError| *e == ClientError::Closed,
        )
        .layer(stack);
        let stack = BreakerLayer::new(BreakerConfig::default()).layer(stack);
        let stack = AclLayer::new(AclRules::new().rule(|cx: &Cx, _: &u32| {
            if cx.method == "admin" {
                Err(AclError::rejected("no admin calls"))
            } else {
                Ok(())
            }
        }))
        .layer(stack);
        let stack = TimeoutLayer::<Baseline>::new(TimeoutConfig::default()).layer(stack);
        let stack = fallback_when(
            |e: &ClientError| matches!(e, ClientError::Other(m) if m.contains("access")),
            |_: &mut Cx, _| "fallback".to_owned(),
        )
        .layer(stack);

        let mut cx = Cx {
            method: "echo",
            ..Cx::default()
        };
        // WRR tries the bad instance first; the retry re-balances onto the good one.
        let got = block_on(stack.call(&mut cx, 7));
        assert_eq!(got, Ok(format!("7 from {good}")));
        assert_eq!(sent.get(), 2);
        let mut admin = Cx {
            method: "admin",
            ..Cx::default()
        };
        assert_eq!(
            block_on(stack.call(&mut admin, 1)),
            Ok("fallback".to_owned())
        );
        assert_eq!(sent.get(), 2);
    }
}
