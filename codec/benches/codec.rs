//! Criterion benches of the codec: encode and decode of the kitex-benchmark echo request
//! (spec §6: `Request{action:"echo", msg: 1024 zero bytes}`) over TTHeaderFramed, Framed
//! and Kitex Protobuf, and the `thrift` crate's `TBinaryOutputProtocol` against ours.

use std::hint::black_box;

use ::thrift::protocol::{TBinaryOutputProtocol, TSerializable};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use ringrpc_codec::apache::{read_body, BytesOutProtocol, ThriftBody};
use ringrpc_codec::keys::int;
use ringrpc_codec::*;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{concat, EchoRequest, EchoWrapper, PbEchoRequest};

fn echo_args() -> EchoWrapper {
    EchoWrapper {
        field_id: 1,
        inner: EchoRequest {
            action: "echo".into(),
            msg: "\0".repeat(1024),
        },
    }
}

fn head(framing: Framing, protocol: PayloadProtocol) -> FrameHead {
    let mut h = FrameHead::new(framing, protocol, MessageType::Call, "Echo", 1);
    if framing.has_ttheader() {
        h.header_mut().set_int_kv_number(int::MSG_TYPE, 1);
        h.header_mut().set_int_kv(int::TO_METHOD, "Echo");
    }
    h
}

fn bench_encode_decode(c: &mut Criterion) {
    let args = echo_args();
    let pb = PbEchoRequest {
        action: "echo".into(),
        msg: "\0".repeat(1024),
    };
    let cases = [
        (
            "ttheader_framed_thrift",
            head(Framing::TtHeaderFramed, PayloadProtocol::ThriftBinary),
        ),
        (
            "framed_thrift",
            head(Framing::Framed, PayloadProtocol::ThriftBinary),
        ),
        (
            "ttheader_framed_protobuf",
            head(Framing::TtHeaderFramed, PayloadProtocol::KitexProtobuf),
        ),
    ];
    for (name, h) in cases {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::with_capacity(4);
        let thrift = h.protocol == PayloadProtocol::ThriftBinary;
        c.bench_function(&format!("encode/{name}"), |b| {
            b.iter(|| {
                out.clear();
                if thrift {
                    enc.encode(black_box(&h), ThriftBody(black_box(&args)), &mut out)
                        .unwrap();
                } else {
                    enc.encode(black_box(&h), ProstBody(black_box(&pb)), &mut out)
                        .unwrap();
                }
                black_box(&out);
            })
        });
        out.clear();
        if thrift {
            enc.encode(&h, ThriftBody(&args), &mut out).unwrap();
        } else {
            enc.encode(&h, ProstBody(&pb), &mut out).unwrap();
        }
        let wire = Bytes::from(concat(&out));
        let mut dec = FrameDecoder::default();
        c.bench_function(&format!("decode_frame/{name}"), |b| {
            b.iter(|| {
                let mut buf = LinkBuf::new();
                buf.push(wire.clone());
                match dec.decode(&mut buf).unwrap() {
                    Decoded::Frame(f) => black_box(f),
                    Decoded::NeedMore(_) => unreachable!(),
                }
            })
        });
        c.bench_function(&format!("decode_frame_and_body/{name}"), |b| {
            b.iter(|| {
                let mut buf = LinkBuf::new();
                buf.push(wire.clone());
                let Decoded::Frame(f) = dec.decode(&mut buf).unwrap() else {
                    unreachable!()
                };
                if thrift {
                    black_box(read_body::<EchoWrapper>(f.body).unwrap());
                } else {
                    black_box(protobuf::read_body::<PbEchoRequest>(f.body).unwrap());
                }
            })
        });
    }
}

fn bench_protocols(c: &mut Criterion) {
    let args = echo_args();
    let mut buf = BytesMut::with_capacity(4096);
    c.bench_function("thrift_body_write/ours_BytesOutProtocol", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&args)
                .write_to_out_protocol(&mut BytesOutProtocol::new(&mut buf))
                .unwrap();
            black_box(&buf);
        })
    });
    let mut vec: Vec<u8> = Vec::with_capacity(4096);
    c.bench_function(
        "thrift_body_write/thrift_crate_TBinaryOutputProtocol",
        |b| {
            b.iter(|| {
                vec.clear();
                let mut p = TBinaryOutputProtocol::new(&mut vec, true);
                black_box(&args).write_to_out_protocol(&mut p).unwrap();
                black_box(&vec);
            })
        },
    );
}

mod group {
    //! The criterion group (in a module so its generated function can be documented-exempt).
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench_encode_decode, bench_protocols);
}
use group::benches;
criterion_main!(benches);
