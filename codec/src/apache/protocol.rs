//! Fast Thrift binary protocol objects for the `thrift` crate's [`TSerializable`] bodies.
//!
//! [`BytesOutProtocol`] writes strict binary straight into a [`BytesMut`] (no transport,
//! no boxing, no flush); [`BytesInProtocol`] reads from a [`Bytes`] with bounds checks that
//! refuse lengths and counts larger than the remaining input *before* anything is
//! allocated. The `thrift` crate's API returns `Vec<u8>`/`String` for binary/string
//! fields, so those two reads copy; everything else is read in place.
//!
//! [`TSerializable`]: thrift::protocol::TSerializable

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier,
    TMessageType, TOutputProtocol, TSetIdentifier, TStructIdentifier, TType,
};
use thrift::{ProtocolError, ProtocolErrorKind};

const VERSION_1: u32 = 0x8001_0000;

/// Strict Thrift binary writer appending to a [`BytesMut`].
#[derive(Debug)]
pub struct BytesOutProtocol<'a> {
    buf: &'a mut BytesMut,
}

impl<'a> BytesOutProtocol<'a> {
    /// A writer appending to `buf`.
    pub fn new(buf: &'a mut BytesMut) -> Self {
        Self { buf }
    }
}

/// Binary-protocol code of a [`TType`] (the thrift crate keeps its own mapping private).
fn ttype_u8(t: TType) -> u8 {
    match t {
        TType::Stop => 0x00,
        TType::Void => 0x01,
        TType::Bool => 0x02,
        TType::I08 => 0x03,
        TType::Double => 0x04,
        TType::I16 => 0x06,
        TType::I32 => 0x08,
        TType::I64 => 0x0A,
        TType::String | TType::Utf7 => 0x0B,
        TType::Struct => 0x0C,
        TType::Map => 0x0D,
        TType::Set => 0x0E,
        TType::List => 0x0F,
        TType::Utf8 => 0x10,
        TType::Utf16 => 0x11,
    }
}

/// [`TType`] of a binary-protocol code.
fn ttype_from_u8(b: u8) -> thrift::Result<TType> {
    Ok(match b {
        0x00 => TType::Stop,
        0x01 => TType::Void,
        0x02 => TType::Bool,
        0x03 => TType::I08,
        0x04 => TType::Double,
        0x06 => TType::I16,
        0x08 => TType::I32,
        0x0A => TType::I64,
        0x0B => TType::String,
        0x0C => TType::Struct,
        0x0D => TType::Map,
        0x0E => TType::Set,
        0x0F => TType::List,
        0x10 => TType::Utf8,
        0x11 => TType::Utf16,
        other => {
            return Err(thrift::Error::Protocol(ProtocolError::new(
                ProtocolErrorKind::InvalidData,
                format!("invalid thrift type {other}"),
            )))
        }
    })
}

impl TOutputProtocol for BytesOutProtocol<'_> {
    fn write_message_begin(&mut self, id: &TMessageIdentifier) -> thrift::Result<()> {
        self.buf
            .put_u32(VERSION_1 | u32::from(u8::from(id.message_type)));
        self.write_string(&id.name)?;
        self.buf.put_i32(id.sequence_number);
        Ok(())
    }
    fn write_message_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_struct_begin(&mut self, _: &TStructIdentifier) -> thrift::Result<()> {
        Ok(())
    }
    fn write_struct_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_field_begin(&mut self, id: &TFieldIdentifier) -> thrift::Result<()> {
        let fid = id.id.ok_or_else(|| {
            thrift::Error::Protocol(ProtocolError::new(
                ProtocolErrorKind::Unknown,
                "field id required for binary protocol",
            ))
        })?;
        self.buf.put_u8(ttype_u8(id.field_type));
        self.buf.put_i16(fid);
        Ok(())
    }
    fn write_field_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_field_stop(&mut self) -> thrift::Result<()> {
        self.buf.put_u8(0);
        Ok(())
    }
    fn write_bool(&mut self, b: bool) -> thrift::Result<()> {
        self.buf.put_u8(u8::from(b));
        Ok(())
    }
    fn write_bytes(&mut self, b: &[u8]) -> thrift::Result<()> {
        let len = u32::try_from(b.len()).map_err(|_| size_error("binary too long"))?;
        self.buf.put_u32(len);
        self.buf.put_slice(b);
        Ok(())
    }
    fn write_i8(&mut self, i: i8) -> thrift::Result<()> {
        self.buf.put_i8(i);
        Ok(())
    }
    fn write_i16(&mut self, i: i16) -> thrift::Result<()> {
        self.buf.put_i16(i);
        Ok(())
    }
    fn write_i32(&mut self, i: i32) -> thrift::Result<()> {
        self.buf.put_i32(i);
        Ok(())
    }
    fn write_i64(&mut self, i: i64) -> thrift::Result<()> {
        self.buf.put_i64(i);
        Ok(())
    }
    fn write_double(&mut self, d: f64) -> thrift::Result<()> {
        self.buf.put_f64(d);
        Ok(())
    }
    fn write_string(&mut self, s: &str) -> thrift::Result<()> {
        self.write_bytes(s.as_bytes())
    }
    fn write_list_begin(&mut self, id: &TListIdentifier) -> thrift::Result<()> {
        self.buf.put_u8(ttype_u8(id.element_type));
        self.buf.put_i32(id.size);
        Ok(())
    }
    fn write_list_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_set_begin(&mut self, id: &TSetIdentifier) -> thrift::Result<()> {
        self.buf.put_u8(ttype_u8(id.element_type));
        self.buf.put_i32(id.size);
        Ok(())
    }
    fn write_set_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_map_begin(&mut self, id: &TMapIdentifier) -> thrift::Result<()> {
        let kt = id.key_type.map_or(0, ttype_u8);
        let vt = id.value_type.map_or(0, ttype_u8);
        self.buf.put_u8(kt);
        self.buf.put_u8(vt);
        self.buf.put_i32(id.size);
        Ok(())
    }
    fn write_map_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_byte(&mut self, b: u8) -> thrift::Result<()> {
        self.buf.put_u8(b);
        Ok(())
    }
}

fn size_error(msg: &str) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(ProtocolErrorKind::SizeLimit, msg))
}

fn negative_size(msg: &str) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(ProtocolErrorKind::NegativeSize, msg))
}

fn eof() -> thrift::Error {
    thrift::Error::Transport(thrift::TransportError::new(
        thrift::TransportErrorKind::EndOfFile,
        "unexpected end of thrift input",
    ))
}

/// Strict Thrift binary reader over a [`Bytes`].
#[derive(Debug, Clone)]
pub struct BytesInProtocol {
    buf: Bytes,
}

impl BytesInProtocol {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> &Bytes {
        &self.buf
    }

    /// Reads a binary field as a zero-copy slice of the input (not part of the
    /// `TInputProtocol` API, which must return `Vec<u8>`).
    pub fn read_bytes_zero_copy(&mut self) -> thrift::Result<Bytes> {
        let len = self.read_len()?;
        Ok(self.buf.split_to(len))
    }

    fn ensure(&self, n: usize) -> thrift::Result<()> {
        if self.buf.len() < n {
            Err(eof())
        } else {
            Ok(())
        }
    }

    fn read_len(&mut self) -> thrift::Result<usize> {
        let len = self.read_i32()?;
        if len < 0 {
            return Err(negative_size("negative length"));
        }
        let len = len as usize;
        self.ensure(len)?;
        Ok(len)
    }

    fn read_ttype(&mut self) -> thrift::Result<TType> {
        let b = self.read_byte()?;
        ttype_from_u8(b)
    }

    /// Refuses a container size that cannot fit the remaining input (every element is at
    /// least one byte), so generated code's `Vec::with_capacity(size)` stays bounded.
    fn check_size(&self, size: i32) -> thrift::Result<()> {
        if size < 0 {
            return Err(negative_size("negative container size"));
        }
        if size as usize > self.buf.len() {
            return Err(size_error("container size exceeds remaining input"));
        }
        Ok(())
    }
}

impl TInputProtocol for BytesInProtocol {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        let v = self.read_i32()? as u32;
        if v & 0xFFFF_0000 != VERSION_1 {
            return Err(thrift::Error::Protocol(ProtocolError::new(
                ProtocolErrorKind::BadVersion,
                format!("bad thrift version {v:#010x}"),
            )));
        }
        let message_type = TMessageType::try_from((v & 0xFF) as u8)?;
        let name = self.read_string()?;
        let seq = self.read_i32()?;
        Ok(TMessageIdentifier::new(name, message_type, seq))
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        Ok(None)
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        let field_type = self.read_ttype()?;
        let id = if field_type == TType::Stop {
            0
        } else {
            self.read_i16()?
        };
        Ok(TFieldIdentifier::new::<Option<String>, String, i16>(
            None, field_type, id,
        ))
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        Ok(self.read_byte()? != 0)
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        let len = self.read_len()?;
        let v = self.buf[..len].to_vec();
        self.buf.advance(len);
        Ok(v)
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        Ok(self.read_byte()? as i8)
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        self.ensure(2)?;
        Ok(self.buf.get_i16())
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        self.ensure(4)?;
        Ok(self.buf.get_i32())
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        self.ensure(8)?;
        Ok(self.buf.get_i64())
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        self.ensure(8)?;
        Ok(self.buf.get_f64())
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        let len = self.read_len()?;
        let s = std::str::from_utf8(&self.buf[..len])
            .map_err(|e| {
                thrift::Error::Protocol(ProtocolError::new(
                    ProtocolErrorKind::InvalidData,
                    e.to_string(),
                ))
            })?
            .to_owned();
        self.buf.advance(len);
        Ok(s)
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let et = self.read_ttype()?;
        let size = self.read_i32()?;
        self.check_size(size)?;
        Ok(TListIdentifier::new(et, size))
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let et = self.read_ttype()?;
        let size = self.read_i32()?;
        self.check_size(size)?;
        Ok(TSetIdentifier::new(et, size))
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let kt = self.read_ttype()?;
        let vt = self.read_ttype()?;
        let size = self.read_i32()?;
        self.check_size(size)?;
        Ok(TMapIdentifier::new(kt, vt, size))
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        self.ensure(1)?;
        Ok(self.buf.get_u8())
    }
}
