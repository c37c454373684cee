//! Service discovery: resolving a service name to its instances, and registering a server.
//!
//! - [`Resolver`]: `resolve` once, or `watch` a service and get a [`Snapshot`] of its instances
//!   every time the list changes (the first one at once). Snapshots are delivered on the
//!   resolver's own thread, never on a core's request path.
//! - [`Registry`]: a server announces itself on start ([`Registry::register`]) and withdraws on
//!   shutdown ([`Registry::deregister`]).
//! - [`StaticResolver`]: a fixed list, for tests and for clients given addresses directly.
//! - etcd: crate `ringrpc-discovery-etcd` (`EtcdRegistry`, `EtcdResolver`) implements these
//!   traits, keys `kitex/registry-etcd/<service>/<addr>` (kitex-contrib/registry-etcd's layout)
//!   bound to a lease kept alive by the registrant. It is a crate of its own so that this one
//!   has no sockets, tokio or protoc.
//!
//! Balancers are per core ([`crate::balance`]), so a snapshot must reach every core. A
//! [`CoreFanout`] does that: its [`CoreFanout::sink`] is the watch callback; it posts each
//! snapshot to every core with [`RuntimeHandle::post`](ringrpc_engine::RuntimeHandle::post), where the balancers (and any other
//! per-core state, such as [`crate::breaker::InstanceBreakers`]) registered on that core with
//! [`CoreFanout::subscribe`] apply it. A core that subscribes late gets the latest snapshot at
//! once.
//!
//! ```ignore
//! // Client builder (once): watch the service, fan snapshots out to the cores.
//! let fanout = CoreFanout::new(runtime.handle());
//! let _watch = resolver.watch("echo", fanout.sink())?; // keep alive as long as the client
//! // On each core, when its pipeline is built:
//! let lb = Rc::new(WeightedRoundRobin::new(Vec::new()));
//! fanout.subscribe_balancer(&lb);
//! ```

mod fanout;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

pub use fanout::CoreFanout;

use crate::balance::Instance;

/// The instances of one service at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The service's name.
    pub service: Arc<str>,
    /// The registry's revision this list reflects (etcd's store revision; `0` for static lists).
    pub revision: u64,
    /// The instances, sorted by address.
    pub instances: Arc<[Instance]>,
}

impl Snapshot {
    /// A snapshot of `instances` (sorted here by address) at `revision`.
    pub fn new(service: impl Into<Arc<str>>, revision: u64, mut instances: Vec<Instance>) -> Self {
        instances.sort_by_key(|i| i.addr);
        Self {
            service: service.into(),
            revision,
            instances: instances.into(),
        }
    }

    /// The addresses listed, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.instances.iter().map(|i| i.addr).collect()
    }
}

/// Receives every snapshot of a watched service, on the resolver's thread.
pub type SnapshotFn = Arc<dyn Fn(Snapshot) + Send + Sync>;

/// Errors of discovery and registration.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The registry could not be reached or refused the request.
    #[error("registry request failed: {0}")]
    Registry(String),
    /// A registry entry or a registration could not be encoded or decoded.
    #[error("bad registry entry {key:?}: {reason}")]
    BadEntry {
        /// The entry's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The service name is empty or contains `/`.
    #[error("invalid service name {0:?}")]
    InvalidService(String),
    /// The resolver or registry has shut down.
    #[error("discovery is shut down")]
    Closed,
    /// The request did not finish in time.
    #[error("registry request timed out")]
    Timeout,
}

/// Checks a service name: non-empty, no `/` (it is one path segment of the registry key).
///
/// # Errors
/// [`DiscoveryError::InvalidService`].
pub fn check_service(service: &str) -> Result<(), DiscoveryError> {
    if service.is_empty() || service.contains('/') {
        return Err(DiscoveryError::InvalidService(service.to_owned()));
    }
    Ok(())
}

/// Stops a watch when dropped (or on [`WatchHandle::stop`]).
pub struct WatchHandle {
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHandle")
            .field("active", &self.stop.is_some())
            .finish()
    }
}

impl WatchHandle {
    /// A handle running `stop` once, when stopped or dropped.
    pub fn new(stop: impl FnOnce() + Send + 'static) -> Self {
        Self {
            stop: Some(Box::new(stop)),
        }
    }

    /// A handle with nothing to stop (a watch that never changes).
    pub fn inert() -> Self {
        Self { stop: None }
    }

    /// Stops the watch. A snapshot already being delivered on the resolver's thread may still
    /// arrive; none is started afterwards.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// Resolves service names to instances (Kitex's `discovery.Resolver`).
///
/// Implementations do their I/O off the cores; both methods may block the calling thread
/// briefly and must not be called from a core's task. Build the client's watch once, from the
/// client builder.
pub trait Resolver: Send + Sync {
    /// The current instances of `service`.
    ///
    /// # Errors
    /// [`DiscoveryError`] when the registry cannot answer.
    fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError>;

    /// Watches `service`: `on_change` gets the current list first, then a new snapshot every
    /// time the list changes, until the returned handle is dropped. Transient registry
    /// failures are retried inside; the last snapshot stays valid meanwhile.
    ///
    /// # Errors
    /// [`DiscoveryError`] when the watch cannot be started.
    fn watch(&self, service: &str, on_change: SnapshotFn) -> Result<WatchHandle, DiscoveryError>;
}

impl<R: Resolver + ?Sized> Resolver for Arc<R> {
    fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        (**self).resolve(service)
    }

    fn watch(&self, service: &str, on_change: SnapshotFn) -> Result<WatchHandle, DiscoveryError> {
        (**self).watch(service, on_change)
    }
}

/// What a server announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The service's name (one registry path segment: no `/`).
    pub service: String,
    /// The address clients should call, with its weight and tags.
    pub instance: Instance,
}

impl Registration {
    /// `instance` of `service`.
    pub fn new(service: impl Into<String>, instance: Instance) -> Self {
        Self {
            service: service.into(),
            instance,
        }
    }
}

/// Where servers announce themselves (Kitex's `registry.Registry`).
///
/// A server calls [`Registry::register`] once it listens and [`Registry::deregister`] when it
/// begins to shut down (before draining, so clients stop sending new calls). Both may block
/// briefly; call them from the server's builder or shutdown path, not from a core's task.
pub trait Registry: Send + Sync {
    /// Announces `registration` and keeps it announced until deregistered.
    ///
    /// # Errors
    /// [`DiscoveryError`] when the registry refuses or cannot be reached.
    fn register(&self, registration: &Registration) -> Result<(), DiscoveryError>;

    /// Withdraws `registration`. Withdrawing one that is not registered is not an error.
    ///
    /// # Errors
    /// [`DiscoveryError`] when the registry cannot be reached.
    fn deregister(&self, registration: &Registration) -> Result<(), DiscoveryError>;
}

/// A resolver over fixed lists: every service it knows has the same instances forever.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    services: std::collections::HashMap<String, Vec<Instance>>,
}

impl StaticResolver {
    /// A resolver that knows no service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `service` with `instances`.
    pub fn service(mut self, service: impl Into<String>, instances: Vec<Instance>) -> Self {
        self.services.insert(service.into(), instances);
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        check_service(service)?;
        Ok(self.services.get(service).cloned().unwrap_or_default())
    }

    fn watch(&self, service: &str, on_change: SnapshotFn) -> Result<WatchHandle, DiscoveryError> {
        let instances = self.resolve(service)?;
        on_change(Snapshot::new(service, 0, instances));
        Ok(WatchHandle::inert())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn static_resolver_lists_and_watches_once() {
        let r = StaticResolver::new().service(
            "echo",
            vec![Instance::new(addr(2), 10), Instance::new(addr(1), 5)],
        );
        assert_eq!(r.resolve("echo").unwrap().len(), 2);
        assert!(r.resolve("other").unwrap().is_empty());
        assert!(matches!(
            r.resolve("a/b"),
            Err(DiscoveryError::InvalidService(_))
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let h = r
            .watch(
                "echo",
                Arc::new(move |s: Snapshot| s2.lock().unwrap().push(s)),
            )
            .unwrap();
        drop(h);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].addrs(), vec![addr(1), addr(2)]);
        assert_eq!(&*seen[0].service, "echo");
    }

    #[test]
    fn watch_handle_stops_once() {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n2 = n.clone();
        let h = WatchHandle::new(move || {
            n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        h.stop();
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
