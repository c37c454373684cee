//! Typed message bodies: one trait over the two payload codecs, so code that moves typed
//! requests and replies (server methods, client calls) is written once for both.

use bytes::{Bytes, BytesMut};
use thrift::protocol::TSerializable;

use crate::error::CodecError;

/// Reads and writes bodies of type `T` in one payload codec.
pub trait BodyCodec<T> {
    /// Decodes a body (the bytes after the message header).
    fn read(body: Bytes) -> Result<T, CodecError>;
    /// Appends the encoded body to `buf`.
    fn write(value: &T, buf: &mut BytesMut) -> Result<(), CodecError>;
}

/// Thrift binary bodies: any `TSerializable` (Apache Thrift's generated structs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThriftCodec;

impl<T: TSerializable> BodyCodec<T> for ThriftCodec {
    fn read(body: Bytes) -> Result<T, CodecError> {
        crate::thrift::read_body(body)
    }

    fn write(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        crate::thrift::write_body(value, buf)
    }
}

/// Kitex Protobuf bodies: any `prost::Message`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtobufCodec;

impl<T: prost::Message + Default> BodyCodec<T> for ProtobufCodec {
    fn read(body: Bytes) -> Result<T, CodecError> {
        crate::protobuf::read_body(body)
    }

    fn write(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        crate::protobuf::write_body(value, buf)
    }
}
