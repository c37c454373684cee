//! Descriptor hygiene: after a server shuts down (with clients connected, calls in flight,
//! half-sent and garbage frames) and the client runtime stops, the process has exactly the
//! descriptors it had before. Its own binary, one test, because descriptors are process-wide.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringrpc_client::{CallOptions, Client, ClientConfig, ConnMode};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::uring::Uring;
use ringrpc_example_echo::Response;

#[test]
fn no_fd_leaked_after_server_shutdown() {
    // Warm up process-wide lazies (thread-locals, the tokio and io_uring probes) first.
    scenario::<Uring>();
    scenario::<Baseline>();
    for (name, run) in [
        ("uring", scenario::<Uring> as fn()),
        ("baseline", scenario::<Baseline> as fn()),
    ] {
        let before = fd_count();
        run();
        let until = Instant::now() + Duration::from_secs(2);
        let mut after = fd_count();
        while after != before && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            after = fd_count();
        }
        assert_eq!(after, before, "{name}: fds before {before}, after {after}");
    }
}

fn scenario<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| {
        b.cores(2).shutdown_grace(Duration::from_millis(500))
    });
    let addr = server.local_addr();
    // Raw sockets the server must close: garbage, and a frame that never completes.
    let mut garbage = raw_connect(addr, Duration::from_secs(5));
    write_lenient(&mut garbage, b"\0\0\0\x10\xde\xad\xbe\xefnot a frame");
    let mut partial = raw_connect(addr, Duration::from_secs(5));
    write_lenient(&mut partial, &[0, 0, 1, 0, 0x80, 0x01, 0x00, 0x01]);
    let (_, end) = read_until_close(&mut garbage);
    assert_eq!(end, ReadEnd::Closed);
    drop(garbage);

    let mux = Client::<E>::new(
        ClientConfig::new(vec![addr])
            .service_name(SERVICE)
            .conn_mode(ConnMode::multiplexed(2)),
    );
    let pooled = Client::<E>::new(
        ClientConfig::new(vec![addr])
            .service_name(SERVICE)
            .conn_mode(ConnMode::pooled()),
    );
    let handle = server.handle();
    let results = on_core::<E, _, _>(Duration::from_secs(20), move || async move {
        let mut calls = Vec::new();
        for i in 0..40 {
            let c = if i % 2 == 0 {
                mux.clone()
            } else {
                pooled.clone()
            };
            calls.push(async move {
                let action = if i < 20 { "echo" } else { "sleep" };
                c.call_thrift::<_, SuccessResult<Response>>(
                    "Echo",
                    &req(action, "100"),
                    CallOptions::default(),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            });
        }
        let first = join_all::<E, _>(calls.drain(..20)).await;
        // Shut down while the 100 ms calls are in flight.
        E::spawn(async move {
            E::sleep(Duration::from_millis(20)).await;
            handle.shutdown();
        });
        let rest = join_all::<E, _>(calls).await;
        (first, rest)
    });
    server.shutdown();
    let (first, rest) = results;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    // In-flight calls either finished or failed cleanly; none hung (on_core's limit).
    assert_eq!(rest.len(), 20);
    for r in &rest {
        let clean = match r {
            Ok(()) => true,
            Err(e) => e == "connection closed before the reply",
        };
        assert!(clean, "{r:?}");
    }
    drop(partial);
}
