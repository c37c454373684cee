//! Shared test support: golden-vector loading, byte feeding, and the kitex-benchmark echo
//! structs as hand-written `TSerializable` types.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use ringrpc_codec::{Decoded, DecoderConfig, Frame, FrameDecoder, LinkBuf};
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};

/// Reads `codec/tests/vectors/<name>.hex` (in-repo copy) as bytes. The path goes through the
/// workspace so that other crates' tests can include this module (`#[path]`) and read the
/// same files.
pub fn vector(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../codec/tests/vectors/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    hex(text.trim())
}

/// Decodes lowercase/uppercase hex.
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Concatenates encoder output chunks.
pub fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// Decodes exactly one frame from `bytes` (one segment) and checks nothing is left.
pub fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = LinkBuf::new();
    buf.push(Bytes::copy_from_slice(bytes));
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    match dec.decode(&mut buf).expect("decode") {
        Decoded::Frame(f) => {
            assert!(buf.is_empty(), "{} bytes left over", buf.len());
            f
        }
        Decoded::NeedMore(n) => panic!("need {n} more"),
    }
}

/// kitex-benchmark echo `Request {1: required string action, 2: required string msg}`
/// (also used for `Response`, which has the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EchoRequest {
    pub action: String,
    pub msg: String,
}

impl TSerializable for EchoRequest {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        let mut out = Self::default();
        i.read_struct_begin()?;
        loop {
            let f = i.read_field_begin()?;
            match (f.field_type, f.id) {
                (TType::Stop, _) => break,
                (TType::String, Some(1)) => out.action = i.read_string()?,
                (TType::String, Some(2)) => out.msg = i.read_string()?,
                (t, _) => i.skip(t)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        Ok(out)
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Request"))?;
        o.write_field_begin(&TFieldIdentifier::new("action", TType::String, 1))?;
        o.write_string(&self.action)?;
        o.write_field_end()?;
        o.write_field_begin(&TFieldIdentifier::new("msg", TType::String, 2))?;
        o.write_string(&self.msg)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// `EchoServer.Echo` args / result wrapper: one struct field with id `field_id`
/// (1 for `Echo_args.req`, 0 for `Echo_result.success`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EchoWrapper {
    pub field_id: i16,
    pub inner: EchoRequest,
}

impl TSerializable for EchoWrapper {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        let mut out = Self::default();
        i.read_struct_begin()?;
        loop {
            let f = i.read_field_begin()?;
            match (f.field_type, f.id) {
                (TType::Stop, _) => break,
                (TType::Struct, Some(id)) => {
                    out.field_id = id;
                    out.inner = EchoRequest::read_from_in_protocol(i)?;
                }
                (t, _) => i.skip(t)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        Ok(out)
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Echo_args"))?;
        o.write_field_begin(&TFieldIdentifier::new("req", TType::Struct, self.field_id))?;
        self.inner.write_to_out_protocol(o)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// Protobuf `message Request { string Action = 1; string Msg = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEchoRequest {
    #[prost(string, tag = "1")]
    pub action: String,
    #[prost(string, tag = "2")]
    pub msg: String,
}
