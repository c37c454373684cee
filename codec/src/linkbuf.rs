//! Zero-copy byte queues for both directions of a connection (spec §7).
//!
//! * [`LinkBuf`] is the input side: a queue of received [`Bytes`] segments, like netpoll's
//!   LinkBuffer. Decoders peek big-endian integers at any offset (across segment
//!   boundaries) and cut whole frames out with [`LinkBuf::split_to`], which copies only
//!   when a frame straddles two segments.
//! * [`ChunkWriter`] is the output side: small header fields are written into one reusable
//!   [`BytesMut`]; payload [`Bytes`] of at least [`LINK_THRESHOLD`] bytes are linked in
//!   without copying. Length fields are reserved and back-patched, and
//!   [`ChunkWriter::finish`] yields the chunk list for one vectored write.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

/// Payloads at least this large are linked into the output as their own chunk instead of
/// being copied (netpoll's `BinaryInplaceThreshold` and Volo's `LinkedBytes` both use 4 KiB:
/// below it one `memcpy` is cheaper than an extra iovec).
pub const LINK_THRESHOLD: usize = 4096;

/// A queue of received byte segments read as one contiguous stream.
#[derive(Debug, Default, Clone)]
pub struct LinkBuf {
    segments: VecDeque<Bytes>,
    len: usize,
}

impl LinkBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a segment without copying. Empty segments are ignored.
    pub fn push(&mut self, segment: Bytes) {
        if !segment.is_empty() {
            self.len += segment.len();
            self.segments.push_back(segment);
        }
    }

    /// Number of readable bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of segments currently held (for tests and diagnostics).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst`; false if not all buffered.
    pub fn peek_into(&self, offset: usize, dst: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(dst.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let mut skip = offset;
        let mut written = 0;
        for seg in &self.segments {
            if written == dst.len() {
                break;
            }
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            let take = (seg.len() - skip).min(dst.len() - written);
            dst[written..written + take].copy_from_slice(&seg[skip..skip + take]);
            written += take;
            skip = 0;
        }
        true
    }

    /// The byte at `offset`, if buffered.
    pub fn peek_u8(&self, offset: usize) -> Option<u8> {
        let mut b = [0u8; 1];
        self.peek_into(offset, &mut b).then_some(b[0])
    }

    /// Big-endian u16 at `offset`, if buffered.
    pub fn peek_u16(&self, offset: usize) -> Option<u16> {
        let mut b = [0u8; 2];
        self.peek_into(offset, &mut b)
            .then(|| u16::from_be_bytes(b))
    }

    /// Big-endian u32 at `offset`, if buffered.
    pub fn peek_u32(&self, offset: usize) -> Option<u32> {
        let mut b = [0u8; 4];
        self.peek_into(offset, &mut b)
            .then(|| u32::from_be_bytes(b))
    }

    /// Big-endian i32 at `offset`, if buffered.
    pub fn peek_i32(&self, offset: usize) -> Option<i32> {
        self.peek_u32(offset).map(|v| v as i32)
    }

    /// Reads (and consumes) a big-endian u8.
    pub fn read_u8(&mut self) -> Option<u8> {
        let v = self.peek_u8(0)?;
        self.advance(1);
        Some(v)
    }

    /// Reads (and consumes) a big-endian u16.
    pub fn read_u16(&mut self) -> Option<u16> {
        let v = self.peek_u16(0)?;
        self.advance(2);
        Some(v)
    }

    /// Reads (and consumes) a big-endian u32.
    pub fn read_u32(&mut self) -> Option<u32> {
        let v = self.peek_u32(0)?;
        self.advance(4);
        Some(v)
    }

    /// Reads (and consumes) a big-endian i32.
    pub fn read_i32(&mut self) -> Option<i32> {
        self.read_u32().map(|v| v as i32)
    }

    /// Removes and returns the first `n` bytes. Zero-copy when they lie in one segment;
    /// copied once into a fresh buffer when they straddle segments.
    ///
    /// # Panics
    /// If `n > self.len()`.
    pub fn split_to(&mut self, n: usize) -> Bytes {
        assert!(n <= self.len, "split_to({n}) past the end ({})", self.len);
        if n == 0 {
            return Bytes::new();
        }
        let front = self
            .segments
            .front_mut()
            .expect("len > 0 implies a segment");
        let out = if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.segments.pop_front();
            }
            out
        } else {
            let mut joined = BytesMut::with_capacity(n);
            let mut left = n;
            while left > 0 {
                let seg = self.segments.front_mut().expect("length checked");
                let take = seg.len().min(left);
                joined.put_slice(&seg.split_to(take));
                if seg.is_empty() {
                    self.segments.pop_front();
                }
                left -= take;
            }
            joined.freeze()
        };
        self.len -= n;
        out
    }

    /// The first `n` bytes without consuming them: a zero-copy slice when they lie in the
    /// first segment, one copy when they straddle segments. `None` if fewer are buffered.
    pub fn peek_bytes(&self, n: usize) -> Option<Bytes> {
        if n > self.len {
            return None;
        }
        match self.segments.front() {
            None => Some(Bytes::new()),
            Some(front) if front.len() >= n => Some(front.slice(..n)),
            Some(_) => {
                let mut joined = BytesMut::zeroed(n);
                self.peek_into(0, &mut joined);
                Some(joined.freeze())
            }
        }
    }

    /// Discards the first `n` bytes, dropping fully consumed segments.
    ///
    /// # Panics
    /// If `n > self.len()`.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len, "advance({n}) past the end ({})", self.len);
        self.len -= n;
        let mut left = n;
        while left > 0 {
            let seg = self.segments.front_mut().expect("length checked");
            if seg.len() <= left {
                left -= seg.len();
                self.segments.pop_front();
            } else {
                bytes::Buf::advance(seg, left);
                left = 0;
            }
        }
    }
}

/// A reserved 4-byte slot in a [`ChunkWriter`], to be filled by [`ChunkWriter::patch_u32`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthSlot(usize);

/// Output buffer producing a list of chunks for one vectored write.
///
/// Small writes go into one [`BytesMut`] that is reused across frames (its unused capacity
/// survives [`finish`](Self::finish)); large [`Bytes`] are linked in without copying.
#[derive(Debug)]
pub struct ChunkWriter {
    buf: BytesMut,
    /// `(offset in buf, chunk)`: `chunk` goes right before `buf[offset..]`.
    links: Vec<(usize, Bytes)>,
    linked_len: usize,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    /// Initial capacity of the header buffer.
    pub const DEFAULT_CAPACITY: usize = 8 * 1024;

    /// A writer with [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) bytes of header space.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A writer with `capacity` bytes of header space.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            links: Vec::new(),
            linked_len: 0,
        }
    }

    /// Bytes written since the last [`finish`](Self::finish) (copied and linked).
    pub fn len(&self) -> usize {
        self.buf.len() + self.linked_len
    }

    /// True when nothing has been written since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The copy buffer, for protocol writers that append to it directly.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    /// Appends a big-endian u16.
    pub fn put_u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }

    /// Appends a big-endian u32.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    /// Appends a big-endian i32.
    pub fn put_i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }

    /// Copies a slice in.
    pub fn put_slice(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }

    /// Appends `bytes`: linked without copying if at least [`LINK_THRESHOLD`] long,
    /// copied otherwise.
    pub fn put_bytes(&mut self, bytes: Bytes) {
        if bytes.len() >= LINK_THRESHOLD {
            self.linked_len += bytes.len();
            self.links.push((self.buf.len(), bytes));
        } else {
            self.buf.put_slice(&bytes);
        }
    }

    /// Reserves a 4-byte field (zeroed) to be back-patched later.
    pub fn reserve_u32(&mut self) -> LengthSlot {
        let slot = LengthSlot(self.buf.len());
        self.buf.put_u32(0);
        slot
    }

    /// Writes `v` into a slot reserved since the last `finish`.
    pub fn patch_u32(&mut self, slot: LengthSlot, v: u32) {
        self.buf[slot.0..slot.0 + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Writes a big-endian u16 at buffer offset `slot` (a slot from `reserve_u32` may hold
    /// two u16 fields; used for the TTHeader HEADER SIZE).
    pub(crate) fn patch_u16_at(&mut self, offset: usize, v: u16) {
        self.buf[offset..offset + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Current offset inside the copy buffer (for `patch_u16_at`).
    pub(crate) fn buf_offset(&self) -> usize {
        self.buf.len()
    }

    /// Moves everything written so far into `out` as chunks in wire order, leaving the
    /// writer empty (its spare capacity is kept for the next frame).
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        let mut consumed = 0;
        for (offset, chunk) in self.links.drain(..) {
            if offset > consumed {
                out.push(self.buf.split_to(offset - consumed).freeze());
                consumed = offset;
            }
            out.push(chunk);
        }
        if !self.buf.is_empty() {
            out.push(self.buf.split().freeze());
        }
        self.linked_len = 0;
    }

    /// Discards everything written since the last `finish` (e.g. after an encode error).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.links.clear();
        self.linked_len = 0;
    }

    /// A point to roll back to if encoding a frame fails half-way.
    pub(crate) fn checkpoint(&self) -> (usize, usize, usize) {
        (self.buf.len(), self.links.len(), self.linked_len)
    }

    /// Drops everything written after `checkpoint`.
    pub(crate) fn rollback(&mut self, (buf_len, links, linked_len): (usize, usize, usize)) {
        self.buf.truncate(buf_len);
        self.links.truncate(links);
        self.linked_len = linked_len;
    }
}
