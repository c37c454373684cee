//! Services, their methods, and the router that dispatches a call to its handler.
//!
//! A [`ServiceDef`] names a service and maps method names to handlers. Handlers are async
//! closures taking `&mut CallContext` and a typed request:
//! - [`ServiceDef::thrift_method`]: a `TSerializable` args struct in, a `TSerializable` result
//!   struct out (Apache Thrift's `<Method>_args` / `<Method>_result`, as on the wire);
//! - [`ServiceDef::protobuf_method`]: `prost::Message` in and out (Kitex Protobuf);
//! - [`ServiceDef::raw_method`]: the body bytes in and out, for hand-written zero-copy codecs.
//!
//! Routing follows Kitex: the service named by the `isn` key (or int key ToService), else the
//! only service; the method from the payload. An unknown service answers `UnknownService` (20),
//! an unknown method `UNKNOWN_METHOD` (1); the connection stays open.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use ringrpc_codec::apache::ThriftCodec;
use ringrpc_codec::{ApplicationException, BodyCodec, ExceptionKind, ProtobufCodec};
use ringrpc_governance::Service;
use thrift::protocol::TSerializable;

use crate::{CallContext, HandlerError};

/// Headroom the per-core scratch buffer keeps for encoding reply bodies. Bodies are encoded
/// into it and split off as `Bytes`, so small replies share one allocation.
pub const SCRATCH_RESERVE: usize = 64 * 1024;

/// A boxed, `!Send` future borrowing the call's context.
pub(crate) type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// One method: decodes its request, runs the handler, encodes the reply body.
pub(crate) trait Method {
    fn call<'a>(
        &'a self,
        cx: &'a mut CallContext,
        body: Bytes,
    ) -> LocalBoxFuture<'a, Result<Bytes, HandlerError>>;
}

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Encodes a reply body with `write` into the core's scratch buffer, without a fresh allocation
/// per reply.
fn encode_body(
    write: impl FnOnce(&mut BytesMut) -> Result<(), ringrpc_codec::CodecError>,
) -> Result<Bytes, HandlerError> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.capacity() - s.len() < SCRATCH_RESERVE / 4 {
            s.reserve(SCRATCH_RESERVE);
        }
        match write(&mut s) {
            Ok(()) => Ok(s.split().freeze()),
            Err(e) => {
                s.clear();
                Err(HandlerError::internal(format!("encode reply: {e}")))
            }
        }
    })
}

/// Encodes `value` (a method's Thrift `_result` struct, e.g. `SuccessResult(resp)`) as a reply
/// body, for a [`crate::ServerBuilder::fallback`] answer.
///
/// # Errors
/// An `INTERNAL_ERROR` exception if encoding fails.
pub fn thrift_body<T: TSerializable>(value: &T) -> Result<Bytes, HandlerError> {
    encode_body(|buf| <ThriftCodec as BodyCodec<T>>::write(value, buf))
}

/// Encodes a Kitex Protobuf reply message as a reply body, for a
/// [`crate::ServerBuilder::fallback`] answer.
///
/// # Errors
/// An `INTERNAL_ERROR` exception if encoding fails.
pub fn protobuf_body<T: prost::Message + Default>(value: &T) -> Result<Bytes, HandlerError> {
    encode_body(|buf| <ProtobufCodec as BodyCodec<T>>::write(value, buf))
}

fn decode_error(e: ringrpc_codec::CodecError) -> HandlerError {
    HandlerError::Exception(ApplicationException::new(
        ExceptionKind::ProtocolError,
        format!("decode request: {e}"),
    ))
}

/// A method with typed request and reply bodies in payload codec `C`.
struct TypedMethod<F, A, C> {
    f: F,
    _types: PhantomData<fn(A, C)>,
}

impl<F, A, R, C> Method for TypedMethod<F, A, C>
where
    F: AsyncFn(&mut CallContext, A) -> Result<R, HandlerError>,
    C: BodyCodec<A> + BodyCodec<R>,
{
    fn call<'a>(
        &'a self,
        cx: &'a mut CallContext,
        body: Bytes,
    ) -> LocalBoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin(async move {
            let args = <C as BodyCodec<A>>::read(body).map_err(decode_error)?;
            let result = (self.f)(cx, args).await?;
            encode_body(|buf| <C as BodyCodec<R>>::write(&result, buf))
        })
    }
}

struct RawMethod<F> {
    f: F,
}

impl<F> Method for RawMethod<F>
where
    F: AsyncFn(&mut CallContext, Bytes) -> Result<Bytes, HandlerError>,
{
    fn call<'a>(
        &'a self,
        cx: &'a mut CallContext,
        body: Bytes,
    ) -> LocalBoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin((self.f)(cx, body))
    }
}

/// A named service and its methods, built on each core by the factory given to the server.
pub struct ServiceDef {
    name: Bytes,
    methods: HashMap<Bytes, Box<dyn Method>>,
}

impl std::fmt::Debug for ServiceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut methods: Vec<_> = self
            .methods
            .keys()
            .map(|m| String::from_utf8_lossy(m))
            .collect();
        methods.sort();
        f.debug_struct("ServiceDef")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("methods", &methods)
            .finish()
    }
}

impl ServiceDef {
    /// A service called `name` (the IDL service name, matched against the `isn` key).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: Bytes::from(name.into()),
            methods: HashMap::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or("")
    }

    /// Adds a Thrift method: `handler(cx, args)` with the method's `_args` struct, answering its
    /// `_result` struct.
    pub fn thrift_method<F, A, R>(self, name: &str, handler: F) -> Self
    where
        F: AsyncFn(&mut CallContext, A) -> Result<R, HandlerError> + 'static,
        A: TSerializable + 'static,
        R: TSerializable + 'static,
    {
        self.typed_method::<ThriftCodec, F, A, R>(name, handler)
    }

    /// Adds a Kitex Protobuf method: `handler(cx, request)` answering the response message.
    pub fn protobuf_method<F, A, R>(self, name: &str, handler: F) -> Self
    where
        F: AsyncFn(&mut CallContext, A) -> Result<R, HandlerError> + 'static,
        A: prost::Message + Default + 'static,
        R: prost::Message + Default + 'static,
    {
        self.typed_method::<ProtobufCodec, F, A, R>(name, handler)
    }

    /// Adds a method whose request and reply bodies are read and written by codec `C`.
    pub fn typed_method<C, F, A, R>(mut self, name: &str, handler: F) -> Self
    where
        C: BodyCodec<A> + BodyCodec<R> + 'static,
        F: AsyncFn(&mut CallContext, A) -> Result<R, HandlerError> + 'static,
        A: 'static,
        R: 'static,
    {
        self.methods.insert(
            Bytes::copy_from_slice(name.as_bytes()),
            Box::new(TypedMethod::<F, A, C> {
                f: handler,
                _types: PhantomData,
            }),
        );
        self
    }

    /// Adds a method that takes and returns encoded bodies (the bytes after the message header)
    /// for hand-written codecs: the request body is a zero-copy slice of the received data.
    pub fn raw_method<F>(mut self, name: &str, handler: F) -> Self
    where
        F: AsyncFn(&mut CallContext, Bytes) -> Result<Bytes, HandlerError> + 'static,
    {
        self.methods.insert(
            Bytes::copy_from_slice(name.as_bytes()),
            Box::new(RawMethod { f: handler }),
        );
        self
    }
}

/// The innermost service of a server pipeline: finds the method and runs it.
pub(crate) struct Router {
    services: Vec<ServiceDef>,
}

impl Router {
    pub(crate) fn new(services: Vec<ServiceDef>) -> Rc<Self> {
        Rc::new(Self { services })
    }

    fn route(&self, cx: &CallContext) -> Result<&dyn Method, HandlerError> {
        let service = match &cx.service {
            Some(name) => self.services.iter().find(|s| s.name == *name),
            None if self.services.len() == 1 => self.services.first(),
            None => None,
        };
        let Some(service) = service else {
            return Err(HandlerError::Exception(ApplicationException::new(
                ExceptionKind::UnknownService,
                format!(
                    "unknown service {}, method {}",
                    cx.service().unwrap_or(""),
                    cx.method()
                ),
            )));
        };
        match service.methods.get(&cx.head.method) {
            Some(m) => Ok(m.as_ref()),
            None => Err(HandlerError::Exception(ApplicationException::new(
                ExceptionKind::UnknownMethod,
                format!("unknown method {}", cx.method()),
            ))),
        }
    }
}

impl Service<CallContext, Bytes> for Router {
    type Response = Bytes;
    type Error = HandlerError;

    async fn call(&self, cx: &mut CallContext, body: Bytes) -> Result<Bytes, HandlerError> {
        let method = self.route(cx)?;
        method.call(cx, body).await
    }
}
