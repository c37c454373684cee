//! Frame encoder: writes TTHeader / Framed / Buffered frames with a Thrift or Kitex
//! Protobuf envelope and any body into a [`ChunkWriter`], back-patching the length fields.
//!
//! Bodies implement [`EncodeBody`]: pre-serialized [`Bytes`] (linked without copying when
//! ≥ [`LINK_THRESHOLD`](crate::LINK_THRESHOLD)), [`ProstBody`] for `prost::Message`,
//! [`FnBody`] for a closure, and exception bodies (`apache::ThriftBody` adds the `thrift`
//! crate's `TSerializable`). [`FrameEncoder`] bundles a reusable writer for the common
//! "encode one frame into a chunk list" call.

use bytes::Bytes;

use crate::error::CodecError;
use crate::frame::{FrameHead, MessageType, PayloadProtocol};
use crate::linkbuf::ChunkWriter;
use crate::protobuf::ErrorProto;
use crate::thrift::envelope::{encode_envelope, KITEX_PROTOBUF_MAGIC, THRIFT_BINARY_MAGIC};
use crate::thrift::ApplicationException;
use crate::ttheader::{TtHeader, TTHEADER_MAGIC};

/// Something that can write a message body after the envelope.
pub trait EncodeBody {
    /// Appends the body to `w`.
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError>;
}

impl EncodeBody for Bytes {
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError> {
        w.put_bytes(self);
        Ok(())
    }
}

impl EncodeBody for &[u8] {
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError> {
        w.put_slice(self);
        Ok(())
    }
}

/// A `prost::Message` body.
#[derive(Debug)]
pub struct ProstBody<'a, M>(pub &'a M);

impl<M: prost::Message> EncodeBody for ProstBody<'_, M> {
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError> {
        crate::protobuf::write_body(self.0, w.buf_mut())
    }
}

/// A body written by a closure.
#[derive(Debug)]
pub struct FnBody<F>(pub F);

impl<F: FnOnce(&mut ChunkWriter) -> Result<(), CodecError>> EncodeBody for FnBody<F> {
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError> {
        (self.0)(w)
    }
}

/// A Thrift `TApplicationException` body.
impl EncodeBody for &ApplicationException {
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError> {
        self.encode(w.buf_mut());
        Ok(())
    }
}

/// Largest value of the TTHeader LENGTH field (top bit must be 0).
const MAX_LENGTH_FIELD: usize = 0x7FFF_FFFF;

/// Appends one frame to `w`. On error nothing is left in `w` from this frame.
///
/// Kitex Protobuf requires a framed transport (`Framed` or `TtHeaderFramed`).
pub fn encode_frame<B: EncodeBody>(
    head: &FrameHead,
    body: B,
    w: &mut ChunkWriter,
) -> Result<(), CodecError> {
    let checkpoint = w.checkpoint();
    let result = write_frame(head, body, w);
    if result.is_err() {
        w.rollback(checkpoint);
    }
    result
}

fn write_frame<B: EncodeBody>(
    head: &FrameHead,
    body: B,
    w: &mut ChunkWriter,
) -> Result<(), CodecError> {
    let magic = match head.protocol {
        PayloadProtocol::ThriftBinary => THRIFT_BINARY_MAGIC,
        PayloadProtocol::KitexProtobuf if head.framing.is_framed() => KITEX_PROTOBUF_MAGIC,
        PayloadProtocol::KitexProtobuf => return Err(CodecError::ProtobufRequiresFraming),
    };
    let start = w.len();
    let ttheader_slot = if head.framing.has_ttheader() {
        let empty = TtHeader::default();
        let header = head.header.as_ref().unwrap_or(&empty);
        let slot = w.reserve_u32();
        w.put_u16(TTHEADER_MAGIC);
        w.put_u16(header.flags);
        w.put_i32(head.seq_id);
        let hs_offset = w.buf_offset();
        w.put_u16(0);
        let info_len = header.encode_info(w)?;
        w.patch_u16_at(hs_offset, (info_len / 4) as u16);
        Some(slot)
    } else {
        None
    };
    let framed_slot = head.framing.is_framed().then(|| (w.reserve_u32(), w.len()));
    encode_envelope(w, magic, head.message_type, &head.method, head.seq_id)?;
    body.encode_body(w)?;
    let end = w.len();
    if let Some((slot, payload_start)) = framed_slot {
        w.patch_u32(slot, length_field(end - payload_start)?);
    }
    if let Some(slot) = ttheader_slot {
        w.patch_u32(slot, length_field(end - start - 4)?);
    }
    Ok(())
}

fn length_field(len: usize) -> Result<u32, CodecError> {
    if len > MAX_LENGTH_FIELD {
        return Err(CodecError::FrameTooLarge {
            size: len as u64,
            limit: MAX_LENGTH_FIELD,
        });
    }
    Ok(len as u32)
}

/// Appends an EXCEPTION frame carrying `exception` with `head`'s framing, method and seq id
/// (`head.message_type` is ignored): a `TApplicationException` for Thrift, an
/// [`ErrorProto`] for Kitex Protobuf. Use [`FrameHead::reply_to`] on the request's head to
/// get a head in the request's framing.
pub fn encode_exception(
    head: &FrameHead,
    exception: &ApplicationException,
    w: &mut ChunkWriter,
) -> Result<(), CodecError> {
    let mut head = head.clone();
    head.message_type = MessageType::Exception;
    match head.protocol {
        PayloadProtocol::ThriftBinary => encode_frame(&head, exception, w),
        PayloadProtocol::KitexProtobuf => {
            encode_frame(&head, ProstBody(&ErrorProto::from(exception)), w)
        }
    }
}

/// A reusable encoder: one [`ChunkWriter`] whose buffer is recycled across frames.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    writer: ChunkWriter,
}

impl FrameEncoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes one frame and appends its chunks to `out` (ready for one vectored write).
    pub fn encode<B: EncodeBody>(
        &mut self,
        head: &FrameHead,
        body: B,
        out: &mut Vec<Bytes>,
    ) -> Result<(), CodecError> {
        encode_frame(head, body, &mut self.writer)?;
        self.writer.finish(out);
        Ok(())
    }

    /// Encodes an exception reply (see [`encode_exception`]) and appends its chunks to `out`.
    pub fn encode_exception(
        &mut self,
        head: &FrameHead,
        exception: &ApplicationException,
        out: &mut Vec<Bytes>,
    ) -> Result<(), CodecError> {
        encode_exception(head, exception, &mut self.writer)?;
        self.writer.finish(out);
        Ok(())
    }

    /// The underlying writer, to batch several frames before one `finish`.
    pub fn writer(&mut self) -> &mut ChunkWriter {
        &mut self.writer
    }
}
