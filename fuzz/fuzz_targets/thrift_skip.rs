//! Fuzz target: the allocation-free thrift skip pass, `TApplicationException` decoding,
//! and unframed (Buffered) thrift messages whose end is found by the skip pass.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringrpc_codec::thrift::skip_struct_len;
use ringrpc_codec::{ApplicationException, DecoderConfig, FrameDecoder, LinkBuf};

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = skip_struct_len(data) {
        assert!(n <= data.len());
    }
    let _ = ApplicationException::decode(data);
    let mut msg = BytesMut::with_capacity(data.len() + 13);
    msg.put_slice(&[0x80, 1, 0, 1, 0, 0, 0, 1, b'm', 0, 0, 0, 1]);
    msg.put_slice(data);
    let mut buf = LinkBuf::new();
    buf.push(msg.freeze());
    let _ = FrameDecoder::new(DecoderConfig { max_frame_size: 1 << 20 }).decode(&mut buf);
});
