//! Kitex Protobuf payloads (spec §3): the `ErrorProto` exception message and helpers for
//! prost bodies. The envelope itself (magic `0x9001`, method, seq id) is shared with Thrift
//! in [`crate::thrift::envelope`]; the payload is always framed.

use bytes::{Bytes, BytesMut};

use crate::error::CodecError;
use crate::thrift::{ApplicationException, ExceptionKind};

/// Kitex's protobuf exception body: `message ErrorProto { int32 TypeID = 1; string Message = 2; }`.
/// Type ids are those of [`ExceptionKind`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ErrorProto {
    /// Exception type id (field 1).
    #[prost(int32, tag = "1")]
    pub type_id: i32,
    /// Exception message (field 2).
    #[prost(string, tag = "2")]
    pub message: String,
}

impl From<&ApplicationException> for ErrorProto {
    fn from(e: &ApplicationException) -> Self {
        Self {
            type_id: e.kind.as_i32(),
            message: e.message.clone(),
        }
    }
}

impl From<ErrorProto> for ApplicationException {
    fn from(e: ErrorProto) -> Self {
        Self {
            kind: ExceptionKind::from_i32(e.type_id),
            message: e.message,
        }
    }
}

/// Encodes a prost message into `buf` (reserving its exact size first).
pub fn write_body<M: prost::Message>(msg: &M, buf: &mut BytesMut) -> Result<(), CodecError> {
    buf.reserve(msg.encoded_len());
    msg.encode(buf)?;
    Ok(())
}

/// Decodes a prost message from a frame body (`bytes`-typed fields stay zero-copy when the
/// message uses `prost`'s `Bytes` mapping).
pub fn read_body<M: prost::Message + Default>(body: Bytes) -> Result<M, CodecError> {
    Ok(M::decode(body)?)
}
