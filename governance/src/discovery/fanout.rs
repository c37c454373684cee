//! Delivering discovery snapshots to the per-core balancers.
//!
//! The resolver's thread calls the fan-out's sink with each snapshot; the sink remembers it as
//! the latest and posts it to every core. On a core, the subscribers registered there for this
//! fan-out (kept in a thread-local table, since balancers are `Rc`s) apply it. Snapshots carry
//! a sequence number so a core never goes back to an older list.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ringrpc_engine::{CoreId, RuntimeHandle};

use super::{Snapshot, SnapshotFn};
use crate::balance::LoadBalancer;

/// A subscriber: applies a snapshot, returns `false` once it is gone (and can be dropped).
type Subscriber = Box<dyn Fn(&Snapshot) -> bool>;

#[derive(Default)]
struct CoreSubscribers {
    /// Sequence number of the last snapshot applied on this thread.
    applied: u64,
    subscribers: Vec<Subscriber>,
}

thread_local! {
    static SUBSCRIBERS: RefCell<HashMap<u64, CoreSubscribers>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Shared {
    id: u64,
    handle: RuntimeHandle,
    /// The latest snapshot and its sequence number (starting at 1).
    latest: Mutex<Option<(u64, Snapshot)>>,
}

/// Applies `snapshot` (number `seq`) to this thread's subscribers of fan-out `id`.
fn apply_here(id: u64, seq: u64, snapshot: &Snapshot) {
    SUBSCRIBERS.with(|table| {
        let mut table = table.borrow_mut();
        let Some(entry) = table.get_mut(&id) else {
            return;
        };
        if seq <= entry.applied {
            return;
        }
        entry.applied = seq;
        entry.subscribers.retain(|s| s(snapshot));
        if entry.subscribers.is_empty() {
            table.remove(&id);
        }
    });
}

/// Fans discovery snapshots out to subscribers on every core of a runtime.
///
/// Cloning gives another handle to the same fan-out.
#[derive(Clone)]
pub struct CoreFanout {
    shared: Arc<Shared>,
}

impl fmt::Debug for CoreFanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreFanout")
            .field("id", &self.shared.id)
            .field("cores", &self.shared.handle.cores())
            .finish()
    }
}

impl CoreFanout {
    /// A fan-out to the cores of `handle`'s runtime.
    pub fn new(handle: RuntimeHandle) -> Self {
        Self {
            shared: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                handle,
                latest: Mutex::new(None),
            }),
        }
    }

    /// The callback to give [`super::Resolver::watch`]: each snapshot becomes the latest and is
    /// posted to every core. Cores of a stopped runtime are skipped.
    pub fn sink(&self) -> SnapshotFn {
        let shared = self.shared.clone();
        Arc::new(move |snapshot: Snapshot| {
            // Posting under the lock orders posts with `subscribe`'s read of the latest.
            let mut latest = shared.latest.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = latest.as_ref().map_or(1, |(s, _)| s + 1);
            *latest = Some((seq, snapshot.clone()));
            let id = shared.id;
            for core in 0..shared.handle.cores() {
                let snapshot = snapshot.clone();
                // Err only when the runtime stopped: nobody is left to update.
                let _ = shared
                    .handle
                    .post(CoreId(core), move || apply_here(id, seq, &snapshot));
            }
        })
    }

    /// The latest snapshot delivered, if any.
    pub fn latest(&self) -> Option<Snapshot> {
        self.shared
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    /// Registers `apply` on the calling thread (a core): it runs on this thread with the latest
    /// snapshot now, if there is one, and with every later one, until it returns `false`.
    pub fn subscribe(&self, apply: impl Fn(&Snapshot) -> bool + 'static) {
        let latest = self
            .shared
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let keep = match latest.as_ref() {
            Some((_, snapshot)) => apply(snapshot),
            None => true,
        };
        let seq = latest.as_ref().map_or(0, |(s, _)| *s);
        SUBSCRIBERS.with(|table| {
            let mut table = table.borrow_mut();
            let entry = table.entry(self.shared.id).or_default();
            entry.applied = entry.applied.max(seq);
            if keep {
                entry.subscribers.push(Box::new(apply));
            }
        });
        drop(latest);
    }

    /// Registers a balancer of the calling core: each snapshot replaces its instance list
    /// ([`LoadBalancer::update`]). Held weakly: once the client drops it, it is forgotten.
    pub fn subscribe_balancer<B: LoadBalancer + 'static>(&self, balancer: &Rc<B>) {
        let weak = Rc::downgrade(balancer);
        self.subscribe(move |snapshot| match weak.upgrade() {
            Some(lb) => {
                lb.update(snapshot.instances.to_vec());
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::mpsc;
    use std::time::Duration;

    use ringrpc_engine::baseline::Baseline;
    use ringrpc_engine::{Engine, RuntimeConfig};

    use super::*;
    use crate::balance::{Instance, WeightedRoundRobin};

    fn snap(ports: &[u16]) -> Snapshot {
        let instances = ports
            .iter()
            .map(|p| Instance::new(SocketAddr::from(([127, 0, 0, 1], *p)), 10))
            .collect();
        Snapshot::new("svc", u64::from(ports.len() as u32), instances)
    }

    #[test]
    fn snapshots_reach_the_balancer_of_every_core() {
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let ready_tx = Mutex::new(ready_tx);
        let fanout: Arc<Mutex<Option<CoreFanout>>> = Arc::new(Mutex::new(None));
        let rt = Baseline::launch(RuntimeConfig::with_cores(2), |_core| async {}).expect("runtime");
        let f = CoreFanout::new(rt.handle());
        *fanout.lock().unwrap() = Some(f.clone());
        // Deliver one snapshot before anyone subscribed: late subscribers get it at once.
        (f.sink())(snap(&[1]));
        let (tx, rx) = mpsc::channel::<(usize, Vec<SocketAddr>)>();
        for core in 0..2 {
            let f = f.clone();
            let tx = tx.clone();
            let ready = ready_tx.lock().unwrap().clone();
            rt.handle()
                .post(CoreId(core), move || {
                    let lb = Rc::new(WeightedRoundRobin::new(Vec::new()));
                    f.subscribe_balancer(&lb);
                    let lb2 = lb.clone();
                    f.subscribe(move |_| {
                        let addrs = lb2.instances().iter().map(|i| i.addr).collect();
                        tx.send((core, addrs)).is_ok()
                    });
                    // Keep the balancer alive on this core for the rest of the test.
                    std::mem::forget(lb);
                    let _ = ready.send(());
                })
                .unwrap();
        }
        for _ in 0..2 {
            ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        let mut first: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        first.sort();
        assert_eq!(first[0].1.len(), 1);
        assert_eq!(first[1].1.len(), 1);
        (f.sink())(snap(&[1, 2, 3]));
        let mut second: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        second.sort();
        assert_eq!(second[0], (0, snap(&[1, 2, 3]).addrs()));
        assert_eq!(second[1], (1, snap(&[1, 2, 3]).addrs()));
        assert_eq!(f.latest().unwrap().instances.len(), 3);
        rt.stop(Duration::from_millis(100));
    }
}
