//! File-descriptor accounting: after each scenario the process has exactly as many open fds as
//! before. Its own test binary, and each test holds `SERIAL`, because fds are process-wide.

mod common;

use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::time::timeout;
use ringrpc_engine::uring::{Uring, UringConfig};
use ringrpc_engine::{Engine, Listener, Stream, StreamReader, StreamWriter};

static SERIAL: Mutex<()> = Mutex::new(());

fn check_fds(name: &str, scenario: impl FnOnce()) {
    let _g = SERIAL.lock();
    let before = fd_count();
    scenario();
    // Sockets closed by the kernel side may take a moment to be released by a stopping core.
    let mut after = fd_count();
    for _ in 0..100 {
        if after == before {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        after = fd_count();
    }
    assert_eq!(after, before, "{name}: fds before {before}, after {after}");
}

async fn scenario_body<E: Engine>() {
    let addr = start_echo::<E>();
    for i in 0..20u64 {
        echo_check::<E>(addr, i, 100_000, 9000).await;
    }
    let mut l = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    let laddr = l.local_addr().unwrap();
    for i in 0..50u64 {
        let s = E::Stream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let _ = timeout::<E, _>(Duration::from_micros(100), r.recv()).await;
        let _ = timeout::<E, _>(
            Duration::from_micros(20),
            w.send(message(i, 1 << 20, 65536)),
        )
        .await;
        drop((r, w));
        let _ = timeout::<E, _>(Duration::from_micros(1), E::Stream::connect(laddr)).await;
        let _ = timeout::<E, _>(Duration::from_micros(50), l.accept()).await;
    }
    // Leave connections open (queued in the listener, idle in tasks) for the stop to close.
    for _ in 0..5 {
        let s = E::Stream::connect(addr).await.unwrap();
        E::spawn(async move {
            let (mut r, _w) = s.into_split();
            while let Ok(Some(_)) = r.recv().await {}
        });
    }
    E::spawn(async move {
        let _keep = l;
        E::sleep(Duration::from_secs(60)).await;
    });
}

#[test]
fn fds_return_to_start_uring() {
    check_fds("uring", || run::<Uring, _, _>(2, scenario_body::<Uring>));
}

#[test]
fn fds_return_to_start_uring_fallback() {
    let cfg = UringConfig {
        fallback: true,
        ..UringConfig::default()
    };
    check_fds("uring fallback", || {
        run_uring(cfg, 1, scenario_body::<Uring>)
    });
}

#[test]
fn fds_return_to_start_baseline() {
    check_fds("baseline", || {
        run::<Baseline, _, _>(2, scenario_body::<Baseline>)
    });
}

#[test]
fn fds_return_after_launch_and_stop_uring() {
    check_fds("uring launch/stop", || {
        for _ in 0..10 {
            let rt =
                Uring::launch(ringrpc_engine::RuntimeConfig::with_cores(2), |_| async {}).unwrap();
            rt.stop(Duration::from_millis(10));
        }
    });
}
