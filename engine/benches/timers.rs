//! Criterion benches of the io_uring engine's timers: arm + cancel (what a server pays per idle
//! or write timeout that does not fire, and a client per call deadline) and arm + fire, on the
//! bare `TimerQueue` with 0 and 100k other live timers, and through `Sleep` on a running core
//! (thread-local core lookup and `RefCell` included).
//!
//! `cargo bench -p ringrpc-engine --bench timers`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::mpsc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use ringrpc_engine::uring::{TimerQueue, Uring};
use ringrpc_engine::{Engine, RuntimeConfig};

/// Timers armed and fired per iteration of the fire bench.
const FIRE_BATCH: usize = 1024;

/// A queue holding `n` live timers due in 300..400 s.
fn queue_with(n: usize, base: Instant) -> TimerQueue {
    let mut q = TimerQueue::new();
    for i in 0..n {
        q.arm(
            base + Duration::from_secs(300) + Duration::from_micros((i * 7919 % 100_000) as u64),
            Waker::noop().clone(),
        );
    }
    q
}

fn queue_benches(c: &mut Criterion) {
    let base = Instant::now();
    let mut g = c.benchmark_group("timer_queue");
    for live in [0usize, 100_000] {
        let mut q = queue_with(live, base);
        let deadline = base + Duration::from_secs(600);
        g.bench_function(format!("arm_cancel/{live}_live"), |b| {
            b.iter(|| {
                let k = q.arm(black_box(deadline), Waker::noop().clone());
                black_box(q.cancel(k));
            });
        });
        // Timers nearer than every live one: each goes to the root, then is fired.
        g.throughput(Throughput::Elements(FIRE_BATCH as u64));
        let mut woken = Vec::with_capacity(FIRE_BATCH);
        g.bench_function(format!("arm_fire_{FIRE_BATCH}/{live}_live"), |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    let mut keys = [None; FIRE_BATCH];
                    for (i, k) in keys.iter_mut().enumerate() {
                        let at = base + Duration::from_micros(i as u64);
                        *k = Some(q.arm(at, Waker::noop().clone()));
                    }
                    let n = q.fire(base + Duration::from_secs(1), usize::MAX, &mut woken);
                    assert_eq!(n, FIRE_BATCH);
                    woken.clear();
                    // The owners collect their fired timers (frees the slots).
                    for k in keys.into_iter().flatten() {
                        assert!(q.poll(k, Waker::noop()).is_ok());
                    }
                },
                BatchSize::SmallInput,
            );
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

/// `Sleep` armed by one poll and dropped, on a running io_uring core.
fn sleep_bench(c: &mut Criterion) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("sleep/arm_drop_on_core", |b| {
        b.iter(|| {
            let mut sleep = pin!(Uring::sleep_until(black_box(deadline)));
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
        });
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    queue_benches(&mut c);
    // The Sleep bench runs inside a task of a one-core runtime (Sleep needs its core).
    let (tx, rx) = mpsc::channel();
    let tx = parking_lot::Mutex::new(Some(tx));
    let rt = Uring::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.lock().take();
        async move {
            let mut c = Criterion::default().configure_from_args();
            sleep_bench(&mut c);
            c.final_summary();
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    })
    .expect("io_uring runtime starts");
    rx.recv().expect("sleep bench ran");
    rt.stop(Duration::from_millis(50));
    c.final_summary();
}
