//! The Thrift binary message header (spec §2.1) and Kitex Protobuf's look-alike (§3):
//! `u32 magic<<16 | type`, u32-length method name, i32 seq id, then the body.
//!
//! Written by hand (no `thrift` crate protocol objects) because it runs for every frame.

use bytes::{Buf, Bytes};

use crate::error::CodecError;
use crate::frame::MessageType;
use crate::linkbuf::ChunkWriter;

/// High 16 bits of a strict Thrift binary message header.
pub const THRIFT_BINARY_MAGIC: u16 = 0x8001;
/// High 16 bits of a Kitex Protobuf message header.
pub const KITEX_PROTOBUF_MAGIC: u16 = 0x9001;

/// A decoded message header plus the body bytes that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Message type.
    pub message_type: MessageType,
    /// Method name (slice of the input).
    pub method: Bytes,
    /// Sequence id.
    pub seq_id: i32,
    /// Bytes after the header: the args/result struct or protobuf message.
    pub body: Bytes,
}

impl Envelope {
    /// Decodes a Thrift binary message (`magic` = [`THRIFT_BINARY_MAGIC`]) or a Kitex
    /// Protobuf message ([`KITEX_PROTOBUF_MAGIC`]) occupying all of `payload`.
    pub fn decode(mut payload: Bytes, magic: u16) -> Result<Self, CodecError> {
        if payload.len() < 4 {
            return Err(truncated("message header", 4, payload.len()));
        }
        let version = payload.get_u32();
        if (version >> 16) as u16 != magic {
            return Err(CodecError::BadThriftVersion(version));
        }
        let message_type = MessageType::from_u8((version & 0xFF) as u8)?;
        if payload.len() < 4 {
            return Err(truncated("method length", 4, payload.len()));
        }
        let len = payload.get_u32() as usize;
        if payload.len() < len {
            return Err(truncated("method name", len, payload.len()));
        }
        let method = payload.split_to(len);
        if payload.len() < 4 {
            return Err(truncated("seq id", 4, payload.len()));
        }
        let seq_id = payload.get_i32();
        Ok(Self {
            message_type,
            method,
            seq_id,
            body: payload,
        })
    }
}

fn truncated(what: &'static str, needed: usize, available: usize) -> CodecError {
    CodecError::Truncated {
        what,
        needed,
        available,
    }
}

/// Writes a message header with the given magic.
pub(crate) fn encode_envelope(
    w: &mut ChunkWriter,
    magic: u16,
    message_type: MessageType,
    method: &[u8],
    seq_id: i32,
) -> Result<(), CodecError> {
    let len = u32::try_from(method.len()).map_err(|_| CodecError::HeaderFieldTooLong {
        what: "method name",
        len: method.len(),
    })?;
    w.put_u32((u32::from(magic) << 16) | u32::from(message_type as u8));
    w.put_u32(len);
    w.put_slice(method);
    w.put_i32(seq_id);
    Ok(())
}
