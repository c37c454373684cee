//! Calling into a runtime from outside it: a plain thread, or a task of another runtime.
//!
//! [`OutsideClient`] has the typed calls of [`Client`] (`call_thrift`, `call_protobuf`,
//! `call_raw`, each also blocking), all through one path generic over the call's kind
//! ([`CallKind`]): the request is encoded on the calling thread when the call is made, the
//! encoded call is posted to one of the runtime's cores (round-robin) and runs there on that
//! core's pool and pipeline, and the reply comes back through a `Send` one-shot channel and is
//! decoded on the calling thread. So the argument and result types need not be `Send`, and the
//! errors are the same typed [`ClientError`]s a call on a core gets.
//!
//! The cost over a call made on a core: a boxed closure pushed to the core's mailbox (a
//! lock-free queue), a wake-up of the core if it sleeps (an eventfd write on io_uring, a
//! channel notify on the baseline), a task spawned there, and on completion a mutex-guarded
//! hand-off plus a wake of the caller's thread (an `unpark` for the `_blocking` calls). That is
//! two cross-thread wake-ups per call, each a system call when the other side sleeps; code that
//! makes many calls should run on the runtime instead.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ringrpc_engine::{CoreId, Engine, RuntimeHandle};
use thrift::protocol::TSerializable;

use crate::kind::{CallKind, Protobuf, Raw, Thrift};
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
    pub fn call_raw(
        &self,
        method: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Reply, ClientError>> + '_ {
        self.call::<Raw>(method, &body, opts)
    }

    /// [`Client::call_thrift`] from outside the runtime. `args` is encoded before this returns.
    ///
    /// # Errors
    /// As [`Client::call_thrift`]; [`ClientError::Closed`] if the runtime stopped.
    pub fn call_thrift<A: TSerializable, R: TSerializable>(
        &self,
        method: &str,
        args: &A,
        opts: CallOptions,
    ) -> impl Future<Output = Result<R, ClientError>> + '_ {
        self.call::<Thrift<A, R>>(method, args, opts)
    }

    /// [`Client::call_protobuf`] from outside the runtime. `request` is encoded before this
    /// returns.
    ///
    /// # Errors
    /// As [`Client::call_protobuf`]; [`ClientError::Closed`] if the runtime stopped.
    pub fn call_protobuf<A: prost::Message, R: prost::Message + Default>(
        &self,
        method: &str,
        request: &A,
        opts: CallOptions,
    ) -> impl Future<Output = Result<R, ClientError>> + '_ {
        self.call::<Protobuf<A, R>>(method, request, opts)
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

    /// [`OutsideClient::call_thrift`], blocking the calling thread until the reply.
    ///
    /// # Errors
    /// As [`OutsideClient::call_thrift`].
    pub fn call_thrift_blocking<A: TSerializable, R: TSerializable>(
        &self,
        method: &str,
        args: &A,
        opts: CallOptions,
    ) -> Result<R, ClientError> {
        ringrpc_engine::oneshot::block_on(self.call_thrift(method, args, opts))
    }

    /// [`OutsideClient::call_protobuf`], blocking the calling thread until the reply.
    ///
    /// # Errors
    /// As [`OutsideClient::call_protobuf`].
    pub fn call_protobuf_blocking<A: prost::Message, R: prost::Message + Default>(
        &self,
        method: &str,
        request: &A,
        opts: CallOptions,
    ) -> Result<R, ClientError> {
        ringrpc_engine::oneshot::block_on(self.call_protobuf(method, request, opts))
    }

    /// A call of kind `K`, the one path of every call above: encoded now, posted to the next
    /// core when first polled, decoded when its reply is back.
    fn call<K: CallKind>(
        &self,
        method: &str,
        request: &K::Request,
        opts: CallOptions,
    ) -> impl Future<Output = Result<K::Response, ClientError>> + '_ {
        let body = K::encode(request);
        let method = method.to_owned();
        async move {
            let body = body?;
            let core =
                CoreId(self.next_core.fetch_add(1, Ordering::Relaxed) % self.runtime.cores());
            let (tx, rx) = ringrpc_engine::oneshot::channel();
            let client = self.client.clone();
            let payload = K::PAYLOAD;
            self.runtime
                .post(core, move || {
                    E::spawn(async move {
                        tx.send(client.call_body(&method, body, opts, payload).await);
                    });
                })
                .map_err(|_| ClientError::Closed)?;
            K::decode(rx.await.unwrap_or(Err(ClientError::Closed))?)
        }
    }
}
