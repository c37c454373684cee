//! Access control: reject functions that run before a call, on the server or the client.
//!
//! An [`AclLayer`] holds rules `Fn(&Cx, &Req) -> Result<(), AclError>`; each call runs them in
//! order and the first rejection ends the call with that [`AclError`], before any inner layer
//! (or the handler) runs. Rules see the whole context: the caller's address, method and
//! metainfo on a server; the method and target on a client (Kitex's `WithACLRules`). The rules
//! are a [`CallHook`], so they can share one stage with other hooks. Rules are
//! `Arc`-shared and `Send + Sync`, so one [`AclRules`] list configures every core.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::hook::{reject, CallHook, Hooked};
use crate::Layer;

/// Why a rule rejected a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The caller may not make this call.
    #[error("rejected by access control: {0}")]
    Rejected(String),
}

impl AclError {
    /// A rejection with `reason`.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }
}

/// One rule.
pub type AclRule<Cx, Req> = Arc<dyn Fn(&Cx, &Req) -> Result<(), AclError> + Send + Sync>;

/// An ordered list of rules, cheap to clone into each core's pipeline.
pub struct AclRules<Cx, Req> {
    rules: Vec<AclRule<Cx, Req>>,
}

impl<Cx, Req> Clone for AclRules<Cx, Req> {
    fn clone(&self) -> Self {
        Self {
            rules: self.rules.clone(),
        }
    }
}

impl<Cx, Req> Default for AclRules<Cx, Req> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<Cx, Req> std::fmt::Debug for AclRules<Cx, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclRules")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl<Cx, Req> AclRules<Cx, Req> {
    /// No rules: everything passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule, checked after the ones before it.
    pub fn rule(
        mut self,
        rule: impl Fn(&Cx, &Req) -> Result<(), AclError> + Send + Sync + 'static,
    ) -> Self {
        self.rules.push(Arc::new(rule));
        self
    }

    /// Runs the rules in order.
    ///
    /// # Errors
    /// The first rejection.
    pub fn check(&self, cx: &Cx, req: &Req) -> Result<(), AclError> {
        self.rules.iter().try_for_each(|r| r(cx, req))
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Builds [`Acl`] services checking `rules`.
#[derive(Debug, Clone)]
pub struct AclLayer<Cx, Req> {
    rules: AclRules<Cx, Req>,
}

impl<Cx, Req> AclLayer<Cx, Req> {
    /// A layer checking `rules`.
    pub fn new(rules: AclRules<Cx, Req>) -> Self {
        Self { rules }
    }
}

impl<S, Cx, Req> Layer<S> for AclLayer<Cx, Req> {
    type Service = Acl<S, Cx, Req>;

    fn layer(self, inner: S) -> Self::Service {
        Hooked::new(inner, self.rules)
    }
}

/// A service that runs the rules before each call and fails it with [`AclError`] on rejection.
pub type Acl<S, Cx, Req> = Hooked<S, AclRules<Cx, Req>>;

/// The rules as a hook: they run before the call and have nothing to do after it.
impl<Cx, Req, Res, Err: From<AclError>> CallHook<Cx, Req, Res, Err> for AclRules<Cx, Req> {
    type Token<'a>
        = ()
    where
        Self: 'a;

    fn before(&self, cx: &mut Cx, req: &Req) -> ControlFlow<Result<Res, Err>> {
        match self.check(cx, req) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => reject(e),
        }
    }

    fn after(&self, (): (), _: &mut Cx, result: Result<Res, Err>) -> Result<Res, Err> {
        result
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::clock::block_on;
    use crate::{service_fn, Service};

    struct Cx {
        caller: &'static str,
    }

    #[derive(Debug, PartialEq)]
    enum Error {
        Acl(AclError),
    }
    impl From<AclError> for Error {
        fn from(e: AclError) -> Self {
            Self::Acl(e)
        }
    }

    #[test]
    fn rules_run_in_order_and_the_first_rejection_stops_the_call() {
        let rules = AclRules::new()
            .rule(|cx: &Cx, _: &u32| {
                if cx.caller == "banned" {
                    Err(AclError::rejected("caller banned"))
                } else {
                    Ok(())
                }
            })
            .rule(|_, req| {
                if *req > 100 {
                    Err(AclError::rejected("request too large"))
                } else {
                    Ok(())
                }
            });
        let handled = Cell::new(0);
        let svc = AclLayer::new(rules.clone()).layer(service_fn(|_: &mut Cx, req: u32| {
            handled.set(handled.get() + 1);
            async move { Ok::<_, Error>(req) }
        }));
        let call = |caller, req| block_on(svc.call(&mut Cx { caller }, req));
        assert_eq!(call("alice", 5), Ok(5));
        assert_eq!(
            call("banned", 500),
            Err(Error::Acl(AclError::rejected("caller banned")))
        );
        assert_eq!(
            call("alice", 500),
            Err(Error::Acl(AclError::rejected("request too large")))
        );
        assert_eq!(handled.get(), 1);
        assert!(AclRules::<Cx, u32>::new()
            .check(&Cx { caller: "x" }, &1)
            .is_ok());
        assert!(!rules.is_empty());
    }
}
