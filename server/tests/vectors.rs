//! Golden vectors (codec/tests/vectors, captured from real Kitex and Volo peers) sent raw to our
//! server: where we answer as the captured peer did, the reply matches byte for byte; where we
//! differ by design (TTHeader int key 22 as text, UNKNOWN_METHOD instead of Kitex's
//! UnknownService) it matches in framing, seq id, message type and body.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ringrpc_codec::apache::{Args1, SuccessResult};
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{ExceptionKind, Frame, Framing, MessageType};
use ringrpc_server::{CallContext, HandlerError, RunningServer, ServiceDef};
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};

engine_tests!(volo_vectors, kitex_vectors);

/// Kitex's vector IDL: `struct EchoRequest {1: required string message}` (and the same
/// `EchoResponse`); unknown fields are skipped, as generated code does.
#[derive(Debug, Default)]
struct KitexEcho {
    message: String,
}

impl TSerializable for KitexEcho {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        let mut out = Self::default();
        i.read_struct_begin()?;
        loop {
            let f = i.read_field_begin()?;
            match (f.field_type, f.id) {
                (TType::Stop, _) => break,
                (TType::String, Some(1)) => out.message = i.read_string()?,
                (t, _) => i.skip(t)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        Ok(out)
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("EchoResponse"))?;
        o.write_field_begin(&TFieldIdentifier::new("message", TType::String, 1))?;
        o.write_string(&self.message)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

fn kitex_service() -> ServiceDef {
    ServiceDef::new("EchoService").thrift_method(
        "Echo",
        async |_cx: &mut CallContext,
               Args1(req): Args1<KitexEcho>|
               -> Result<SuccessResult<KitexEcho>, HandlerError> {
            Ok(SuccessResult(KitexEcho {
                message: req.message,
            }))
        },
    )
}

fn start<E: TestEngine>(service: fn() -> ServiceDef) -> RunningServer {
    builder::<E>()
        .service(service)
        .start()
        .expect("server starts")
}

/// Sends `<name>.request` on a fresh connection and returns the raw reply (one frame).
fn exchange(addr: SocketAddr, name: &str) -> Vec<u8> {
    let mut s = raw_connect(addr, Duration::from_secs(5));
    write_lenient(&mut s, &vector(&format!("{name}.request")));
    read_frame(&mut s).1
}

fn one(bytes: &[u8], what: &str) -> Frame {
    let mut frames = decode_all(bytes);
    assert_eq!(frames.len(), 1, "{what}: one frame");
    frames.remove(0)
}

/// Our reply to `name` matches the captured one in framing, seq ids, type, method and body.
fn same_shape(addr: SocketAddr, name: &str) -> (Frame, Frame) {
    let ours = one(&exchange(addr, name), name);
    let theirs = one(&vector(&format!("{name}.response")), name);
    assert_eq!(ours.head.framing, theirs.head.framing, "{name}: framing");
    assert_eq!(ours.head.protocol, theirs.head.protocol, "{name}: protocol");
    assert_eq!(ours.head.seq_id, theirs.head.seq_id, "{name}: seq id");
    assert_eq!(
        ours.head.message_type, theirs.head.message_type,
        "{name}: message type"
    );
    assert_eq!(ours.head.method, theirs.head.method, "{name}: method");
    let crrst = |f: &Frame| {
        f.head
            .header()
            .and_then(|h| h.str_kv_bytes(skeys::CONN_RESET.as_bytes()))
    };
    assert_eq!(crrst(&ours), crrst(&theirs), "{name}: crrst");
    (ours, theirs)
}

fn volo_vectors<E: TestEngine>() {
    let server = start::<E>(ringrpc_example_echo::echo_service);
    let addr = server.local_addr();
    for name in ["volo/framed", "volo/framed-unknown-method"] {
        assert_eq!(
            hex(&exchange(addr, name)),
            hex(&vector(&format!("{name}.response"))),
            "{name}: byte for byte"
        );
    }
    for name in [
        "volo/ttheader",
        "volo/ttheader-framed",
        "volo/ttheader-minimal",
        "volo/ttheader-framed-unknown-method",
    ] {
        let (ours, theirs) = same_shape(addr, name);
        if ours.head.message_type == MessageType::Exception {
            assert_eq!(
                ours.exception().unwrap(),
                theirs.exception().unwrap(),
                "{name}"
            );
        } else {
            assert_eq!(ours.body, theirs.body, "{name}: body");
        }
    }
    // Garbage: a PROTOCOL_ERROR exception, unframed, seq 0, as Volo answers; then close.
    let mut s = raw_connect(addr, Duration::from_secs(5));
    write_lenient(&mut s, &vector("volo/garbage.request"));
    let (reply, end) = read_until_close(&mut s);
    assert_eq!(end, ReadEnd::Closed, "garbage: the server closes");
    let ours = one(&reply, "garbage");
    let theirs = one(&vector("volo/garbage.response"), "garbage response");
    assert_eq!(ours.head.framing, theirs.head.framing);
    assert_eq!(ours.head.framing, Framing::Buffered);
    assert_eq!(
        (ours.head.message_type, ours.head.seq_id),
        (MessageType::Exception, 0)
    );
    assert_eq!(ours.exception().unwrap().kind, ExceptionKind::ProtocolError);
    assert_eq!(
        theirs.exception().unwrap().kind,
        ExceptionKind::ProtocolError
    );
    server.shutdown();
}

fn kitex_vectors<E: TestEngine>() {
    let server = start::<E>(kitex_service);
    let addr = server.local_addr();
    for name in ["kitex/framed", "kitex/buffered"] {
        assert_eq!(
            hex(&exchange(addr, name)),
            hex(&vector(&format!("{name}.response"))),
            "{name}: byte for byte"
        );
    }
    for name in [
        "kitex/ttheader",
        "kitex/ttheader-framed",
        "kitex/ttheader-minimal",
    ] {
        let (ours, theirs) = same_shape(addr, name);
        assert_eq!(ours.body, theirs.body, "{name}: body");
    }
    // Unknown method: Kitex says UnknownService (20), we say UNKNOWN_METHOD (1), as Volo does.
    for name in [
        "kitex/framed-unknown-method",
        "kitex/ttheader-framed-unknown-method",
    ] {
        let (ours, theirs) = same_shape(addr, name);
        assert_eq!(
            theirs.exception().unwrap().kind,
            ExceptionKind::UnknownService
        );
        let e = ours.exception().unwrap();
        assert_eq!(e.kind, ExceptionKind::UnknownMethod, "{name}");
        assert_eq!(e.message, "unknown method Nope");
    }
    server.shutdown();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn vectors_are_where_expected() {
    // Guards against a silently empty comparison if the vectors move.
    assert_eq!(vector("volo/framed.request").len(), 59);
    assert_eq!(vector("kitex/ttheader.request").len(), 139);
}
