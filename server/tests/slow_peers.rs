//! Slow or hostile peers cannot take the io_uring core's receive buffers from everyone else:
//! 900 connections that each send one byte of a frame and stall must not push the core's
//! provided-buffer ring into its low state, where every receive of every connection is copied
//! out (the zero-copy receive path lost for all).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringrpc_client::{CallOptions, Client, ClientConfig, ConnMode};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_engine::uring::{Uring, DEFAULT_BUFFERS};
use ringrpc_engine::CoreId;
use ringrpc_example_echo::Response;

/// Peers that send one byte and stall: most of the default ring (1,024 buffers), more than the
/// seven eighths past which the ring counts as low.
const STALLED_PEERS: usize = 900;
/// Calls of the good client, each with a 1 KiB message.
const GOOD_CALLS: usize = 1000;

/// Raises the soft open-file limit to the hard one: the test holds both ends of 900 sockets.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the rlimit struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    let needed = 2 * STALLED_PEERS as u64 + 256;
    assert!(
        lim.rlim_cur >= needed,
        "open-file limit {} is below the {needed} this test needs",
        lim.rlim_cur
    );
}

#[test]
fn stalled_one_byte_peers_leave_the_ring_to_others() {
    assert!(STALLED_PEERS < usize::from(DEFAULT_BUFFERS));
    raise_fd_limit();
    let probe = Arc::new(Probe::default());
    // A partial frame may wait this long (the default 30 s could close the stalled peers on a
    // loaded machine before the good client is done).
    let server = start_test_server::<Uring>(&probe, |b| {
        b.read_timeout(Duration::from_secs(300))
            .max_connections(10 * STALLED_PEERS)
    });
    let addr = server.local_addr();
    let counters = || {
        server
            .handle()
            .runtime()
            .counters(CoreId(0))
            .expect("core 0")
    };
    let before_peers = counters();
    let mut stalled: Vec<TcpStream> = Vec::with_capacity(STALLED_PEERS);
    for _ in 0..STALLED_PEERS {
        let mut s = raw_connect(addr, Duration::from_secs(10));
        // The first byte of a 4-byte frame length: the frame never completes.
        s.write_all(&[0]).expect("one byte written");
        stalled.push(s);
    }
    // Wait (bounded) until the server has received every peer's byte.
    let start = Instant::now();
    loop {
        let c = counters();
        if c.accepted - before_peers.accepted >= STALLED_PEERS as u64
            && c.bytes_received - before_peers.bytes_received >= STALLED_PEERS as u64
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server saw {} connections and {} bytes",
            c.accepted - before_peers.accepted,
            c.bytes_received - before_peers.bytes_received
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = counters();
    eprintln!("after {STALLED_PEERS} stalled peers: {before:?}");

    let config = ClientConfig::new(vec![addr])
        .service_name(SERVICE)
        .conn_mode(ConnMode::multiplexed(1))
        .rpc_timeout(Some(Duration::from_secs(20)));
    let client = Client::<Uring>::new(config);
    let ok = on_core::<Uring, _, _>(Duration::from_secs(120), move || async move {
        let mut ok = 0;
        for i in 0..GOOD_CALLS {
            let msg = format!("{i:08}{}", "x".repeat(1024 - 8));
            let reply = client
                .call_thrift::<_, SuccessResult<Response>>(
                    "Echo",
                    &req("echo", msg.clone()),
                    CallOptions::default(),
                )
                .await;
            match reply {
                Ok(SuccessResult(r)) if r.msg == msg => ok += 1,
                Ok(SuccessResult(r)) => panic!("call {i}: reply carries {:?}", r.msg),
                Err(e) => panic!("call {i} failed: {e}"),
            }
        }
        ok
    });
    let after = counters();
    eprintln!("after {GOOD_CALLS} good calls: {after:?}");
    assert_eq!(ok, GOOD_CALLS);
    assert!(
        after.bytes_received - before.bytes_received >= (GOOD_CALLS * 1024) as u64,
        "the good calls went through the server's core 0"
    );
    assert_eq!(
        after.buf_copies, before.buf_copies,
        "stalled peers pushed the ring low: the good client's receives were copied out"
    );
    drop(stalled);
    server.shutdown();
}
