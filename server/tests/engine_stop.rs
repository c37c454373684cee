//! Engine issue found by the end-to-end tests (engine/ is owned elsewhere; reported, not fixed).
//!
//! A `UringReader` kept alive outside any task (e.g. in a thread-local, as the client's pooled
//! idle connections were) keeps its multishot receive armed. When the runtime stops, the core
//! drops its tasks, then waits for every in-flight operation without cancelling the ones of live
//! readers: it waits the full `EXIT_WAIT_LIMIT` (10 s), then leaks its ring (and the ring's fd).
//! The client now drops its idle connections when the runtime starts stopping, so the suite no
//! longer hits this; the test below reproduces it with the engine alone.

use std::cell::RefCell;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, RuntimeConfig, Stream};

thread_local! {
    static KEPT: RefCell<Vec<<<Uring as Engine>::Stream as Stream>::Reader>> =
        const { RefCell::new(Vec::new()) };
}

#[test]
fn uring_stop_with_a_reader_kept_outside_tasks() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let stream = <Uring as Engine>::Stream::connect(addr).await.unwrap();
            let (mut reader, writer) = stream.into_split();
            // One receive arms the multishot op; then the reader is parked outside any task.
            let _ = ringrpc_engine::time::timeout::<Uring, _>(
                Duration::from_millis(10),
                ringrpc_engine::StreamReader::recv(&mut reader),
            )
            .await;
            drop(writer);
            KEPT.with(|k| k.borrow_mut().push(reader));
            let _ = tx.send(());
        }
    })
    .unwrap();
    let (_peer, _) = listener.accept().unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    runtime.stop(Duration::ZERO);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        start.elapsed()
    );
}
