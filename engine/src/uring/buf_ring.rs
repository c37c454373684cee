//! The per-core provided-buffer ring (`IORING_REGISTER_PBUF_RING`) and the `Bytes` owner that
//! gives each received buffer back to it.
//!
//! A [`BufPool`] owns one allocation of `count` buffers and the ring of `count` entries the kernel
//! takes them from. A multishot receive completion names the buffer it filled (`bid`); the engine
//! wraps it in a [`BufOwner`] and hands it up as `Bytes::from_owner`, without copying. When the
//! last clone of that `Bytes` drops, the buffer goes back into the ring:
//! - on the owning core, directly (one ring entry written, tail published);
//! - on any other thread, by pushing `bid` onto the pool's return queue and waking the core,
//!   which puts it back on its next turn.
//!
//! The pool lives in an `Arc`: if a `Bytes` outlives its core, the memory stays valid until that
//! last `Bytes` drops, and is freed then. Nothing is leaked and nothing is read after free.
//!
//! Each buffer starts [`BUF_SKEW`] bytes past a 4 KiB boundary: copying a received buffer into a
//! fresh (page-offset 16) `Vec` would otherwise hit glibc's 4K-aliasing slow path (see
//! `/work/shared/perf-notes.md`).

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::Waker;

use crossbeam::queue::SegQueue;
use io_uring::types::BufRingEntry;

use super::executor::Remote;

/// Offset of each buffer from a 4 KiB boundary (avoids 4K aliasing in later copies).
pub(crate) const BUF_SKEW: usize = 2048;

thread_local! {
    /// The pool owned by the core running on this thread (null elsewhere): tells a dropping
    /// `Bytes` whether it may touch the ring directly.
    static LOCAL_POOL: Cell<*const BufPool> = const { Cell::new(std::ptr::null()) };
}

/// A provided-buffer ring and its buffers. See the [module docs](self).
pub(crate) struct BufPool {
    /// Buffer group id the ring is registered under.
    bgid: u16,
    count: u16,
    buf_size: u32,
    stride: usize,
    mem: NonNull<u8>,
    mem_layout: Layout,
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// Our copy of the ring tail (only the owning core touches it).
    tail: Cell<u16>,
    /// Buffers currently in the ring, as far as the core knows (only the owning core touches it).
    available: Cell<u32>,
    /// Readers waiting for buffers after `ENOBUFS` (only the owning core touches it).
    waiters: std::cell::RefCell<Vec<Waker>>,
    /// Buffer ids released on other threads, to be put back by the owning core.
    returns: SegQueue<u16>,
    remote: Arc<Remote>,
}

// SAFETY: the `Cell`/`RefCell` fields and the ring memory are only touched on the owning core's
// thread: every access goes through `is_local()` (the thread-local LOCAL_POOL points at this pool
// only on that thread) or through methods called by the core loop itself. Other threads only use
// `returns` (a lock-free queue) and `remote` (Send + Sync). The buffer memory itself is read
// through `BufOwner` while the buffer is out of the ring, when the kernel no longer writes it.
unsafe impl Send for BufPool {}
// SAFETY: see the `Send` impl above: shared access from other threads is limited to the
// thread-safe `returns` queue and `remote`.
unsafe impl Sync for BufPool {}

impl BufPool {
    /// Allocates `count` (a power of two) buffers of `buf_size` bytes. Registration with the ring
    /// is separate ([`BufPool::ring_addr`]).
    pub(crate) fn new(bgid: u16, count: u16, buf_size: u32, remote: Arc<Remote>) -> Arc<Self> {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
        // Buffer i lies at base + i * stride + BUF_SKEW and ends inside its stride.
        let stride = (buf_size as usize + BUF_SKEW).next_multiple_of(4096);
        let mem_layout =
            Layout::from_size_align(stride * count as usize, 4096).expect("buffer pool layout");
        let ring_layout = Layout::from_size_align(size_of::<BufRingEntry>() * count as usize, 4096)
            .expect("buffer ring layout");
        // SAFETY: both layouts have non-zero size (count >= 1, buf_size fits) and valid alignment.
        let (mem, ring) = unsafe { (alloc::alloc(mem_layout), alloc::alloc_zeroed(ring_layout)) };
        let mem = NonNull::new(mem).unwrap_or_else(|| alloc::handle_alloc_error(mem_layout));
        let ring = NonNull::new(ring.cast::<BufRingEntry>())
            .unwrap_or_else(|| alloc::handle_alloc_error(ring_layout));
        let pool = Arc::new(Self {
            bgid,
            count,
            buf_size,
            stride,
            mem,
            mem_layout,
            ring,
            ring_layout,
            tail: Cell::new(0),
            available: Cell::new(0),
            waiters: std::cell::RefCell::new(Vec::new()),
            returns: SegQueue::new(),
            remote,
        });
        for bid in 0..count {
            pool.push_entry(bid);
        }
        pool.publish_tail();
        pool
    }

    /// Address and entry count to pass to `register_buf_ring_with_flags`.
    pub(crate) fn ring_addr(&self) -> (u64, u16) {
        (self.ring.as_ptr() as u64, self.count)
    }

    /// The buffer group id.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Marks this thread as the pool's owner (or clears it with `None`).
    pub(crate) fn set_local(pool: Option<&Arc<Self>>) {
        LOCAL_POOL.with(|p| p.set(pool.map_or(std::ptr::null(), Arc::as_ptr)));
    }

    fn is_local(&self) -> bool {
        LOCAL_POOL.with(|p| std::ptr::eq(p.get(), self))
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < count, so the offset stays inside the `mem` allocation.
        unsafe { self.mem.as_ptr().add(bid as usize * self.stride + BUF_SKEW) }
    }

    /// Writes the entry for `bid` at the local tail (not yet visible to the kernel).
    fn push_entry(&self, bid: u16) {
        debug_assert!(bid < self.count);
        let tail = self.tail.get();
        let idx = usize::from(tail & (self.count - 1));
        // SAFETY: idx < count, inside the ring allocation; only the owning core writes entries,
        // and the kernel does not read entries at or past the published tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail.set(tail.wrapping_add(1));
        self.available.set(self.available.get() + 1);
    }

    /// Makes entries written since the last publish visible to the kernel.
    fn publish_tail(&self) {
        // SAFETY: the ring base points at entry 0; `BufRingEntry::tail` names its `resv` field,
        // which the kernel reads as the ring tail. It is a properly aligned u16 we may store to
        // atomically (the kernel only loads it).
        let tail = unsafe { &*BufRingEntry::tail(self.ring.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// Gives `bid` back to the ring, from whichever thread the last `Bytes` dropped on.
    fn give_back(&self, bid: u16) {
        if self.is_local() {
            self.push_entry(bid);
            self.publish_tail();
            self.wake_waiters();
        } else {
            self.returns.push(bid);
            self.remote.notify();
        }
    }

    /// Puts back buffers released on other threads. Owning core only.
    pub(crate) fn drain_returns(&self) {
        let mut any = false;
        while let Some(bid) = self.returns.pop() {
            self.push_entry(bid);
            any = true;
        }
        if any {
            self.publish_tail();
            self.wake_waiters();
        }
    }

    /// Returns a buffer the kernel filled but nobody will read (a cancelled receive's data).
    pub(crate) fn recycle(&self, bid: u16) {
        self.push_entry(bid);
        self.publish_tail();
        self.wake_waiters();
    }

    /// Records that the kernel took one buffer (a completion named it).
    pub(crate) fn note_taken(&self) {
        self.available.set(self.available.get().saturating_sub(1));
    }

    /// Whether the ring has buffers for the kernel to fill.
    pub(crate) fn has_buffers(&self) -> bool {
        self.available.get() > 0
    }

    /// Registers a waker to run when a buffer comes back.
    pub(crate) fn wait_for_buffers(&self, waker: &Waker) {
        let mut w = self.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Whether so few buffers are left in the ring that received data should be copied out
    /// rather than held: below an eighth of the ring. Owning core only.
    ///
    /// Received `Bytes` live as long as the requests and replies that slice them (an echo reply
    /// links the request's bytes), so with many large calls in flight every buffer can end up
    /// held and every receive on the core stalls (`ENOBUFS`) until replies go out. Copying the
    /// last eighth keeps receives flowing at the cost of one copy per receive under pressure.
    pub(crate) fn is_low(&self) -> bool {
        self.available.get() < (u32::from(self.count) / 8).max(1)
    }

    /// Copies buffer `bid`'s `len` received bytes into memory of their own; the buffer goes
    /// straight back into the ring. Owning core only.
    pub(crate) fn copy_out(self: &Arc<Self>, bid: u16, len: u32) -> bytes::Bytes {
        // Held only for the copy: dropping it on this core puts the buffer back at once.
        let held = self.take(bid, len);
        // Start the copy where the destination does not sit 1-64 bytes past the source modulo
        // 4 KiB: that 4K-aliasing case runs glibc's memcpy at a fraction of its speed here.
        // The capacity covers the largest skip, so nothing reallocates after the gap is measured.
        let mut dst = bytes::BytesMut::with_capacity(held.len() + 128);
        let gap = (dst.as_ptr() as usize).wrapping_sub(held.as_ptr() as usize) % 4096;
        let skip = if (1..=64).contains(&gap) {
            128 - gap
        } else {
            0
        };
        dst.resize(skip, 0);
        dst.extend_from_slice(&held);
        let mut out = dst.freeze();
        bytes::Buf::advance(&mut out, skip);
        out
    }

    /// Wraps buffer `bid`, filled with `len` bytes, as `Bytes` without copying.
    pub(crate) fn take(self: &Arc<Self>, bid: u16, len: u32) -> bytes::Bytes {
        assert!(
            bid < self.count && len <= self.buf_size,
            "kernel named a bad buffer"
        );
        bytes::Bytes::from_owner(BufOwner {
            pool: self.clone(),
            bid,
            len,
        })
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts; the last `Arc` is gone, so no
        // `BufOwner` reads the memory, and the core unregistered the ring (or destroyed its
        // io_uring after every operation completed) before dropping its reference, so the kernel
        // no longer writes it.
        unsafe {
            alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
        }
    }
}

/// Owner of one received buffer inside a `Bytes`; gives the buffer back on drop.
struct BufOwner {
    pool: Arc<BufPool>,
    bid: u16,
    len: u32,
}

impl AsRef<[u8]> for BufOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the buffer is out of the ring (the kernel filled it and posted its completion;
        // it is not put back until this owner drops), so nothing writes it; `len` bytes were
        // written by the kernel and lie inside the buffer; the pool keeps the memory alive.
        unsafe { std::slice::from_raw_parts(self.pool.buf_ptr(self.bid), self.len as usize) }
    }
}

impl Drop for BufOwner {
    fn drop(&mut self) {
        self.pool.give_back(self.bid);
    }
}
