//! Golden frames captured from real Kitex and Volo peers (tests/vectors/README.md): each
//! decodes to the listed fields, and the encoder reproduces them byte for byte.

mod common;

use bytes::Bytes;
use common::{concat, decode_one, vector, EchoRequest, EchoWrapper};
use ringrpc_codec::apache::{read_body, ThriftBody};
use ringrpc_codec::keys::{int, str as skeys};
use ringrpc_codec::*;

/// (header words, str kvs, int kvs).
type HeaderExpect = (
    u16,
    &'static [(&'static str, &'static [u8])],
    &'static [(u16, &'static [u8])],
);

struct Expect {
    name: &'static str,
    len: usize,
    framing: Framing,
    msg: MessageType,
    method: &'static str,
    seq: i32,
    body: usize,
    /// (header words, str kvs, int kvs) for TTHeader frames.
    header: Option<HeaderExpect>,
    exception: Option<(i32, &'static str)>,
}

use Framing::*;
use MessageType::*;

const NO_STR: &[(&str, &[u8])] = &[];
const NO_INT: &[(u16, &[u8])] = &[];

fn expectations() -> Vec<Expect> {
    let e = |name, len, framing, msg, method, seq, body| Expect {
        name,
        len,
        framing,
        msg,
        method,
        seq,
        body,
        header: None,
        exception: None,
    };
    let kitex_unknown = "unknown service , method Nope";
    let volo_unknown = "unknown method Nope";
    vec![
        e("kitex/buffered.request", 33, Buffered, Call, "Echo", 1, 17),
        e(
            "kitex/buffered.response",
            33,
            Buffered,
            Reply,
            "Echo",
            1,
            17,
        ),
        e(
            "kitex/framed-unknown-method.request",
            45,
            Framed,
            Call,
            "Nope",
            7,
            25,
        ),
        Expect {
            exception: Some((20, kitex_unknown)),
            ..e(
                "kitex/framed-unknown-method.response",
                64,
                Framed,
                Exception,
                "Nope",
                7,
                44,
            )
        },
        e("kitex/framed.request", 37, Framed, Call, "Echo", 1, 17),
        e("kitex/framed.response", 37, Framed, Reply, "Echo", 1, 17),
        Expect {
            header: Some((1, NO_STR, NO_INT)),
            ..e(
                "kitex/ttheader-framed-unknown-method.request",
                63,
                TtHeaderFramed,
                Call,
                "Nope",
                9,
                25,
            )
        },
        Expect {
            header: Some((6, &[("crrst", b"1")], &[(22, b"3")])),
            exception: Some((20, kitex_unknown)),
            ..e(
                "kitex/ttheader-framed-unknown-method.response",
                102,
                TtHeaderFramed,
                Exception,
                "Nope",
                9,
                44,
            )
        },
        Expect {
            header: Some((
                22,
                &[("isn", b"EchoService")],
                &[
                    (3, b""),
                    (20, b""),
                    (6, b"EchoService"),
                    (9, b"Echo"),
                    (22, b"1"),
                    (1, b"framed"),
                    (12, b"3000"),
                    (17, b"1000"),
                ],
            )),
            ..e(
                "kitex/ttheader-framed.request",
                139,
                TtHeaderFramed,
                Call,
                "Echo",
                1,
                17,
            )
        },
        Expect {
            header: Some((3, NO_STR, &[(22, b"2")])),
            ..e(
                "kitex/ttheader-framed.response",
                63,
                TtHeaderFramed,
                Reply,
                "Echo",
                1,
                17,
            )
        },
        Expect {
            header: Some((1, NO_STR, NO_INT)),
            ..e(
                "kitex/ttheader-minimal.request",
                59,
                TtHeader,
                Call,
                "Echo",
                11,
                25,
            )
        },
        Expect {
            header: Some((3, NO_STR, &[(22, b"2")])),
            ..e(
                "kitex/ttheader-minimal.response",
                58,
                TtHeader,
                Reply,
                "Echo",
                11,
                16,
            )
        },
        Expect {
            header: Some((
                23,
                &[("isn", b"EchoService")],
                &[
                    (22, b"1"),
                    (1, b"unframed"),
                    (12, b"3000"),
                    (17, b"1000"),
                    (3, b""),
                    (20, b""),
                    (6, b"EchoService"),
                    (9, b"Echo"),
                ],
            )),
            ..e("kitex/ttheader.request", 139, TtHeader, Call, "Echo", 1, 17)
        },
        Expect {
            header: Some((3, NO_STR, &[(22, b"2")])),
            ..e(
                "kitex/ttheader.response",
                59,
                TtHeader,
                Reply,
                "Echo",
                1,
                17,
            )
        },
        e(
            "volo/framed-unknown-method.request",
            45,
            Framed,
            Call,
            "Nope",
            7,
            25,
        ),
        Expect {
            exception: Some((1, volo_unknown)),
            ..e(
                "volo/framed-unknown-method.response",
                54,
                Framed,
                Exception,
                "Nope",
                7,
                34,
            )
        },
        e("volo/framed.request", 59, Framed, Call, "Echo", 1, 39),
        e("volo/framed.response", 59, Framed, Reply, "Echo", 1, 39),
        Expect {
            exception: Some((
                7,
                "invalid thrift version: Missing version in ReadMessageBegin",
            )),
            ..e("volo/garbage.response", 86, Buffered, Exception, "", 0, 74)
        },
        Expect {
            header: Some((1, NO_STR, NO_INT)),
            ..e(
                "volo/ttheader-framed-unknown-method.request",
                63,
                TtHeaderFramed,
                Call,
                "Nope",
                9,
                25,
            )
        },
        Expect {
            header: Some((6, &[("crrst", b"1")], &[(22, &[3])])),
            exception: Some((1, volo_unknown)),
            ..e(
                "volo/ttheader-framed-unknown-method.response",
                92,
                TtHeaderFramed,
                Exception,
                "Nope",
                9,
                34,
            )
        },
        Expect {
            header: Some((
                24,
                &[("isn", b"EchoServer")],
                &[
                    (16, b"3"),
                    (12, b"1000"),
                    (3, b"volo-echo-client"),
                    (9, b"Echo"),
                    (6, b"echo"),
                    (11, b"127.0.0.1:18889"),
                ],
            )),
            ..e(
                "volo/ttheader-framed.request",
                169,
                TtHeaderFramed,
                Call,
                "Echo",
                1,
                39,
            )
        },
        Expect {
            header: Some((3, NO_STR, &[(22, &[2])])),
            ..e(
                "volo/ttheader-framed.response",
                85,
                TtHeaderFramed,
                Reply,
                "Echo",
                1,
                39,
            )
        },
        Expect {
            header: Some((1, NO_STR, NO_INT)),
            ..e(
                "volo/ttheader-minimal.request",
                59,
                TtHeader,
                Call,
                "Echo",
                11,
                25,
            )
        },
        Expect {
            header: Some((3, NO_STR, &[(22, &[2])])),
            ..e(
                "volo/ttheader-minimal.response",
                67,
                TtHeader,
                Reply,
                "Echo",
                11,
                25,
            )
        },
        Expect {
            header: Some((
                24,
                &[("isn", b"EchoServer")],
                &[
                    (16, b"3"),
                    (12, b"1000"),
                    (3, b"volo-echo-client"),
                    (9, b"Echo"),
                    (6, b"echo"),
                    (11, b"127.0.0.1:18888"),
                ],
            )),
            ..e("volo/ttheader.request", 165, TtHeader, Call, "Echo", 1, 39)
        },
        Expect {
            header: Some((3, NO_STR, &[(22, &[2])])),
            ..e("volo/ttheader.response", 81, TtHeader, Reply, "Echo", 1, 39)
        },
    ]
}

#[test]
fn every_vector_decodes_to_its_readme_fields() {
    let all = expectations();
    assert_eq!(
        all.len(),
        27,
        "every vector except garbage.request (an error case)"
    );
    for x in all {
        let bytes = vector(x.name);
        assert_eq!(bytes.len(), x.len, "{}", x.name);
        let f = decode_one(&bytes);
        assert_eq!(f.head.framing, x.framing, "{}", x.name);
        assert_eq!(f.head.protocol, PayloadProtocol::ThriftBinary, "{}", x.name);
        assert_eq!(f.head.message_type, x.msg, "{}", x.name);
        assert_eq!(f.method_str(), Some(x.method), "{}", x.name);
        assert_eq!(f.head.seq_id, x.seq, "{}", x.name);
        assert_eq!(f.body.len(), x.body, "{}", x.name);
        match (x.header, &f.head.header) {
            (None, None) => {}
            (Some((words, strs, ints)), Some(h)) => {
                assert_eq!(
                    u16::from_be_bytes([bytes[12], bytes[13]]),
                    words,
                    "{}",
                    x.name
                );
                assert_eq!(h.flags, 0, "{}", x.name);
                assert_eq!(h.seq_id, x.seq, "{}", x.name);
                assert_eq!(h.protocol_id, 0, "{}", x.name);
                let got_str: Vec<_> = h.str_kvs().collect();
                let want_str: Vec<_> = strs.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
                assert_eq!(got_str, want_str, "{}", x.name);
                let got_int: Vec<_> = h.int_kvs().collect();
                let want_int: Vec<_> = ints.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(got_int, want_int, "{}", x.name);
                if let Some(t) = h.int_kv(int::MSG_TYPE) {
                    assert_eq!(parse_int_value(t), Some(x.msg as i64), "{}", x.name);
                }
            }
            (want, got) => panic!("{}: header {:?} vs {got:?}", x.name, want.is_some()),
        }
        match x.exception {
            Some((ty, msg)) => {
                let e = f.exception().unwrap();
                assert_eq!(
                    (e.kind.as_i32(), e.message.as_str()),
                    (ty, msg),
                    "{}",
                    x.name
                );
            }
            None if x.msg != Exception => {
                // Bodies are Echo args/results; they parse with the thrift-crate path.
                read_body::<EchoWrapper>(f.body.clone()).unwrap();
            }
            None => {}
        }
    }
}

#[test]
fn garbage_request_is_refused_with_invalid_payload() {
    let mut buf = LinkBuf::new();
    buf.push(Bytes::from(vector("volo/garbage.request")));
    let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        CodecError::InvalidPayload {
            first4: 0x10,
            second4: 0xdeadbeef
        }
    );
}

/// Decoding keeps key order, so re-encoding the decoded head and body reproduces every
/// vector, including multi-key Go-map-ordered requests.
#[test]
fn every_vector_reencodes_byte_for_byte() {
    let mut enc = FrameEncoder::new();
    for x in expectations() {
        let bytes = vector(x.name);
        let f = decode_one(&bytes);
        let mut out = Vec::new();
        enc.encode(&f.head, f.body.clone(), &mut out).unwrap();
        assert_eq!(concat(&out), bytes, "{}", x.name);
    }
}

/// Replies built from scratch (the way server/ will build them) from the decoded request.
#[test]
fn responses_built_from_requests_match_kitex_and_volo() {
    let mut enc = FrameEncoder::new();
    for (peer, raw_msg_type) in [("kitex", false), ("volo", true)] {
        for kind in [
            "buffered",
            "framed",
            "ttheader",
            "ttheader-framed",
            "ttheader-minimal",
        ] {
            if peer == "volo" && kind == "buffered" {
                continue;
            }
            let req = decode_one(&vector(&format!("{peer}/{kind}.request")));
            let want = vector(&format!("{peer}/{kind}.response"));
            let args: EchoWrapper = read_body(req.body.clone()).unwrap();
            let mut head = req.head.reply_to(Reply);
            if raw_msg_type {
                if let Some(h) = head.header.as_mut() {
                    h.set_int_kv(int::MSG_TYPE, Bytes::from_static(&[2]));
                }
            }
            // Kitex's EchoResponse IDL knows only field 1: it drops `msg`.
            let inner = if peer == "kitex" {
                EchoRequest {
                    action: args.inner.action,
                    msg: String::new(),
                }
            } else {
                args.inner
            };
            let mut out = Vec::new();
            if peer == "kitex" {
                // Kitex's struct has one string field: write it with a closure body.
                let msg = inner.action;
                let body = FnBody(move |w: &mut ChunkWriter| {
                    w.put_slice(&[0x0c, 0, 0, 0x0b, 0, 1]);
                    w.put_u32(msg.len() as u32);
                    w.put_slice(msg.as_bytes());
                    w.put_slice(&[0, 0]);
                    Ok(())
                });
                enc.encode(&head, body, &mut out).unwrap();
            } else {
                let result = EchoWrapper { field_id: 0, inner };
                enc.encode(&head, ThriftBody(&result), &mut out).unwrap();
            }
            assert_eq!(concat(&out), want, "{peer}/{kind}");
        }
        for kind in ["framed-unknown-method", "ttheader-framed-unknown-method"] {
            let req = decode_one(&vector(&format!("{peer}/{kind}.request")));
            let want = vector(&format!("{peer}/{kind}.response"));
            let mut head = req.head.reply_to(Exception);
            if let Some(h) = head.header.as_mut() {
                h.set_str_kv(skeys::CONN_RESET, "1");
                if raw_msg_type {
                    h.set_int_kv(int::MSG_TYPE, Bytes::from_static(&[3]));
                }
            }
            let exc = if peer == "kitex" {
                ApplicationException::new(
                    ExceptionKind::UnknownService,
                    "unknown service , method Nope",
                )
            } else {
                ApplicationException::new(ExceptionKind::UnknownMethod, "unknown method Nope")
            };
            let mut out = Vec::new();
            enc.encode_exception(&head, &exc, &mut out).unwrap();
            assert_eq!(concat(&out), want, "{peer}/{kind}");
        }
    }
    // Volo's reply to garbage: unframed exception, empty method, seq 0.
    let head = FrameHead::new(Buffered, PayloadProtocol::ThriftBinary, Exception, "", 0);
    let exc = ApplicationException::new(
        ExceptionKind::ProtocolError,
        "invalid thrift version: Missing version in ReadMessageBegin",
    );
    let mut out = Vec::new();
    enc.encode_exception(&head, &exc, &mut out).unwrap();
    assert_eq!(concat(&out), vector("volo/garbage.response"));
}
