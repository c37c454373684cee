//! The `Service` and `Layer` abstractions and their plumbing.
//!
//! # Contract
//! - [`Service::call`] takes `&self`: a service is shared by every call on its core; per-call
//!   state lives in the future or in the context `Cx`.
//! - There is no `poll_ready`: admission (rate limits, breakers, concurrency) is decided inside
//!   `call`, which must then fail fast with a typed error rather than queue without bound.
//! - Futures may be `!Send`; they are driven on the core that created them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// A stage that is either configured (`On`) or skipped (`Off`, the inner service itself).
#[derive(Debug)]
pub enum Maybe<A, B> {
    /// The stage is configured: calls go through `A`.
    On(A),
    /// The stage is off: calls go straight to `B`, the service it would have wrapped.
    Off(B),
}

impl<Cx, Req, A, B> Service<Cx, Req> for Maybe<A, B>
where
    A: Service<Cx, Req>,
    B: Service<Cx, Req, Response = A::Response, Error = A::Error>,
{
    type Response = A::Response;
    type Error = A::Error;

    fn call(&self, cx: &mut Cx, req: Req) -> impl Future<Output = Result<A::Response, A::Error>> {
        // An enum of the two futures rather than an `async` block around them, and the
        // configured stage's future boxed: an enum is as large as its largest variant, so an
        // inline `On` future would make every call carry (and copy) the space of stages that
        // are switched off. Configured stages pay one allocation instead.
        match self {
            Self::On(a) => MaybeFuture::On {
                fut: Box::pin(a.call(cx, req)),
            },
            Self::Off(b) => MaybeFuture::Off {
                fut: b.call(cx, req),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Maybe`] stage.
    #[project = MaybeProj]
    #[allow(missing_docs)]
    pub enum MaybeFuture<FA, FB> {
        /// The configured stage's future, boxed.
        On { fut: Pin<Box<FA>> },
        /// The inner service's future, inline.
        Off { #[pin] fut: FB },
    }
}

impl<T, FA: Future<Output = T>, FB: Future<Output = T>> Future for MaybeFuture<FA, FB> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            MaybeProj::On { fut } => fut.as_mut().poll(cx),
            MaybeProj::Off { fut } => fut.poll(cx),
        }
    }
}
