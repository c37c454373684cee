//! Every error path returns its typed error, and input cut at any byte offset is
//! "need more", never an error or a panic.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{concat, vector};
use ringrpc_codec::apache::{self, Args1};
use ringrpc_codec::thrift::Envelope;
use ringrpc_codec::*;

const ALL_VECTORS: [&str; 27] = [
    "kitex/buffered.request",
    "kitex/buffered.response",
    "kitex/framed-unknown-method.request",
    "kitex/framed-unknown-method.response",
    "kitex/framed.request",
    "kitex/framed.response",
    "kitex/ttheader-framed-unknown-method.request",
    "kitex/ttheader-framed-unknown-method.response",
    "kitex/ttheader-framed.request",
    "kitex/ttheader-framed.response",
    "kitex/ttheader-minimal.request",
    "kitex/ttheader-minimal.response",
    "kitex/ttheader.request",
    "kitex/ttheader.response",
    "volo/framed-unknown-method.request",
    "volo/framed-unknown-method.response",
    "volo/framed.request",
    "volo/framed.response",
    "volo/garbage.response",
    "volo/ttheader-framed-unknown-method.request",
    "volo/ttheader-framed-unknown-method.response",
    "volo/ttheader-framed.request",
    "volo/ttheader-framed.response",
    "volo/ttheader-minimal.request",
    "volo/ttheader-minimal.response",
    "volo/ttheader.request",
    "volo/ttheader.response",
];

fn decode(bytes: &[u8], limit: usize) -> Result<Decoded, CodecError> {
    let mut buf = LinkBuf::new();
    buf.push(Bytes::copy_from_slice(bytes));
    FrameDecoder::new(DecoderConfig {
        max_frame_size: limit,
    })
    .decode(&mut buf)
}

fn decode_err(bytes: &[u8]) -> CodecError {
    decode(bytes, DEFAULT_MAX_FRAME_SIZE).expect_err("should be refused")
}

/// A TTHeader frame around `info` (already padded) and a minimal unframed thrift payload.
fn ttheader_frame(flags: u16, info: &[u8]) -> Vec<u8> {
    let payload = [0x80, 1, 0, 1, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0];
    let mut b = BytesMut::new();
    b.put_u32((10 + info.len() + payload.len()) as u32);
    b.put_u16(0x1000);
    b.put_u16(flags);
    b.put_u32(1);
    b.put_u16((info.len() / 4) as u16);
    b.put_slice(info);
    b.put_slice(&payload);
    b.to_vec()
}

#[test]
fn cut_at_every_offset_is_need_more_then_frame() {
    for name in ALL_VECTORS {
        let bytes = vector(name);
        for cut in 0..bytes.len() {
            // One decoder across both halves: resumable at any byte boundary.
            let mut dec = FrameDecoder::default();
            let mut buf = LinkBuf::new();
            buf.push(Bytes::copy_from_slice(&bytes[..cut]));
            match dec.decode(&mut buf) {
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n >= 1 && cut + n <= bytes.len(), "{name}@{cut}: {n}")
                }
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
            assert_eq!(buf.len(), cut, "nothing consumed");
            buf.push(Bytes::copy_from_slice(&bytes[cut..]));
            assert!(
                matches!(dec.decode(&mut buf), Ok(Decoded::Frame(_))),
                "{name}@{cut}"
            );
            assert!(buf.is_empty());
        }
        // Byte by byte, one segment per byte (frames straddle many segments).
        let mut dec = FrameDecoder::default();
        let mut buf = LinkBuf::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.push(Bytes::copy_from_slice(&[*b]));
            let r = dec.decode(&mut buf).unwrap();
            assert_eq!(
                matches!(r, Decoded::Frame(_)),
                i + 1 == bytes.len(),
                "{name}@{i}"
            );
        }
    }
}

#[test]
fn back_to_back_frames_decode_in_order() {
    let mut buf = LinkBuf::new();
    for name in ALL_VECTORS {
        buf.push(Bytes::from(vector(name)));
    }
    let mut dec = FrameDecoder::default();
    for _ in ALL_VECTORS {
        assert!(matches!(dec.decode(&mut buf).unwrap(), Decoded::Frame(_)));
    }
    assert!(buf.is_empty());
    assert_eq!(dec.decode(&mut buf).unwrap(), Decoded::NeedMore(8));
}

#[test]
fn bad_magic_is_invalid_payload() {
    let mut bytes = vector("kitex/ttheader.request");
    bytes[4] = 0x11;
    assert!(matches!(
        decode_err(&bytes),
        CodecError::InvalidPayload { .. }
    ));
    // A TTHeader whose payload has no known magic.
    let mut bytes = vector("kitex/ttheader-framed.request");
    let n = bytes.len();
    bytes[n - 33] = 0x70; // inner 0x8001 -> 0x7001
    assert!(matches!(
        decode_err(&bytes),
        CodecError::InvalidPayload { .. }
    ));
    // Protobuf is framed only.
    let bytes = [0x90, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    assert!(matches!(
        decode_err(&bytes),
        CodecError::InvalidPayload { .. }
    ));
}

#[test]
fn header_size_past_the_frame() {
    let mut bytes = vector("kitex/ttheader-minimal.request");
    bytes[12..14].copy_from_slice(&100u16.to_be_bytes());
    assert!(matches!(
        decode_err(&bytes),
        CodecError::HeaderSizeOutOfRange {
            header_bytes: 400,
            ..
        }
    ));
    bytes[12..14].copy_from_slice(&0u16.to_be_bytes());
    assert!(matches!(
        decode_err(&bytes),
        CodecError::HeaderSizeOutOfRange {
            header_bytes: 0,
            ..
        }
    ));
}

#[test]
fn string_length_past_the_end() {
    // TTHeader string value longer than the info area.
    let info = [0, 0, 0x01, 0, 1, 0, 1, b'k', 0, 9, 0, 0];
    assert!(matches!(
        decode_err(&ttheader_frame(0, &info)),
        CodecError::Truncated { .. }
    ));
    // Count larger than the area can hold.
    let info = [0, 0, 0x10, 0xff, 0xff, 0, 0, 0];
    assert!(matches!(
        decode_err(&ttheader_frame(0, &info)),
        CodecError::Truncated { .. }
    ));
    // ACL token too long.
    let info = [0, 0, 0x11, 0, 5, 0, 0, 0];
    assert!(matches!(
        decode_err(&ttheader_frame(0, &info)),
        CodecError::Truncated { .. }
    ));
    // Method name longer than a framed payload.
    let bytes = [0, 0, 0, 12, 0x80, 1, 0, 1, 0, 0, 0, 100, 0, 0, 0, 1];
    assert!(matches!(
        decode_err(&bytes),
        CodecError::Truncated {
            what: "method name",
            ..
        }
    ));
    let env = Envelope::decode(
        Bytes::from_static(&[0x80, 1, 0, 1, 0, 0, 0, 9, b'a']),
        0x8001,
    );
    assert!(matches!(env, Err(CodecError::Truncated { .. })));
}

#[test]
fn unknown_info_id() {
    let info = [0, 0, 0x05, 0];
    assert_eq!(
        decode_err(&ttheader_frame(0, &info)),
        CodecError::UnknownInfoId(5)
    );
}

#[test]
fn unknown_protocol_id() {
    for pid in [0x01, 0x02, 0x05, 0x12, 0xff] {
        let info = [pid, 0, 0, 0];
        assert_eq!(
            decode_err(&ttheader_frame(0, &info)),
            CodecError::UnknownProtocolId(pid)
        );
    }
}

#[test]
fn non_zero_transform() {
    let info = [0, 2, 0, 1, 0, 0, 0, 0];
    assert_eq!(
        decode_err(&ttheader_frame(0, &info)),
        CodecError::UnsupportedTransform(1)
    );
    // Transform ids are parsed; a zero id is tolerated.
    let info = [0, 1, 0, 0];
    assert!(matches!(
        decode(&ttheader_frame(0, &info), 1 << 20),
        Ok(Decoded::Frame(_))
    ));
}

#[test]
fn streaming_flag_and_mesh_header_are_refused() {
    let info = [0, 0, 0, 0];
    assert_eq!(
        decode_err(&ttheader_frame(2, &info)),
        CodecError::StreamingNotSupported(2)
    );
    let bytes = [0xff, 0xaf, 0, 4, 0, 0, 0, 0];
    assert_eq!(decode_err(&bytes), CodecError::MeshHeaderUnsupported);
}

#[test]
fn frame_over_the_limit_is_refused_from_the_length_prefix() {
    // Only the first 8 bytes are buffered: refused before the payload arrives.
    let ttheader = [0, 0x10, 0, 0, 0x10, 0, 0, 0];
    let framed = [0, 0x10, 0, 0, 0x80, 1, 0, 1];
    let framed_pb = [0, 0x10, 0, 0, 0x90, 1, 0, 1];
    for bytes in [ttheader, framed, framed_pb] {
        assert!(matches!(
            decode(&bytes, 1 << 20),
            Err(CodecError::FrameTooLarge {
                size: 0x10_0004,
                limit: 0x10_0000
            })
        ));
    }
    // Unframed: a method-name length past the limit is refused without buffering it.
    let buffered = [0x80, 1, 0, 1, 0x7f, 0xff, 0xff, 0xff, b'E'];
    assert!(matches!(
        decode(&buffered, 1 << 20),
        Err(CodecError::FrameTooLarge { .. })
    ));
    // Unframed: a huge container count is refused without looping.
    let mut b = vec![
        0x80, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 15, 0, 1, 12, 0x7f, 0xff, 0xff, 0xff,
    ];
    assert!(matches!(
        decode(&b, 1 << 20),
        Err(CodecError::InvalidContainerSize(_))
    ));
    b[15] = 11; // list<string>
    assert!(matches!(
        decode(&b, 1 << 20),
        Err(CodecError::InvalidContainerSize(_))
    ));
    // A valid vector over a small limit.
    assert!(matches!(
        decode(&vector("volo/ttheader.request"), 100),
        Err(CodecError::FrameTooLarge {
            size: 165,
            limit: 100
        })
    ));
    assert!(matches!(
        decode(&vector("kitex/buffered.request"), 20),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn thrift_bad_version() {
    let env = Envelope::decode(
        Bytes::from_static(&[0x80, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        0x8001,
    );
    assert_eq!(env.unwrap_err(), CodecError::BadThriftVersion(0x8002_0001));
    let r = apache::read_body::<common::EchoWrapper>(Bytes::from_static(&[12, 0, 1, 99]));
    assert!(matches!(
        r,
        Err(CodecError::Body(BodyError::InvalidData(_)))
    ));
}

/// A struct `{1: string}` whose string claims `len` bytes and has `have` of them.
fn string_field(len: i32, have: usize) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(thrift::ttype::STRUCT);
    b.put_i16(1);
    b.put_u8(thrift::ttype::STRING);
    b.put_i16(1);
    b.put_i32(len);
    b.put_bytes(b'a', have);
    b.put_u8(thrift::ttype::STOP);
    b.put_u8(thrift::ttype::STOP);
    b.freeze()
}

#[test]
fn bad_thrift_bodies_are_typed_body_errors() {
    use common::EchoWrapper;
    let read = |b: Bytes| match apache::read_body::<EchoWrapper>(b) {
        Err(CodecError::Body(e)) => e,
        other => panic!("expected a body error, got {other:?}"),
    };
    // The input ends inside the string.
    assert!(matches!(read(string_field(10, 3)), BodyError::Truncated(_)));
    assert!(matches!(
        read(Bytes::from_static(&[12])),
        BodyError::Truncated(_)
    ));
    // A negative length is a negative size, not an oversized one.
    assert!(matches!(
        read(string_field(-1, 0)),
        BodyError::NegativeSize(_)
    ));
    // A list count larger than the bytes left is refused before anything is allocated.
    let mut b = BytesMut::new();
    b.put_u8(thrift::ttype::LIST);
    b.put_i16(9);
    b.put_u8(thrift::ttype::I32);
    b.put_i32(1_000_000);
    b.put_u8(thrift::ttype::STOP);
    assert!(matches!(read(b.clone().freeze()), BodyError::SizeLimit(_)));
    b[4..8].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(read(b.freeze()), BodyError::NegativeSize(_)));
    // Invalid UTF-8 in a string field.
    let mut b = string_field(2, 0).to_vec();
    b.splice(10..10, [0xFF, 0xFE]);
    assert!(matches!(read(Bytes::from(b)), BodyError::InvalidData(_)));
    // The generated-style wrapper without its field.
    let r = apache::read_body::<Args1<common::EchoRequest>>(Bytes::from_static(&[0]));
    assert!(matches!(r, Err(CodecError::Body(BodyError::InvalidData(m))) if m.contains("field 1")));
}

#[test]
fn invalid_message_type_and_lengths() {
    let bytes = [0, 0, 0, 12, 0x80, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(decode_err(&bytes), CodecError::InvalidMessageType(9));
    let bytes = [0x80, 0, 0, 0, 0x10, 0, 0, 0];
    assert_eq!(
        decode_err(&bytes),
        CodecError::InvalidTtHeaderLength(0x8000_0000)
    );
    let bytes = [0, 0, 0, 9, 0x10, 0, 0, 0];
    assert_eq!(decode_err(&bytes), CodecError::InvalidTtHeaderLength(9));
    // TTHeaderFramed whose inner length disagrees with the TTHeader length.
    let mut bytes = vector("kitex/ttheader-framed.request");
    let at = bytes.len() - 37;
    bytes[at + 3] += 1;
    assert!(matches!(
        decode_err(&bytes),
        CodecError::InnerFrameLengthMismatch { .. }
    ));
}

#[test]
fn thrift_skip_limits() {
    // Negative string length, invalid type, and nesting beyond the depth limit.
    let mut b = vec![
        0x80, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 11, 0, 1, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(decode_err(&b), CodecError::NegativeLength(-1));
    b[12] = 7;
    assert_eq!(decode_err(&b), CodecError::InvalidThriftType(7));
    let mut deep = vec![0x80, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    for _ in 0..100 {
        deep.extend_from_slice(&[12, 0, 1]);
    }
    assert_eq!(
        decode_err(&deep),
        CodecError::DepthLimitExceeded(thrift::MAX_SKIP_DEPTH)
    );
    // TApplicationException with trailing garbage type is refused, unknown fields skipped.
    assert!(ApplicationException::decode(&[8, 0, 2, 0, 0, 0, 1]).is_err());
    let e =
        ApplicationException::decode(&[10, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 2, 0, 0, 0, 4, 0])
            .unwrap();
    assert_eq!(e.kind, ExceptionKind::BadSequenceId);
    // Either order.
    let e = ApplicationException::decode(&[8, 0, 2, 0, 0, 0, 21, 11, 0, 1, 0, 0, 0, 1, b'x', 0])
        .unwrap();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ExceptionKind::NoServiceName, "x")
    );
    for id in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 21, 99] {
        assert_eq!(ExceptionKind::from_i32(id).as_i32(), id);
    }
}

#[test]
fn encode_errors_leave_nothing_behind() {
    let head = FrameHead::new(
        Framing::Buffered,
        PayloadProtocol::KitexProtobuf,
        MessageType::Call,
        "m",
        1,
    );
    let mut w = ChunkWriter::new();
    assert_eq!(
        encode_frame(&head, Bytes::new(), &mut w),
        Err(CodecError::ProtobufRequiresFraming)
    );
    let mut head = FrameHead::new(
        Framing::TtHeader,
        PayloadProtocol::ThriftBinary,
        MessageType::Call,
        "m",
        1,
    );
    head.header_mut().set_str_kv("k", vec![0u8; 70_000]);
    assert!(encode_frame(&head, Bytes::new(), &mut w).is_err());
    assert!(w.is_empty());
    let failing =
        FnBody(|_: &mut ChunkWriter| Err(CodecError::Body(BodyError::Other("nope".into()))));
    head.header = None;
    assert!(encode_frame(&head, failing, &mut w).is_err());
    assert!(w.is_empty());
    let mut out = Vec::new();
    w.finish(&mut out);
    assert_eq!(concat(&out), Vec::<u8>::new());
}

#[test]
fn linkbuf_reads_across_segments() {
    let mut b = LinkBuf::new();
    for chunk in [&[1u8, 2][..], &[3], &[], &[4, 5, 6, 7, 8]] {
        b.push(Bytes::copy_from_slice(chunk));
    }
    assert_eq!(b.len(), 8);
    assert_eq!(b.segment_count(), 3);
    assert_eq!(b.peek_u32(1), Some(0x0203_0405));
    assert_eq!(b.peek_u16(1), Some(0x0203));
    assert_eq!(b.peek_i32(5), None);
    assert_eq!(b.read_u8(), Some(1));
    let s = b.split_to(3); // straddles: one copy
    assert_eq!(&s[..], &[2, 3, 4]);
    let seg = b.peek_bytes(3).unwrap();
    let s = b.split_to(3); // in one segment: zero copy
    assert_eq!(s.as_ptr(), seg.as_ptr());
    b.advance(0);
    assert_eq!(b.read_u8(), Some(8));
    assert!(b.is_empty() && b.segment_count() == 0);
    assert_eq!(b.read_u16(), None);
}

/// A TTHeader whose key-value index would need more memory than the frame limit is refused:
/// 200 empty int values are 800 wire bytes but over 8 KiB of index.
#[test]
fn header_entries_over_the_limit_are_refused() {
    let mut head = FrameHead::new(
        Framing::TtHeaderFramed,
        PayloadProtocol::ThriftBinary,
        MessageType::Call,
        "Echo",
        1,
    );
    let h = head.header_mut();
    for k in 0..200u16 {
        h.set_int_kv(k, Bytes::new());
    }
    let mut wire = Vec::new();
    FrameEncoder::new()
        .encode(&head, Bytes::from_static(&[0]), &mut wire)
        .unwrap();
    let wire: Vec<u8> = wire.concat();
    assert!(wire.len() < 1024, "{} wire bytes", wire.len());
    let mut buf = LinkBuf::new();
    buf.push(Bytes::from(wire.clone()));
    let err = FrameDecoder::new(DecoderConfig {
        max_frame_size: 1024,
    })
    .decode(&mut buf)
    .unwrap_err();
    assert!(
        matches!(err, CodecError::TooManyHeaderEntries { entries: 200, .. }),
        "{err:?}"
    );
    // With room for the index the same frame decodes.
    let mut buf = LinkBuf::new();
    buf.push(Bytes::from(wire));
    let ok = FrameDecoder::new(DecoderConfig {
        max_frame_size: 64 * 1024,
    })
    .decode(&mut buf)
    .unwrap();
    assert!(matches!(ok, Decoded::Frame(f) if f.head.header().unwrap().int_kvs().count() == 200));
}
