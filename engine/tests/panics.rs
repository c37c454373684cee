//! Panics on both engines: a panicking task is dropped and counted while its core keeps
//! running (also with a receive and a send of its own in flight, whose buffers stay alive for
//! the kernel), one task in ten panicking under load costs exactly those tasks, and a panic that
//! escapes a core's loop (a mailbox job) drains the core and comes back from `Runtime::join`.

mod common;

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io::Read;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::{Duration, Instant};

use common::peer::{scribble, slow_peer, tracked_chunks};
use common::*;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::time::timeout;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{
    current_runtime, CoreId, Engine, EngineError, RuntimeConfig, Stream, StreamReader, StreamWriter,
};

/// This core's count of panicked tasks.
fn tasks_panicked() -> u64 {
    current_runtime()
        .unwrap()
        .counters(CoreId(0))
        .unwrap()
        .tasks_panicked
}

/// Waits (bounded, on the core) until `done()` holds.
async fn until<E: Engine>(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(60), "never: {what}");
        E::sleep(Duration::from_millis(2)).await;
    }
}

/// Records, when dropped, how many chunks were still alive: declared before the send future in
/// the panicking task, it drops after it, i.e. right after the send's `Op` was dropped.
struct AliveAtDrop {
    alive: Arc<AtomicUsize>,
    seen: Rc<Cell<Option<usize>>>,
}

impl Drop for AliveAtDrop {
    fn drop(&mut self) {
        self.seen.set(Some(self.alive.load(SeqCst)));
    }
}

/// A task with a receive and an 8 MiB send in flight (the peer neither sends nor reads) panics.
/// The core keeps running other tasks, counts one panic, and the send's chunks outlive the
/// dropped future (io_uring: the op still holds them) and are freed once it ended; every byte
/// the peer got is the message's (freed chunks are scribbled over, see `tracked_chunks`).
fn task_panics_with_ops_in_flight<E: Engine>() {
    let peer = slow_peer(5);
    let (panicked, alive_at_drop, chunks, alive_after) = run::<E, _, _>(1, move || async move {
        let total = 8 << 20;
        let (chunks, alive) = tracked_chunks(5, total, 32 * 1024);
        let n = chunks.len();
        let stream = E::Stream::connect(peer.addr).await.unwrap();
        let seen = Rc::new(Cell::new(None));
        let guard = AliveAtDrop {
            alive: alive.clone(),
            seen: seen.clone(),
        };
        E::spawn(async move {
            let _guard = guard;
            let (mut r, mut w) = stream.into_split();
            let mut recv = pin!(r.recv());
            let mut send = pin!(w.send(chunks));
            // Drive both for a while: the send's first write fills the socket buffers, the next
            // one waits in the kernel for room that never comes; the receive waits for data.
            let both = poll_fn(|cx| {
                assert!(recv.as_mut().poll(cx).is_pending());
                assert!(send.as_mut().poll(cx).is_pending());
                Poll::<()>::Pending
            });
            assert!(timeout::<E, _>(Duration::from_millis(20), both)
                .await
                .is_err());
            panic!("task boom with a recv and a send in flight");
        });
        until::<E>("the task panicked", || tasks_panicked() == 1).await;
        let junk = scribble(256, 32 * 1024);
        // The core still runs other tasks.
        let echo = start_echo::<E>();
        echo_check::<E>(echo, 1, 100_000, 10_000).await;
        let checker = std::thread::spawn(move || peer.release_and_check());
        until::<E>("the peer saw the end", || checker.is_finished()).await;
        let got = checker
            .join()
            .expect("every byte the peer got is the message's");
        drop(junk);
        assert!(got < total, "peer got {got} of {total}");
        until::<E>("the chunks were freed", || alive.load(SeqCst) == 0).await;
        (tasks_panicked(), seen.get(), n, alive.load(SeqCst))
    });
    assert_eq!(panicked, 1);
    if E::NAME == Uring::NAME {
        assert_eq!(
            alive_at_drop,
            Some(chunks),
            "the dropped send's chunks must stay alive while its op is in flight"
        );
    }
    assert_eq!(alive_after, 0);
}

#[test]
fn task_panics_with_ops_in_flight_uring() {
    task_panics_with_ops_in_flight::<Uring>();
}

#[test]
fn task_panics_with_ops_in_flight_baseline() {
    task_panics_with_ops_in_flight::<Baseline>();
}

/// 200 concurrent tasks each echo twice over their own connection; every 10th panics between
/// the two. The other 180 finish and exactly 20 panics are counted.
fn every_tenth_task_panics<E: Engine>() {
    let (done, panicked) = run::<E, _, _>(1, || async {
        let addr = start_echo::<E>();
        let done = Rc::new(Cell::new(0usize));
        for t in 0..200u64 {
            let done = done.clone();
            E::spawn(async move {
                echo_check::<E>(addr, t, 20_000, 4096).await;
                if t % 10 == 0 {
                    panic!("task {t} panics on purpose");
                }
                echo_check::<E>(addr, 1000 + t, 20_000, 4096).await;
                done.set(done.get() + 1);
            });
        }
        until::<E>("all tasks ended", || {
            done.get() == 180 && tasks_panicked() == 20
        })
        .await;
        // Nothing else panics afterwards (connections of the panicked tasks close cleanly).
        E::sleep(Duration::from_millis(50)).await;
        (done.get(), tasks_panicked())
    });
    assert_eq!(done, 180);
    assert_eq!(panicked, 20);
}

#[test]
fn every_tenth_task_panics_uring() {
    every_tenth_task_panics::<Uring>();
}

#[test]
fn every_tenth_task_panics_baseline() {
    every_tenth_task_panics::<Baseline>();
}

/// A mailbox job panics: the panic escapes the core's loop. The core still cancels and drains
/// its in-flight receive (the peer reads end of stream: the socket closed after the op ended;
/// nothing leaked), `join` returns the panic as a typed error, and the dead core's mailbox
/// refuses posts.
fn mailbox_panic_drains_the_core<E: Engine>() {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let rt = E::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let s = E::Stream::connect(addr).await.unwrap();
            let (mut r, w) = s.into_split();
            E::spawn(async move {
                let _w = w;
                let _ = r.recv().await;
            });
            let _ = tx.send(());
        }
    })
    .unwrap();
    let (mut conn, _) = peer.accept().unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let handle = rt.handle();
    handle
        .post(CoreId(0), || panic!("mailbox job boom"))
        .unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(rt.join());
    });
    let joined = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("join returned");
    match joined {
        Err(EngineError::CorePanicked { core, message }) => {
            assert_eq!(core, CoreId(0));
            assert!(message.contains("mailbox job boom"), "{message}");
        }
        other => panic!("join gave {other:?}"),
    }
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut b = [0u8; 8];
    assert_eq!(conn.read(&mut b).unwrap(), 0, "the core closed its socket");
    assert_eq!(handle.counters(CoreId(0)).unwrap().leaked_at_exit, 0);
    assert!(matches!(
        handle.post(CoreId(0), || ()),
        Err(EngineError::Stopped)
    ));
}

#[test]
fn mailbox_panic_drains_the_core_uring() {
    mailbox_panic_drains_the_core::<Uring>();
}

#[test]
fn mailbox_panic_drains_the_core_baseline() {
    mailbox_panic_drains_the_core::<Baseline>();
}
