//! The `Service` and `Layer` abstractions and their plumbing.
//!
//! # Contract
//! - [`Service::call`] takes `&self`: a service is shared by every call on its core; per-call
//!   state lives in the future or in the context `Cx`.
//! - There is no `poll_ready`: admission (rate limits, breakers, concurrency) is decided inside
//!   `call`, which must then fail fast with a typed error rather than queue without bound.
//! - Futures may be `!Send`; they are driven on the core that created them.

use std::future::Future;

/// An asynchronous function from a request (with its context) to a response.
pub trait Service<Cx, Req> {
    /// The successful result.
    type Response;
    /// The error.
    type Error;

    /// Handles one call.
    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>>;
}

impl<Cx, Req, S: Service<Cx, Req>> Service<Cx, Req> for std::rc::Rc<S> {
    type Response = S::Response;
    type Error = S::Error;

    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        (**self).call(cx, req)
    }
}

/// Wraps a service in another, adding behaviour around its calls.
pub trait Layer<S> {
    /// The wrapping service.
    type Service;

    /// Wraps `inner`.
    fn layer(self, inner: S) -> Self::Service;
}

/// The layer that adds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<S> Layer<S> for Identity {
    type Service = S;

    fn layer(self, inner: S) -> S {
        inner
    }
}

/// Two layers, `outer` around `inner`: `Stack::new(inner, outer).layer(s) == outer.layer(inner.layer(s))`.
#[derive(Debug, Clone, Default)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// Stacks `outer` on top of `inner`.
    pub fn new(inner: Inner, outer: Outer) -> Self {
        Self { inner, outer }
    }
}

impl<S, Inner: Layer<S>, Outer: Layer<Inner::Service>> Layer<S> for Stack<Inner, Outer> {
    type Service = Outer::Service;

    fn layer(self, service: S) -> Self::Service {
        self.outer.layer(self.inner.layer(service))
    }
}

/// A service made from an async closure; see [`service_fn`].
#[derive(Debug, Clone, Copy)]
pub struct ServiceFn<F>(F);

/// Makes a service from `f(&mut cx, req) -> future`.
pub fn service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn(f)
}

impl<Cx, Req, F, Fut, R, E> Service<Cx, Req> for ServiceFn<F>
where
    F: Fn(&mut Cx, Req) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    type Response = R;
    type Error = E;

    fn call(&self, cx: &mut Cx, req: Req) -> impl Future<Output = Result<R, E>> {
        (self.0)(cx, req)
    }
}

/// A layer made from a closure; see [`layer_fn`].
#[derive(Debug, Clone, Copy)]
pub struct LayerFn<F>(F);

/// Makes a layer from `f(inner) -> service`.
pub fn layer_fn<F>(f: F) -> LayerFn<F> {
    LayerFn(f)
}

impl<S, F: FnOnce(S) -> T, T> Layer<S> for LayerFn<F> {
    type Service = T;

    fn layer(self, inner: S) -> T {
        (self.0)(inner)
    }
}
