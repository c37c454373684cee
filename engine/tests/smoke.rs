//! Smoke test of the engine interface: echo over loopback on the baseline engine.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::{Engine, Listener, RuntimeConfig, Stream, StreamReader, StreamWriter};

fn echo_roundtrip<E: Engine>() {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let rt = E::launch(RuntimeConfig::with_cores(1), move |_core| {
        let tx = tx.clone();
        async move {
            let mut l = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
            let addr: SocketAddr = l.local_addr().unwrap();
            E::spawn(async move {
                let (s, _) = l.accept().await.unwrap().unwrap();
                let (mut r, mut w) = s.into_split();
                while let Some(b) = r.recv().await.unwrap() {
                    let (res, _) = w.send(vec![b]).await;
                    res.unwrap();
                }
            });
            let c = E::Stream::connect(addr).await.unwrap();
            let (mut r, mut w) = c.into_split();
            let (res, _) = w
                .send(vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")])
                .await;
            res.unwrap();
            let mut got = Vec::new();
            while got.len() < 5 {
                got.extend_from_slice(&r.recv().await.unwrap().unwrap());
            }
            tx.send(got).unwrap();
        }
    })
    .unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, b"hello");
    rt.stop(Duration::from_millis(100));
}

#[test]
fn baseline_echo() {
    echo_roundtrip::<Baseline>();
}

#[test]
fn uring_echo() {
    echo_roundtrip::<ringrpc_engine::uring::Uring>();
}

/// `turn_now` on an io_uring core is the time the loop turn began: equal within a poll, moved on
/// after the task waited, never ahead of the real clock.
#[test]
fn turn_clock_is_cached_per_turn_and_advances() {
    use ringrpc_engine::turn_now;
    use ringrpc_engine::uring::Uring;
    use std::time::Instant;
    let (tx, rx) = mpsc::channel();
    let rt = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let (a, b) = (turn_now(), turn_now());
            let real = Instant::now();
            Uring::sleep(Duration::from_millis(20)).await;
            let c = turn_now();
            tx.send((a, b, real, c)).unwrap();
        }
    })
    .unwrap();
    let (a, b, real, c) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    rt.stop(Duration::from_millis(100));
    assert_eq!(a, b, "two reads in one poll see the same turn time");
    assert!(a <= real, "the turn time is never ahead of the clock");
    assert!(
        c >= a + Duration::from_millis(20),
        "it moves on after a wait"
    );
    // Outside a core it is the system clock.
    let before = Instant::now();
    assert!(turn_now() >= before);
}
