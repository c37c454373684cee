//! A core's connections to its targets, and the transport call of the client pipeline.
//!
//! One [`CorePool`] per client per core. It calls the address the balancer picked, numbers the call (seq ids start at
//! 1 and skip 0, which Kitex reserves for control frames), encodes the request in the configured
//! protocol, and hands it to the multiplexed or pooled connections of that address.

mod mux;
mod pooled;

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringrpc_codec::keys::{int, str as skeys};
use ringrpc_codec::ttheader::FLAG_SUPPORT_OUT_OF_ORDER;
use ringrpc_codec::{
    Frame, FrameEncoder, FrameHead, Framing, MessageType, PayloadProtocol, TtHeader,
};
use ringrpc_engine::time::timeout;
use ringrpc_engine::{Engine, Stream};
use ringrpc_governance::obs::CoreMetrics;
use ringrpc_governance::{CallDeadline, Service};

use crate::config::{ClientConfig, ConnMode};
use crate::{ClientContext, ClientError};

pub(crate) use mux::MuxSlots;
pub(crate) use pooled::IdleConns;

/// The connections of one core, by address.
enum Conns<E: Engine> {
    Mux(RefCell<FxHashMap<SocketAddr, Rc<MuxSlots<E>>>>),
    Pooled(RefCell<FxHashMap<SocketAddr, Rc<IdleConns<E>>>>),
}

/// One client's state on one core.
pub(crate) struct CorePool<E: Engine> {
    config: Arc<ClientConfig>,
    /// This core's metrics, when the client has a registry (open connections are counted).
    metrics: Option<Rc<CoreMetrics>>,
    /// The callee's service name (ToService and `isn`), built once.
    service_name: Option<Bytes>,
    /// This caller's name (FromService), built once.
    caller_name: Option<Bytes>,
    seq: Cell<i32>,
    encoder: RefCell<FrameEncoder>,
    conns: Conns<E>,
    _engine: PhantomData<E>,
}

impl<E: Engine> CorePool<E> {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Self {
        let conns = match config.conn_mode {
            ConnMode::Multiplexed { .. } => Conns::Mux(RefCell::new(FxHashMap::default())),
            ConnMode::Pooled { .. } => Conns::Pooled(RefCell::new(FxHashMap::default())),
        };
        Self {
            metrics: config.metrics.as_ref().map(|r| r.core_metrics()),
            service_name: config.service_name.clone().map(Bytes::from),
            caller_name: config.caller_name.clone().map(Bytes::from),
            config,
            seq: Cell::new(0),
            encoder: RefCell::new(FrameEncoder::new()),
            conns,
            _engine: PhantomData,
        }
    }

    /// The next seq id: 1, 2, … wrapping past `i32::MAX` to 1, never 0.
    fn next_seq(&self) -> i32 {
        let next = match self.seq.get().wrapping_add(1) {
            n if n <= 0 => 1,
            n => n,
        };
        self.seq.set(next);
        next
    }

    /// The request's head: framing, seq id, and the TTHeader keys a Kitex client with
    /// `ClientTTHeaderHandler` writes (ToMethod, ToService + `isn`, FromService, RPCTimeout).
    fn request_head(&self, cx: &ClientContext, seq: i32, mux: bool) -> FrameHead {
        let protocol = self.config.protocol;
        let kind = if cx.oneway {
            MessageType::Oneway
        } else {
            MessageType::Call
        };
        let payload = cx.payload.unwrap_or(protocol.payload());
        let framing = match (payload, protocol.framing()) {
            // Kitex Protobuf is always framed (spec §3): magic 0x9001 after a length.
            (PayloadProtocol::KitexProtobuf, Framing::Buffered) => Framing::Framed,
            (PayloadProtocol::KitexProtobuf, Framing::TtHeader) => Framing::TtHeaderFramed,
            (_, framing) => framing,
        };
        let mut head = FrameHead::new(
            framing,
            payload,
            kind,
            Bytes::copy_from_slice(cx.method.as_bytes()),
            seq,
        );
        if framing.has_ttheader() {
            // Room for the usual keys and names; the store grows if the names are longer.
            let mut h = TtHeader::with_capacity(6, 128);
            if mux {
                h.flags = FLAG_SUPPORT_OUT_OF_ORDER;
            }
            // A fresh header: push instead of set (no search for an earlier value).
            h.push_int_kv(int::TO_METHOD, &head.method);
            if let Some(s) = &self.service_name {
                h.push_int_kv(int::TO_SERVICE, s);
                h.push_str_kv(skeys::IDL_SERVICE_NAME.as_bytes(), s);
            }
            if let Some(c) = &self.caller_name {
                h.push_int_kv(int::FROM_SERVICE, c);
            }
            if let Some(deadline) = cx.deadline() {
                // Rounded up, so the server's deadline (its receive time plus this) is never
                // before ours: our own timer fires first and the call ends as a timeout.
                // The turn's time is at most a turn behind the clock: `left` errs long, never
                // short, which is the side this rounding wants.
                let left = deadline.saturating_duration_since(ringrpc_engine::turn_now());
                let ms = left.as_nanos().div_ceil(1_000_000).max(1);
                h.set_int_kv_number(int::RPC_TIMEOUT, i64::try_from(ms).unwrap_or(i64::MAX));
            }
            cx.metainfo.write_request(&mut h);
            head.header = Some(h);
        }
        head
    }

    fn encode(
        &self,
        cx: &ClientContext,
        seq: i32,
        mux: bool,
        body: Bytes,
    ) -> Result<Vec<Bytes>, ClientError> {
        cx.seq.set(Some(seq));
        let head = self.request_head(cx, seq, mux);
        let mut chunks = Vec::with_capacity(2);
        self.encoder.borrow_mut().encode(&head, body, &mut chunks)?;
        Ok(chunks)
    }

    /// Connects to `addr` within the connect timeout.
    async fn connect(&self, addr: SocketAddr) -> Result<(E::Stream, ConnCount), ClientError> {
        match timeout::<E, _>(self.config.connect_timeout, E::Stream::connect(addr)).await {
            Ok(Ok(s)) => Ok((s, ConnCount::open(&self.metrics))),
            Ok(Err(source)) => Err(ClientError::Connect { addr, source }),
            Err(_) => Err(ClientError::ConnectTimeout { addr }),
        }
    }
}

/// The client's state on this core is going (its last handle was dropped): multiplexed
/// connections close once their calls are done; idle pooled connections close as the map drops.
impl<E: Engine> Drop for CorePool<E> {
    fn drop(&mut self) {
        if let Conns::Mux(map) = &self.conns {
            for slots in map.borrow().values() {
                slots.close();
            }
        }
    }
}

/// Counts one open connection in the client's metrics while it lives.
pub(crate) struct ConnCount(Option<Rc<CoreMetrics>>);

impl ConnCount {
    fn open(metrics: &Option<Rc<CoreMetrics>>) -> Self {
        if let Some(m) = metrics {
            m.connection_opened();
        }
        Self(metrics.clone())
    }
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.connection_closed();
        }
    }
}

/// A reply frame, or nothing for a oneway call.
pub(crate) type TransportReply = Option<Frame>;

impl<E: Engine> Service<ClientContext, Bytes> for CorePool<E> {
    type Response = TransportReply;
    type Error = ClientError;

    async fn call(
        &self,
        cx: &mut ClientContext,
        body: Bytes,
    ) -> Result<TransportReply, ClientError> {
        // The balancer (or the caller's pinned address) chose the instance.
        let addr = cx.address.ok_or(ClientError::NoTarget)?;
        cx.address = Some(addr);
        cx.remote = Some(addr);
        match &self.conns {
            Conns::Mux(map) => {
                let slots = {
                    let mut map = map.borrow_mut();
                    let n = match self.config.conn_mode {
                        ConnMode::Multiplexed { conns_per_addr } => conns_per_addr.max(1),
                        ConnMode::Pooled { .. } => 1,
                    };
                    map.entry(addr)
                        .or_insert_with(|| Rc::new(MuxSlots::new(addr, n)))
                        .clone()
                };
                mux::call(self, &slots, cx, body).await
            }
            Conns::Pooled(map) => {
                let idle = {
                    let mut map = map.borrow_mut();
                    map.entry(addr)
                        .or_insert_with(|| Rc::new(IdleConns::new(addr)))
                        .clone()
                };
                // Boxed: a ping-pong call's future (connect, send, receive) is large, and inline
                // it would make every multiplexed call's future as large too.
                Box::pin(pooled::call(self, &idle, cx, body)).await
            }
        }
    }
}

/// Whether a reply tells the client to stop using its connection.
pub(crate) fn has_conn_reset(frame: &Frame) -> bool {
    frame
        .head
        .header()
        .and_then(|h| h.str_kv(skeys::CONN_RESET.as_bytes()))
        .is_some_and(|v| !v.is_empty())
}

/// How often the keeper looks for a stopping runtime and expired idle connections.
const KEEPER_PERIOD: std::time::Duration = std::time::Duration::from_millis(50);

/// Spawns the task that closes `pool`'s idle pooled connections when the runtime stops.
///
/// Idle connections live in the core's pipeline table, outside any task, and on io_uring an
/// idle reader keeps its multishot receive armed: left alone they would hold up the core's
/// exit until the engine gives up on them. The keeper drops them as soon as the runtime starts
/// stopping (or, at the latest, when the stopping core drops the keeper itself), and meanwhile
/// closes idle connections older than the idle timeout.
pub(crate) fn spawn_keeper<E: Engine>(pool: &Rc<CorePool<E>>) {
    if !matches!(pool.conns, Conns::Pooled(_)) {
        return;
    }
    struct ClearOnDrop<E: Engine>(std::rc::Weak<CorePool<E>>);
    impl<E: Engine> Drop for ClearOnDrop<E> {
        fn drop(&mut self) {
            if let Some(pool) = self.0.upgrade() {
                pool.drop_idle(|_| true);
            }
        }
    }
    let guard = ClearOnDrop(Rc::downgrade(pool));
    E::spawn(async move {
        loop {
            E::sleep(KEEPER_PERIOD).await;
            let Some(pool) = guard.0.upgrade() else {
                return;
            };
            if runtime_stopping() {
                return; // the guard drops every idle connection
            }
            pool.drop_expired_idle();
        }
    });
}

/// Whether the current core's runtime is stopping.
pub(crate) fn runtime_stopping() -> bool {
    ringrpc_engine::current_runtime().is_some_and(|r| r.is_stopping())
}

impl<E: Engine> CorePool<E> {
    /// Drops the idle pooled connections for which `which(idle_since)` holds.
    fn drop_idle(&self, which: impl Fn(Instant) -> bool) {
        if let Conns::Pooled(map) = &self.conns {
            let lists: Vec<_> = map.borrow().values().cloned().collect();
            for idle in lists {
                idle.drop_idle(&which);
            }
        }
    }

    fn drop_expired_idle(&self) {
        if let ConnMode::Pooled { idle_timeout, .. } = self.config.conn_mode {
            self.drop_idle(|since| since.elapsed() >= idle_timeout);
        }
    }
}
