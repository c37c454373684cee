//! Thrift `TApplicationException` (spec §2.4): the body of an EXCEPTION message.
//!
//! Encoded as Kitex does (field 1 message, field 2 type, STOP); decoded in any field order
//! with unknown fields skipped by the allocation-free skip pass.

use bytes::{BufMut, BytesMut};

use crate::error::CodecError;
use crate::thrift::skip::{skip_struct_len, ttype, SkipStop, Skipper};

/// `TApplicationException` type ids (spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionKind {
    /// 0 UNKNOWN.
    Unknown,
    /// 1 UNKNOWN_METHOD.
    UnknownMethod,
    /// 2 INVALID_MESSAGE_TYPE.
    InvalidMessageType,
    /// 3 WRONG_METHOD_NAME.
    WrongMethodName,
    /// 4 BAD_SEQUENCE_ID.
    BadSequenceId,
    /// 5 MISSING_RESULT.
    MissingResult,
    /// 6 INTERNAL_ERROR.
    InternalError,
    /// 7 PROTOCOL_ERROR.
    ProtocolError,
    /// 8 INVALID_TRANSFORM.
    InvalidTransform,
    /// 9 INVALID_PROTOCOL.
    InvalidProtocol,
    /// 10 UNSUPPORTED_CLIENT_TYPE.
    UnsupportedClientType,
    /// 20 UnknownService (Kitex only).
    UnknownService,
    /// 21 NoServiceName (Kitex only).
    NoServiceName,
    /// Any other id, kept as received.
    Other(i32),
}

impl ExceptionKind {
    /// The wire type id.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::UnknownMethod => 1,
            Self::InvalidMessageType => 2,
            Self::WrongMethodName => 3,
            Self::BadSequenceId => 4,
            Self::MissingResult => 5,
            Self::InternalError => 6,
            Self::ProtocolError => 7,
            Self::InvalidTransform => 8,
            Self::InvalidProtocol => 9,
            Self::UnsupportedClientType => 10,
            Self::UnknownService => 20,
            Self::NoServiceName => 21,
            Self::Other(v) => v,
        }
    }

    /// The kind of a wire type id (unknown ids become [`ExceptionKind::Other`]).
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::UnknownMethod,
            2 => Self::InvalidMessageType,
            3 => Self::WrongMethodName,
            4 => Self::BadSequenceId,
            5 => Self::MissingResult,
            6 => Self::InternalError,
            7 => Self::ProtocolError,
            8 => Self::InvalidTransform,
            9 => Self::InvalidProtocol,
            10 => Self::UnsupportedClientType,
            20 => Self::UnknownService,
            21 => Self::NoServiceName,
            other => Self::Other(other),
        }
    }
}

/// A Thrift application exception (also the content of a Kitex Protobuf `ErrorProto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationException {
    /// Type id.
    pub kind: ExceptionKind,
    /// Human-readable message.
    pub message: String,
}

impl ApplicationException {
    /// A new exception.
    pub fn new(kind: ExceptionKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Appends the thrift struct: field 1 message, field 2 type, STOP (Kitex's order).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(12 + self.message.len());
        buf.put_u8(ttype::STRING);
        buf.put_i16(1);
        buf.put_u32(self.message.len() as u32);
        buf.put_slice(self.message.as_bytes());
        buf.put_u8(ttype::I32);
        buf.put_i16(2);
        buf.put_i32(self.kind.as_i32());
        buf.put_u8(ttype::STOP);
    }

    /// Decodes the thrift struct at the start of `body` (trailing bytes are ignored).
    /// Fields may come in any order; unknown fields and fields of unexpected types are
    /// skipped. Missing fields default to `Unknown` / empty.
    pub fn decode(body: &[u8]) -> Result<Self, CodecError> {
        let end = skip_struct_len(body)?;
        let body = &body[..end];
        let skipper = Skipper::new(body, body.len());
        let mut kind = ExceptionKind::Unknown;
        let mut message = String::new();
        let mut pos = 0;
        loop {
            let ty = body[pos];
            if ty == ttype::STOP {
                break;
            }
            let id = i16::from_be_bytes([body[pos + 1], body[pos + 2]]);
            let value = pos + 3;
            match (id, ty) {
                (1, ttype::STRING) => {
                    let len = u32::from_be_bytes(body[value..value + 4].try_into().expect("4"));
                    let s = &body[value + 4..value + 4 + len as usize];
                    message = String::from_utf8_lossy(s).into_owned();
                }
                (2, ttype::I32) => {
                    kind = ExceptionKind::from_i32(i32::from_be_bytes(
                        body[value..value + 4].try_into().expect("4"),
                    ));
                }
                _ => {}
            }
            // The whole struct was validated by skip_struct_len, so this cannot stop early.
            pos = skipper.skip_value(ty, value, 1).map_err(|e| match e {
                SkipStop::Invalid(e) => e,
                SkipStop::NeedMore(_) => CodecError::Malformed("TApplicationException"),
            })?;
        }
        Ok(Self { kind, message })
    }
}

impl std::fmt::Display for ApplicationException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "application exception {}: {}",
            self.kind.as_i32(),
            self.message
        )
    }
}

impl std::error::Error for ApplicationException {}
