//! A server started and stopped 100 times in one process leaks nothing: after the cycles the
//! process has the descriptors and threads it had before, and each stopped server counts no
//! open connection. Its own binary, one test, because descriptors and threads are process-wide.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::uring::Uring;
use ringrpc_server::governance::limit::LimitConfig;

const CYCLES: usize = 100;

#[test]
fn a_hundred_start_stop_cycles_leak_nothing() {
    // Warm up process-wide lazies (thread-locals, the tokio and io_uring probes) first.
    cycle::<Uring>(0);
    cycle::<Baseline>(0);
    for (name, run) in [
        ("uring", cycle::<Uring> as fn(usize)),
        ("baseline", cycle::<Baseline> as fn(usize)),
    ] {
        let (fds, threads) = (fd_count(), thread_count());
        for i in 1..=CYCLES {
            run(i);
        }
        // Threads are joined and descriptors closed by the time shutdown returns; allow the
        // kernel a moment to finish closing sockets all the same.
        let until = Instant::now() + Duration::from_secs(2);
        let mut now = (fd_count(), thread_count());
        while now != (fds, threads) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            now = (fd_count(), thread_count());
        }
        assert_eq!(
            now,
            (fds, threads),
            "{name}: (fds, threads) before {CYCLES} cycles {:?}, after {now:?}",
            (fds, threads)
        );
    }
}

/// Starts a two-core server with a metrics endpoint and a rate limit (its share-syncing task),
/// makes a call on one connection, leaves a call running past the shutdown grace on a second
/// and a third connection idle, and shuts the server down.
fn cycle<E: TestEngine>(i: usize) {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| {
        b.cores(2)
            .metrics_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .rate_limit(LimitConfig {
                max_qps: Some(1_000_000),
                ..LimitConfig::default()
            })
            .shutdown_grace(Duration::from_millis(100))
    });
    let stats = server.stats();
    let mut s = raw_connect(server.local_addr(), Duration::from_secs(5));
    raw_echo(&mut s, 1, &format!("cycle {i}"));
    let mut running = raw_connect(server.local_addr(), Duration::from_secs(5));
    write_lenient(&mut running, &raw_echo_call(2, "sleep", "10000"));
    let open = raw_connect(server.local_addr(), Duration::from_secs(5));
    drop(s);
    let until = Instant::now() + Duration::from_secs(5);
    while probe.started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < until,
            "cycle {i}: the long call never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    server.shutdown();
    assert_eq!(
        stats.open_connections(),
        0,
        "cycle {i}: connections still counted open after shutdown"
    );
    drop((open, running));
}
