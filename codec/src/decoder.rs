//! Incremental, resumable per-connection frame decoder with Kitex-style per-message
//! framing detection (spec §2.3).
//!
//! [`FrameDecoder::decode`] looks at the front of a [`LinkBuf`] and either cuts one whole
//! frame out of it, says how many more bytes it needs, or returns a typed error. It can be
//! called again after any number of new bytes arrive. A length prefix over
//! [`DecoderConfig::max_frame_size`] is refused as soon as it is seen, and unframed Thrift is
//! delimited by an allocation-free skip pass bounded by the same limit.

use bytes::{Buf, Bytes};

use crate::error::CodecError;
use crate::frame::{Frame, FrameHead, Framing, PayloadProtocol};
use crate::linkbuf::LinkBuf;
use crate::thrift::envelope::{Envelope, KITEX_PROTOBUF_MAGIC, THRIFT_BINARY_MAGIC};
use crate::thrift::skip::{SkipStop, Skipper};
use crate::ttheader::{TtHeader, FLAG_STREAMING, PREFIX_LEN, TTHEADER_MAGIC};

/// Default [`DecoderConfig::max_frame_size`]: 16 MiB (Volo's `DEFAULT_MAX_FRAME_SIZE`).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

const MESH_HEADER_MAGIC: u16 = 0xFFAF;

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest accepted frame, counting every byte on the wire (length prefixes included).
    pub max_frame_size: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// Outcome of one [`FrameDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, removed from the buffer.
    Frame(Frame),
    /// At least this many more bytes are needed; nothing was consumed.
    NeedMore(usize),
}

/// Per-connection decoder state.
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    config: DecoderConfig,
    /// Total buffered bytes known to be needed before trying again (0 = unknown).
    need: usize,
}

impl FrameDecoder {
    /// A decoder with the given limits.
    pub fn new(config: DecoderConfig) -> Self {
        Self { config, need: 0 }
    }

    /// The decoder's limits.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes the next frame at the front of `buf`.
    ///
    /// On `Ok(Decoded::Frame)` the frame's bytes were removed from `buf`; on
    /// `Ok(Decoded::NeedMore(n))` nothing was consumed. An error means the stream is
    /// corrupt; the buffer is left as it was.
    pub fn decode(&mut self, buf: &mut LinkBuf) -> Result<Decoded, CodecError> {
        if buf.len() < self.need {
            return Ok(Decoded::NeedMore(self.need - buf.len()));
        }
        self.need = 0;
        if buf.len() < 8 {
            return Ok(Decoded::NeedMore(8 - buf.len()));
        }
        let w0 = buf.peek_u32(0).expect("8 bytes buffered");
        let w1 = buf.peek_u32(4).expect("8 bytes buffered");
        let limit = self.config.max_frame_size;

        let (total, kind) = if hi16(w1) == TTHEADER_MAGIC {
            if w0 & 0x8000_0000 != 0 || (w0 as usize) < PREFIX_LEN - 4 {
                return Err(CodecError::InvalidTtHeaderLength(w0));
            }
            let flags = w1 as u16;
            if flags & FLAG_STREAMING != 0 {
                return Err(CodecError::StreamingNotSupported(flags));
            }
            (check_limit(w0, limit)?, Kind::TtHeader)
        } else if hi16(w0) == MESH_HEADER_MAGIC {
            return Err(CodecError::MeshHeaderUnsupported);
        } else if hi16(w0) == THRIFT_BINARY_MAGIC {
            match buffered_message_len(buf, limit) {
                Ok(end) => (end, Kind::Buffered),
                Err(SkipStop::NeedMore(n)) => {
                    self.need = n;
                    return Ok(Decoded::NeedMore(n - buf.len()));
                }
                Err(SkipStop::Invalid(e)) => return Err(e),
            }
        } else if hi16(w1) == THRIFT_BINARY_MAGIC {
            (
                check_limit(w0, limit)?,
                Kind::Framed(PayloadProtocol::ThriftBinary),
            )
        } else if hi16(w1) == KITEX_PROTOBUF_MAGIC {
            (
                check_limit(w0, limit)?,
                Kind::Framed(PayloadProtocol::KitexProtobuf),
            )
        } else {
            return Err(CodecError::InvalidPayload {
                first4: w0,
                second4: w1,
            });
        };

        if buf.len() < total {
            self.need = total;
            return Ok(Decoded::NeedMore(total - buf.len()));
        }
        // Parse before consuming so that an error leaves `buf` untouched.
        let frame_bytes = buf.peek_bytes(total).expect("length checked");
        let frame = match kind {
            Kind::TtHeader => decode_ttheader_frame(frame_bytes, self.config.max_frame_size)?,
            Kind::Buffered => decode_payload(
                frame_bytes,
                Framing::Buffered,
                PayloadProtocol::ThriftBinary,
                None,
            )?,
            Kind::Framed(protocol) => {
                decode_payload(frame_bytes.slice(4..), Framing::Framed, protocol, None)?
            }
        };
        buf.advance(total);
        Ok(Decoded::Frame(frame))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    TtHeader,
    Buffered,
    Framed(PayloadProtocol),
}

fn hi16(v: u32) -> u16 {
    (v >> 16) as u16
}

/// Total frame size for a u32 length prefix that excludes itself, checked against `limit`.
fn check_limit(length_field: u32, limit: usize) -> Result<usize, CodecError> {
    let total = u64::from(length_field) + 4;
    if total > limit as u64 {
        return Err(CodecError::FrameTooLarge { size: total, limit });
    }
    Ok(total as usize)
}

/// Length of the unframed Thrift message at the front of `buf`.
fn buffered_message_len(buf: &LinkBuf, limit: usize) -> Result<usize, SkipStop> {
    let s = Skipper::new(buf, limit);
    let pos = s.skip_string(4)?; // method name after the version word
    let pos = pos + 4; // seq id
    s.skip_struct(pos, 0)
}

/// Decodes a whole TTHeader frame (LENGTH field included).
fn decode_ttheader_frame(mut frame: Bytes, max_frame_size: usize) -> Result<Frame, CodecError> {
    let mut prefix = &frame[4..PREFIX_LEN];
    let _magic = prefix.get_u16();
    let flags = prefix.get_u16();
    let seq_id = prefix.get_i32();
    let header_bytes = usize::from(prefix.get_u16()) * 4;
    let frame_bytes = frame.len() - PREFIX_LEN;
    if header_bytes < 4 || header_bytes > frame_bytes {
        return Err(CodecError::HeaderSizeOutOfRange {
            header_bytes,
            frame_bytes,
        });
    }
    // Split and advance rather than slice: each new handle on a received buffer is an atomic
    // reference count increment (and a decrement when dropped), and this runs per request.
    let mut info = frame.split_to(PREFIX_LEN + header_bytes);
    info.advance(PREFIX_LEN);
    // The key-value index may take at most the frame limit in memory, like the frame itself.
    let header = TtHeader::decode_info_within(info, flags, seq_id, max_frame_size)?;
    let mut payload = frame;
    let word = |at: usize| -> u32 {
        payload
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4")))
    };
    let (w0, w1) = (word(0), word(4));
    if payload.len() >= 4 && hi16(w0) == THRIFT_BINARY_MAGIC {
        return decode_payload(
            payload,
            Framing::TtHeader,
            PayloadProtocol::ThriftBinary,
            Some(header),
        );
    }
    let protocol = match (payload.len() >= 8).then_some(hi16(w1)) {
        Some(THRIFT_BINARY_MAGIC) => PayloadProtocol::ThriftBinary,
        Some(KITEX_PROTOBUF_MAGIC) => PayloadProtocol::KitexProtobuf,
        _ => {
            return Err(CodecError::InvalidPayload {
                first4: w0,
                second4: w1,
            })
        }
    };
    let available = payload.len() - 4;
    if w0 as usize != available {
        return Err(CodecError::InnerFrameLengthMismatch {
            inner: w0,
            available,
        });
    }
    payload.advance(4);
    decode_payload(payload, Framing::TtHeaderFramed, protocol, Some(header))
}

fn decode_payload(
    payload: Bytes,
    framing: Framing,
    protocol: PayloadProtocol,
    header: Option<TtHeader>,
) -> Result<Frame, CodecError> {
    let magic = match protocol {
        PayloadProtocol::ThriftBinary => THRIFT_BINARY_MAGIC,
        PayloadProtocol::KitexProtobuf => KITEX_PROTOBUF_MAGIC,
    };
    let env = Envelope::decode(payload, magic)?;
    Ok(Frame {
        head: FrameHead {
            framing,
            protocol,
            message_type: env.message_type,
            method: env.method,
            seq_id: env.seq_id,
            header,
        },
        body: env.body,
    })
}
