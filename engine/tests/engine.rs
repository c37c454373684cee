//! Behaviour tests of both engines: echo integrity, the empty-buffer-ring path, peers closing
//! mid-message, futures dropped with operations in flight, timers, cross-core wake-ups, graceful
//! stop, and the io_uring fallback path. Generic over `E: Engine`, instantiated per engine.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering::SeqCst;

use bytes::Bytes;
use common::peer::{scribble, slow_peer, tracked_chunks};
use common::*;
use parking_lot::Mutex;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::oneshot::block_on;
use ringrpc_engine::time::timeout;
use ringrpc_engine::uring::{Uring, UringConfig, EXIT_WAIT_LIMIT};
use ringrpc_engine::{
    current_core, current_runtime, run_on, CoreId, Engine, Listener, RuntimeConfig, Stream,
    StreamReader, StreamWriter,
};

const SIZES: [usize; 7] = [1, 100, 4096, 16 * 1024 + 1, 300_000, 1 << 20, 8 << 20];

fn echo_sizes<E: Engine>() {
    run::<E, _, _>(1, || async {
        let addr = start_echo::<E>();
        for (i, &len) in SIZES.iter().enumerate() {
            // Whole message as one chunk, then as many small chunks (vectored sends).
            echo_check::<E>(addr, i as u64, len, len).await;
            echo_check::<E>(addr, 100 + i as u64, len, 1000).await;
        }
    });
}

#[test]
fn echo_sizes_uring() {
    echo_sizes::<Uring>();
}

#[test]
fn echo_sizes_baseline() {
    echo_sizes::<Baseline>();
}

#[test]
fn echo_sizes_uring_fallback() {
    let cfg = UringConfig {
        fallback: true,
        ..UringConfig::default()
    };
    run_uring(cfg, 1, || async {
        let addr = start_echo::<Uring>();
        for (i, &len) in SIZES.iter().enumerate() {
            echo_check::<Uring>(addr, i as u64, len, 7000).await;
        }
    });
}

/// 1,000 connections at once, each echoing 3 messages of 20 KiB.
async fn many_connections<E: Engine>() -> usize {
    let addr = start_echo::<E>();
    let done = Rc::new(RefCell::new(0usize));
    for c in 0..1000u64 {
        let done = done.clone();
        E::spawn(async move {
            for m in 0..3 {
                echo_check::<E>(addr, c * 10 + m, 20 * 1024, 4096).await;
            }
            *done.borrow_mut() += 1;
        });
    }
    let start = Instant::now();
    while *done.borrow() < 1000 {
        assert!(
            start.elapsed() < Duration::from_secs(50),
            "only {} done",
            done.borrow()
        );
        E::sleep(Duration::from_millis(5)).await;
    }
    let n = *done.borrow();
    n
}

#[test]
fn thousand_connections_small_ring_uring() {
    let cfg = UringConfig {
        buffers: 64,
        ..UringConfig::default()
    };
    let (done, misses) = run_uring(cfg, 1, || async {
        let n = many_connections::<Uring>().await;
        let h = current_runtime().unwrap();
        let c = h.counters(CoreId(0)).unwrap();
        (n, (c.buf_ring_misses, c.buf_copies))
    });
    let (misses, copies) = misses;
    assert_eq!(done, 1000);
    assert!(misses > 0, "64 buffers for 2,000 sockets should run dry");
    assert!(copies > 0, "a ring that low copies receives out");
    eprintln!("buf_ring_misses: {misses}, buf_copies: {copies}");
}

#[test]
fn thousand_connections_baseline() {
    let done = run::<Baseline, _, _>(1, many_connections::<Baseline>);
    assert_eq!(done, 1000);
}

#[test]
fn thousand_connections_uring_fallback() {
    let cfg = UringConfig {
        fallback: true,
        ..UringConfig::default()
    };
    assert_eq!(run_uring(cfg, 1, many_connections::<Uring>), 1000);
}

/// The peer sends half a message and closes: the reader gets the half, then end of stream.
fn peer_close_mid_message<E: Engine>() {
    run::<E, _, _>(1, || async {
        let mut l = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let addr = l.local_addr().unwrap();
        E::spawn(async move {
            let s = E::Stream::connect(addr).await.unwrap();
            let (r, mut w) = s.into_split();
            let (res, _) = w.send(message(7, 50_000, 50_000)).await;
            res.unwrap();
            drop(r);
            drop(w); // closes the socket mid-"message" (the reader expects 100,000 bytes)
        });
        let (s, _) = l.accept().await.unwrap().unwrap();
        let (mut r, _w) = s.into_split();
        let mut got = Vec::new();
        while let Some(b) = r.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        assert_eq!(got.len(), 50_000);
        assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(7, i)));
        // End of stream is sticky.
        assert!(r.recv().await.unwrap().is_none());
    });
}

#[test]
fn peer_close_mid_message_uring() {
    peer_close_mid_message::<Uring>();
}

#[test]
fn peer_close_mid_message_baseline() {
    peer_close_mid_message::<Baseline>();
}

/// Drops futures (and halves) with operations in flight, many times over: recv, send, accept,
/// connect, sleep. Afterwards the connection still carries uncorrupted data.
async fn drop_in_flight_body<E: Engine>(iterations: u64) {
    let addr = start_echo::<E>();
    let mut l = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
    let laddr = l.local_addr().unwrap();
    for i in 0..iterations {
        // recv: a pending recv future dropped, then the data arrives intact.
        let s = E::Stream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        // Nothing was sent yet: the receive must still be pending when it is dropped.
        if let Ok(got) = timeout::<E, _>(Duration::from_micros(200), r.recv()).await {
            panic!("round {i}: a receive before anything was sent returned {got:?}");
        }
        let (res, _) = w.send(message(i, 3000, 3000)).await;
        res.unwrap();
        let mut got = Vec::new();
        while got.len() < 3000 {
            let b = timeout::<E, _>(Duration::from_secs(10), r.recv())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.extend_from_slice(&b);
        }
        assert!(got.iter().enumerate().all(|(k, &b)| b == pattern(i, k)));

        // send: a large send dropped part-way (also checked strictly below, every 20th round).
        let big = message(i, 4 << 20, 64 * 1024);
        let _ = timeout::<E, _>(Duration::from_micros(50), w.send(big)).await;
        if i % 20 == 0 {
            dropped_send_keeps_its_buffers::<E>(i).await;
        }
        // the reader is dropped with its receive armed and data arriving.
        drop(r);
        drop(w);

        // accept: dropped while pending, and dropped with a connection queued.
        let _ = timeout::<E, _>(Duration::from_micros(100), l.accept()).await;
        if i % 4 == 0 {
            let c = E::Stream::connect(laddr).await.unwrap();
            drop(c);
            let mut l2 = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
            let a2 = l2.local_addr().unwrap();
            let c2 = E::Stream::connect(a2).await.unwrap();
            let _ = timeout::<E, _>(Duration::from_millis(1), l2.accept()).await;
            drop(l2);
            drop(c2);
        }

        // connect: dropped before it completes.
        let _ = timeout::<E, _>(Duration::from_micros(1), E::Stream::connect(addr)).await;

        // sleep: dropped armed.
        let _ = timeout::<E, _>(Duration::from_micros(10), E::sleep(Duration::from_secs(5))).await;
    }
    // The listener still accepts after all that.
    let c = E::Stream::connect(laddr).await.unwrap();
    let accepted = timeout::<E, _>(Duration::from_secs(5), l.accept()).await;
    assert!(matches!(accepted, Ok(Ok(Some(_)))));
    drop(c);
}

/// A send dropped while the kernel may still read its chunks. The peer reads nothing, so the
/// 8 MiB send cannot finish and, on io_uring, a `SENDMSG` is in flight when the future drops:
/// the op must keep every chunk alive (checked right after the drop through counting owners,
/// which also scribble over their memory when freed). Once the op is done (the socket closed)
/// every chunk is freed, and every byte that reached the peer is the message's.
async fn dropped_send_keeps_its_buffers<E: Engine>(seed: u64) {
    let peer = slow_peer(seed);
    let s = E::Stream::connect(peer.addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let total = 8 << 20;
    let (chunks, alive) = tracked_chunks(seed, total, 32 * 1024);
    let n = chunks.len();
    assert!(
        timeout::<E, _>(Duration::from_millis(20), w.send(chunks))
            .await
            .is_err(),
        "a peer that reads nothing took 8 MiB"
    );
    if E::NAME == Uring::NAME {
        assert_eq!(
            alive.load(SeqCst),
            n,
            "chunks freed while their send was in flight"
        );
    }
    drop(r);
    drop(w);
    let junk = scribble(256, 32 * 1024);
    let checker = std::thread::spawn(move || peer.release_and_check());
    let t0 = Instant::now();
    while !checker.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "peer never saw the end"
        );
        E::sleep(Duration::from_millis(1)).await;
    }
    let got = checker
        .join()
        .expect("every byte the peer got is the message's");
    drop(junk);
    assert!(got > 0 && got < total, "peer got {got} of {total}");
    assert_eq!(alive.load(SeqCst), 0, "chunks leaked after the send ended");
}

fn drop_in_flight<E: Engine>() {
    let iterations = std::env::var("DROP_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    run::<E, _, _>(1, move || drop_in_flight_body::<E>(iterations));
}

#[test]
fn drop_in_flight_uring() {
    drop_in_flight::<Uring>();
}

#[test]
fn drop_in_flight_baseline() {
    drop_in_flight::<Baseline>();
}

#[test]
fn drop_in_flight_uring_fallback() {
    let cfg = UringConfig {
        fallback: true,
        ..UringConfig::default()
    };
    run_uring(cfg, 1, || drop_in_flight_body::<Uring>(50));
}

/// Timers fire in deadline order; equal deadlines in the order they were armed.
fn timers_in_order<E: Engine>() {
    let order = run::<E, _, _>(1, || async {
        let log = Rc::new(RefCell::new(Vec::new()));
        let base = Instant::now() + Duration::from_millis(20);
        // (label, offset ms): spawned out of order on purpose.
        let plan = [(5, 25), (1, 5), (3, 15), (0, 0), (4, 15), (2, 10), (6, 40)];
        for (label, ms) in plan {
            let log = log.clone();
            E::spawn(async move {
                E::sleep_until(base + Duration::from_millis(ms)).await;
                log.borrow_mut().push(label);
            });
        }
        E::sleep_until(base + Duration::from_millis(60)).await;
        let v = log.borrow().clone();
        v
    });
    assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn timers_in_order_uring() {
    timers_in_order::<Uring>();
}

#[test]
fn timers_in_order_baseline() {
    timers_in_order::<Baseline>();
}

#[test]
fn sleep_duration_uring() {
    let elapsed = run::<Uring, _, _>(1, || async {
        let t = Instant::now();
        Uring::sleep(Duration::from_millis(30)).await;
        t.elapsed()
    });
    assert!(elapsed >= Duration::from_millis(30));
    // Only "not wildly late": a loaded 2-core machine may delay a turn by a lot.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

/// A `Send` signal: a flag and a waker.
#[derive(Default, Clone)]
struct Signal(Arc<Mutex<(bool, Option<Waker>)>>);

impl Signal {
    fn fire(&self) {
        let w = {
            let mut g = self.0.lock();
            g.0 = true;
            g.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut g = self.0.lock();
            if g.0 {
                Poll::Ready(())
            } else {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// A task on core 1 woken from core 0 and from a plain thread; `run_on` both ways.
fn cross_core_wake<E: Engine>() {
    run::<E, _, _>(2, || async {
        assert_eq!(current_core(), Some(CoreId(0)));
        for round in 0..50 {
            let sig = Signal::default();
            let done = Signal::default();
            let (s2, d2) = (sig.clone(), done.clone());
            run_on(CoreId(1), move || {
                E::spawn(async move {
                    s2.wait().await;
                    assert_eq!(current_core(), Some(CoreId(1)));
                    d2.fire();
                });
            })
            .await
            .unwrap();
            if round % 2 == 0 {
                // From core 0 (this task), after giving core 1 time to park.
                E::sleep(Duration::from_micros(200)).await;
                sig.fire();
            } else {
                // From a plain thread.
                let s3 = sig.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_micros(200));
                    s3.fire();
                });
            }
            timeout::<E, _>(Duration::from_secs(5), done.wait())
                .await
                .expect("core 1 task woke and finished");
        }
        let core = run_on(CoreId(1), current_core).await.unwrap();
        assert_eq!(core, Some(CoreId(1)));
        // run_on from a plain thread through the handle.
        let h = current_runtime().unwrap();
        let t = std::thread::spawn(move || {
            let fut = h.run_on(CoreId(0), || current_core().unwrap().0 + 40);
            block_on(fut)
        });
        // Keep core 0 free to run the job while the thread waits.
        let t0 = Instant::now();
        while !t.is_finished() {
            assert!(t0.elapsed() < Duration::from_secs(5));
            E::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(t.join().unwrap().unwrap(), 40);
    });
}

#[test]
fn cross_core_wake_uring() {
    cross_core_wake::<Uring>();
}

#[test]
fn cross_core_wake_baseline() {
    cross_core_wake::<Baseline>();
}

/// Graceful stop with open idle connections: accept yields `None` at once, handlers that end on
/// their own finish, idle ones are dropped at the deadline, and the runtime exits.
fn graceful_stop<E: Engine>() {
    let (tx, rx) = std::sync::mpsc::channel();
    let accept_ended = Arc::new(Mutex::new(false));
    let ae = accept_ended.clone();
    let rt = E::launch(RuntimeConfig::with_cores(2), move |core| {
        let tx = tx.clone();
        let ae = ae.clone();
        async move {
            if core.0 != 0 {
                return;
            }
            let mut l = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            while let Ok(Some((s, _))) = l.accept().await {
                E::spawn(async move {
                    let (mut r, _w) = s.into_split();
                    while let Ok(Some(_)) = r.recv().await {}
                });
            }
            *ae.lock() = true;
        }
    })
    .unwrap();
    let addr = rx.recv().unwrap();
    let clients: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    rt.stop(Duration::from_millis(300));
    let took = t.elapsed();
    assert!(*accept_ended.lock(), "accept yielded None on stop");
    assert!(
        took >= Duration::from_millis(250),
        "idle connections kept until the deadline: {took:?}"
    );
    // Far below "never": the drain deadline ends it, whatever the machine's load.
    assert!(
        took < Duration::from_secs(20),
        "stopped long after the deadline: {took:?}"
    );
    // The server closed its sockets: every client reads end of stream.
    for mut c in clients {
        use std::io::Read;
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(c.read(&mut b).unwrap(), 0);
    }
}

#[test]
fn graceful_stop_uring() {
    graceful_stop::<Uring>();
}

#[test]
fn graceful_stop_baseline() {
    graceful_stop::<Baseline>();
}

/// Stop returns early when no task is left: long before the 60 s grace.
fn stop_without_tasks_is_quick<E: Engine>() {
    let rt = E::launch(RuntimeConfig::with_cores(2), |_| async {}).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    rt.stop(Duration::from_secs(60));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn stop_without_tasks_uring() {
    stop_without_tasks_is_quick::<Uring>();
}

#[test]
fn stop_without_tasks_baseline() {
    stop_without_tasks_is_quick::<Baseline>();
}

/// A `Bytes` received on the io_uring engine and dropped on another thread (and after the
/// runtime stopped) goes back safely.
#[test]
fn bytes_outlive_core_uring() {
    let kept: Vec<Bytes> = run::<Uring, _, _>(1, || async {
        let addr = start_echo::<Uring>();
        let s = <Uring as Engine>::Stream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let (res, _) = w.send(message(3, 100_000, 100_000)).await;
        res.unwrap();
        let mut kept = Vec::new();
        let mut n = 0;
        while n < 100_000 {
            let b = r.recv().await.unwrap().unwrap();
            n += b.len();
            kept.push(b);
        }
        kept
    });
    // The runtime is gone; the buffers are still readable and intact.
    let all: Vec<u8> = kept.iter().flat_map(|b| b.iter().copied()).collect();
    assert!(all.iter().enumerate().all(|(i, &b)| b == pattern(3, i)));
    std::thread::spawn(move || drop(kept)).join().unwrap();
}

/// Buffers dropped on another core go home through that core's queue and are reused.
#[test]
fn bytes_dropped_on_other_core_uring() {
    let cfg = UringConfig {
        buffers: 8,
        ..UringConfig::default()
    };
    run_uring(cfg, 2, || async {
        let addr = start_echo::<Uring>();
        let s = <Uring as Engine>::Stream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        // Far more data than 8 buffers hold: only works if buffers dropped on core 1 return.
        for round in 0..40u64 {
            let (res, _) = w.send(message(round, 60_000, 60_000)).await;
            res.unwrap();
            let mut n = 0;
            while n < 60_000 {
                let b = r.recv().await.unwrap().unwrap();
                assert!(b
                    .iter()
                    .enumerate()
                    .all(|(k, &x)| x == pattern(round, n + k)));
                n += b.len();
                run_on(CoreId(1), move || drop(b)).await.unwrap();
            }
        }
    });
}

thread_local! {
    static KEPT: RefCell<Vec<<<Uring as Engine>::Stream as Stream>::Reader>> =
        const { RefCell::new(Vec::new()) };
}

/// A reader kept alive outside any task (in a thread-local) with its receive armed must not hold
/// up the stop: the core cancels every in-flight op when it exits.
#[test]
fn stop_with_reader_outside_tasks_uring() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
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
    let (_peer, _) = listener.accept().unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let t = Instant::now();
    rt.stop(Duration::ZERO);
    // Without the cancel the stop would wait for the exit limit: well below it.
    assert!(
        t.elapsed() < EXIT_WAIT_LIMIT / 2,
        "stop took {:?}",
        t.elapsed()
    );
}

/// A writer that records the chunks of every `send` call, completing each at once.
struct RecordingWriter(Rc<RefCell<Vec<Vec<Bytes>>>>);

impl StreamWriter for RecordingWriter {
    async fn send(&mut self, mut chunks: Vec<Bytes>) -> (std::io::Result<()>, Vec<Bytes>) {
        self.0.borrow_mut().push(chunks.clone());
        chunks.clear();
        (Ok(()), chunks)
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ten two-chunk messages queued in one turn: the io_uring engine hands them to one send, the
/// gonet-style baseline sends each message on its own; either way the bytes arrive in order.
fn outbox_sends<E: Engine>() -> Vec<Vec<Bytes>> {
    run::<E, _, _>(1, || async {
        let sends = Rc::new(RefCell::new(Vec::new()));
        let outbox = ringrpc_engine::outbox::Outbox::spawn::<E, _>(RecordingWriter(sends.clone()));
        for i in 0..10u8 {
            assert!(outbox.push([Bytes::from(vec![i]), Bytes::from(vec![i, i])]));
        }
        outbox.close().await;
        assert_eq!(outbox.queued_bytes(), 0);
        let v = sends.borrow().clone();
        v
    })
}

fn flat(sends: &[Vec<Bytes>]) -> Vec<u8> {
    sends.iter().flatten().flat_map(|b| b.to_vec()).collect()
}

#[test]
fn outbox_batches_on_uring() {
    let sends = outbox_sends::<Uring>();
    assert_eq!(sends.len(), 1, "one send for the turn's messages");
    let want: Vec<u8> = (0..10u8).flat_map(|i| [i, i, i]).collect();
    assert_eq!(flat(&sends), want);
}

#[test]
fn outbox_writes_each_message_on_baseline() {
    let sends = outbox_sends::<Baseline>();
    assert_eq!(sends.len(), 10, "one send per message");
    for (i, s) in sends.iter().enumerate() {
        assert_eq!(s.len(), 2);
        assert_eq!(flat(std::slice::from_ref(s)), vec![i as u8; 3]);
    }
}

/// A core that polls before sleeping polls (its `busy_poll_spins` grow), still echoes, fires
/// timers in time (polling stops at the next deadline), and answers wake-ups from another
/// thread.
#[test]
fn busy_poll_uring() {
    let config = RuntimeConfig {
        busy_poll: Duration::from_millis(2),
        ..RuntimeConfig::with_cores(1)
    };
    let (elapsed, woken, spins) = run_with(
        move |_, i| Uring::launch(config, i),
        1,
        || async {
            let addr = start_echo::<Uring>();
            for (i, &len) in SIZES.iter().take(5).enumerate() {
                echo_check::<Uring>(addr, i as u64, len, 1000).await;
            }
            let t = Instant::now();
            Uring::sleep(Duration::from_micros(500)).await;
            let elapsed = t.elapsed();
            let signal = Signal::default();
            let remote = signal.clone();
            let t = Instant::now();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                remote.fire();
            });
            signal.wait().await;
            let woken = t.elapsed();
            let spins = current_runtime()
                .unwrap()
                .counters(CoreId(0))
                .unwrap()
                .busy_poll_spins;
            (elapsed, woken, spins)
        },
    );
    // The 20 ms wait for the other thread alone is ten 2 ms polling periods.
    assert!(spins > 0, "the core never busy-polled");
    assert!(elapsed >= Duration::from_micros(500));
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(woken >= Duration::from_millis(20));
    assert!(woken < Duration::from_secs(5), "{woken:?}");
}
