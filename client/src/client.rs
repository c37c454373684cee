//! The `Client` handle and its typed calls.

use rustc_hash::FxHashMap;
use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use ringrpc_codec::{PayloadProtocol, TtHeader};
use ringrpc_engine::Engine;
use ringrpc_governance::balance::Instance;
use ringrpc_governance::breaker::BreakerState;
use ringrpc_governance::discovery::{DiscoveryError, WatchHandle};
use ringrpc_governance::{Backward, CallDeadline};
use thrift::protocol::TSerializable;

use crate::discovery::ClientCores;
use crate::kind::{CallKind, Protobuf, Raw, Thrift};
use crate::pipeline::CoreClient;
use crate::pool::CorePool;
use crate::{CallOptions, ClientConfig, ClientContext, ClientError};

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Each client's pipeline on this core, by client id (built on first use).
    static PIPELINES: RefCell<FxHashMap<u64, Rc<dyn Any>>> = RefCell::new(FxHashMap::default());
}

/// How many clients have state on the calling core (a pipeline and connections, built by a
/// call made on this core): 0 off a core. Dropping the last handle of a client removes its
/// state from every core it was used on; this shows it (leak checks, diagnostics).
pub fn clients_on_this_core() -> usize {
    PIPELINES.with(|p| p.borrow().len())
}

/// A successful reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The result struct (Thrift) or response message (protobuf) bytes, zero-copy.
    pub body: Bytes,
    /// The reply's TTHeader, if it had one.
    pub header: Option<TtHeader>,
    /// Backward metainfo the server sent.
    pub backward: Backward,
}

/// A client of one service: `Send + Sync`, cheap to clone; calls run on the calling core.
///
/// Dropping the last handle frees the client's state on every core it was used on: each
/// core's pipeline and pool go, their connections close once the calls on them have finished
/// or failed, and the connections' tasks end.
pub struct Client<E: Engine> {
    shared: Arc<Shared<E>>,
}

/// What every handle of one client shares.
struct Shared<E: Engine> {
    id: u64,
    config: Arc<ClientConfig>,
    /// The cores with state of this client (and the resolver's latest list).
    cores: ClientCores,
    /// Stops the resolver's watch when the last handle drops (in a `Mutex` only to be `Sync`;
    /// never locked).
    _watch: Option<Mutex<WatchHandle>>,
    _engine: PhantomData<fn() -> E>,
}

impl<E: Engine> Drop for Shared<E> {
    fn drop(&mut self) {
        let id = self.id;
        for (handle, core) in self.cores.take() {
            // A stopped runtime refuses the post; its core threads have exited and dropped
            // their thread-local state already.
            let _ = handle.post(core, move || {
                // Taken out of the map first, then dropped: closing the pool runs no code that
                // reaches the map, but the borrow need not span it either.
                let state = PIPELINES.with(|p| p.borrow_mut().remove(&id));
                drop(state);
            });
        }
    }
}

impl<E: Engine> Clone for Client<E> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// This core's pipeline of client `id`, if built.
pub(crate) fn core_client<E: Engine>(id: u64) -> Option<Rc<CoreClient<E>>> {
    PIPELINES
        .with(|p| p.borrow().get(&id).cloned())
        .and_then(|c| c.downcast::<CoreClient<E>>().ok())
}

impl<E: Engine> std::fmt::Debug for Client<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("engine", &E::NAME)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<E: Engine> Client<E> {
    /// A client with `config`. Connections are made lazily, per core, on first use. With a
    /// resolver ([`ClientConfig::resolver`]) the watch starts here; if it cannot start, the
    /// error is logged and the client calls the configured targets (see [`Self::try_new`]).
    pub fn new(config: ClientConfig) -> Self {
        let (client, watch_error) = Self::build(config);
        if let (Some(e), Some(r)) = (watch_error, &client.shared.config.resolver) {
            tracing::error!(error = %e, service = %r.service, "cannot watch the service");
        }
        client
    }

    /// [`Self::new`], failing when the resolver's watch cannot start.
    ///
    /// # Errors
    /// The resolver's [`DiscoveryError`].
    pub fn try_new(config: ClientConfig) -> Result<Self, DiscoveryError> {
        match Self::build(config) {
            (client, None) => Ok(client),
            (_, Some(e)) => Err(e),
        }
    }

    /// A client, and the error of its resolver's watch if that could not start (the client
    /// then calls its static targets).
    fn build(config: ClientConfig) -> (Self, Option<DiscoveryError>) {
        let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
        let cores = ClientCores::default();
        let (watch, error) = match config.resolver.as_ref().map(|r| cores.watch::<E>(id, r)) {
            Some(Ok(w)) => (Some(Mutex::new(w)), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let client = Self {
            shared: Arc::new(Shared {
                id,
                config: Arc::new(config),
                cores,
                _watch: watch,
                _engine: PhantomData,
            }),
        };
        (client, error)
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    fn pipeline(&self) -> Result<Rc<CoreClient<E>>, ClientError> {
        if ringrpc_engine::current_core().is_none() {
            return Err(ClientError::NotOnCore);
        }
        let shared = &*self.shared;
        if let Some(core) = core_client::<E>(shared.id) {
            return Ok(core);
        }
        let pool = Rc::new(CorePool::<E>::new(shared.config.clone()));
        crate::pool::spawn_keeper(&pool);
        let core = Rc::new(CoreClient::new(&shared.config, pool));
        PIPELINES.with(|p| {
            p.borrow_mut()
                .insert(shared.id, core.clone() as Rc<dyn Any>)
        });
        shared.cores.join(&core);
        Ok(core)
    }

    /// The instances the balancer picks from on the calling core (discovery updates them).
    ///
    /// # Errors
    /// [`ClientError::NotOnCore`] off a runtime core.
    pub fn instances_on_this_core(&self) -> Result<Vec<Instance>, ClientError> {
        Ok(self.pipeline()?.instances())
    }

    /// The state of `addr`'s instance breaker on the calling core (breakers are per core).
    /// `None` when instance breakers are off or the call is not made on a runtime core.
    pub fn instance_breaker_state(&self, addr: SocketAddr) -> Option<BreakerState> {
        self.pipeline().ok()?.instance_state(addr)
    }

    /// Replaces the instance list on the calling core (a discovery update; post it to every
    /// core of the runtime). Breakers of instances that left are forgotten.
    ///
    /// # Errors
    /// [`ClientError::NotOnCore`] off a runtime core.
    pub fn set_instances_on_this_core(&self, instances: Vec<Instance>) -> Result<(), ClientError> {
        self.pipeline()?.set_instances(instances);
        Ok(())
    }

    /// Calls `method` with an encoded request body (the args struct or protobuf message) and
    /// returns the reply body. Exceptions and business errors come back as errors.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn call_raw(
        &self,
        method: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Reply, ClientError> {
        self.call::<Raw>(method, &body, opts).await
    }

    /// Calls a Thrift method: `args` is the method's `_args` struct, the result its `_result`
    /// struct.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn call_thrift<A: TSerializable, R: TSerializable>(
        &self,
        method: &str,
        args: &A,
        opts: CallOptions,
    ) -> Result<R, ClientError> {
        self.call::<Thrift<A, R>>(method, args, opts).await
    }

    /// Calls a Kitex Protobuf method. The request is Kitex Protobuf (magic `0x9001`) in the
    /// configured framing; protobuf is always framed, so `TtHeader` becomes `TtHeaderFramed` and
    /// `Buffered` becomes `Framed`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn call_protobuf<A: prost::Message, R: prost::Message + Default>(
        &self,
        method: &str,
        request: &A,
        opts: CallOptions,
    ) -> Result<R, ClientError> {
        self.call::<Protobuf<A, R>>(method, request, opts).await
    }

    /// A call of kind `K`: every typed call above is this.
    async fn call<K: CallKind>(
        &self,
        method: &str,
        request: &K::Request,
        opts: CallOptions,
    ) -> Result<K::Response, ClientError> {
        let body = K::encode(request)?;
        K::decode(self.call_body(method, body, opts, K::PAYLOAD).await?)
    }

    /// Runs an encoded call through this core's pipeline; `payload` is the body's codec, when
    /// known.
    pub(crate) async fn call_body(
        &self,
        method: &str,
        body: Bytes,
        opts: CallOptions,
        payload: Option<PayloadProtocol>,
    ) -> Result<Reply, ClientError> {
        let core = self.pipeline()?;
        let mut cx = ClientContext::new(method);
        cx.payload = payload;
        cx.metainfo = opts.metainfo;
        cx.address = opts.address;
        cx.oneway = opts.oneway;
        let timeout = opts.timeout.or(self.shared.config.rpc_timeout);
        cx.timeout = timeout;
        cx.set_deadline(timeout.map(|t| Instant::now() + t));
        core.stack.call(&mut cx, body).await
    }
}
