//! Test: a call through a client stack with nothing configured allocates nothing for the
//! stack. A counting global allocator (this crate's unit-test binary has no other tests)
//! counts the allocations of the calling thread while N calls run through a stack whose
//! transport is a stub answering at once without allocating, on a core of each engine, with
//! the deadline a real call has (the default RPC timeout), after a few warm-up calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, RuntimeConfig};
use ringrpc_governance::{Backward, CallDeadline, Service};

use crate::pipeline::{AnyBalancer, ClientStack};
use crate::{ClientConfig, ClientContext, ClientError, Reply};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to `System` unchanged; only counts in thread-locals with const
// initialisers (no allocation, no destructor).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by the calling thread while `f` runs.
async fn allocations_of<F: std::future::Future>(f: impl FnOnce() -> F) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f().await;
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// A transport answering every call at once with an empty reply; allocates nothing.
struct Stub;

impl Service<ClientContext, Bytes> for Stub {
    type Response = Reply;
    type Error = ClientError;

    async fn call(&self, cx: &mut ClientContext, _: Bytes) -> Result<Reply, ClientError> {
        assert!(cx.address.is_some(), "the balancer picked an instance");
        Ok(Reply {
            body: Bytes::new(),
            header: None,
            backward: Backward::default(),
        })
    }
}

const CALLS: usize = 1_000;

/// (allocations of the counting check, of `CALLS` stub calls, of `CALLS` stack calls).
fn count_on_core<E: Engine>() -> (usize, usize, usize) {
    let (tx, rx) = mpsc::channel();
    let runtime = E::launch(RuntimeConfig::with_cores(1), move |_| {
        let tx = tx.clone();
        async move {
            let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let config = ClientConfig::new(vec![addr]);
            let balancer = Rc::new(AnyBalancer::new(
                config.balancer,
                config.effective_instances(),
            ));
            let stack = ClientStack::<E, Stub>::new(&config, Stub, balancer, None);
            let mut cx = ClientContext::new("Echo");
            let body = Bytes::from_static(b"request");
            let timeout = config.rpc_timeout.expect("a default RPC timeout");
            let call = |cx: &mut ClientContext| {
                // What `Client::call_body` sets before the stack runs.
                cx.address = None;
                cx.set_deadline(Some(Instant::now() + timeout));
            };
            for _ in 0..10 {
                call(&mut cx);
                stack
                    .call(&mut cx, body.clone())
                    .await
                    .expect("warm-up call");
            }
            let check = allocations_of(|| async { drop(std::hint::black_box(vec![1u8])) }).await;
            let stub = allocations_of(|| async {
                for _ in 0..CALLS {
                    call(&mut cx);
                    cx.address = Some(addr);
                    Stub.call(&mut cx, body.clone()).await.expect("stub call");
                }
            })
            .await;
            let stacked = allocations_of(|| async {
                for _ in 0..CALLS {
                    call(&mut cx);
                    stack.call(&mut cx, body.clone()).await.expect("stack call");
                }
            })
            .await;
            let _ = tx.send((check, stub, stacked));
        }
    })
    .expect("runtime");
    let counts = rx.recv_timeout(Duration::from_secs(30)).expect("counted");
    runtime.stop(Duration::from_millis(50));
    counts
}

fn a_bare_call_allocates_nothing_for_the_stack<E: Engine>() {
    let (check, stub, stacked) = count_on_core::<E>();
    assert_eq!(check, 1, "the counter sees an allocation");
    assert_eq!(stub, 0, "the stub transport allocates nothing");
    assert_eq!(stacked, 0, "{CALLS} bare calls through the stack allocated");
}

#[test]
fn a_bare_call_allocates_nothing_for_the_stack_uring() {
    a_bare_call_allocates_nothing_for_the_stack::<Uring>();
}

#[test]
fn a_bare_call_allocates_nothing_for_the_stack_baseline() {
    a_bare_call_allocates_nothing_for_the_stack::<Baseline>();
}
