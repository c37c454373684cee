//! Synchronous stages as hooks of one stage: [`CallHook`] and [`Hooked`].
//!
//! Most governance stages do their work before and after the call, not during it: an ACL
//! rule or a breaker admits or rejects, a limiter takes a permit, metrics note the start; when
//! the call ends, the breaker records the outcome, the permit is freed, the latency is
//! recorded. Written as services, each such stage nests one more future around the call, and a
//! stage that is only sometimes configured must box its future (see [`Maybe`](crate::Maybe))
//! or make every call carry its space. As hooks, any number of them run around one future:
//! `Hooked<S, (A, (B, C))>` calls `A`, `B`, `C` before the inner service (in that order) and
//! after it (in reverse), and an unconfigured hook is a `None` that costs a branch.
//!
//! What a hook must do if the call never finishes (its future is dropped: cancelled, or timed
//! out from outside) lives in its token's `Drop`, as with any RAII guard.

use std::future::Future;

use crate::{Layer, Service};

/// Work done synchronously around a call of a service answering `Result<Res, Err>`.
pub trait CallHook<Cx, Req, Res, Err> {
    /// What [`before`](Self::before) hands to [`after`](Self::after): a breaker's ticket, a
    /// permit, a start time. Dropped without `after`, it does what the hook owes a call that
    /// never finished.
    type Token<'a>
    where
        Self: 'a;

    /// Runs when the call starts; an error ends the call with it before the inner service runs.
    ///
    /// # Errors
    /// The hook's rejection (an ACL rule, an open breaker, a limit).
    fn before<'a>(&'a self, cx: &mut Cx, req: &Req) -> Result<Self::Token<'a>, Err>;

    /// Runs when the call finishes with `result` (also when a later hook rejected it).
    fn after(&self, token: Self::Token<'_>, cx: &Cx, result: Result<&Res, &Err>);
}

/// An unconfigured hook does nothing.
impl<Cx, Req, Res, Err, H> CallHook<Cx, Req, Res, Err> for Option<H>
where
    H: CallHook<Cx, Req, Res, Err>,
{
    type Token<'a>
        = Option<H::Token<'a>>
    where
        Self: 'a;

    fn before<'a>(&'a self, cx: &mut Cx, req: &Req) -> Result<Self::Token<'a>, Err> {
        match self {
            Some(h) => h.before(cx, req).map(Some),
            None => Ok(None),
        }
    }

    fn after(&self, token: Self::Token<'_>, cx: &Cx, result: Result<&Res, &Err>) {
        if let (Some(h), Some(t)) = (self, token) {
            h.after(t, cx, result);
        }
    }
}

/// A shared hook (one core's limiter, say) is the hook.
impl<Cx, Req, Res, Err, H> CallHook<Cx, Req, Res, Err> for std::rc::Rc<H>
where
    H: CallHook<Cx, Req, Res, Err>,
{
    type Token<'a>
        = H::Token<'a>
    where
        Self: 'a;

    fn before<'a>(&'a self, cx: &mut Cx, req: &Req) -> Result<Self::Token<'a>, Err> {
        (**self).before(cx, req)
    }

    fn after(&self, token: Self::Token<'_>, cx: &Cx, result: Result<&Res, &Err>) {
        (**self).after(token, cx, result);
    }
}

/// `A` around `B`: `A` runs first before the call and last after it, and sees `B`'s rejection
/// as the call's result.
impl<Cx, Req, Res, Err, A, B> CallHook<Cx, Req, Res, Err> for (A, B)
where
    A: CallHook<Cx, Req, Res, Err>,
    B: CallHook<Cx, Req, Res, Err>,
{
    type Token<'a>
        = (A::Token<'a>, B::Token<'a>)
    where
        Self: 'a;

    fn before<'a>(&'a self, cx: &mut Cx, req: &Req) -> Result<Self::Token<'a>, Err> {
        let a = self.0.before(cx, req)?;
        match self.1.before(cx, req) {
            Ok(b) => Ok((a, b)),
            Err(e) => {
                self.0.after(a, cx, Err(&e));
                Err(e)
            }
        }
    }

    fn after(&self, (a, b): Self::Token<'_>, cx: &Cx, result: Result<&Res, &Err>) {
        self.1.after(b, cx, result);
        self.0.after(a, cx, result);
    }
}

/// Builds [`Hooked`] services running `hook` around each call.
#[derive(Debug, Clone, Copy, Default)]
pub struct HookLayer<H>(H);

impl<H> HookLayer<H> {
    /// A layer running `hook` (a single hook, an `Option`, or nested pairs of them).
    pub fn new(hook: H) -> Self {
        Self(hook)
    }
}

impl<S, H> Layer<S> for HookLayer<H> {
    type Service = Hooked<S, H>;

    fn layer(self, inner: S) -> Hooked<S, H> {
        Hooked::new(inner, self.0)
    }
}

/// A service that runs a [`CallHook`] around each call of its inner service.
#[derive(Debug)]
pub struct Hooked<S, H> {
    inner: S,
    hook: H,
}

impl<S, H> Hooked<S, H> {
    /// `inner` with `hook` around its calls.
    pub fn new(inner: S, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

impl<Cx, Req, S, H> Service<Cx, Req> for Hooked<S, H>
where
    S: Service<Cx, Req>,
    H: CallHook<Cx, Req, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;

    fn call(
        &self,
        cx: &mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        // The hooks run when the call is made, not when its future is first polled, as a
        // service's own synchronous part would.
        let token = self.hook.before(cx, &req);
        async move {
            let token = token?;
            let result = self.inner.call(cx, req).await;
            self.hook.after(token, cx, result.as_ref());
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;
    use crate::clock::block_on;
    use crate::service_fn;

    /// Logs its events; rejects when the request equals `reject`.
    struct Logger<'l> {
        name: &'static str,
        reject: u32,
        log: &'l RefCell<Vec<String>>,
    }

    struct Token<'l> {
        name: &'static str,
        log: &'l RefCell<Vec<String>>,
        done: bool,
    }

    impl Drop for Token<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.log.borrow_mut().push(format!("{} dropped", self.name));
            }
        }
    }

    impl<'l> CallHook<(), u32, u32, String> for Logger<'l> {
        type Token<'a>
            = Token<'l>
        where
            Self: 'a;

        fn before<'a>(&'a self, _: &mut (), req: &u32) -> Result<Token<'l>, String> {
            self.log.borrow_mut().push(format!("{} before", self.name));
            if *req == self.reject {
                return Err(format!("{} rejects", self.name));
            }
            Ok(Token {
                name: self.name,
                log: self.log,
                done: false,
            })
        }

        fn after(&self, mut token: Token<'l>, _: &(), result: Result<&u32, &String>) {
            token.done = true;
            self.log
                .borrow_mut()
                .push(format!("{} after {result:?}", self.name));
        }
    }

    #[test]
    fn hooks_run_in_order_around_the_call_and_unwind_a_rejection() {
        let log = RefCell::new(Vec::new());
        let logger = |name, reject| Logger {
            name,
            reject,
            log: &log,
        };
        let svc = HookLayer::new((logger("a", 1), (None::<Logger>, Some(logger("b", 2))))).layer(
            service_fn(|_: &mut (), req: u32| {
                log.borrow_mut().push("call".into());
                async move { Ok::<_, String>(req * 10) }
            }),
        );
        let take = || std::mem::take(&mut *log.borrow_mut());

        assert_eq!(block_on(svc.call(&mut (), 3)), Ok(30));
        assert_eq!(
            take(),
            [
                "a before",
                "b before",
                "call",
                "b after Ok(30)",
                "a after Ok(30)"
            ]
        );
        // `b` rejects: `a`, already past its `before`, sees the rejection; nothing is called.
        assert_eq!(block_on(svc.call(&mut (), 2)), Err("b rejects".into()));
        assert_eq!(
            take(),
            ["a before", "b before", "a after Err(\"b rejects\")"]
        );
        // `a` rejects: `b` never runs.
        assert_eq!(block_on(svc.call(&mut (), 1)), Err("a rejects".into()));
        assert_eq!(take(), ["a before"]);
    }

    #[test]
    fn a_call_dropped_before_it_finishes_drops_its_tokens() {
        let log = RefCell::new(Vec::new());
        let svc = HookLayer::new(Some(Logger {
            name: "a",
            reject: 0,
            log: &log,
        }))
        .layer(service_fn(|_: &mut (), _: u32| {
            std::future::pending::<Result<u32, String>>()
        }));
        let mut cx = ();
        {
            let mut fut = pin!(svc.call(&mut cx, 5));
            let mut waker_cx = Context::from_waker(Waker::noop());
            assert!(fut.as_mut().poll(&mut waker_cx).is_pending());
        }
        assert_eq!(*log.borrow(), ["a before", "a dropped"]);
    }
}
