//! Apache Thrift compatibility: bodies of the `thrift` crate's generated types.
//!
//! The one place where codec's API speaks the `thrift` crate (0.17): for teams whose types come
//! from Apache Thrift's Rust generator (`thrift --gen rs`), which implement
//! [`TSerializable`]. Everything else in the codec has its own types — [`MessageType`],
//! [`ApplicationException`], [`CodecError`] / [`BodyError`] — so it builds without this module
//! (feature `apache`, on by default; `--no-default-features` leaves the `thrift` crate out).
//!
//! - [`write_body`] / [`read_body`]: a `TSerializable` body to and from bytes, with the fast
//!   protocol objects [`BytesOutProtocol`] and [`BytesInProtocol`].
//! - [`ThriftBody`]: a `TSerializable` body for [`FrameEncoder`](crate::FrameEncoder);
//!   [`ThriftCodec`]: the [`BodyCodec`] over `TSerializable` that typed server methods and client
//!   calls use.
//! - [`Args1`] / [`SuccessResult`]: the wire layout of the generator's private `_args` /
//!   `_result` structs for a method with one request struct.
//! - [`body_error`]: a `thrift::Error` in the codec's terms ([`BodyError`]).
//!
//! [`MessageType`]: crate::MessageType
//! [`ApplicationException`]: crate::ApplicationException

mod protocol;
mod wrap;

pub use protocol::{BytesInProtocol, BytesOutProtocol};
pub use wrap::{Args1, SuccessResult};

use bytes::{Bytes, BytesMut};
use thrift::protocol::TSerializable;
use thrift::{ProtocolErrorKind, TransportErrorKind};

use crate::body::BodyCodec;
use crate::encoder::EncodeBody;
use crate::error::{BodyError, CodecError};
use crate::linkbuf::ChunkWriter;
use crate::thrift::{ApplicationException, ExceptionKind};

/// Serializes a `TSerializable` body into `buf` with [`BytesOutProtocol`].
///
/// # Errors
/// [`CodecError::Body`] with what the body's own code or the protocol refused.
pub fn write_body<T: TSerializable>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
    value
        .write_to_out_protocol(&mut BytesOutProtocol::new(buf))
        .map_err(|e| CodecError::Body(body_error(e)))
}

/// Deserializes a `TSerializable` body from `body` with [`BytesInProtocol`].
///
/// # Errors
/// [`CodecError::Body`]: the body is truncated, malformed, or refused by the type's own code.
pub fn read_body<T: TSerializable>(body: Bytes) -> Result<T, CodecError> {
    T::read_from_in_protocol(&mut BytesInProtocol::new(body))
        .map_err(|e| CodecError::Body(body_error(e)))
}

/// A `thrift::Error` as the codec's [`BodyError`]: the protocol's and transport's error kinds
/// map to the variant of the same meaning, an `ApplicationError` to
/// [`BodyError::Application`], an IDL exception or anything new to [`BodyError::Other`].
pub fn body_error(e: thrift::Error) -> BodyError {
    match e {
        thrift::Error::Transport(t) => match t.kind {
            TransportErrorKind::EndOfFile => BodyError::Truncated(t.message),
            TransportErrorKind::NegativeSize => BodyError::NegativeSize(t.message),
            TransportErrorKind::SizeLimit => BodyError::SizeLimit(t.message),
            _ => BodyError::Other(t.message),
        },
        thrift::Error::Protocol(p) => match p.kind {
            ProtocolErrorKind::InvalidData => BodyError::InvalidData(p.message),
            ProtocolErrorKind::NegativeSize => BodyError::NegativeSize(p.message),
            ProtocolErrorKind::SizeLimit => BodyError::SizeLimit(p.message),
            ProtocolErrorKind::BadVersion => BodyError::BadVersion(p.message),
            ProtocolErrorKind::NotImplemented => BodyError::Unsupported(p.message),
            ProtocolErrorKind::DepthLimit => BodyError::DepthLimit(p.message),
            _ => BodyError::Other(p.message),
        },
        thrift::Error::Application(a) => BodyError::Application(ApplicationException::new(
            ExceptionKind::from_i32(a.kind as i32),
            a.message,
        )),
        thrift::Error::User(u) => BodyError::Other(u.to_string()),
    }
}

/// A `TSerializable` body for the frame encoder, written with [`BytesOutProtocol`].
#[derive(Debug)]
pub struct ThriftBody<'a, T>(pub &'a T);

impl<T: TSerializable> EncodeBody for ThriftBody<'_, T> {
    fn encode_body(self, w: &mut ChunkWriter) -> Result<(), CodecError> {
        write_body(self.0, w.buf_mut())
    }
}

/// Thrift binary bodies of any `TSerializable` (Apache Thrift's generated structs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThriftCodec;

impl<T: TSerializable> BodyCodec<T> for ThriftCodec {
    fn read(body: Bytes) -> Result<T, CodecError> {
        read_body(body)
    }

    fn write(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        write_body(value, buf)
    }
}

#[cfg(test)]
mod tests {
    use thrift::{ApplicationError, ApplicationErrorKind, ProtocolError, TransportError};

    use super::*;

    #[test]
    fn thrift_errors_map_to_the_body_error_of_the_same_meaning() {
        let eof = thrift::Error::Transport(TransportError::new(TransportErrorKind::EndOfFile, "x"));
        assert_eq!(body_error(eof), BodyError::Truncated("x".into()));
        let cases = [
            (
                ProtocolErrorKind::InvalidData,
                BodyError::InvalidData("m".into()),
            ),
            (
                ProtocolErrorKind::NegativeSize,
                BodyError::NegativeSize("m".into()),
            ),
            (
                ProtocolErrorKind::SizeLimit,
                BodyError::SizeLimit("m".into()),
            ),
            (
                ProtocolErrorKind::BadVersion,
                BodyError::BadVersion("m".into()),
            ),
            (
                ProtocolErrorKind::NotImplemented,
                BodyError::Unsupported("m".into()),
            ),
            (
                ProtocolErrorKind::DepthLimit,
                BodyError::DepthLimit("m".into()),
            ),
            (ProtocolErrorKind::Unknown, BodyError::Other("m".into())),
        ];
        for (kind, want) in cases {
            let e = thrift::Error::Protocol(ProtocolError::new(kind, "m"));
            assert_eq!(body_error(e), want);
        }
        let app = thrift::Error::Application(ApplicationError::new(
            ApplicationErrorKind::MissingResult,
            "no result",
        ));
        assert_eq!(
            body_error(app),
            BodyError::Application(ApplicationException::new(
                ExceptionKind::MissingResult,
                "no result"
            ))
        );
        let user = thrift::Error::User(Box::new(ApplicationException::new(
            ExceptionKind::Unknown,
            "declared",
        )));
        assert!(matches!(body_error(user), BodyError::Other(m) if m.contains("declared")));
    }
}
