//! Typed calls: how each kind of call encodes its request and decodes its reply.
//!
//! A [`CallKind`] is the only thing a typed call adds to a raw one: [`Client`](crate::Client)
//! and [`OutsideClient`](crate::OutsideClient) each run every kind through one generic path
//! (encode, raw call, decode). Off a core, both ends of that run on the calling thread: the
//! request is encoded before it is posted to a core and the reply decoded after it came back,
//! so the argument and result types need not be `Send`.

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use ringrpc_codec::PayloadProtocol;
use thrift::protocol::TSerializable;

use crate::{ClientError, Reply};

/// A kind of call: its request, its response, and the codec between them and the wire body.
pub(crate) trait CallKind {
    /// What the caller passes (borrowed).
    type Request: ?Sized;
    /// What the caller gets back.
    type Response;
    /// The body's payload codec, when the kind knows it (raw calls use the configured one).
    const PAYLOAD: Option<PayloadProtocol>;

    /// The request's body.
    fn encode(request: &Self::Request) -> Result<Bytes, ClientError>;

    /// The response, from the reply.
    fn decode(reply: Reply) -> Result<Self::Response, ClientError>;
}

/// An encoded body in, the whole [`Reply`] out.
pub(crate) struct Raw;

impl CallKind for Raw {
    type Request = Bytes;
    type Response = Reply;
    const PAYLOAD: Option<PayloadProtocol> = None;

    fn encode(body: &Bytes) -> Result<Bytes, ClientError> {
        Ok(body.clone())
    }

    fn decode(reply: Reply) -> Result<Reply, ClientError> {
        Ok(reply)
    }
}

/// A Thrift method: its `_args` struct in, its `_result` struct out.
pub(crate) struct Thrift<A, R>(PhantomData<fn(&A) -> R>);

impl<A: TSerializable, R: TSerializable> CallKind for Thrift<A, R> {
    type Request = A;
    type Response = R;
    const PAYLOAD: Option<PayloadProtocol> = Some(PayloadProtocol::ThriftBinary);

    fn encode(args: &A) -> Result<Bytes, ClientError> {
        let mut buf = BytesMut::with_capacity(256);
        ringrpc_codec::apache::write_body(args, &mut buf)?;
        Ok(buf.freeze())
    }

    fn decode(reply: Reply) -> Result<R, ClientError> {
        Ok(ringrpc_codec::apache::read_body(reply.body)?)
    }
}

/// A Kitex Protobuf method: request and response messages.
pub(crate) struct Protobuf<A, R>(PhantomData<fn(&A) -> R>);

impl<A: prost::Message, R: prost::Message + Default> CallKind for Protobuf<A, R> {
    type Request = A;
    type Response = R;
    const PAYLOAD: Option<PayloadProtocol> = Some(PayloadProtocol::KitexProtobuf);

    fn encode(request: &A) -> Result<Bytes, ClientError> {
        let mut buf = BytesMut::with_capacity(request.encoded_len());
        ringrpc_codec::protobuf::write_body(request, &mut buf)?;
        Ok(buf.freeze())
    }

    fn decode(reply: Reply) -> Result<R, ClientError> {
        Ok(ringrpc_codec::protobuf::read_body(reply.body)?)
    }
}
