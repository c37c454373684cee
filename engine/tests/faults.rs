//! The io_uring engine's error paths, driven by fault injection at the ring boundary
//! (`uring::faults`, feature `fault-injection`, on for these tests): a full submission queue is
//! submitted, reaped and retried; a cancel that cannot be queued is retried, not dropped (so a
//! stop does not wait out the exit limit); `io_uring_enter` errors back off and, when they
//! persist, fail the core with a typed error; a failed opcode probe means the base set (no
//! multishot); an accepted connection that fails setup is dropped and counted, and the listener
//! keeps accepting.
//!
//! Faults are process-wide, so the tests here run one at a time (`SERIAL`).

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use ringrpc_engine::time::timeout;
use ringrpc_engine::uring::faults::{self, Fault};
use ringrpc_engine::uring::{
    ring_features, Uring, UringConfig, UringListener, ENTER_ERROR_LIMIT, EXIT_WAIT_LIMIT,
};
use ringrpc_engine::{
    current_runtime, CoreId, Engine, EngineError, Listener, Runtime, RuntimeConfig, Stream,
    StreamReader,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the serial lock; disarms every fault on entry and exit (also when the test fails).
struct Serial(#[allow(dead_code)] parking_lot::MutexGuard<'static, ()>);

fn serial() -> Serial {
    let g = SERIAL.lock();
    faults::clear();
    Serial(g)
}

impl Drop for Serial {
    fn drop(&mut self) {
        faults::clear();
    }
}

/// `rt.join()` on a helper thread, bounded.
fn join_within(rt: Runtime, limit: Duration) -> Result<(), EngineError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rt.join());
    });
    rx.recv_timeout(limit).expect("join returned in time")
}

/// Every push of a round finds the SQ full many times over (but fewer than the core's retry
/// bound): the core submits, reaps and retries, and every echo still completes intact.
#[test]
fn full_submission_queue_is_submitted_reaped_and_retried() {
    let _s = serial();
    run::<Uring, _, _>(1, || async {
        let addr = start_echo::<Uring>();
        let before = current_runtime().unwrap().counters(CoreId(0)).unwrap();
        for i in 0..20u64 {
            faults::inject(Fault::PushFull, 40, 0);
            echo_check::<Uring>(addr, i, 50_000, 7000).await;
            assert_eq!(faults::remaining(Fault::PushFull), 0, "round {i}");
        }
        let after = current_runtime().unwrap().counters(CoreId(0)).unwrap();
        // Each injected full SQ cost an extra (submitting) enter.
        assert!(after.enters - before.enters >= 20 * 40);
    });
}

/// A stopping core's cancels find the SQ full for longer than one push retries: they wait on
/// the pending list and go out on later turns, so the receive ends and the stop is quick
/// instead of waiting out the exit limit and leaking the ring.
#[test]
fn a_cancel_that_cannot_be_queued_is_retried_not_dropped() {
    let _s = serial();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let rt = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let s = <Uring as Engine>::Stream::connect(addr).await.unwrap();
            let (mut r, w) = s.into_split();
            Uring::spawn(async move {
                let _w = w;
                // The peer never sends: this receive is in flight until cancelled.
                let _ = r.recv().await;
            });
            let _ = tx.send(());
        }
    })
    .unwrap();
    let (_conn, _) = peer.accept().unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let handle = rt.handle();
    // Three pushes' worth of retries and then some.
    faults::inject(Fault::PushFull, 3 * 64 + 10, 0);
    let t = Instant::now();
    rt.stop(Duration::ZERO);
    let took = t.elapsed();
    assert!(took < EXIT_WAIT_LIMIT / 2, "stop took {took:?}");
    assert_eq!(handle.counters(CoreId(0)).unwrap().leaked_at_exit, 0);
}

thread_local! {
    static KEPT: std::cell::RefCell<Vec<<<Uring as Engine>::Stream as Stream>::Reader>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The same for an op whose owner outlives every task (a reader kept in a thread-local): the
/// exiting core cancels it itself, and that cancel, too, is retried until it is queued.
#[test]
fn an_exit_cancel_that_cannot_be_queued_is_retried_not_dropped() {
    let _s = serial();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let rt = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let s = <Uring as Engine>::Stream::connect(addr).await.unwrap();
            let (mut r, w) = s.into_split();
            let _ = timeout::<Uring, _>(Duration::from_millis(10), r.recv()).await;
            drop(w);
            KEPT.with(|k| k.borrow_mut().push(r));
            let _ = tx.send(());
        }
    })
    .unwrap();
    let (_conn, _) = peer.accept().unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let handle = rt.handle();
    faults::inject(Fault::PushFull, 3 * 64 + 10, 0);
    let t = Instant::now();
    rt.stop(Duration::ZERO);
    let took = t.elapsed();
    assert!(took < EXIT_WAIT_LIMIT / 2, "stop took {took:?}");
    assert_eq!(handle.counters(CoreId(0)).unwrap().leaked_at_exit, 0);
}

/// A few failed enters: the core backs off and carries on serving. Failures past
/// `ENTER_ERROR_LIMIT` in a row: the core fails, drains, and `join` says why.
#[test]
fn enter_errors_back_off_then_fail_the_core() {
    let _s = serial();
    let (tx, rx) = mpsc::channel();
    let rt = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let _ = tx.send(start_echo::<Uring>());
        async {}
    })
    .unwrap();
    let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let handle = rt.handle();

    faults::inject(Fault::Enter, 3, libc::EIO);
    handle.post(CoreId(0), || ()).unwrap(); // wake the core so it enters again
    let t0 = Instant::now();
    while faults::remaining(Fault::Enter) > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(&[7u8; 1000]).unwrap();
    let mut back = [0u8; 1000];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, [7u8; 1000]);
    assert!(handle.counters(CoreId(0)).unwrap().enter_errors >= 3);

    faults::inject(Fault::Enter, ENTER_ERROR_LIMIT + 4, libc::EIO);
    handle.post(CoreId(0), || ()).unwrap();
    match join_within(rt, Duration::from_secs(60)) {
        Err(EngineError::CoreFailed { core, source }) => {
            assert_eq!(core, CoreId(0));
            assert_eq!(source.raw_os_error(), Some(libc::EIO));
        }
        other => panic!("join gave {other:?}"),
    }
    assert_eq!(handle.counters(CoreId(0)).unwrap().leaked_at_exit, 0);
    // The core closed its sockets on the way out: the client reads end of stream.
    let mut b = [0u8; 8];
    assert_eq!(c.read(&mut b).unwrap(), 0);
}

/// A probe that fails leaves the ring on the base opcode set: no multishot, no buffer ring;
/// the core still serves (single-shot accept and receive).
#[test]
fn a_failed_probe_means_the_base_set() {
    let _s = serial();
    faults::inject(Fault::Probe, 1, libc::EINVAL);
    let features = run::<Uring, _, _>(1, || async {
        let features = ring_features().unwrap();
        let addr = start_echo::<Uring>();
        echo_check::<Uring>(addr, 9, 300_000, 7000).await;
        features
    });
    assert_eq!(faults::remaining(Fault::Probe), 0);
    assert!(
        !features.multishot,
        "a failed probe must not enable multishot"
    );
    if !UringConfig::default().fallback {
        // The same kernel without the fault: the probe answers and multishot is on.
        let normal = run::<Uring, _, _>(1, || async { ring_features().unwrap() });
        assert!(normal.multishot);
    }
}

/// Three accepted connections fail setup (as if reset before `setsockopt`): each is dropped
/// and counted, `accept` never returns an error, and the other two are accepted.
#[test]
fn an_accepted_connection_failing_setup_is_dropped_not_a_listener_error() {
    let _s = serial();
    let (accepted, dropped) = run::<Uring, _, _>(1, || async {
        let mut l = UringListener::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let addr = l.local_addr().unwrap();
        faults::inject(Fault::AcceptSetup, 3, libc::ECONNRESET);
        let clients = std::thread::spawn(move || {
            (0..5)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect::<Vec<_>>()
        });
        let mut kept = Vec::new();
        while kept.len() < 2 {
            match timeout::<Uring, _>(Duration::from_secs(30), l.accept()).await {
                Ok(Ok(Some((s, _)))) => kept.push(s),
                other => panic!("accept gave {other:?}"),
            }
        }
        let c = current_runtime().unwrap().counters(CoreId(0)).unwrap();
        drop(clients);
        (c.accepted, c.accept_dropped)
    });
    assert_eq!(accepted, 2);
    assert_eq!(dropped, 3);
}
