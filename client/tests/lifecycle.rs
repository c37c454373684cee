//! A dropped client leaves nothing behind: 10,000 clients, each making a call and dropped, on a
//! two-core client runtime against one server, both engines and both connection modes. After
//! the last handle of each is dropped, the server's connection gauge, the client cores' live
//! task counts and the per-core client state come back to where they started.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringrpc_client::governance::obs::{MetricsConfig, MetricsRegistry};
use ringrpc_client::{clients_on_this_core, CallOptions, Client, ClientConfig, ConnMode};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_engine::{oneshot, CoreId, RuntimeConfig, RuntimeHandle};
use ringrpc_example_echo::Response;

engine_tests!(
    dropped_multiplexed_clients_leave_nothing_behind,
    dropped_pooled_clients_leave_nothing_behind,
);

const CLIENTS: usize = 10_000;
/// Every this many clients, one also calls on the other core (state on two cores to free).
const BOTH_CORES_EVERY: usize = 100;
const CORES: usize = 2;

fn dropped_multiplexed_clients_leave_nothing_behind<E: TestEngine>() {
    drop_clients::<E>(ConnMode::multiplexed(1));
}

fn dropped_pooled_clients_leave_nothing_behind<E: TestEngine>() {
    drop_clients::<E>(ConnMode::pooled());
}

/// `f()` run on each core of `handle`, in core order.
fn on_each_core(handle: &RuntimeHandle, f: fn() -> usize) -> Vec<usize> {
    (0..handle.cores())
        .map(|c| oneshot::block_on(handle.run_on(CoreId(c), f)).expect("core runs"))
        .collect()
}

/// Waits (bounded) until `probe()` equals `want`; panics with the last value otherwise.
fn wait_for<T: PartialEq + std::fmt::Debug>(what: &str, want: T, probe: impl Fn() -> T) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = probe();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drop_clients<E: TestEngine>(mode: ConnMode) {
    let registry = MetricsRegistry::new(MetricsConfig::subsystem("server"));
    let server =
        start_test_server::<E>(&Arc::new(Probe::default()), |b| b.metrics(registry.clone()));
    let runtime = E::launch(RuntimeConfig::with_cores(CORES), |_| async {}).expect("runtime");
    let handle = runtime.handle();
    // The runtime's only tasks are its (empty) init tasks, gone once they ran.
    let no_tasks = vec![0; CORES];
    wait_for("client live tasks at start", no_tasks.clone(), || {
        on_each_core(&handle, E::live_tasks)
    });
    assert_eq!(registry.snapshot().connections, 0);
    let config = ClientConfig::new(vec![server.local_addr()])
        .service_name(SERVICE)
        .conn_mode(mode);

    for i in 0..CLIENTS {
        let client = Client::<E>::new(config.clone());
        let mut cores = vec![i % CORES];
        if i % BOTH_CORES_EVERY == 0 {
            cores.push((i + 1) % CORES);
        }
        for core in cores {
            let c = client.clone();
            let (tx, rx) = oneshot::channel();
            handle
                .post(CoreId(core), move || {
                    E::spawn(async move {
                        let r = c
                            .call_thrift::<_, SuccessResult<Response>>(
                                "Echo",
                                &req("echo", "x"),
                                CallOptions::default(),
                            )
                            .await;
                        tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
                    });
                })
                .expect("post");
            if let Err(e) = oneshot::block_on(rx).expect("call finished") {
                panic!("client {i}, core {core}: {e}");
            }
        }
        // The last handle of the client goes here, off the runtime.
        drop(client);
    }

    wait_for("server connections", 0, || registry.snapshot().connections);
    wait_for("client live tasks", no_tasks, || {
        on_each_core(&handle, E::live_tasks)
    });
    wait_for("client state per core", vec![0; CORES], || {
        on_each_core(&handle, clients_on_this_core)
    });
    runtime.stop(Duration::from_millis(50));
    server.shutdown();
}
