//! Fuzz target: the framing-detection decoder (TTHeader / Framed / Buffered thrift /
//! Kitex Protobuf) fed in segments; the first input byte picks the segment size.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringrpc_codec::{Decoded, DecoderConfig, FrameDecoder, LinkBuf, MessageType};

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut dec = FrameDecoder::new(DecoderConfig { max_frame_size: 64 * 1024 });
    let mut buf = LinkBuf::new();
    for chunk in data.chunks(step) {
        buf.push(Bytes::copy_from_slice(chunk));
        loop {
            match dec.decode(&mut buf) {
                Ok(Decoded::Frame(f)) => {
                    assert!(f.body.len() <= 64 * 1024);
                    if f.head.message_type == MessageType::Exception {
                        let _ = f.exception();
                    }
                }
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n > 0);
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
