//! Synchronous stages as hooks: [`CallHook`], and [`Hooked`], a service running one around
//! its inner service.
//!
//! Most governance stages do their work before and after the call, not during it: an ACL
//! rule or a breaker admits or rejects, a limiter takes a permit, metrics note the start; when
//! the call ends, the breaker records the outcome, the permit is freed, the latency is
//! recorded. As hooks they need no future of their own: the client's and the server's stacks
//! (`ClientStack`, `ServerStack`) call each configured hook's `before` in order and its
//! `after` in reverse around one call, and an unconfigured hook is a `None` that costs a
//! branch. A hook may also change the result on its way out (a fallback turning an error into
//! a reply), so the hooks outside it see what it made of the result. `Hooked<S, (A, (B, C))>`
//! does the same for hooks nested in pairs, for pipelines assembled from layers.
//!
//! What a hook must do if the call never finishes (its future is dropped: cancelled, or timed
//! out from outside) lives in its token's `Drop`, as with any RAII guard.

use std::ops::ControlFlow;

use crate::{Layer, Service};

/// Work done synchronously around a call of a service answering `Result<Res, Err>`.
pub trait CallHook<Cx, Req, Res, Err> {
    /// What [`before`](Self::before) hands to [`after`](Self::after): a breaker's ticket, a
    /// permit, a start time. Dropped without `after`, it does what the hook owes a call that
    /// never finished.
    type Token<'a>
    where
        Self: 'a;

    /// Runs when the call starts. `Break(result)` ends the call with `result` before the
    /// inner service runs: the hook's rejection (an ACL rule, an open breaker, a limit), or
    /// what the hooks before it made of that rejection.
    fn before<'a>(
        &'a self,
        cx: &mut Cx,
        req: &Req,
    ) -> ControlFlow<Result<Res, Err>, Self::Token<'a>>;

    /// Runs when the call finishes with `result` (also when a later hook rejected it) and
    /// returns the call's result: `result` itself, or what the hook makes of it.
    fn after(
        &self,
        token: Self::Token<'_>,
        cx: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err>;
}

/// A rejection by a hook: ends the call with `error`.
pub fn reject<T, Res, Err>(error: impl Into<Err>) -> ControlFlow<Result<Res, Err>, T> {
    ControlFlow::Break(Err(error.into()))
}

/// No hook.
impl<Cx, Req, Res, Err> CallHook<Cx, Req, Res, Err> for () {
    type Token<'a>
        = ()
    where
        Self: 'a;

    fn before(&self, _: &mut Cx, _: &Req) -> ControlFlow<Result<Res, Err>> {
        ControlFlow::Continue(())
    }

    fn after(&self, (): (), _: &mut Cx, result: Result<Res, Err>) -> Result<Res, Err> {
        result
    }
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

    fn before<'a>(
        &'a self,
        cx: &mut Cx,
        req: &Req,
    ) -> ControlFlow<Result<Res, Err>, Self::Token<'a>> {
        match self {
            Some(h) => h.before(cx, req).map_continue(Some),
            None => ControlFlow::Continue(None),
        }
    }

    fn after(
        &self,
        token: Self::Token<'_>,
        cx: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err> {
        match (self, token) {
            (Some(h), Some(t)) => h.after(t, cx, result),
            _ => result,
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

    fn before<'a>(
        &'a self,
        cx: &mut Cx,
        req: &Req,
    ) -> ControlFlow<Result<Res, Err>, Self::Token<'a>> {
        (**self).before(cx, req)
    }

    fn after(
        &self,
        token: Self::Token<'_>,
        cx: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err> {
        (**self).after(token, cx, result)
    }
}

/// `A` around `B`: `A` runs first before the call and last after it, and sees `B`'s rejection
/// (or what `B` made of the result) as the call's result.
impl<Cx, Req, Res, Err, A, B> CallHook<Cx, Req, Res, Err> for (A, B)
where
    A: CallHook<Cx, Req, Res, Err>,
    B: CallHook<Cx, Req, Res, Err>,
{
    type Token<'a>
        = (A::Token<'a>, B::Token<'a>)
    where
        Self: 'a;

    fn before<'a>(
        &'a self,
        cx: &mut Cx,
        req: &Req,
    ) -> ControlFlow<Result<Res, Err>, Self::Token<'a>> {
        let a = self.0.before(cx, req)?;
        match self.1.before(cx, req) {
            ControlFlow::Continue(b) => ControlFlow::Continue((a, b)),
            ControlFlow::Break(result) => ControlFlow::Break(self.0.after(a, cx, result)),
        }
    }

    fn after(
        &self,
        (a, b): Self::Token<'_>,
        cx: &mut Cx,
        result: Result<Res, Err>,
    ) -> Result<Res, Err> {
        let result = self.1.after(b, cx, result);
        self.0.after(a, cx, result)
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

    // The hooks run when the future is first polled: a rejection is returned there and then,
    // and only the token is kept across the call (taken when the call was made, a whole result
    // would sit in every call's future). A future dropped unpolled takes nothing (no permit,
    // no breaker ticket, no call counted).
    async fn call(&self, cx: &mut Cx, req: Req) -> Result<Self::Response, Self::Error> {
        let token = match self.hook.before(cx, &req) {
            ControlFlow::Continue(token) => token,
            ControlFlow::Break(result) => return result,
        };
        let result = self.inner.call(cx, req).await;
        self.hook.after(token, cx, result)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;
    use crate::clock::block_on;
    use crate::service_fn;

    /// Logs its events; rejects when the request equals `reject`; turns errors into
    /// `Ok(rescue)` when `rescue` is set.
    struct Logger<'l> {
        name: &'static str,
        reject: u32,
        rescue: Option<u32>,
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

        fn before<'a>(
            &'a self,
            _: &mut (),
            req: &u32,
        ) -> ControlFlow<Result<u32, String>, Token<'l>> {
            self.log.borrow_mut().push(format!("{} before", self.name));
            if *req == self.reject {
                return reject(format!("{} rejects", self.name));
            }
            ControlFlow::Continue(Token {
                name: self.name,
                log: self.log,
                done: false,
            })
        }

        fn after(
            &self,
            mut token: Token<'l>,
            _: &mut (),
            result: Result<u32, String>,
        ) -> Result<u32, String> {
            token.done = true;
            self.log
                .borrow_mut()
                .push(format!("{} after {result:?}", self.name));
            match (result, self.rescue) {
                (Err(_), Some(r)) => Ok(r),
                (result, _) => result,
            }
        }
    }

    #[test]
    fn hooks_run_in_order_around_the_call_and_unwind_a_rejection() {
        let log = RefCell::new(Vec::new());
        let logger = |name, reject| Logger {
            name,
            reject,
            rescue: None,
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
    fn a_hook_that_changes_the_result_is_seen_changed_by_the_hooks_outside_it() {
        let log = RefCell::new(Vec::new());
        let logger = |name, reject, rescue| Logger {
            name,
            reject,
            rescue,
            log: &log,
        };
        let hooks = (
            logger("outer", 0, None),
            (logger("rescuer", 0, Some(7)), logger("inner", 2, None)),
        );
        let svc = HookLayer::new(hooks).layer(service_fn(|_: &mut (), req: u32| async move {
            if req == 3 {
                Err("failed".to_owned())
            } else {
                Ok(req)
            }
        }));
        let take = || std::mem::take(&mut *log.borrow_mut());

        // The inner hook's rejection, rescued: the outer hook and the caller see Ok(7).
        assert_eq!(block_on(svc.call(&mut (), 2)), Ok(7));
        assert_eq!(
            take(),
            [
                "outer before",
                "rescuer before",
                "inner before",
                "rescuer after Err(\"inner rejects\")",
                "outer after Ok(7)"
            ]
        );
        // The service's error, rescued; the inner hook saw the error itself.
        assert_eq!(block_on(svc.call(&mut (), 3)), Ok(7));
        let events = take();
        assert_eq!(events[3], "inner after Err(\"failed\")");
        assert_eq!(events[5], "outer after Ok(7)");
        assert_eq!(block_on(svc.call(&mut (), 4)), Ok(4));
    }

    #[test]
    fn a_call_dropped_before_it_finishes_drops_its_tokens() {
        let log = RefCell::new(Vec::new());
        let svc = HookLayer::new(Some(Logger {
            name: "a",
            reject: 0,
            rescue: None,
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
