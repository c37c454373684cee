//! The kitex-benchmark echo service (spec §6) as the bench server runs it, and the request
//! bodies the load generator sends.
//!
//! Thrift: `EchoServer.Echo(1: Request req)`, `Request {1: action, 2: msg}`, reply `Response`
//! with the same fields. Protobuf: `Echo.echo(Request) returns (Response)`, fields `Action = 1`,
//! `Msg = 2`. The Thrift handler decodes the args struct with a hand-written zero-copy parser
//! (action and msg stay slices of the received bytes) and writes the result struct with one
//! copy of the payload, which is the work any echo handler must do; anything the fast parser
//! does not expect falls back to the generic `thrift` crate decoding.

use bytes::{BufMut, Bytes, BytesMut};
use ringrpc_codec::apache::{read_body, Args1, SuccessResult};
use ringrpc_server::{CallContext, HandlerError, ServiceDef};

/// The Thrift IDL service name.
pub const THRIFT_SERVICE: &str = "EchoServer";
/// The Thrift method.
pub const THRIFT_METHOD: &str = "Echo";
/// The protobuf method (as declared in kitex-benchmark's `echo-kitex.proto`).
pub const PROTOBUF_METHOD: &str = "echo";

/// The protobuf request and response (`string` on the wire; kept as bytes, no UTF-8 check).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEcho {
    /// `Action = 1`.
    #[prost(bytes = "bytes", tag = "1")]
    pub action: Bytes,
    /// `Msg = 2`.
    #[prost(bytes = "bytes", tag = "2")]
    pub msg: Bytes,
}

/// A Thrift `Request`/`Response` with zero-copy fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoFields {
    /// `action`.
    pub action: Bytes,
    /// `msg`.
    pub msg: Bytes,
}

const T_STOP: u8 = 0;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;

/// Encodes the args (`field_id` 1) or result (`field_id` 0) struct around `{action, msg}`.
pub fn encode_echo_struct(field_id: i16, f: &EchoFields, buf: &mut BytesMut) {
    buf.reserve(3 + 7 + f.action.len() + 7 + f.msg.len() + 2);
    buf.put_u8(T_STRUCT);
    buf.put_i16(field_id);
    for (id, v) in [(1i16, &f.action), (2, &f.msg)] {
        buf.put_u8(T_STRING);
        buf.put_i16(id);
        buf.put_u32(v.len() as u32);
        buf.put_slice(v);
    }
    buf.put_u8(T_STOP);
    buf.put_u8(T_STOP);
}

/// Parses an args or result struct laid out as the encoder above writes it; `None` if the
/// layout differs (other field order, extra fields), in which case callers decode generically.
pub fn parse_echo_struct(body: &Bytes) -> Option<EchoFields> {
    let b = &body[..];
    if b.len() < 3 || b[0] != T_STRUCT {
        return None;
    }
    let mut at = 3;
    let mut field = |want: i16| -> Option<Bytes> {
        let h = b.get(at..at + 7)?;
        if h[0] != T_STRING || i16::from_be_bytes([h[1], h[2]]) != want {
            return None;
        }
        let len = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
        let start = at + 7;
        let end = start.checked_add(len)?;
        if end > b.len() {
            return None;
        }
        at = end;
        Some(body.slice(start..end))
    };
    let action = field(1)?;
    let msg = field(2)?;
    (b.get(at..) == Some(&[T_STOP, T_STOP][..])).then_some(EchoFields { action, msg })
}

/// The echo service, Thrift and protobuf methods both.
pub fn echo_service() -> ServiceDef {
    ServiceDef::new(THRIFT_SERVICE)
        .raw_method(
            THRIFT_METHOD,
            async |_cx: &mut CallContext, body: Bytes| -> Result<Bytes, HandlerError> {
                let fields = match parse_echo_struct(&body) {
                    Some(f) => f,
                    None => {
                        let Args1(req) = read_body::<Args1<ringrpc_example_echo::Request>>(body)
                            .map_err(|e| HandlerError::internal(e.to_string()))?;
                        EchoFields {
                            action: Bytes::from(req.action),
                            msg: Bytes::from(req.msg),
                        }
                    }
                };
                let mut out = BytesMut::new();
                encode_echo_struct(0, &fields, &mut out);
                Ok(out.freeze())
            },
        )
        .protobuf_method(
            PROTOBUF_METHOD,
            async |_cx: &mut CallContext, req: PbEcho| -> Result<PbEcho, HandlerError> { Ok(req) },
        )
}

/// The request body for a `payload`-byte echo (`msg` of zero bytes, as kitex-benchmark sends).
pub fn request_body(protobuf: bool, payload: usize) -> Bytes {
    let fields = EchoFields {
        action: Bytes::from_static(b"echo"),
        msg: Bytes::from(vec![0u8; payload]),
    };
    let mut buf = BytesMut::new();
    if protobuf {
        let msg = PbEcho {
            action: fields.action,
            msg: fields.msg,
        };
        prost::Message::encode(&msg, &mut buf).expect("BytesMut grows");
    } else {
        encode_echo_struct(1, &fields, &mut buf);
    }
    buf.freeze()
}

/// Checks an echo reply body against the request body it answers.
pub fn reply_matches(protobuf: bool, request: &Bytes, reply: &Bytes) -> bool {
    if protobuf {
        return reply == request;
    }
    match (parse_echo_struct(request), parse_echo_struct(reply)) {
        (Some(a), Some(b)) => a == b,
        _ => read_body::<SuccessResult<ringrpc_example_echo::Response>>(reply.clone()).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrpc_codec::apache::write_body;

    #[test]
    fn fast_layout_matches_the_generated_types() {
        let req = request_body(false, 1024);
        let mut generic = BytesMut::new();
        write_body(
            &Args1(ringrpc_example_echo::Request::new(
                "echo".into(),
                String::from_utf8(vec![0; 1024]).unwrap(),
            )),
            &mut generic,
        )
        .unwrap();
        assert_eq!(req, generic.freeze());
        let f = parse_echo_struct(&req).unwrap();
        assert_eq!((&f.action[..], f.msg.len()), (&b"echo"[..], 1024));
    }

    #[test]
    fn odd_layouts_are_refused_not_misread() {
        let req = request_body(false, 8);
        for cut in 0..req.len() {
            assert_eq!(parse_echo_struct(&req.slice(..cut)), None);
        }
        let mut bad = req.to_vec();
        bad[3] = T_STRUCT;
        assert_eq!(parse_echo_struct(&Bytes::from(bad)), None);
    }
}
