//! Fuzz target: TTHeader header-info decoding, and whole TTHeader frames through the
//! frame decoder (the input is wrapped in a valid 14-byte prefix).
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringrpc_codec::{DecoderConfig, FrameDecoder, LinkBuf, TtHeader};

fuzz_target!(|data: &[u8]| {
    let _ = TtHeader::decode_info(Bytes::copy_from_slice(data), 0, 0);
    if data.len() < 2 {
        return;
    }
    let header_words = u16::from(data[0]) % 64;
    let mut frame = BytesMut::with_capacity(data.len() + 14);
    frame.put_u32((data.len() - 1 + 10) as u32);
    frame.put_u32(0x1000_0000);
    frame.put_u32(1);
    frame.put_u16(header_words);
    frame.put_slice(&data[1..]);
    let mut buf = LinkBuf::new();
    buf.push(frame.freeze());
    let _ = FrameDecoder::new(DecoderConfig { max_frame_size: 1 << 20 }).decode(&mut buf);
});
