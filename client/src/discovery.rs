//! The cores a client has state on, and following a resolver: every snapshot reaches the
//! balancer of every core that built this client's pipeline, without a lock on the request
//! path; when the client's last handle drops, its state is freed on each of those cores.
//!
//! The client is made before (or outside) any runtime and each core builds its pipeline on its
//! first call, so the set of cores is only known as they come. The shared state holds the
//! cores that built a pipeline and, with a resolver, the latest instance list with a
//! generation number:
//!
//! - a snapshot (on the resolver's thread) becomes the latest under the lock and is posted to
//!   every core listed (`RuntimeHandle::post`); cores of stopped runtimes are dropped from the
//!   list;
//! - a core building its pipeline, under the same lock, applies the latest list and adds itself
//!   to the list, so it misses nothing;
//! - each core applies a list only if its generation is newer than the one it has, so posts
//!   arriving out of order never bring back an older list;
//! - the client's last handle takes the list and posts each core the removal of its state
//!   (`crate::client`).

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

/// The cores one client has state on, and its resolver's latest list (if it follows one).
#[derive(Default)]
pub(crate) struct ClientCores {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientCores {
    /// Starts watching `config`'s service for client `id` (its pipelines' key on each core);
    /// the watch runs until the handle returned is dropped.
    pub(crate) fn watch<E: Engine>(
        &self,
        id: u64,
        config: &ResolverConfig,
    ) -> Result<WatchHandle, DiscoveryError> {
        let shared = self.state.clone();
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
        if lock(&self.state).latest.is_none() {
            match config.resolver.resolve(&config.service) {
                Ok(instances) => {
                    let mut st = lock(&self.state);
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
        Ok(watch)
    }

    /// Called on a core right after it built its pipeline `core`: applies the latest list (if
    /// any) and lists the core, for later lists and for freeing the state.
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

    /// Every core listed, emptying the list (the client's last handle is going).
    pub(crate) fn take(&self) -> Vec<(RuntimeHandle, CoreId)> {
        std::mem::take(&mut lock(&self.state).cores)
    }
}
