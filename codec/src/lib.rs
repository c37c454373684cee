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
//!   `Bytes`, `&[u8]`, [`ProstBody`]`(&impl prost::Message)`, [`FnBody`]`(closure)`,
//!   `&`[`ApplicationException`], and (module `apache`) `ThriftBody(&impl TSerializable)`.
//!   [`FrameHead::reply_to`] builds a reply head in the request's framing; [`encode_exception`] / [`FrameEncoder::encode_exception`]
//!   write a `TApplicationException` or [`ErrorProto`] reply.
//! * TTHeader metadata: [`TtHeader::int_kv`], [`TtHeader::str_kv`], [`TtHeader::set_int_kv`],
//!   [`TtHeader::set_int_kv_number`], [`TtHeader::set_str_kv`], [`parse_int_value`]; key names
//!   in [`keys::int`] and [`keys::str`].
//! * Errors: [`CodecError`]; a body that fails to read or write is [`CodecError::Body`] with a
//!   [`BodyError`].
//! * Apache Thrift's generated types (the `thrift` crate's `TSerializable`) are used only
//!   through module `apache` (feature `apache`, on by default): `write_body`, `read_body`,
//!   `ThriftBody`, `ThriftCodec`, `Args1`, `SuccessResult`, and the protocol objects
//!   `BytesOutProtocol` / `BytesInProtocol`. Nothing else in the codec's API names the
//!   `thrift` crate.
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

#[cfg(feature = "apache")]
pub mod apache;
pub mod body;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod frame;
pub mod linkbuf;
pub mod protobuf;
pub mod thrift;
pub mod ttheader;

pub use body::{BodyCodec, ProtobufCodec};
pub use decoder::{Decoded, DecoderConfig, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
pub use encoder::{encode_exception, encode_frame, EncodeBody, FnBody, FrameEncoder, ProstBody};
pub use error::{BodyError, CodecError};
pub use frame::{Frame, FrameHead, Framing, MessageType, PayloadProtocol};
pub use linkbuf::{ChunkWriter, LengthSlot, LinkBuf, LINK_THRESHOLD};
pub use protobuf::ErrorProto;
pub use thrift::{ApplicationException, ExceptionKind};
pub use ttheader::{keys, parse_int_value, TtHeader};
