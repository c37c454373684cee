//! Thrift binary skip pass: finds where a value ends without decoding it.
//!
//! Used to find the end of an *unframed* (Buffered) message directly on the
//! [`LinkBuf`] (spec §2.2, like Kitex's skip decoder) and to skip unknown
//! fields of a `TApplicationException`. It never allocates: lengths and counts are only
//! added to a position, and checked against a byte limit first, so a huge count is refused
//! instead of looped over. Nesting is bounded by [`MAX_SKIP_DEPTH`].

use crate::error::CodecError;
use crate::linkbuf::LinkBuf;

/// Deepest struct/container nesting the skip pass follows (the thrift crate's limit too).
pub const MAX_SKIP_DEPTH: usize = 64;

/// Thrift TType codes (spec §2.1).
pub mod ttype {
    /// End of struct.
    pub const STOP: u8 = 0;
    /// Void (never on the wire as a value).
    pub const VOID: u8 = 1;
    /// Bool (1 byte).
    pub const BOOL: u8 = 2;
    /// Byte / i8.
    pub const BYTE: u8 = 3;
    /// Double (8 bytes).
    pub const DOUBLE: u8 = 4;
    /// i16.
    pub const I16: u8 = 6;
    /// i32.
    pub const I32: u8 = 8;
    /// i64.
    pub const I64: u8 = 10;
    /// String / binary (u32 length + bytes).
    pub const STRING: u8 = 11;
    /// Struct.
    pub const STRUCT: u8 = 12;
    /// Map (kt u8, vt u8, i32 n).
    pub const MAP: u8 = 13;
    /// Set (et u8, i32 n).
    pub const SET: u8 = 14;
    /// List (et u8, i32 n).
    pub const LIST: u8 = 15;
}

/// Random-access view of bytes for the skip pass.
pub(crate) trait ByteSource {
    /// Bytes currently available.
    fn available(&self) -> usize;
    /// Copies `dst.len()` bytes at `pos` into `dst`; false if not available.
    fn peek(&self, pos: usize, dst: &mut [u8]) -> bool;
}

impl ByteSource for LinkBuf {
    fn available(&self) -> usize {
        self.len()
    }
    fn peek(&self, pos: usize, dst: &mut [u8]) -> bool {
        self.peek_into(pos, dst)
    }
}

impl ByteSource for [u8] {
    fn available(&self) -> usize {
        self.len()
    }
    fn peek(&self, pos: usize, dst: &mut [u8]) -> bool {
        match pos
            .checked_add(dst.len())
            .and_then(|end| self.get(pos..end))
        {
            Some(src) => {
                dst.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// Why a skip stopped early.
#[derive(Debug)]
pub(crate) enum SkipStop {
    /// At least this many bytes (total, from position 0) are needed.
    NeedMore(usize),
    /// The bytes are invalid or over the limit.
    Invalid(CodecError),
}

impl From<CodecError> for SkipStop {
    fn from(e: CodecError) -> Self {
        Self::Invalid(e)
    }
}

/// Skip pass over a source, with every position bounded by `limit`.
pub(crate) struct Skipper<'a, S: ByteSource + ?Sized> {
    src: &'a S,
    limit: usize,
}

impl<'a, S: ByteSource + ?Sized> Skipper<'a, S> {
    pub(crate) fn new(src: &'a S, limit: usize) -> Self {
        Self { src, limit }
    }

    /// Moves past `n` bytes from `pos`, checking the limit and availability.
    fn need(&self, pos: usize, n: usize) -> Result<usize, SkipStop> {
        let end = pos.saturating_add(n);
        if end > self.limit {
            return Err(SkipStop::Invalid(CodecError::FrameTooLarge {
                size: end as u64,
                limit: self.limit,
            }));
        }
        if end > self.src.available() {
            return Err(SkipStop::NeedMore(end));
        }
        Ok(end)
    }

    fn read<const N: usize>(&self, pos: usize) -> Result<[u8; N], SkipStop> {
        self.need(pos, N)?;
        let mut b = [0u8; N];
        self.src.peek(pos, &mut b);
        Ok(b)
    }

    pub(crate) fn u8_at(&self, pos: usize) -> Result<u8, SkipStop> {
        Ok(self.read::<1>(pos)?[0])
    }

    pub(crate) fn i32_at(&self, pos: usize) -> Result<i32, SkipStop> {
        Ok(i32::from_be_bytes(self.read::<4>(pos)?))
    }

    /// Skips a u32-length-prefixed string at `pos`; returns the end position.
    pub(crate) fn skip_string(&self, pos: usize) -> Result<usize, SkipStop> {
        let len = self.i32_at(pos)?;
        if len < 0 {
            return Err(CodecError::NegativeLength(len).into());
        }
        self.need(pos + 4, len as usize)
    }

    /// Skips a struct body (fields until STOP) at `pos`; returns the end position.
    pub(crate) fn skip_struct(&self, mut pos: usize, depth: usize) -> Result<usize, SkipStop> {
        if depth >= MAX_SKIP_DEPTH {
            return Err(CodecError::DepthLimitExceeded(MAX_SKIP_DEPTH).into());
        }
        loop {
            let ty = self.u8_at(pos)?;
            pos += 1;
            if ty == ttype::STOP {
                return Ok(pos);
            }
            self.need(pos, 2)?; // field id
            pos = self.skip_value(ty, pos + 2, depth + 1)?;
        }
    }

    /// Skips one value of type `ty` at `pos`; returns the end position.
    pub(crate) fn skip_value(&self, ty: u8, pos: usize, depth: usize) -> Result<usize, SkipStop> {
        if let Some(size) = fixed_size(ty) {
            return self.need(pos, size);
        }
        match ty {
            ttype::STRING => self.skip_string(pos),
            ttype::STRUCT => self.skip_struct(pos, depth),
            ttype::MAP => {
                let kt = self.u8_at(pos)?;
                let vt = self.u8_at(pos + 1)?;
                let n = self.i32_at(pos + 2)?;
                self.skip_elements(&[kt, vt], n, pos + 6, depth)
            }
            ttype::SET | ttype::LIST => {
                let et = self.u8_at(pos)?;
                let n = self.i32_at(pos + 1)?;
                self.skip_elements(&[et], n, pos + 5, depth)
            }
            other => Err(CodecError::InvalidThriftType(other).into()),
        }
    }

    fn skip_elements(
        &self,
        types: &[u8],
        n: i32,
        mut pos: usize,
        depth: usize,
    ) -> Result<usize, SkipStop> {
        if depth >= MAX_SKIP_DEPTH {
            return Err(CodecError::DepthLimitExceeded(MAX_SKIP_DEPTH).into());
        }
        if n < 0 {
            return Err(CodecError::InvalidContainerSize(i64::from(n)).into());
        }
        let mut min = 0usize;
        let mut all_fixed = true;
        for &t in types {
            min += min_size(t).ok_or(CodecError::InvalidThriftType(t))?;
            all_fixed &= fixed_size(t).is_some();
        }
        let total_min = (n as usize).saturating_mul(min);
        if pos.saturating_add(total_min) > self.limit {
            return Err(CodecError::InvalidContainerSize(i64::from(n)).into());
        }
        if all_fixed {
            return self.need(pos, total_min);
        }
        for _ in 0..n {
            for &t in types {
                pos = self.skip_value(t, pos, depth + 1)?;
            }
        }
        Ok(pos)
    }
}

/// Encoded size of fixed-width types.
fn fixed_size(ty: u8) -> Option<usize> {
    match ty {
        ttype::BOOL | ttype::BYTE => Some(1),
        ttype::I16 => Some(2),
        ttype::I32 => Some(4),
        ttype::DOUBLE | ttype::I64 => Some(8),
        _ => None,
    }
}

/// Smallest encoded size of a value of type `ty` (None for invalid element types).
fn min_size(ty: u8) -> Option<usize> {
    fixed_size(ty).or(match ty {
        ttype::STRING => Some(4),
        ttype::STRUCT => Some(1),
        ttype::MAP => Some(6),
        ttype::SET | ttype::LIST => Some(5),
        _ => None,
    })
}

/// Skips a thrift struct at the start of `bytes`; returns its encoded length.
pub fn skip_struct_len(bytes: &[u8]) -> Result<usize, CodecError> {
    match Skipper::new(bytes, bytes.len()).skip_struct(0, 0) {
        Ok(end) => Ok(end),
        Err(SkipStop::Invalid(CodecError::FrameTooLarge { size, .. })) => {
            Err(CodecError::Truncated {
                what: "thrift struct",
                needed: usize::try_from(size).unwrap_or(usize::MAX),
                available: bytes.len(),
            })
        }
        Err(SkipStop::NeedMore(needed)) => Err(CodecError::Truncated {
            what: "thrift struct",
            needed,
            available: bytes.len(),
        }),
        Err(SkipStop::Invalid(e)) => Err(e),
    }
}
