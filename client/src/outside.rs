//! Calling into a runtime from outside it: a plain thread, or a task of another runtime.
//!
//! Each call is posted to one of the runtime's cores (round-robin), runs there on that core's
//! pool, and its result comes back through a `Send` one-shot channel. The cost over a call made
//! on a core: a boxed closure pushed to the core's mailbox (a lock-free queue), a wake-up of the
//! core if it sleeps (an eventfd write on io_uring, a channel notify on the baseline), a task
//! spawned there, and on completion a mutex-guarded hand-off plus a wake of the caller's thread
//! (an `unpark` for [`OutsideClient::call_raw_blocking`]). That is two cross-thread wake-ups per
//! call, each a system call when the other side sleeps; code that makes many calls should run
//! on the runtime instead.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ringrpc_engine::{CoreId, Engine, RuntimeHandle};

use crate::{CallOptions, Client, ClientError, Reply};

/// A [`Client`] bound to a runtime, callable from any thread.
#[derive(Debug)]
pub struct OutsideClient<E: Engine> {
    client: Client<E>,
    runtime: RuntimeHandle,
    next_core: AtomicUsize,
}

impl<E: Engine> OutsideClient<E> {
    /// Calls through `runtime`'s cores with `client`.
    pub fn new(client: Client<E>, runtime: RuntimeHandle) -> Self {
        Self {
            client,
            runtime,
            next_core: AtomicUsize::new(0),
        }
    }

    /// [`Client::call_raw`] from outside the runtime.
    ///
    /// # Errors
    /// As [`Client::call_raw`]; [`ClientError::Closed`] if the runtime stopped.
    pub async fn call_raw(
        &self,
        method: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Reply, ClientError> {
        let core = CoreId(self.next_core.fetch_add(1, Ordering::Relaxed) % self.runtime.cores());
        let (tx, rx) = ringrpc_engine::oneshot::channel();
        let client = self.client.clone();
        let method = method.to_owned();
        self.runtime
            .post(core, move || {
                E::spawn(async move {
                    tx.send(client.call_raw(&method, body, opts).await);
                });
            })
            .map_err(|_| ClientError::Closed)?;
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// [`OutsideClient::call_raw`], blocking the calling thread until the reply.
    ///
    /// # Errors
    /// As [`OutsideClient::call_raw`].
    pub fn call_raw_blocking(
        &self,
        method: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Reply, ClientError> {
        ringrpc_engine::oneshot::block_on(self.call_raw(method, body, opts))
    }
}
