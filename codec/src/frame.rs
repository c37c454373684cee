//! What a decoded frame is: its framing, payload protocol, message header and body, and
//! the [`FrameHead`] the encoder takes to write one.
//!
//! Framing detection itself (spec §2.3) lives in [`crate::decoder`]; this module holds the
//! data types shared by decoder and encoder.

use bytes::Bytes;

use crate::error::CodecError;
use crate::protobuf::ErrorProto;
use crate::thrift::ApplicationException;
use crate::ttheader::{keys, TtHeader};

/// How a message is delimited on the wire (spec §2.2). A server replies with the framing
/// it detected on the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Unframed ("PurePayload"): the Thrift message alone; its end is found by a skip pass.
    Buffered,
    /// u32 length, then the message.
    Framed,
    /// TTHeader, then the unframed message.
    TtHeader,
    /// TTHeader, then u32 length, then the message (Volo's default, Kitex mux and protobuf).
    TtHeaderFramed,
}

impl Framing {
    /// True for the TTHeader variants.
    pub fn has_ttheader(self) -> bool {
        matches!(self, Self::TtHeader | Self::TtHeaderFramed)
    }

    /// True when the message is preceded by its own u32 length.
    pub fn is_framed(self) -> bool {
        matches!(self, Self::Framed | Self::TtHeaderFramed)
    }
}

/// Codec of the payload, sniffed from its magic (spec §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadProtocol {
    /// Strict Thrift binary (`0x8001`).
    ThriftBinary,
    /// Kitex Protobuf (`0x9001`, always framed).
    KitexProtobuf,
}

/// Message type of the envelope (Thrift `TMessageType`; Kitex Protobuf uses 1..=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A request.
    Call = 1,
    /// A normal reply.
    Reply = 2,
    /// An exception reply (body: `TApplicationException` or `ErrorProto`).
    Exception = 3,
    /// A request without reply (Kitex sends oneway as CALL).
    Oneway = 4,
}

impl MessageType {
    /// Parses the low byte of the version word.
    pub fn from_u8(v: u8) -> Result<Self, CodecError> {
        Ok(match v {
            1 => Self::Call,
            2 => Self::Reply,
            3 => Self::Exception,
            4 => Self::Oneway,
            other => return Err(CodecError::InvalidMessageType(other)),
        })
    }
}

/// Everything about a frame except its body: what the decoder reports and what the
/// encoder writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    /// Framing. With a TTHeader framing and `header == None` an empty header is written.
    pub framing: Framing,
    /// Payload codec.
    pub protocol: PayloadProtocol,
    /// Message type.
    pub message_type: MessageType,
    /// Method name.
    pub method: Bytes,
    /// Sequence id (written to both the TTHeader and the payload).
    pub seq_id: i32,
    /// TTHeader metadata; ignored by the encoder for non-TTHeader framings.
    pub header: Option<TtHeader>,
}

impl FrameHead {
    /// A head without TTHeader metadata.
    pub fn new(
        framing: Framing,
        protocol: PayloadProtocol,
        message_type: MessageType,
        method: impl Into<Bytes>,
        seq_id: i32,
    ) -> Self {
        Self {
            framing,
            protocol,
            message_type,
            method: method.into(),
            seq_id,
            header: None,
        }
    }

    /// The head of a reply to this request: same framing, protocol, method and seq id.
    /// With TTHeader framing the reply header carries FLAGS 0, the request's protocol id
    /// and int key 22 (MsgType) as ASCII decimal, as a Kitex server with
    /// `ServerTTHeaderHandler` writes it. Add `crrst`, `biz-*` etc. with
    /// [`TtHeader::set_str_kv`].
    pub fn reply_to(&self, message_type: MessageType) -> Self {
        let header = self.framing.has_ttheader().then(|| {
            let mut h = TtHeader::new();
            h.protocol_id = self.header.as_ref().map_or(0, |h| h.protocol_id);
            h.set_int_kv_number(keys::int::MSG_TYPE, i64::from(message_type as u8));
            h
        });
        Self {
            framing: self.framing,
            protocol: self.protocol,
            message_type,
            method: self.method.clone(),
            seq_id: self.seq_id,
            header,
        }
    }

    /// The TTHeader metadata, if any.
    pub fn header(&self) -> Option<&TtHeader> {
        self.header.as_ref()
    }

    /// Mutable TTHeader metadata, created empty if missing.
    pub fn header_mut(&mut self) -> &mut TtHeader {
        self.header.get_or_insert_with(TtHeader::default)
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Framing, protocol, message type, method, seq id, TTHeader.
    pub head: FrameHead,
    /// The struct bytes after the envelope (Thrift) or the protobuf bytes: a zero-copy
    /// slice of the received data.
    pub body: Bytes,
}

impl Frame {
    /// Method name as UTF-8, if valid.
    pub fn method_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.head.method).ok()
    }

    /// Decodes the body of an EXCEPTION message (`TApplicationException` or `ErrorProto`).
    pub fn exception(&self) -> Result<ApplicationException, CodecError> {
        match self.head.protocol {
            PayloadProtocol::ThriftBinary => ApplicationException::decode(&self.body),
            PayloadProtocol::KitexProtobuf => {
                Ok(crate::protobuf::read_body::<ErrorProto>(self.body.clone())?.into())
            }
        }
    }
}
