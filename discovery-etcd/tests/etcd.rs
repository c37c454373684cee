//! Service discovery against a real etcd: registration, watch, deregistration, lease expiry.
//!
//! Each test starts its own etcd (the `etcd` binary from Debian's `etcd-server`, installed by
//! scripts/install-test-deps.sh) on free loopback ports with a temporary data directory, and
//! kills it at the end. A missing etcd fails the tests: they are never skipped.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringrpc_discovery_etcd::{EtcdConfig, EtcdRegistry, EtcdResolver, LocalEtcd};
use ringrpc_governance::balance::Instance;
use ringrpc_governance::discovery::{Registration, Registry, Resolver, Snapshot, WatchHandle};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Watches `service`, returning the receiving end of its snapshots.
fn watch(resolver: &EtcdResolver, service: &str) -> (mpsc::Receiver<Snapshot>, WatchHandle) {
    let (tx, rx) = mpsc::channel();
    let handle = resolver
        .watch(
            service,
            Arc::new(move |s: Snapshot| {
                let _ = tx.send(s);
            }),
        )
        .expect("watch");
    (rx, handle)
}

/// Waits up to `within` for a snapshot listing exactly `want`; returns how long it took.
fn wait_for(rx: &mpsc::Receiver<Snapshot>, want: &[SocketAddr], within: Duration) -> Duration {
    let start = Instant::now();
    let deadline = start + within;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) if s.addrs() == want => return start.elapsed(),
            Ok(s) => last = Some(s.addrs()),
            Err(_) => panic!("no snapshot with {want:?} within {within:?}; last seen {last:?}"),
        }
    }
}

#[test]
fn two_servers_register_and_a_deregistered_one_disappears_within_2s() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let (a, b) = (addr(10001), addr(10002));
    let server_a = EtcdRegistry::connect(etcd.config()).unwrap();
    let server_b = EtcdRegistry::connect(etcd.config()).unwrap();
    let reg_a = Registration::new("echo", Instance::new(a, 10).with_tag("zone", "a"));
    let reg_b = Registration::new("echo", Instance::new(b, 20));
    server_a.register(&reg_a).unwrap();

    let resolver = EtcdResolver::connect(etcd.config()).unwrap();
    let (rx, _watch) = watch(&resolver, "echo");
    wait_for(&rx, &[a], Duration::from_secs(2));
    server_b.register(&reg_b).unwrap();
    wait_for(&rx, &[a, b], Duration::from_secs(2));

    let listed = resolver.resolve("echo").unwrap();
    assert_eq!(listed, vec![reg_a.instance.clone(), reg_b.instance.clone()]);
    assert!(resolver.resolve("other").unwrap().is_empty());

    server_a.deregister(&reg_a).unwrap();
    let took = wait_for(&rx, &[b], Duration::from_secs(2));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(resolver.resolve("echo").unwrap(), vec![reg_b.instance]);
    // Deregistering twice is harmless.
    server_a.deregister(&reg_a).unwrap();

    // Dropping a registry (a server shutting down) withdraws what it registered.
    drop(server_b);
    wait_for(&rx, &[], Duration::from_secs(2));
}

/// Not a test on its own: the registrant process of `a_dead_registrant_expires_with_its_lease`
/// (it returns at once unless that test started it).
#[test]
fn registrant_child() {
    let Ok(endpoint) = std::env::var("RINGRPC_ETCD_CHILD") else {
        return;
    };
    let registry = EtcdRegistry::connect(
        EtcdConfig::new([endpoint])
            .ttl(Duration::from_secs(1))
            .retry_backoff(Duration::from_millis(100)),
    )
    .unwrap();
    registry
        .register(&Registration::new("dying", Instance::new(addr(10003), 10)))
        .unwrap();
    // Keep the lease alive until killed; exit by itself (without deregistering) if the parent
    // never kills it.
    std::thread::sleep(Duration::from_secs(30));
    std::mem::forget(registry);
}

#[test]
fn a_dead_registrant_expires_with_its_lease() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let resolver = EtcdResolver::connect(etcd.config()).unwrap();
    let (rx, _watch) = watch(&resolver, "dying");
    wait_for(&rx, &[], Duration::from_secs(2));

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registrant_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RINGRPC_ETCD_CHILD", etcd.endpoint())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the registrant");
    wait_for(&rx, &[addr(10003)], Duration::from_secs(10));
    // Alive well past its 1 s TTL: the keep-alives work.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        resolver.resolve("dying").unwrap(),
        vec![Instance::new(addr(10003), 10)]
    );

    // SIGKILL: no deregistration, the keep-alives just stop.
    child.kill().unwrap();
    let _ = child.wait();
    let took = wait_for(&rx, &[], Duration::from_secs(3));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(resolver.resolve("dying").unwrap().is_empty());
}

#[test]
fn a_lost_lease_is_replaced_and_the_instance_comes_back() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let server = EtcdRegistry::connect(etcd.config().ttl(Duration::from_secs(1))).unwrap();
    let reg = Registration::new("phoenix", Instance::new(addr(10004), 10));
    server.register(&reg).unwrap();
    let resolver = EtcdResolver::connect(etcd.config()).unwrap();
    let (rx, _watch) = watch(&resolver, "phoenix");
    wait_for(&rx, &[addr(10004)], Duration::from_secs(2));

    // Revoke the lease behind the registry's back (as an etcd restart losing it would).
    let lease = server.lease_of(&reg).expect("registered");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.endpoint().to_owned()], None)
            .await
            .unwrap();
        c.lease_revoke(lease).await.unwrap();
    });
    wait_for(&rx, &[], Duration::from_secs(2));
    wait_for(&rx, &[addr(10004)], Duration::from_secs(3));
    // The registry adopts the new lease right after its put (which the watch may report first).
    let deadline = Instant::now() + Duration::from_secs(1);
    while server.lease_of(&reg) == Some(lease) {
        assert!(
            Instant::now() < deadline,
            "the registry kept the revoked lease"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And keeps the new one alive past its TTL.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        resolver.resolve("phoenix").unwrap(),
        vec![reg.instance.clone()]
    );
}

#[test]
fn watching_many_changes_ends_on_the_final_list() {
    let etcd = LocalEtcd::start().expect("a private etcd");
    let server = EtcdRegistry::connect(etcd.config()).unwrap();
    let resolver = EtcdResolver::connect(etcd.config()).unwrap();
    let (rx, watch_handle) = watch(&resolver, "busy");
    wait_for(&rx, &[], Duration::from_secs(2));
    let regs: Vec<_> = (0..20)
        .map(|i| Registration::new("busy", Instance::new(addr(11000 + i), 10)))
        .collect();
    for r in &regs {
        server.register(r).unwrap();
    }
    for r in regs.iter().step_by(2) {
        server.deregister(r).unwrap();
    }
    let want: Vec<_> = (0..20)
        .filter(|i| i % 2 == 1)
        .map(|i| addr(11000 + i))
        .collect();
    wait_for(&rx, &want, Duration::from_secs(3));
    // After the handle is dropped, no more snapshots arrive.
    drop(watch_handle);
    server.deregister_all().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_iter().all(|s| s.addrs() == want));
}
