//! Error types of the codec: every way a frame can be refused, as one typed enum
//! ([`CodecError`]), and every way a message body can fail to read or write ([`BodyError`]),
//! in the codec's own terms whichever library (the `thrift` crate, prost) ran the body.
//!
//! Decoders never signal "not enough bytes yet" through this type: that is
//! [`Decoded::NeedMore`](crate::Decoded::NeedMore). A `CodecError` from a decoder means the
//! stream is corrupt (or over a limit) and the connection should be closed after an
//! optional exception reply.

use thiserror::Error;

use crate::thrift::ApplicationException;

/// Everything that can go wrong while decoding or encoding a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The first bytes of a message match no known framing (spec §2.3 "invalid payload").
    #[error("invalid payload (first4Bytes={first4:#010x}, second4Bytes={second4:#010x})")]
    InvalidPayload {
        /// Big-endian u32 at offset 0.
        first4: u32,
        /// Big-endian u32 at offset 4.
        second4: u32,
    },
    /// A frame (or unframed message) is larger than the configured maximum.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Size announced or reached so far.
        size: u64,
        /// Configured limit.
        limit: usize,
    },
    /// The TTHeader LENGTH field has its top bit set or is too small to hold the prefix.
    #[error("invalid TTHeader length field {0}")]
    InvalidTtHeaderLength(u32),
    /// TTHeader flag 0x0002 (streaming) on a unary connection.
    #[error("TTHeader streaming frame (flags {0:#06x}) is not supported by the unary codec")]
    StreamingNotSupported(u16),
    /// HEADER SIZE (in 4-byte words) points past the end of the frame or below 2 bytes.
    #[error(
        "TTHeader header size of {header_bytes} bytes does not fit a frame of {frame_bytes} bytes"
    )]
    HeaderSizeOutOfRange {
        /// 4 × HEADER SIZE.
        header_bytes: usize,
        /// Bytes available after the 14-byte prefix.
        frame_bytes: usize,
    },
    /// A TTHeader PROTOCOL ID outside {0x00, 0x02, 0x03, 0x04, 0x10, 0x11}.
    #[error("unsupported TTHeader protocol id {0:#04x}")]
    UnknownProtocolId(u8),
    /// A non-zero TTHeader transform (zlib, snappy, …): no transform is implemented.
    #[error("unsupported TTHeader transform id {0:#04x}")]
    UnsupportedTransform(u8),
    /// A TTHeader info block id other than 0x00, 0x01, 0x10, 0x11.
    #[error("invalid TTHeader info id {0:#04x}")]
    UnknownInfoId(u8),
    /// A length or count field points past the end of the enclosing region.
    #[error("truncated {what}: need {needed} bytes, {available} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left in the enclosing region.
        available: usize,
    },
    /// Decoding: the TTHeader's key-value entries would take more memory to index than the
    /// frame limit allows (each entry costs a few dozen bytes of index for as few as 4 wire bytes).
    #[error("TTHeader has {entries} key-value entries; the frame limit allows {limit}")]
    TooManyHeaderEntries {
        /// Entries announced so far.
        entries: usize,
        /// Most entries the limit allows.
        limit: usize,
    },
    /// Encoding: the TTHeader info area would exceed 64 KiB (spec §1.3).
    #[error("TTHeader info of {0} bytes exceeds the 65536-byte limit")]
    HeaderTooLarge(usize),
    /// Encoding: a TTHeader string key or value, or a count, exceeds u16::MAX.
    #[error("TTHeader {what} of {len} exceeds 65535")]
    HeaderFieldTooLong {
        /// What was too long.
        what: &'static str,
        /// Its length or count.
        len: usize,
    },
    /// Thrift message header whose version is not `0x8001` (strict binary).
    #[error("bad thrift version {0:#010x}")]
    BadThriftVersion(u32),
    /// A message type outside 1..=4 (thrift) or 1..=3 (Kitex protobuf).
    #[error("invalid message type {0}")]
    InvalidMessageType(u8),
    /// A Thrift value with an unknown TType code.
    #[error("invalid thrift type {0}")]
    InvalidThriftType(u8),
    /// Thrift structs/containers nested deeper than the skip limit.
    #[error("thrift nesting depth exceeds {0}")]
    DepthLimitExceeded(usize),
    /// A Thrift container size that is negative or cannot fit the remaining bytes.
    #[error("invalid thrift container size {0}")]
    InvalidContainerSize(i64),
    /// A Thrift string length that is negative.
    #[error("negative thrift string length {0}")]
    NegativeLength(i32),
    /// The framed length inside a TTHeader frame disagrees with the TTHeader length.
    #[error("inner frame length {inner} does not match the {available} payload bytes")]
    InnerFrameLengthMismatch {
        /// Length in the inner u32 prefix.
        inner: u32,
        /// Payload bytes after that prefix.
        available: usize,
    },
    /// Bytes left over after a TApplicationException/ErrorProto or a thrift struct.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// MeshHeader (0xFFAF) frames are recognised but not decoded.
    #[error("MeshHeader (0xFFAF) frames are not supported")]
    MeshHeaderUnsupported,
    /// Protobuf payloads must be framed (Kitex: "protobuf just support 'framed'").
    #[error("protobuf payload requires a framed transport")]
    ProtobufRequiresFraming,
    /// A message body failed to serialize or deserialize.
    #[error("body codec error: {0}")]
    Body(#[from] BodyError),
}

/// Why a message body could not be read or written. The messages say where, in the words of
/// the library that ran the body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The input ended inside a value.
    #[error("body ends early: {0}")]
    Truncated(String),
    /// Bytes that are not a value of the expected type: an unknown type code, invalid UTF-8,
    /// a missing required field.
    #[error("invalid body data: {0}")]
    InvalidData(String),
    /// A negative length or count.
    #[error("negative size in body: {0}")]
    NegativeSize(String),
    /// A length or count larger than the input left, or than a limit.
    #[error("size limit exceeded in body: {0}")]
    SizeLimit(String),
    /// Values nested deeper than the reader follows.
    #[error("body nested too deep: {0}")]
    DepthLimit(String),
    /// A message header of an unsupported protocol version inside the body's code.
    #[error("bad protocol version in body: {0}")]
    BadVersion(String),
    /// Something the protocol cannot express (e.g. a binary-protocol field without an id).
    #[error("not supported in body: {0}")]
    Unsupported(String),
    /// The body's own code raised an application exception.
    #[error("body raised {0}")]
    Application(ApplicationException),
    /// A Kitex Protobuf body failed to encode or decode (prost's reason).
    #[error("protobuf body: {0}")]
    Protobuf(String),
    /// Any other failure of the body's own code (e.g. an error of a user's serializer).
    #[error("{0}")]
    Other(String),
}

impl From<prost::EncodeError> for CodecError {
    fn from(e: prost::EncodeError) -> Self {
        Self::Body(BodyError::Protobuf(e.to_string()))
    }
}

impl From<prost::DecodeError> for CodecError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Body(BodyError::Protobuf(e.to_string()))
    }
}
