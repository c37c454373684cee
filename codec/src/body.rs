//! Typed message bodies: one trait over the payload codecs, so code that moves typed
//! requests and replies (server methods, client calls) is written once for all of them.
//! [`ProtobufCodec`] is here; the Thrift one, over the `thrift` crate's generated types, is
//! `apache::ThriftCodec`.

use bytes::{Bytes, BytesMut};

use crate::error::CodecError;

/// Reads and writes bodies of type `T` in one payload codec.
pub trait BodyCodec<T> {
    /// Decodes a body (the bytes after the message header).
    fn read(body: Bytes) -> Result<T, CodecError>;
    /// Appends the encoded body to `buf`.
    fn write(value: &T, buf: &mut BytesMut) -> Result<(), CodecError>;
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
