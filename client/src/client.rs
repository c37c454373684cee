//! The `Client` handle and its typed calls.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{parse_int_value, MessageType, PayloadProtocol, TtHeader};
use ringrpc_engine::Engine;
use ringrpc_governance::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
use ringrpc_governance::{Backward, CallDeadline, Layer, Service};
use thrift::protocol::TSerializable;

use crate::error::BizError;
use crate::pool::CorePool;
use crate::{CallOptions, ClientConfig, ClientContext, ClientError};

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// A core's pipeline: the timeout layer around the core's pool.
type CorePipeline<E> = Timeout<Rc<CorePool<E>>, E>;

thread_local! {
    /// Each client's pipeline on this core, by client id (built on first use).
    static PIPELINES: RefCell<HashMap<u64, Rc<dyn Any>>> = RefCell::new(HashMap::new());
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
pub struct Client<E: Engine> {
    id: u64,
    config: Arc<ClientConfig>,
    _engine: PhantomData<fn() -> E>,
}

impl<E: Engine> Clone for Client<E> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            config: self.config.clone(),
            _engine: PhantomData,
        }
    }
}

impl<E: Engine> std::fmt::Debug for Client<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("engine", &E::NAME)
            .field("config", &self.config)
            .finish()
    }
}

impl<E: Engine> Client<E> {
    /// A client with `config`. Connections are made lazily, per core, on first use.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            config: Arc::new(config),
            _engine: PhantomData,
        }
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn pipeline(&self) -> Result<Rc<CorePipeline<E>>, ClientError> {
        if ringrpc_engine::current_core().is_none() {
            return Err(ClientError::NotOnCore);
        }
        PIPELINES.with(|p| {
            let mut p = p.borrow_mut();
            let entry = p.entry(self.id).or_insert_with(|| {
                let pool = Rc::new(CorePool::<E>::new(self.config.clone()));
                crate::pool::spawn_keeper(&pool);
                // The deadline is set per call in the context; the layer enforces it.
                let svc: CorePipeline<E> =
                    TimeoutLayer::<E>::new(TimeoutConfig { timeout: None }).layer(pool);
                Rc::new(svc) as Rc<dyn Any>
            });
            entry
                .clone()
                .downcast::<CorePipeline<E>>()
                .map_err(|_| ClientError::NotOnCore)
        })
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
        self.call_with(method, body, opts, None).await
    }

    /// [`Client::call_raw`] with the body's payload codec, when known.
    async fn call_with(
        &self,
        method: &str,
        body: Bytes,
        opts: CallOptions,
        payload: Option<PayloadProtocol>,
    ) -> Result<Reply, ClientError> {
        let pipeline = self.pipeline()?;
        let mut cx = ClientContext::new(method);
        cx.payload = payload;
        cx.metainfo = opts.metainfo;
        cx.address = opts.address;
        cx.oneway = opts.oneway;
        let timeout = opts.timeout.or(self.config.rpc_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        cx.set_deadline(deadline);
        let frame = pipeline.call(&mut cx, body).await?;
        let Some(frame) = frame else {
            return Ok(Reply {
                body: Bytes::new(),
                header: None,
                backward: Backward::default(),
            });
        };
        let backward = frame
            .head
            .header()
            .map(Backward::read_reply)
            .unwrap_or_default();
        match frame.head.message_type {
            MessageType::Exception => {
                // The server enforces the deadline we sent and answers an exception when it
                // passes; if that beats our own timer, the call still ends as a timeout.
                if let (Some(deadline), Some(t)) = (deadline, timeout) {
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout(t));
                    }
                }
                let e = frame.exception()?;
                Err(ClientError::Remote {
                    kind: e.kind,
                    message: e.message,
                })
            }
            _ => {
                if let Some(biz) = frame.head.header().and_then(biz_error) {
                    return Err(ClientError::Biz(biz));
                }
                Ok(Reply {
                    body: frame.body,
                    header: frame.head.header,
                    backward,
                })
            }
        }
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
        let mut buf = BytesMut::with_capacity(256);
        ringrpc_codec::thrift::write_body(args, &mut buf)?;
        let reply = self
            .call_with(
                method,
                buf.freeze(),
                opts,
                Some(PayloadProtocol::ThriftBinary),
            )
            .await?;
        Ok(ringrpc_codec::thrift::read_body(reply.body)?)
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
        let mut buf = BytesMut::with_capacity(request.encoded_len());
        ringrpc_codec::protobuf::write_body(request, &mut buf)?;
        let reply = self
            .call_with(
                method,
                buf.freeze(),
                opts,
                Some(PayloadProtocol::KitexProtobuf),
            )
            .await?;
        Ok(ringrpc_codec::protobuf::read_body(reply.body)?)
    }
}

/// The business error a reply header carries, if its `biz-status` is non-zero.
fn biz_error(h: &TtHeader) -> Option<BizError> {
    let status = h
        .str_kv(skeys::BIZ_STATUS.as_bytes())
        .and_then(|v| parse_int_value(v))?;
    if status == 0 {
        return None;
    }
    let text = |k: &str| {
        h.str_kv(k.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(BizError {
        status: i32::try_from(status).unwrap_or(i32::MAX),
        message: text(skeys::BIZ_MESSAGE).unwrap_or_default(),
        extra: text(skeys::BIZ_EXTRA),
    })
}
