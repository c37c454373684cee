//! Following a resolver: every snapshot reaches the balancer of every core that built this
//! client's pipeline, without a lock on the request path.
//!
//! The client is made before (or outside) any runtime and each core builds its pipeline on its
//! first call, so the set of cores is only known as they come. The shared state holds the
//! latest instance list with a generation number and the cores that built a pipeline:
//!
//! - a snapshot (on the resolver's thread) becomes the latest under the lock and is posted to
//!   every core listed (`RuntimeHandle::post`); cores of stopped runtimes are dropped from the
//!   list;
//! - a core building its pipeline, under the same lock, applies the latest list and adds itself
//!   to the list, so it misses nothing;
//! - each core applies a list only if its generation is newer than the one it has, so posts
//!   arriving out of order never bring back an older list.

use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ringrpc_engine::{CoreId, Engine, RuntimeHandle};
use ringrpc_governance::balance::Instance;
use ringrpc_governance::discovery::{DiscoveryError, Snapshot, WatchHandle};

use crate::config::ResolverConfig;
use crate::pipeline::CoreClient;

#[derive(Default)]
struct State {
    /// Generation of `latest` (0: nothing yet).
    generation: u64,
    latest: Option<Arc<[Instance]>>,
    /// The cores that built a pipeline of this client.
    cores: Vec<(RuntimeHandle, CoreId)>,
}

/// The discovery state of one client, alive as long as any clone of the client.
pub(crate) struct Discovery {
    state: Arc<Mutex<State>>,
    /// Stops the watch when the last clone of the client is dropped (in a `Mutex` only to be
    /// `Sync`; never locked).
    _watch: Mutex<WatchHandle>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Discovery {
    /// Starts watching; `id` is the client's (its pipelines' key on each core).
    pub(crate) fn start<E: Engine>(
        id: u64,
        config: &ResolverConfig,
    ) -> Result<Self, DiscoveryError> {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let sink = Arc::new(move |snapshot: Snapshot| {
            let mut st = lock(&shared);
            st.generation += 1;
            st.latest = Some(snapshot.instances.clone());
            let generation = st.generation;
            st.cores.retain(|(handle, core)| {
                let instances = snapshot.instances.clone();
                handle
                    .post(*core, move || {
                        if let Some(c) = crate::client::core_client::<E>(id) {
                            c.apply_snapshot(generation, &instances);
                        }
                    })
                    .is_ok()
            });
        });
        let watch = config.resolver.watch(&config.service, sink)?;
        // A watch may deliver its first list later, on its own thread: resolve once now, so
        // the first calls do not find an empty list. A list the watch delivered meanwhile wins.
        if lock(&state).latest.is_none() {
            match config.resolver.resolve(&config.service) {
                Ok(instances) => {
                    let mut st = lock(&state);
                    if st.latest.is_none() {
                        st.generation += 1;
                        st.latest = Some(instances.into());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, service = %config.service, "first resolve failed");
                }
            }
        }
        Ok(Self {
            state,
            _watch: Mutex::new(watch),
        })
    }

    /// Called on a core right after it built its pipeline `core`: applies the latest list and
    /// subscribes the core to later ones.
    pub(crate) fn join<E: Engine>(&self, core: &Rc<CoreClient<E>>) {
        let (Some(handle), Some(id)) = (
            ringrpc_engine::current_runtime(),
            ringrpc_engine::current_core(),
        ) else {
            return;
        };
        let mut st = lock(&self.state);
        if let Some(latest) = &st.latest {
            core.apply_snapshot(st.generation, latest);
        }
        st.cores.push((handle, id));
    }
}
