//! Fuzz target: Kitex Protobuf envelopes, `ErrorProto` bodies, and framed protobuf frames
//! through the frame decoder.
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringrpc_codec::thrift::{Envelope, KITEX_PROTOBUF_MAGIC};
use ringrpc_codec::{protobuf, Decoded, FrameDecoder, LinkBuf, ErrorProto};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = protobuf::read_body::<ErrorProto>(bytes.clone());
    let _ = Envelope::decode(bytes, KITEX_PROTOBUF_MAGIC);
    let mut frame = BytesMut::with_capacity(data.len() + 8);
    frame.put_u32(data.len() as u32 + 4);
    frame.put_u32(0x9001_0003);
    frame.put_slice(data);
    let mut buf = LinkBuf::new();
    buf.push(frame.freeze());
    if let Ok(Decoded::Frame(f)) = FrameDecoder::default().decode(&mut buf) {
        let _ = f.exception();
    }
});
