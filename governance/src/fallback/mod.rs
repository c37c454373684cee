//! Fallback: turn selected errors into a reply (Kitex's `WithFallback`).
//!
//! A [`FallbackLayer`] runs its closure on every error of the calls it wraps. The closure gets the
//! context and the error and returns `Ok(reply)` to answer with a substitute (a cached value, a
//! default, a degraded answer) or `Err(error)` to pass the error on. Put it outermost on the
//! client, so it also sees timeouts, breaker and limiter rejections; on a server, around the
//! router to answer for failing handlers. The request is not passed (that would cost a clone of
//! every request); key the substitute on the context (method, metainfo).

use std::marker::PhantomData;

use crate::{Layer, Service};

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

impl<S, F, Cx> Layer<S> for FallbackLayer<F, Cx> {
    type Service = Fallback<S, F>;

    fn layer(self, inner: S) -> Self::Service {
        Fallback { inner, f: self.f }
    }
}

/// A service whose errors go through a fallback closure; see [`FallbackLayer`].
pub struct Fallback<S, F> {
    inner: S,
    f: F,
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, Cx, Req> Service<Cx, Req> for Fallback<S, F>
where
    S: Service<Cx, Req>,
    F: Fn(&mut Cx, S::Error) -> Result<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;

    async fn call(&self, cx: &mut Cx, req: Req) -> Result<Self::Response, Self::Error> {
        match self.inner.call(cx, req).await {
            Ok(r) => Ok(r),
            Err(e) => (self.f)(cx, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::block_on;
    use crate::service_fn;

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
}
