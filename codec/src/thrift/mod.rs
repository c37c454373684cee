//! Thrift binary: message envelope, `TApplicationException`, the allocation-free skip pass,
//! and fast protocol objects for the `thrift` crate's `TSerializable` bodies.

pub mod envelope;
pub mod exception;
pub mod protocol;
pub mod skip;
pub mod wrap;

pub use envelope::{Envelope, KITEX_PROTOBUF_MAGIC, THRIFT_BINARY_MAGIC};
pub use exception::{ApplicationException, ExceptionKind};
pub use protocol::{BytesInProtocol, BytesOutProtocol};
pub use skip::{skip_struct_len, ttype, MAX_SKIP_DEPTH};
pub use wrap::{Args1, SuccessResult};

use bytes::{Bytes, BytesMut};
use thrift::protocol::TSerializable;

use crate::error::CodecError;

/// Serializes a `TSerializable` body into `buf` with [`BytesOutProtocol`].
pub fn write_body<T: TSerializable>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
    value.write_to_out_protocol(&mut BytesOutProtocol::new(buf))?;
    Ok(())
}

/// Deserializes a `TSerializable` body from `body` with [`BytesInProtocol`].
pub fn read_body<T: TSerializable>(body: Bytes) -> Result<T, CodecError> {
    Ok(T::read_from_in_protocol(&mut BytesInProtocol::new(body))?)
}
