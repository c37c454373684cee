//! etcd service discovery for ringrpc: [`EtcdRegistry`] and [`EtcdResolver`], implementing
//! `ringrpc-governance`'s [`Registry`] and [`Resolver`] on the `etcd-client` crate.
//!
//! A crate of its own so that governance (the traits, [`Snapshot`], the per-core fan-out) builds
//! and tests without sockets, tokio or protoc: only code that talks to etcd depends on this one.
//! etcd-client generates its gRPC stubs with protoc at build time (Debian's `protobuf-compiler`;
//! scripts/install-test-deps.sh installs it).
//!
//! Layout, that of kitex-contrib/registry-etcd (checked against its `common.go`,
//! `etcd_registry.go` and `etcd_resolver.go`, see docs/governance.md): key
//! `<prefix>/<service>/<addr>` with the default prefix `kitex/registry-etcd`, value JSON
//! `{"network":"tcp","address":"<addr>","weight":10,"tags":{..}}`. Read as Kitex's resolver
//! reads it: a weight of 0 or less (or none) is the default weight 10, and `"tags": null` (what
//! a Kitex server without tags writes) is no tags. So Kitex servers and ringrpc servers can
//! register the same service, and Kitex and ringrpc clients resolve both.
//!
//! - [`EtcdRegistry`]: each registration is put with its own lease of `ttl`, kept alive by a
//!   task (every `ttl / 3`); if the lease is lost (etcd restarted, a long partition) the task
//!   grants a new one and puts the key again. [`Registry::deregister`] (and dropping the
//!   registry) revokes the lease, which deletes the key at once. A registrant that dies stops
//!   the keep-alives and its key disappears when the lease expires, at most `ttl` later.
//! - [`EtcdResolver`]: `resolve` is one prefix get; `watch` gets the prefix, delivers a
//!   snapshot, then watches from the next revision and delivers a snapshot after every batch of
//!   events that changes the list. On a broken watch or a compacted revision it starts over
//!   with a get, so no change is missed.
//! - [`LocalEtcd`]: a private etcd server on free loopback ports, for tests.
//!
//! etcd-client runs on tokio; each registry and resolver owns a one-thread tokio runtime
//! (thread `ringrpc-etcd`), so no etcd work ever runs on a core.

#![forbid(unsafe_code)]

mod local;

pub use local::LocalEtcd;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use ringrpc_governance::balance::Instance;
use ringrpc_governance::discovery::{
    check_service, DiscoveryError, Registration, Registry, Resolver, Snapshot, SnapshotFn,
    WatchHandle,
};

/// Kitex's default instance weight, used when an entry has none (or one of 0 or less).
const DEFAULT_WEIGHT: u32 = 10;

/// kitex-contrib/registry-etcd's key prefix, the default of [`EtcdConfig::prefix`].
pub const DEFAULT_PREFIX: &str = "kitex/registry-etcd";

/// How to reach etcd and lay out the keys.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client endpoints, e.g. `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix (no trailing `/`). Default `"kitex/registry-etcd"`, kitex-contrib/registry-etcd's,
    /// so ringrpc and Kitex services find each other.
    pub prefix: String,
    /// Lease time-to-live of a registration. Default 10 s; etcd may round it up to its
    /// minimum (about 1.5 × its election timeout).
    pub ttl: Duration,
    /// Timeout of one etcd request, and of connecting. Default 3 s.
    pub timeout: Duration,
    /// Wait before retrying after a failed watch or keep-alive. Default 500 ms.
    pub retry_backoff: Duration,
}

impl EtcdConfig {
    /// The defaults, talking to `endpoints`.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            retry_backoff: Duration::from_millis(500),
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets the registration lease's time-to-live (rounded up to whole seconds, at least 1).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry backoff.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// `<prefix>/<service>/`: the prefix under which `service`'s instances live.
    pub fn service_prefix(&self, service: &str) -> String {
        format!("{}/{}/", self.prefix, service)
    }

    /// `<prefix>/<service>/<addr>`: the key of one instance.
    pub fn instance_key(&self, service: &str, addr: SocketAddr) -> String {
        format!("{}{addr}", self.service_prefix(service))
    }

    fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
    }
}

/// The JSON value of an instance key as written (kitex-contrib/registry-etcd's
/// `instanceInfo`: `network`, `address`, `weight`, `tags`, in that order).
#[derive(Debug, Serialize)]
struct Entry<'a> {
    network: &'a str,
    address: String,
    weight: u32,
    tags: &'a HashMap<String, String>,
}

/// The JSON value as read, as leniently as Kitex's resolver (Go's `encoding/json` into
/// `instanceInfo`): missing fields and `null` take their zero values.
#[derive(Debug, Deserialize)]
struct ReadEntry {
    #[serde(default)]
    network: Option<String>,
    address: String,
    /// Go `int`; 0 or less means the default weight.
    #[serde(default)]
    weight: Option<i64>,
    /// A Go `map`, `null` when the registrant had none.
    #[serde(default)]
    tags: Option<HashMap<String, String>>,
}

fn encode(instance: &Instance) -> Result<String, DiscoveryError> {
    serde_json::to_string(&Entry {
        network: "tcp",
        address: instance.addr.to_string(),
        weight: instance.weight,
        tags: &instance.tags,
    })
    .map_err(|e| DiscoveryError::BadEntry {
        key: instance.addr.to_string(),
        reason: e.to_string(),
    })
}

fn decode(key: &[u8], value: &[u8]) -> Result<Instance, DiscoveryError> {
    let bad = |reason: String| DiscoveryError::BadEntry {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let entry: ReadEntry = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
    let network = entry.network.as_deref().unwrap_or("tcp");
    if !matches!(network, "tcp" | "tcp4" | "tcp6" | "") {
        return Err(bad(format!("unsupported network {network:?}")));
    }
    let addr: SocketAddr = entry
        .address
        .parse()
        .map_err(|e| bad(format!("address {:?}: {e}", entry.address)))?;
    let weight = match entry.weight {
        Some(w) if w > 0 => u32::try_from(w).unwrap_or(u32::MAX),
        _ => DEFAULT_WEIGHT,
    };
    Ok(Instance {
        addr,
        weight,
        tags: entry.tags.unwrap_or_default(),
    })
}

fn etcd_error(e: etcd_client::Error) -> DiscoveryError {
    DiscoveryError::Registry(e.to_string())
}

/// A one-thread tokio runtime on its own OS thread, where all etcd I/O runs.
struct EtcdThread {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl EtcdThread {
    fn start() -> Result<Self, DiscoveryError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DiscoveryError::Registry(format!("tokio runtime: {e}")))?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ringrpc-etcd".to_owned())
            .spawn(move || {
                let _ = rt.block_on(stop_rx);
            })
            .map_err(|e| DiscoveryError::Registry(format!("etcd thread: {e}")))?;
        Ok(Self {
            handle,
            stop: Mutex::new(Some(stop_tx)),
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `fut` on the etcd thread and waits for its result, at most `timeout`.
    fn run<T, F>(&self, timeout: Duration, fut: F) -> Result<T, DiscoveryError>
    where
        F: Future<Output = Result<T, DiscoveryError>> + Send + 'static,
        T: Send + 'static,
    {
        if std::thread::current().id() == self.thread_id {
            // Blocking the runtime's only thread on itself would never finish.
            return Err(DiscoveryError::Registry(
                "blocking etcd call made on the etcd thread".to_owned(),
            ));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let r = tokio::time::timeout(timeout, fut)
                .await
                .unwrap_or(Err(DiscoveryError::Timeout));
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(DiscoveryError::Closed))
    }

    fn shutdown(&self) {
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
        if std::thread::current().id() == self.thread_id {
            return; // the thread exits by itself once this task returns
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for EtcdThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connects a client on the etcd thread.
fn connect(thread: &EtcdThread, config: &EtcdConfig) -> Result<Client, DiscoveryError> {
    let endpoints = config.endpoints.clone();
    let options = config.connect_options();
    thread.run(config.timeout, async move {
        Client::connect(endpoints, Some(options))
            .await
            .map_err(etcd_error)
    })
}

/// One live registration: the keep-alive task and the lease it currently holds.
struct Registered {
    task: tokio::task::JoinHandle<()>,
    lease: Arc<std::sync::atomic::AtomicI64>,
}

/// Registers servers in etcd under leases kept alive from its own thread.
pub struct EtcdRegistry {
    config: EtcdConfig,
    client: Client,
    registered: Mutex<HashMap<String, Registered>>,
    thread: EtcdThread,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Grants a lease of `ttl` seconds and puts `key = value` under it; returns the lease id.
async fn put_with_lease(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl: i64,
) -> Result<(i64, i64), DiscoveryError> {
    let lease = client.lease_grant(ttl, None).await.map_err(etcd_error)?;
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease.id())))
        .await
        .map_err(etcd_error)?;
    Ok((lease.id(), lease.ttl()))
}

/// Keeps `lease` alive until it is lost (`true`: etcd no longer knows it) or the stream fails
/// (`false`: worth retrying the same lease).
async fn keep_alive(
    client: &mut Client,
    lease: i64,
    interval: Duration,
    timeout: Duration,
) -> bool {
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
        return false;
    };
    loop {
        if keeper.keep_alive().await.is_err() {
            return false;
        }
        match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return true,
            _ => return false,
        }
        tokio::time::sleep(interval).await;
    }
}

/// The keep-alive task of one registration: renews the lease, re-registers when it is lost.
async fn keep_registered(
    mut client: Client,
    config: EtcdConfig,
    key: String,
    value: String,
    lease: Arc<std::sync::atomic::AtomicI64>,
    granted_ttl: i64,
) {
    use std::sync::atomic::Ordering;
    let mut ttl = granted_ttl.max(1);
    loop {
        let interval = Duration::from_millis(u64::try_from(ttl).unwrap_or(1) * 1000 / 3);
        let id = lease.load(Ordering::Acquire);
        let lost = keep_alive(&mut client, id, interval, config.timeout).await;
        tokio::time::sleep(config.retry_backoff).await;
        if lost {
            tracing::warn!(%key, lease = id, "etcd lease lost; registering again");
            match put_with_lease(&mut client, &key, &value, config.ttl_secs()).await {
                Ok((new, granted)) => {
                    lease.store(new, Ordering::Release);
                    ttl = granted.max(1);
                }
                Err(e) => tracing::warn!(%key, error = %e, "etcd re-registration failed"),
            }
        }
    }
}

impl EtcdRegistry {
    /// Starts the registry's thread and connects to etcd.
    ///
    /// # Errors
    /// [`DiscoveryError::Registry`] or [`DiscoveryError::Timeout`] when etcd is unreachable.
    pub fn connect(config: EtcdConfig) -> Result<Self, DiscoveryError> {
        let thread = EtcdThread::start()?;
        let client = connect(&thread, &config)?;
        Ok(Self {
            config,
            client,
            registered: Mutex::new(HashMap::new()),
            thread,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The etcd lease currently holding `registration`'s key, if it is registered here.
    pub fn lease_of(&self, registration: &Registration) -> Option<i64> {
        let key = self
            .config
            .instance_key(&registration.service, registration.instance.addr);
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map(|r| r.lease.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Deregisters everything registered here.
    ///
    /// # Errors
    /// The first failure; every registration is still attempted.
    pub fn deregister_all(&self) -> Result<(), DiscoveryError> {
        let all: Vec<(String, Registered)> = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let mut first = Ok(());
        for (key, r) in all {
            if let Err(e) = self.withdraw(key, r) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Stops `r`'s keep-alive, revokes its lease and deletes `key`.
    fn withdraw(&self, key: String, r: Registered) -> Result<(), DiscoveryError> {
        r.task.abort();
        let lease = r.lease.load(std::sync::atomic::Ordering::Acquire);
        let mut client = self.client.clone();
        self.thread.run(self.config.timeout, async move {
            // Revoking deletes the key; a lease already gone is fine. The delete covers a put
            // of a fresh lease that raced with the abort.
            let _ = client.lease_revoke(lease).await;
            client.delete(key, None).await.map_err(etcd_error)?;
            Ok(())
        })
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        check_service(&registration.service)?;
        let key = self
            .config
            .instance_key(&registration.service, registration.instance.addr);
        let value = encode(&registration.instance)?;
        // Registering again replaces the earlier registration (and its lease).
        let previous = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        if let Some(previous) = previous {
            previous.task.abort();
            let lease = previous.lease.load(std::sync::atomic::Ordering::Acquire);
            let mut client = self.client.clone();
            self.thread.run(self.config.timeout, async move {
                let _ = client.lease_revoke(lease).await;
                Ok(())
            })?;
        }
        let mut client = self.client.clone();
        let (k, v, ttl) = (key.clone(), value.clone(), self.config.ttl_secs());
        let (lease, granted) = self.thread.run(self.config.timeout, async move {
            put_with_lease(&mut client, &k, &v, ttl).await
        })?;
        let lease_cell = Arc::new(std::sync::atomic::AtomicI64::new(lease));
        let task = self.thread.handle.spawn(keep_registered(
            self.client.clone(),
            self.config.clone(),
            key.clone(),
            value,
            lease_cell.clone(),
            granted,
        ));
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                Registered {
                    task,
                    lease: lease_cell,
                },
            );
        Ok(())
    }

    fn deregister(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        check_service(&registration.service)?;
        let key = self
            .config
            .instance_key(&registration.service, registration.instance.addr);
        let r = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        match r {
            Some(r) => self.withdraw(key, r),
            None => Ok(()),
        }
    }
}

impl Drop for EtcdRegistry {
    /// Deregisters everything (bounded by the request timeout), then stops the thread.
    fn drop(&mut self) {
        if let Err(e) = self.deregister_all() {
            tracing::warn!(error = %e, "etcd deregistration on drop failed");
        }
    }
}

/// Resolves services from etcd, watching for changes from its own thread.
pub struct EtcdResolver {
    config: EtcdConfig,
    client: Client,
    thread: Arc<EtcdThread>,
}

impl std::fmt::Debug for EtcdResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdResolver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The instances under `prefix` and the store revision they were read at.
async fn list(
    client: &mut Client,
    prefix: &str,
) -> Result<(i64, BTreeMap<Vec<u8>, Instance>), DiscoveryError> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(etcd_error)?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut map = BTreeMap::new();
    for kv in resp.kvs() {
        match decode(kv.key(), kv.value()) {
            Ok(i) => {
                map.insert(kv.key().to_vec(), i);
            }
            Err(e) => tracing::warn!(error = %e, "skipping etcd entry"),
        }
    }
    Ok((revision, map))
}

fn sorted(map: &BTreeMap<Vec<u8>, Instance>) -> Vec<Instance> {
    let mut v: Vec<Instance> = map.values().cloned().collect();
    v.sort_by_key(|i| i.addr);
    v
}

/// The watch task: list, deliver, watch from the next revision; start over on any break.
async fn watch_service(
    mut client: Client,
    config: EtcdConfig,
    service: Arc<str>,
    on_change: SnapshotFn,
) {
    let prefix = config.service_prefix(&service);
    let mut last: Option<Vec<Instance>> = None;
    let mut deliver = |revision: i64, map: &BTreeMap<Vec<u8>, Instance>| {
        let now = sorted(map);
        if last.as_ref() != Some(&now) {
            last = Some(now.clone());
            on_change(Snapshot::new(
                service.clone(),
                u64::try_from(revision).unwrap_or(0),
                now,
            ));
        }
    };
    loop {
        let (revision, mut map) = match list(&mut client, &prefix).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "etcd list failed; retrying");
                tokio::time::sleep(config.retry_backoff).await;
                continue;
            }
        };
        deliver(revision, &map);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = match client.watch(prefix.as_str(), Some(options)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "etcd watch failed; retrying");
                tokio::time::sleep(config.retry_backoff).await;
                continue;
            }
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "etcd watch broke; listing again");
                    break;
                }
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                break;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match decode(kv.key(), kv.value()) {
                        Ok(i) => {
                            map.insert(kv.key().to_vec(), i);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping etcd entry");
                            map.remove(kv.key());
                        }
                    },
                    EventType::Delete => {
                        map.remove(kv.key());
                    }
                }
            }
            let revision = resp.header().map_or(0, |h| h.revision());
            deliver(revision, &map);
        }
        tokio::time::sleep(config.retry_backoff).await;
    }
}

impl EtcdResolver {
    /// Starts the resolver's thread and connects to etcd.
    ///
    /// # Errors
    /// [`DiscoveryError::Registry`] or [`DiscoveryError::Timeout`] when etcd is unreachable.
    pub fn connect(config: EtcdConfig) -> Result<Self, DiscoveryError> {
        let thread = EtcdThread::start()?;
        let client = connect(&thread, &config)?;
        Ok(Self {
            config,
            client,
            thread: Arc::new(thread),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }
}

impl Resolver for EtcdResolver {
    fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        check_service(service)?;
        let mut client = self.client.clone();
        let prefix = self.config.service_prefix(service);
        self.thread.run(self.config.timeout, async move {
            let (_, map) = list(&mut client, &prefix).await?;
            Ok(sorted(&map))
        })
    }

    fn watch(&self, service: &str, on_change: SnapshotFn) -> Result<WatchHandle, DiscoveryError> {
        check_service(service)?;
        let task = self.thread.handle.spawn(watch_service(
            self.client.clone(),
            self.config.clone(),
            Arc::from(service),
            on_change,
        ));
        // The handle keeps the thread alive even if the resolver is dropped first.
        let thread = self.thread.clone();
        Ok(WatchHandle::new(move || {
            task.abort();
            drop(thread);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_kitex_layout() {
        let i = Instance::new("10.0.0.1:8888".parse().unwrap(), 7).with_tag("zone", "a");
        let json = encode(&i).unwrap();
        assert!(json.contains(r#""network":"tcp""#), "{json}");
        assert!(json.contains(r#""address":"10.0.0.1:8888""#), "{json}");
        assert_eq!(decode(b"k", json.as_bytes()).unwrap(), i);
        let minimal = decode(b"k", br#"{"address":"127.0.0.1:1"}"#).unwrap();
        assert_eq!(minimal.weight, DEFAULT_WEIGHT);
        assert!(decode(b"k", br#"{"address":"nope"}"#).is_err());
        assert!(decode(b"k", br#"{"network":"udp","address":"127.0.0.1:1"}"#).is_err());
    }

    #[test]
    fn writes_exactly_kitex_fields_and_reads_what_a_kitex_server_writes() {
        // Field order and names of kitex-contrib/registry-etcd's instanceInfo.
        let i = Instance::new("10.0.0.1:8888".parse().unwrap(), 20).with_tag("zone", "a");
        assert_eq!(
            encode(&i).unwrap(),
            r#"{"network":"tcp","address":"10.0.0.1:8888","weight":20,"tags":{"zone":"a"}}"#
        );
        // A Kitex server without tags writes `"tags":null` (a nil Go map).
        let kitex = br#"{"network":"tcp","address":"10.0.0.2:8888","weight":10,"tags":null}"#;
        assert_eq!(
            decode(b"k", kitex).unwrap(),
            Instance::new("10.0.0.2:8888".parse().unwrap(), 10)
        );
        // Kitex's resolver reads a weight of 0 or less as the default weight.
        for w in ["0", "-3"] {
            let v =
                format!(r#"{{"network":"tcp","address":"10.0.0.3:1","weight":{w},"tags":{{}}}}"#);
            assert_eq!(decode(b"k", v.as_bytes()).unwrap().weight, DEFAULT_WEIGHT);
        }
        assert_eq!(EtcdConfig::new(["x"]).prefix, "kitex/registry-etcd");
    }

    #[test]
    fn keys_and_ttl() {
        let c = EtcdConfig::new(["http://127.0.0.1:2379"])
            .prefix("kitex/registry-etcd/")
            .ttl(Duration::from_millis(1500));
        assert_eq!(
            c.instance_key("echo", "127.0.0.1:9".parse().unwrap()),
            "kitex/registry-etcd/echo/127.0.0.1:9"
        );
        assert_eq!(c.ttl_secs(), 2);
        assert_eq!(c.clone().ttl(Duration::ZERO).ttl_secs(), 1);
    }
}
