//! Client-side load balancing over a list of weighted instances.
//!
//! Four strategies, all per core (interior mutability with `Cell`/`RefCell`, no locks) and all
//! taking an availability filter so that instances a circuit breaker has opened are skipped
//! ([`crate::breaker::InstanceBreakers::is_available`]):
//! - [`WeightedRoundRobin`]: nginx's smooth weighted round-robin, exact shares, evenly interleaved;
//! - [`WeightedRandom`]: a weighted random draw, stateless between picks;
//! - [`PowerOfTwo`]: two random candidates, the one with fewer calls in flight on this core wins;
//! - [`ConsistentHash`]: a ring of virtual nodes keyed by a hash from the call, so the same key
//!   goes to the same instance and an instance leaving moves only its own keys.
//!
//! [`BalanceLayer`] wraps the transport: it picks an instance for each call, writes it into the
//! context ([`CallTarget`]), and restores the context's target after the call so that a retry
//! layer outside it gets a fresh pick per attempt. A target already set on entry (the caller
//! pinned an address) is used as is.

mod consistent;
mod p2c;
mod random;
pub mod rng;
mod wrr;

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;

pub use consistent::{ConsistentHash, ConsistentHashConfig};
pub use p2c::PowerOfTwo;
pub use random::WeightedRandom;
pub use rng::{hash_key, FastRng};
pub use wrr::WeightedRoundRobin;

use crate::hook::CallHook;
use crate::{Layer, Service};

/// One instance of the called service, as service discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative weight; `0` means "never pick". Kitex's default weight is 10.
    pub weight: u32,
    /// Discovery tags (zone, cluster, version, ...), for filters and routing.
    pub tags: HashMap<String, String>,
}

impl Instance {
    /// An instance with `weight` and no tags.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Self {
            addr,
            weight,
            tags: HashMap::new(),
        }
    }

    /// Adds a tag.
    pub fn with_tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }
}

/// Why no instance could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// The instance list is empty (or every weight is zero).
    #[error("no instance to call")]
    NoInstance,
    /// Every instance is filtered out (for example, all their breakers are open).
    #[error("no available instance: all {0} are filtered out")]
    NoAvailable(usize),
}

/// Counts one call in flight on an instance until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    count: Rc<Cell<usize>>,
}

impl InFlightGuard {
    /// Increments `count` until the guard drops.
    pub fn new(count: Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        Self { count }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.set(self.count.get().saturating_sub(1));
    }
}

/// The outcome of a pick: the address, and for balancers that track load, a guard to hold for
/// the duration of the call.
#[derive(Debug)]
pub struct Picked {
    /// The chosen instance.
    pub addr: SocketAddr,
    /// Held while the call runs ([`PowerOfTwo`]); `None` for the others.
    pub guard: Option<InFlightGuard>,
}

impl Picked {
    /// A pick without load tracking.
    pub fn addr(addr: SocketAddr) -> Self {
        Self { addr, guard: None }
    }
}

/// A load-balancing strategy, used from one core.
pub trait LoadBalancer {
    /// Picks an instance for a call with hash `key` (only [`ConsistentHash`] uses it) among
    /// those for which `available(addr)` holds.
    ///
    /// # Errors
    /// [`BalanceError`] when nothing can be picked.
    fn pick(
        &self,
        key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError>;

    /// Replaces the instance list (discovery changed). Counters of instances that stay are kept
    /// where the strategy has any.
    fn update(&self, instances: Vec<Instance>);

    /// The current instance list.
    fn instances(&self) -> Vec<Instance>;
}

impl<B: LoadBalancer + ?Sized> LoadBalancer for Rc<B> {
    fn pick(
        &self,
        key: u64,
        available: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Picked, BalanceError> {
        (**self).pick(key, available)
    }

    fn update(&self, instances: Vec<Instance>) {
        (**self).update(instances);
    }

    fn instances(&self) -> Vec<Instance> {
        (**self).instances()
    }
}

/// A call context that says which instance the call goes to.
///
/// The client's context implements it over its `address` field.
pub trait CallTarget {
    /// The instance chosen for the call (or pinned by the caller), if any.
    fn target(&self) -> Option<SocketAddr>;
    /// Sets the instance.
    fn set_target(&mut self, target: Option<SocketAddr>);

    /// Whether an earlier attempt of this call failed on `addr`; [`Balance`] then prefers the
    /// other instances (a retry goes elsewhere when it can). Default: never.
    fn failed_on(&self, _addr: SocketAddr) -> bool {
        false
    }

    /// Records that an attempt of this call failed on `addr` (called by [`Balance`]). Default:
    /// forgets it.
    fn note_failure(&mut self, _addr: SocketAddr) {}
}

/// Where a [`BalanceLayer`] gets a call's hash key from.
pub trait PickKey<Cx, Req> {
    /// The key of this call (only [`ConsistentHash`] uses it).
    fn key(&self, cx: &Cx, req: &Req) -> u64;
}

/// No key: every call hashes to 0. Right for every balancer but [`ConsistentHash`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Cx, Req> PickKey<Cx, Req> for NoKey {
    fn key(&self, _: &Cx, _: &Req) -> u64 {
        0
    }
}

impl<Cx, Req, F: Fn(&Cx, &Req) -> u64> PickKey<Cx, Req> for F {
    fn key(&self, cx: &Cx, req: &Req) -> u64 {
        self(cx, req)
    }
}

/// An availability filter shared by the balancing service of one core.
pub type AvailabilityFilter = Rc<dyn Fn(SocketAddr) -> bool>;

/// Builds [`Balance`] services: pick an instance with `B`, skipping those `filter` rejects,
/// and run the hook `H` around the call to the picked instance.
pub struct BalanceLayer<B, K = NoKey, H = ()> {
    balancer: B,
    filter: Option<AvailabilityFilter>,
    key: K,
    hook: H,
}

impl<B: std::fmt::Debug, K: std::fmt::Debug, H> std::fmt::Debug for BalanceLayer<B, K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("balancer", &self.balancer)
            .field("filtered", &self.filter.is_some())
            .field("key", &self.key)
            .finish()
    }
}

impl<B: LoadBalancer> BalanceLayer<B> {
    /// A layer balancing with `balancer` (typically an `Rc` also held by whoever applies
    /// discovery updates on this core), with no filter and no key.
    pub fn new(balancer: B) -> Self {
        Self {
            balancer,
            filter: None,
            key: NoKey,
            hook: (),
        }
    }
}

impl<B: LoadBalancer, K, H> BalanceLayer<B, K, H> {
    /// Skips instances for which `filter(addr)` is false, e.g.
    /// `move |a| breakers.is_available(a)` over [`crate::breaker::InstanceBreakers`].
    pub fn filter(mut self, filter: impl Fn(SocketAddr) -> bool + 'static) -> Self {
        self.filter = Some(Rc::new(filter));
        self
    }

    /// Hashes each call with `key` (for [`ConsistentHash`]); `key` may be a closure
    /// `Fn(&Cx, &Req) -> u64`, typically [`hash_key`] over a field of the request or metainfo.
    pub fn key<K2>(self, key: K2) -> BalanceLayer<B, K2, H> {
        BalanceLayer {
            balancer: self.balancer,
            filter: self.filter,
            key,
            hook: self.hook,
        }
    }

    /// Runs `hook` around each call once its instance is picked (and set as the context's
    /// target): typically an [`InstanceBreakerHook`](crate::breaker::InstanceBreakerHook), in
    /// this stage rather than in one of its own around the transport.
    pub fn hook<H2>(self, hook: H2) -> BalanceLayer<B, K, H2> {
        BalanceLayer {
            balancer: self.balancer,
            filter: self.filter,
            key: self.key,
            hook,
        }
    }
}

impl<S, B, K, H> Layer<S> for BalanceLayer<B, K, H> {
    type Service = Balance<S, B, K, H>;

    fn layer(self, inner: S) -> Self::Service {
        Balance { inner, layer: self }
    }
}

/// A service that routes each call to an instance picked by its balancer; see [`BalanceLayer`].
pub struct Balance<S, B, K, H = ()> {
    inner: S,
    layer: BalanceLayer<B, K, H>,
}

impl<S: std::fmt::Debug, B: std::fmt::Debug, K: std::fmt::Debug, H> std::fmt::Debug
    for Balance<S, B, K, H>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, B, K, H> Balance<S, B, K, H> {
    /// The balancer (to apply discovery updates through [`LoadBalancer::update`]).
    pub fn balancer(&self) -> &B {
        &self.layer.balancer
    }
}

impl<B, K, H> BalanceLayer<B, K, H> {
    /// Runs `inner`'s call of `req` on the instance this layer picks (or the context's pinned
    /// target), with the hook around it: what a [`Balance`] service does, for a pipeline that
    /// holds its stages side by side.
    pub fn around<'s, 'c, Cx, Req, S>(
        &'s self,
        inner: &'s S,
        cx: &'c mut Cx,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, S::Error>> + use<'s, 'c, Cx, Req, S, B, K, H>
    where
        Cx: CallTarget,
        S: Service<Cx, Req>,
        S::Error: From<BalanceError>,
        B: LoadBalancer,
        K: PickKey<Cx, Req>,
        H: CallHook<Cx, Req, S::Response, S::Error>,
    {
        let pinned = cx.target();
        let picked = match pinned {
            Some(addr) => Ok(Picked::addr(addr)),
            None => {
                let key = self.key.key(cx, &req);
                let allowed = |a| self.filter.as_ref().is_none_or(|f| f(a));
                // Instances this call already failed on come last: first without them, then,
                // if nothing else is available, with them.
                match self.balancer.pick(key, &|a| allowed(a) && !cx.failed_on(a)) {
                    Err(BalanceError::NoAvailable(_)) => self.balancer.pick(key, &allowed),
                    picked => picked,
                }
            }
        };
        async move {
            let picked = picked?;
            cx.set_target(Some(picked.addr));
            let result = match self.hook.before(cx, &req) {
                ControlFlow::Continue(token) => {
                    let result = inner.call(cx, req).await;
                    self.hook.after(token, cx, result)
                }
                ControlFlow::Break(result) => result,
            };
            drop(picked.guard);
            if result.is_err() && pinned.is_none() {
                cx.note_failure(picked.addr);
            }
            cx.set_target(pinned);
            result
        }
    }
}

impl<Cx, Req, S, B, K, H> Service<Cx, Req> for Balance<S, B, K, H>
where
    Cx: CallTarget,
    S: Service<Cx, Req>,
    S::Error: From<BalanceError>,
    B: LoadBalancer,
    K: PickKey<Cx, Req>,
    H: CallHook<Cx, Req, S::Response, S::Error>,
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
pub(crate) mod tests {
    use super::*;
    use crate::service_fn;

    /// `n` instances `10.0.0.i:9000` with the given weights.
    pub(crate) fn instances(weights: &[u32]) -> Vec<Instance> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Instance::new(SocketAddr::from(([10, 0, 0, i as u8 + 1], 9000)), *w))
            .collect()
    }

    pub(crate) fn index(addr: SocketAddr) -> usize {
        match addr {
            SocketAddr::V4(a) => a.ip().octets()[3] as usize - 1,
            SocketAddr::V6(_) => unreachable!("tests use v4"),
        }
    }

    #[derive(Default)]
    struct Cx {
        target: Option<SocketAddr>,
    }

    impl CallTarget for Cx {
        fn target(&self) -> Option<SocketAddr> {
            self.target
        }
        fn set_target(&mut self, target: Option<SocketAddr>) {
            self.target = target;
        }
    }

    #[derive(Debug, PartialEq)]
    enum Error {
        Balance(BalanceError),
    }

    impl From<BalanceError> for Error {
        fn from(e: BalanceError) -> Self {
            Self::Balance(e)
        }
    }

    #[test]
    fn layer_sets_target_for_the_inner_call_and_restores_it() {
        let lb = Rc::new(WeightedRoundRobin::new(instances(&[1, 1])));
        let svc = BalanceLayer::new(lb.clone())
            .filter(|a| index(a) == 1)
            .layer(service_fn(|cx: &mut Cx, ()| {
                let t = cx.target;
                async move { Ok::<_, Error>(t) }
            }));
        let mut cx = Cx::default();
        let got = crate::clock::block_on(svc.call(&mut cx, ())).unwrap();
        assert_eq!(got.map(index), Some(1));
        assert_eq!(cx.target, None);

        // A pinned target passes through.
        let pinned = SocketAddr::from(([127, 0, 0, 1], 1));
        cx.target = Some(pinned);
        let got = crate::clock::block_on(svc.call(&mut cx, ())).unwrap();
        assert_eq!(got, Some(pinned));
        assert_eq!(cx.target, Some(pinned));

        // Nothing available.
        let none = BalanceLayer::new(lb)
            .filter(|_| false)
            .layer(service_fn(|_: &mut Cx, ()| async { Ok::<_, Error>(()) }));
        let r = crate::clock::block_on(none.call(&mut Cx::default(), ()));
        assert_eq!(r, Err(Error::Balance(BalanceError::NoAvailable(2))));
    }

    #[test]
    fn p2c_guard_is_held_for_the_call() {
        let lb = Rc::new(PowerOfTwo::with_rng(instances(&[1]), FastRng::new(1)));
        let lb2 = lb.clone();
        let svc = BalanceLayer::new(lb.clone()).layer(service_fn(move |cx: &mut Cx, ()| {
            let n = lb2.in_flight(cx.target.unwrap());
            async move { Ok::<_, Error>(n) }
        }));
        let got = crate::clock::block_on(svc.call(&mut Cx::default(), ())).unwrap();
        assert_eq!(got, 1);
        assert_eq!(lb.in_flight(instances(&[1])[0].addr), 0);
    }
}
