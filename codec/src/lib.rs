//! # ringrpc-codec
//!
//! Sans-IO codec for the wire formats of CloudWeGo Kitex (Go) and Volo (Rust): TTHeader,
//! Framed and Buffered (unframed) Thrift binary, TTHeaderFramed, and Kitex Protobuf. No
//! sockets, no clock, no runtime: bytes in, frames out; frames in, chunk lists out.
//! See `docs/wire-spec.md` §1–§3 and §7.
//!
//! ## API
//! * Input: push received [`Bytes`](bytes::Bytes) into a [`LinkBuf`];
//!   [`FrameDecoder::decode`]`(&mut self, &mut LinkBuf) -> Result<`[`Decoded`]`, `[`CodecError`]`>`
//!   yields [`Decoded::Frame`]`(`[`Frame`]`)` or [`Decoded::NeedMore`]`(n)`.
//!   Limits: [`DecoderConfig`]` { max_frame_size }` (default 16 MiB).
//! * A [`Frame`] is a [`FrameHead`] (`framing: `[`Framing`], `protocol: `[`PayloadProtocol`],
//!   `message_type: `[`MessageType`], `method: Bytes`, `seq_id: i32`,
//!   `header: Option<`[`TtHeader`]`>`) plus `body: Bytes` (zero-copy struct/pb bytes).
//! * Output: [`FrameEncoder::encode`]`(&mut self, &FrameHead, body: impl `[`EncodeBody`]`, &mut Vec<Bytes>)`
//!   or the lower-level [`encode_frame`]`(&FrameHead, body, &mut `[`ChunkWriter`]`)`. Bodies:
//!   `Bytes`, `&[u8]`, [`ThriftBody`]`(&impl TSerializable)`, [`ProstBody`]`(&impl prost::Message)`,
//!   [`FnBody`]`(closure)`, `&`[`ApplicationException`]. [`FrameHead::reply_to`] builds a reply
//!   head in the request's framing; [`encode_exception`] / [`FrameEncoder::encode_exception`]
//!   write a `TApplicationException` or [`ErrorProto`] reply.
//! * TTHeader metadata: [`TtHeader::int_kv`], [`TtHeader::str_kv`], [`TtHeader::set_int_kv`],
//!   [`TtHeader::set_int_kv_number`], [`TtHeader::set_str_kv`], [`parse_int_value`]; key names
//!   in [`keys::int`] and [`keys::str`].
//! * Thrift bodies: [`thrift::BytesOutProtocol`], [`thrift::BytesInProtocol`],
//!   [`thrift::write_body`], [`thrift::read_body`].
//!
//! ```
//! use bytes::Bytes;
//! use ringrpc_codec::*;
//!
//! // A client request, as it would arrive from the socket (Framed Thrift).
//! let req = FrameHead::new(Framing::Framed, PayloadProtocol::ThriftBinary, MessageType::Call, "Echo", 7);
//! let mut wire = Vec::new();
//! FrameEncoder::new().encode(&req, Bytes::from_static(&[0]), &mut wire).unwrap();
//!
//! // Server side: decode, then reply in the same framing.
//! let mut input = LinkBuf::new();
//! for chunk in wire { input.push(chunk); }
//! let mut decoder = FrameDecoder::new(DecoderConfig::default());
//! let Decoded::Frame(frame) = decoder.decode(&mut input).unwrap() else { panic!("need more") };
//! assert_eq!((frame.method_str(), frame.head.seq_id), (Some("Echo"), 7));
//! let reply = frame.head.reply_to(MessageType::Reply);
//! let mut out = Vec::new();
//! FrameEncoder::new().encode(&reply, Bytes::from_static(&[0]), &mut out).unwrap();
//! assert_eq!(out.iter().map(|c| c.len()).sum::<usize>(), 4 + 16 + 1);
//! ```

#![forbid(unsafe_code)]

pub mod body;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod frame;
pub mod linkbuf;
pub mod protobuf;
pub mod thrift;
pub mod ttheader;

pub use body::{BodyCodec, ProtobufCodec, ThriftCodec};
pub use decoder::{Decoded, DecoderConfig, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
pub use encoder::{
    encode_exception, encode_frame, EncodeBody, FnBody, FrameEncoder, ProstBody, ThriftBody,
};
pub use error::CodecError;
pub use frame::{Frame, FrameHead, Framing, MessageType, PayloadProtocol};
pub use linkbuf::{ChunkWriter, LengthSlot, LinkBuf, LINK_THRESHOLD};
pub use protobuf::ErrorProto;
pub use thrift::{ApplicationException, ExceptionKind};
pub use ttheader::{keys, parse_int_value, TtHeader};
