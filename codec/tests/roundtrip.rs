//! Property tests: every frame kind round-trips through encoder and decoder, fed in random
//! segment splits; TTHeader info blocks decode in any order and repeated.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::concat;
use proptest::prelude::*;
use ringrpc_codec::apache::{self, ThriftBody};
use ringrpc_codec::ttheader::{info_id, protocol_id, MAX_ENCODED_HEADER_SIZE};
use ringrpc_codec::*;

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Buffered),
        Just(Framing::Framed),
        Just(Framing::TtHeader),
        Just(Framing::TtHeaderFramed)
    ]
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Call),
        Just(MessageType::Reply),
        Just(MessageType::Exception),
        Just(MessageType::Oneway)
    ]
}

fn small_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn header() -> impl Strategy<Value = TtHeader> {
    (
        any::<u16>().prop_map(|f| f & !ttheader::FLAG_STREAMING),
        proptest::sample::select(protocol_id::ACCEPTED.to_vec()),
        proptest::collection::vec((any::<u16>(), small_bytes(40)), 0..8),
        proptest::collection::vec((small_bytes(20), small_bytes(40)), 0..8),
        proptest::option::of(small_bytes(30)),
    )
        .prop_map(|(flags, protocol_id, int_kvs, str_kvs, acl_token)| {
            let mut h = TtHeader::new();
            h.flags = flags;
            h.protocol_id = protocol_id;
            for (k, v) in int_kvs {
                h.push_int_kv(k, &v);
            }
            for (k, v) in str_kvs {
                h.push_str_kv(&k, &v);
            }
            h.set_acl_token(acl_token.as_deref());
            h
        })
}

/// A valid thrift struct body: string fields with random ids, then STOP; sometimes one
/// large field so the encoder links it instead of copying.
fn thrift_struct() -> impl Strategy<Value = Bytes> {
    (
        proptest::collection::vec((1i16..100, small_bytes(64)), 0..5),
        any::<bool>(),
    )
        .prop_map(|(fields, big)| {
            let mut b = BytesMut::new();
            for (id, v) in fields {
                b.put_u8(11);
                b.put_i16(id);
                b.put_u32(v.len() as u32);
                b.put_slice(&v);
            }
            if big {
                b.put_u8(11);
                b.put_i16(200);
                b.put_u32(5000);
                b.put_bytes(7, 5000);
            }
            b.put_u8(0);
            b.freeze()
        })
}

/// Feeds `bytes` to a fresh decoder in segments cut at `cuts`, expecting one frame.
fn decode_split(bytes: &[u8], cuts: &[usize]) -> Frame {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    let mut buf = LinkBuf::new();
    let mut dec = FrameDecoder::default();
    let mut frame = None;
    for w in points.windows(2) {
        buf.push(Bytes::copy_from_slice(&bytes[w[0]..w[1]]));
        match dec.decode(&mut buf).expect("valid frame") {
            Decoded::Frame(f) => {
                assert_eq!(w[1], bytes.len(), "frame before all bytes arrived");
                frame = Some(f);
            }
            Decoded::NeedMore(n) => assert!(n > 0 && w[1] + n <= bytes.len()),
        }
    }
    assert!(buf.is_empty());
    frame.expect("frame after all bytes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn thrift_frames_round_trip(
        framing in framing(),
        mt in message_type(),
        method in small_bytes(80),
        seq in any::<i32>(),
        header in proptest::option::of(header()),
        body in thrift_struct(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let head = FrameHead { framing, protocol: PayloadProtocol::ThriftBinary, message_type: mt, method, seq_id: seq, header };
        let mut out = Vec::new();
        FrameEncoder::new().encode(&head, body.clone(), &mut out).unwrap();
        if body.len() >= LINK_THRESHOLD {
            prop_assert!(out.iter().any(|c| c.len() == body.len() || c.len() >= LINK_THRESHOLD));
        }
        let f = decode_split(&concat(&out), &cuts);
        let mut want = head.clone();
        want.header = framing.has_ttheader().then(|| {
            let mut h = head.header.clone().unwrap_or_default();
            h.seq_id = seq;
            h
        });
        prop_assert_eq!(f.head, want);
        prop_assert_eq!(f.body, body);
    }

    #[test]
    fn protobuf_frames_round_trip(
        ttheader in any::<bool>(),
        mt in prop_oneof![Just(MessageType::Call), Just(MessageType::Reply), Just(MessageType::Exception)],
        method in small_bytes(80),
        seq in any::<i32>(),
        header in proptest::option::of(header()),
        body in small_bytes(300),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let framing = if ttheader { Framing::TtHeaderFramed } else { Framing::Framed };
        let head = FrameHead { framing, protocol: PayloadProtocol::KitexProtobuf, message_type: mt, method, seq_id: seq, header };
        let mut out = Vec::new();
        FrameEncoder::new().encode(&head, body.clone(), &mut out).unwrap();
        let f = decode_split(&concat(&out), &cuts);
        prop_assert_eq!(f.head.protocol, PayloadProtocol::KitexProtobuf);
        prop_assert_eq!(f.head.framing, framing);
        prop_assert_eq!(f.head.message_type, mt);
        prop_assert_eq!(f.head.seq_id, seq);
        prop_assert_eq!(&f.head.method, &head.method);
        prop_assert_eq!(f.body, body);
    }

    /// Info blocks in any order, repeated, with padding between them, merge into one header.
    #[test]
    fn ttheader_info_blocks_in_any_order(
        blocks in proptest::collection::vec(prop_oneof![
            Just(None),
            proptest::collection::vec((small_bytes(10), small_bytes(10)), 0..4).prop_map(|v| Some((0u8, v))),
            proptest::collection::vec((any::<u16>().prop_map(|k| Bytes::copy_from_slice(&k.to_be_bytes())), small_bytes(10)), 0..4).prop_map(|v| Some((1u8, v))),
            small_bytes(10).prop_map(|t| Some((2u8, vec![(t, Bytes::new())]))),
        ], 0..6),
        pid in proptest::sample::select(protocol_id::ACCEPTED.to_vec()),
    ) {
        let mut info = BytesMut::new();
        info.put_u8(pid);
        info.put_u8(0);
        let mut want = TtHeader::new();
        want.protocol_id = pid;
        want.seq_id = 5;
        for b in &blocks {
            match b {
                None => info.put_u8(info_id::PADDING),
                Some((0, kvs)) => {
                    info.put_u8(info_id::KEY_VALUE);
                    info.put_u16(kvs.len() as u16);
                    for (k, v) in kvs {
                        info.put_u16(k.len() as u16); info.put_slice(k);
                        info.put_u16(v.len() as u16); info.put_slice(v);
                        want.push_str_kv(k, v);
                    }
                }
                Some((1, kvs)) => {
                    info.put_u8(info_id::INT_KEY_VALUE);
                    info.put_u16(kvs.len() as u16);
                    for (k, v) in kvs {
                        info.put_slice(k);
                        info.put_u16(v.len() as u16); info.put_slice(v);
                        want.push_int_kv(u16::from_be_bytes([k[0], k[1]]), v);
                    }
                }
                Some((_, t)) => {
                    info.put_u8(info_id::ACL_TOKEN);
                    info.put_u16(t[0].0.len() as u16); info.put_slice(&t[0].0);
                    want.set_acl_token(Some(&t[0].0));
                }
            }
        }
        while info.len() % 4 != 0 { info.put_u8(0); }
        let got = TtHeader::decode_info(info.freeze(), 0, 5).unwrap();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn every_protocol_id_round_trips() {
    for pid in protocol_id::ACCEPTED {
        let head = FrameHead {
            header: Some({
                let mut h = TtHeader::new();
                h.protocol_id = pid;
                h
            }),
            ..FrameHead::new(
                Framing::TtHeader,
                PayloadProtocol::ThriftBinary,
                MessageType::Call,
                "m",
                1,
            )
        };
        let mut out = Vec::new();
        FrameEncoder::new()
            .encode(&head, Bytes::from_static(&[0]), &mut out)
            .unwrap();
        let f = common::decode_one(&concat(&out));
        assert_eq!(f.head.header.unwrap().protocol_id, pid);
    }
}

#[test]
fn empty_header_is_the_minimal_header() {
    let head = FrameHead::new(
        Framing::TtHeader,
        PayloadProtocol::ThriftBinary,
        MessageType::Call,
        "Echo",
        11,
    );
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode(&head, Bytes::from_static(&[0]), &mut out)
        .unwrap();
    let bytes = concat(&out);
    assert_eq!(
        &bytes[4..18],
        &[0x10, 0, 0, 0, 0, 0, 0, 11, 0, 1, 0, 0, 0, 0]
    );
}

#[test]
fn maximum_length_strings() {
    // Method names: u32 length, 65535 bytes round-trips on every framing.
    let method = Bytes::from(vec![b'm'; 65535]);
    for framing in [
        Framing::Buffered,
        Framing::Framed,
        Framing::TtHeader,
        Framing::TtHeaderFramed,
    ] {
        let head = FrameHead::new(
            framing,
            PayloadProtocol::ThriftBinary,
            MessageType::Call,
            method.clone(),
            3,
        );
        let mut out = Vec::new();
        FrameEncoder::new()
            .encode(&head, Bytes::from_static(&[0]), &mut out)
            .unwrap();
        let f = common::decode_one(&concat(&out));
        assert_eq!(f.head.method, method);
    }
    // Header values: the largest that fits the 64 KiB encode limit round-trips...
    let fit = 65536 - (2 + 1 + 2 + 2 + 2);
    let mut head = FrameHead::new(
        Framing::TtHeaderFramed,
        PayloadProtocol::ThriftBinary,
        MessageType::Call,
        "m",
        3,
    );
    head.header_mut().set_int_kv(1, vec![b'v'; fit]);
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode(&head, Bytes::from_static(&[0]), &mut out)
        .unwrap();
    let f = common::decode_one(&concat(&out));
    assert_eq!(f.head.header.unwrap().int_kv(1).unwrap().len(), fit);
    // ...one more byte is a typed encode error, and a 65535-byte key + value too.
    head.header_mut().set_int_kv(1, vec![b'v'; fit + 1]);
    let err = FrameEncoder::new()
        .encode(&head, Bytes::from_static(&[0]), &mut out)
        .unwrap_err();
    assert_eq!(err, CodecError::HeaderTooLarge(MAX_ENCODED_HEADER_SIZE + 4));
    let mut h = TtHeader::new();
    h.set_str_kv(vec![b'k'; 65535], vec![b'v'; 65535]);
    head.header = Some(h.clone());
    assert!(matches!(
        FrameEncoder::new().encode(&head, Bytes::new(), &mut out),
        Err(CodecError::HeaderTooLarge(_))
    ));
    // Over 65535 is a field error.
    h.set_str_kv("k", vec![b'v'; 65536]);
    head.header = Some(h);
    assert!(matches!(
        FrameEncoder::new().encode(&head, Bytes::new(), &mut out),
        Err(CodecError::HeaderFieldTooLong { len: 65536, .. })
    ));
    // The decoder accepts 65535-byte keys and values (peers may allow 256 KiB headers).
    let mut info = BytesMut::new();
    info.put_slice(&[0, 0, info_id::KEY_VALUE, 0, 1]);
    info.put_u16(65535);
    info.put_bytes(b'k', 65535);
    info.put_u16(65535);
    info.put_bytes(b'v', 65535);
    let h = TtHeader::decode_info(info.freeze(), 0, 0).unwrap();
    let (k, v) = h.str_kvs().next().unwrap();
    assert_eq!((k.len(), v.len()), (65535, 65535));
}

#[test]
fn encoder_links_large_bodies_without_copying() {
    let body = Bytes::from(vec![1u8; 10_000]);
    let head = FrameHead::new(
        Framing::TtHeaderFramed,
        PayloadProtocol::KitexProtobuf,
        MessageType::Reply,
        "echo",
        1,
    );
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode(&head, body.clone(), &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1].as_ptr(),
        body.as_ptr(),
        "payload chunk is the caller's Bytes"
    );
}

#[test]
fn int_value_helpers() {
    assert_eq!(parse_int_value(b"3000"), Some(3000));
    assert_eq!(parse_int_value(&[2]), Some(2));
    assert_eq!(parse_int_value(b"2"), Some(2));
    assert_eq!(parse_int_value(b""), None);
    assert_eq!(parse_int_value(b"x1"), None);
    let mut h = TtHeader::new();
    h.set_int_kv_number(keys::int::RPC_TIMEOUT, 1500);
    h.set_int_kv_number(keys::int::MSG_TYPE, 3);
    assert_eq!(h.int_kv(keys::int::RPC_TIMEOUT).unwrap(), b"1500");
    assert_eq!(h.int_kv_number(keys::int::MSG_TYPE), Some(3));
    h.set_str_kv(keys::str::CONN_RESET, "1");
    assert_eq!(h.str_kv(b"crrst").unwrap(), b"1");
}

#[test]
fn thrift_and_prost_bodies_round_trip() {
    let req = common::EchoWrapper {
        field_id: 1,
        inner: common::EchoRequest {
            action: "echo".into(),
            msg: "\0".repeat(1024),
        },
    };
    let head = FrameHead::new(
        Framing::Framed,
        PayloadProtocol::ThriftBinary,
        MessageType::Call,
        "Echo",
        9,
    );
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode(&head, ThriftBody(&req), &mut out)
        .unwrap();
    let bytes = concat(&out);
    assert_eq!(bytes.len(), 1067, "spec §2.5 size");
    let f = common::decode_one(&bytes);
    assert_eq!(
        apache::read_body::<common::EchoWrapper>(f.body).unwrap(),
        req
    );

    let pb = common::PbEchoRequest {
        action: "echo".into(),
        msg: "\0".repeat(1024),
    };
    let head = FrameHead::new(
        Framing::Framed,
        PayloadProtocol::KitexProtobuf,
        MessageType::Call,
        "echo",
        9,
    );
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode(&head, ProstBody(&pb), &mut out)
        .unwrap();
    let bytes = concat(&out);
    assert_eq!(&bytes[..4], &1049u32.to_be_bytes(), "spec §3 size");
    let f = common::decode_one(&bytes);
    assert_eq!(
        protobuf::read_body::<common::PbEchoRequest>(f.body).unwrap(),
        pb
    );

    let exc = ApplicationException::new(ExceptionKind::InternalError, "biz error: boom");
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode_exception(&f.head.reply_to(MessageType::Exception), &exc, &mut out)
        .unwrap();
    let f = common::decode_one(&concat(&out));
    assert_eq!(f.head.message_type, MessageType::Exception);
    assert_eq!(f.exception().unwrap(), exc);
}

/// A decoded header indexes the received bytes: `*_bytes` lookups slice them without a copy,
/// and changing the header afterwards copies them once and leaves the received frame alone.
#[test]
fn decoded_header_slices_then_copies_on_write() {
    let mut built = TtHeader::new();
    built.seq_id = 7;
    built.push_int_kv(keys::int::TO_METHOD, b"Echo");
    built.push_str_kv(b"RPC_TRANSIT_a", b"1");
    built.set_acl_token(Some(b"tok"));
    let mut w = ChunkWriter::new();
    let n = built.encode_info(&mut w).unwrap();
    let mut out = Vec::new();
    w.finish(&mut out);
    let info = concat(&out);
    assert_eq!(info.len(), n);
    let info = Bytes::from(info);
    let mut h = TtHeader::decode_info(info.clone(), 0, 7).unwrap();
    assert_eq!(h.seq_id, 7);
    let method = h.int_kv_bytes(keys::int::TO_METHOD).unwrap();
    assert_eq!(&method[..], b"Echo");
    let inside = info.as_ptr_range();
    assert!(inside.contains(&method.as_ptr()), "sliced, not copied");
    assert_eq!(h.str_kv(b"RPC_TRANSIT_a"), Some(&b"1"[..]));
    assert_eq!(h.acl_token(), Some(&b"tok"[..]));
    assert_eq!(h.len(), 3);
    assert_eq!(h, built, "equal by content whatever the storage");

    h.set_str_kv("RPC_TRANSIT_a", "2");
    h.set_int_kv_number(keys::int::RPC_TIMEOUT, -1500);
    h.set_int_kv_number(keys::int::MSG_TYPE, i64::MIN);
    assert_eq!(h.str_kv(b"RPC_TRANSIT_a"), Some(&b"2"[..]));
    assert_eq!(h.str_kvs().count(), 1, "replaced, not added");
    assert_eq!(h.int_kv(keys::int::RPC_TIMEOUT), Some(&b"-1500"[..]));
    assert_eq!(h.int_kv_number(keys::int::MSG_TYPE), Some(i64::MIN));
    assert_eq!(h.int_kv(keys::int::TO_METHOD), Some(&b"Echo"[..]));
    assert_ne!(h, built);
    assert_eq!(&method[..], b"Echo", "earlier slices stay valid");
    h.set_acl_token(None);
    assert_eq!(h.acl_token(), None);
}
