//! The per-core provided-buffer ring (`IORING_REGISTER_PBUF_RING`), the `Bytes` owner that gives
//! each received buffer back to it, and the rules for which receives hold a ring buffer at all.
//!
//! Two types, split by who may touch what:
//! - [`BufShared`] (in an `Arc`, `Send + Sync`): the buffer memory, the ring memory the kernel
//!   reads, and the queue on which other threads send buffer ids home. It only hands out raw
//!   pointers; nothing takes a `&mut` over memory the kernel shares. If a `Bytes` outlives its
//!   core, this part stays alive until that last `Bytes` drops, and is freed then.
//! - [`BufPool`] (in an `Rc`, so neither `Send` nor `Sync`): the core's side: the local ring
//!   tail, the count of buffers in the ring, readers waiting for buffers, and which reader holds
//!   which buffer. Only the owning core's thread can reach it.
//!
//! A multishot receive completion names the buffer it filled (`bid`). [`BufPool::receive`] then
//! either wraps it in a [`BufOwner`] and hands it up as `Bytes::from_owner`, without copying, or
//! copies the bytes out and puts the buffer straight back:
//! - small receives (at most [`SMALL_RECV_COPY`] bytes) are always copied: a copy that small
//!   costs no more than handing the buffer up, and a slow peer sending a byte at a time then
//!   holds no ring buffer while its frame waits to complete;
//! - a reader that already holds [`BufPool::reader_cap`] ring buffers gets copies: one
//!   connection cannot take more than its share of the ring;
//! - when fewer than an eighth of the buffers are in the ring, every receive is copied
//!   ([`BufPool::is_low`]), so receives keep flowing while handlers hold many buffers.
//!
//! When the last clone of a held `Bytes` drops, the buffer goes back into the ring:
//! - on the owning core, directly (one ring entry written, tail published with a release store);
//! - on any other thread, through `buf_return` (queue the id, ring the core's eventfd); the core
//!   puts it back on its next turn.
//!
//! Each buffer starts [`BUF_SKEW`] bytes past a 4 KiB boundary: copying a received buffer into a
//! fresh (page-offset 16) `Vec` would otherwise hit glibc's 4K-aliasing slow path (see
//! `/work/shared/perf-notes.md`).

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::ptr::{addr_of_mut, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use crossbeam::queue::SegQueue;
use slab::Slab;

use super::buf_return::{Doorbell, HomeQueue, ReturnQueue};
use super::executor::Remote;

/// Offset of each buffer from a 4 KiB boundary (avoids 4K aliasing in later copies).
pub(crate) const BUF_SKEW: usize = 2048;

/// Receives of at most this many bytes are copied out at once instead of holding a ring buffer.
///
/// Measured with `cargo bench -p ringrpc-engine --bench recv_copy` (shared 2-core VM, noisy,
/// so only the shape counts): handing a buffer up (`Bytes::from_owner` + drop) costs ~31 ns at
/// any size; copying into a fresh `Bytes` costs ~16 ns at 16 B, ~23 ns at 512 B, ~29 ns at
/// 1 KiB, ~55 ns at 2 KiB, ~66 ns at 4 KiB and ~200 ns at 14 KiB. Up to 1 KiB the copy is no
/// dearer, and it frees the 14 KiB buffer at once; above it, holding wins on CPU.
pub(crate) const SMALL_RECV_COPY: u32 = 1024;

/// The kernel ABI's `struct io_uring_buf`: one ring entry. The ring's tail is the `resv` field of
/// entry 0, so entry 0 is never written as a whole.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(size_of::<RingEntry>() == size_of::<io_uring::types::BufRingEntry>());
const _: () = assert!(std::mem::offset_of!(RingEntry, resv) == 14);

/// `BufPool::holder` of a buffer no reader account holds.
const NO_READER: u32 = u32::MAX;

thread_local! {
    /// The pool owned by the core running on this thread (none elsewhere): tells a dropping
    /// `Bytes` whether it may put its buffer back directly.
    static LOCAL_POOL: RefCell<Option<Rc<BufPool>>> = const { RefCell::new(None) };
}

impl ReturnQueue for SegQueue<u16> {
    fn push(&self, bid: u16) {
        Self::push(self, bid);
    }

    fn pop(&self) -> Option<u16> {
        Self::pop(self)
    }
}

impl Doorbell for Arc<Remote> {
    fn ring(&self) {
        self.notify();
    }
}

/// The part of a buffer pool any thread may use. See the [module docs](self).
pub(crate) struct BufShared {
    count: u16,
    buf_size: u32,
    stride: usize,
    mem: NonNull<u8>,
    mem_layout: Layout,
    /// Ring memory the kernel reads (entries below the published tail, and the tail itself).
    ring: NonNull<RingEntry>,
    ring_layout: Layout,
    /// Buffer ids released on other threads, to be put back by the owning core.
    home: HomeQueue<SegQueue<u16>, Arc<Remote>>,
}

// SAFETY: `BufShared` owns its two allocations and only hands out raw pointers into them; its
// own methods read nothing the kernel writes and write nothing at all. The ring entries and the
// tail are written only through `BufPool`, which is `!Sync` and reachable only on the owning
// core's thread. Buffer memory is read through `BufOwner` only while its buffer is out of the
// ring (the kernel does not write it then). The return queue (`SegQueue`) and the doorbell
// (`Remote`: an atomic flag and an eventfd) are thread-safe. Freeing happens once, on the last
// `Arc`'s drop, after the core unregistered the ring.
unsafe impl Send for BufShared {}
// SAFETY: see the `Send` impl above: shared access is limited to raw-pointer reads of buffers
// out of the ring and to the thread-safe return queue.
unsafe impl Sync for BufShared {}

impl BufShared {
    /// First byte of buffer `bid`.
    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // SAFETY: bid < count, so the offset stays inside the `mem` allocation
        // (count * stride bytes; the buffer ends inside its stride).
        unsafe { self.mem.as_ptr().add(bid as usize * self.stride + BUF_SKEW) }
    }
}

impl Drop for BufShared {
    fn drop(&mut self) {
        // SAFETY: allocated in `BufPool::new` with exactly these layouts; the last `Arc` is gone,
        // so no `BufOwner` reads the memory, and the core unregistered the ring (or destroyed its
        // io_uring after every operation completed) before dropping its `BufPool`, so the kernel
        // no longer reads or writes it.
        unsafe {
            alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
        }
    }
}

/// How [`BufPool::receive`] handed a receive up (the caller counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvPath {
    /// Over the ring buffer, no copy.
    Held,
    /// Copied: at most [`SMALL_RECV_COPY`] bytes.
    Small,
    /// Copied: the reader already held [`BufPool::reader_cap`] ring buffers.
    ReaderCap,
    /// Copied: the ring ran low ([`BufPool::is_low`]).
    LowRing,
}

/// What one reader account holds.
#[derive(Debug)]
struct ReaderHold {
    /// Ring buffers handed up to this reader and not yet back.
    held: u32,
    /// Whether the reader still exists (a closed account goes when its last buffer returns).
    open: bool,
}

/// The owning core's side of its provided-buffer ring. See the [module docs](self).
pub(crate) struct BufPool {
    shared: Arc<BufShared>,
    /// Buffer group id the ring is registered under.
    bgid: u16,
    /// Our copy of the ring tail.
    tail: Cell<u16>,
    /// Buffers currently in the ring, as far as the core knows: pushed minus completions that
    /// named one. Never below the kernel's own count, so `< count` bounds the entries in use.
    available: Cell<u32>,
    /// Readers waiting for buffers after `ENOBUFS`.
    waiters: RefCell<Vec<Waker>>,
    /// Per buffer: the reader account (slab key) holding it, or [`NO_READER`].
    holder: Box<[Cell<u32>]>,
    /// Reader accounts: how many ring buffers each holds.
    readers: RefCell<Slab<ReaderHold>>,
}

impl BufPool {
    /// Allocates `count` (a power of two) buffers of `buf_size` bytes and fills the ring with
    /// them. Registration with the io_uring is separate ([`BufPool::ring_addr`]).
    pub(crate) fn new(bgid: u16, count: u16, buf_size: u32, remote: Arc<Remote>) -> Rc<Self> {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
        // Buffer i lies at base + i * stride + BUF_SKEW and ends inside its stride.
        let stride = (buf_size as usize + BUF_SKEW).next_multiple_of(4096);
        let mem_layout =
            Layout::from_size_align(stride * count as usize, 4096).expect("buffer pool layout");
        let ring_layout = Layout::from_size_align(size_of::<RingEntry>() * count as usize, 4096)
            .expect("buffer ring layout");
        // SAFETY: both layouts have non-zero size (count >= 1, stride >= 4096) and valid
        // alignment.
        let (mem, ring) = unsafe { (alloc::alloc(mem_layout), alloc::alloc_zeroed(ring_layout)) };
        let mem = NonNull::new(mem).unwrap_or_else(|| alloc::handle_alloc_error(mem_layout));
        let ring = NonNull::new(ring.cast::<RingEntry>())
            .unwrap_or_else(|| alloc::handle_alloc_error(ring_layout));
        let shared = Arc::new(BufShared {
            count,
            buf_size,
            stride,
            mem,
            mem_layout,
            ring,
            ring_layout,
            home: HomeQueue::new(SegQueue::new(), remote),
        });
        let pool = Rc::new(Self {
            shared,
            bgid,
            tail: Cell::new(0),
            available: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            holder: (0..count).map(|_| Cell::new(NO_READER)).collect(),
            readers: RefCell::new(Slab::new()),
        });
        for bid in 0..count {
            pool.push_entry(bid);
        }
        pool.publish_tail();
        pool
    }

    /// Address and entry count to pass to `register_buf_ring_with_flags`.
    pub(crate) fn ring_addr(&self) -> (u64, u16) {
        (self.shared.ring.as_ptr() as u64, self.shared.count)
    }

    /// The buffer group id.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Marks this thread as the pool's owner (or clears it with `None`).
    pub(crate) fn set_local(pool: Option<&Rc<Self>>) {
        let old = LOCAL_POOL.with(|p| p.replace(pool.cloned()));
        // Dropped outside the thread-local's borrow.
        drop(old);
    }

    /// Most ring buffers one reader may hold: a sixteenth of the ring (at least 2). Past it the
    /// reader's receives are copied, so a connection buffering a large frame (or a peer
    /// trickling one) leaves the rest of the ring to the others.
    pub(crate) fn reader_cap(&self) -> u32 {
        (u32::from(self.shared.count) / 16).max(2)
    }

    /// Writes the entry for `bid` at the local tail (not yet visible to the kernel).
    fn push_entry(&self, bid: u16) {
        let count = self.shared.count;
        assert!(bid < count, "buffer id {bid} out of range");
        // More entries than the ring has would overwrite ones the kernel may still read.
        assert!(
            self.available.get() < u32::from(count),
            "buffer {bid} given back to a full ring"
        );
        let tail = self.tail.get();
        let idx = usize::from(tail & (count - 1));
        let addr = self.shared.buf_ptr(bid) as u64;
        // SAFETY: idx < count, so the entry lies inside the ring allocation. The kernel reads only
        // entries below the published tail, and fewer than `count` are there (asserted above), so
        // entry `idx` is not one of them. The fields are written through raw pointers, one by
        // one: `resv` is never written here (in entry 0 it is the tail the kernel reads).
        unsafe {
            let entry = self.shared.ring.as_ptr().add(idx);
            addr_of_mut!((*entry).addr).write(addr);
            addr_of_mut!((*entry).len).write(self.shared.buf_size);
            addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail.set(tail.wrapping_add(1));
        self.available.set(self.available.get() + 1);
    }

    /// Makes entries written since the last publish visible to the kernel.
    fn publish_tail(&self) {
        // SAFETY: the ring base points at entry 0, whose `resv` field the kernel reads as the
        // ring tail: an aligned u16 inside the live ring allocation that is only ever accessed
        // atomically (we store, the kernel loads with acquire) for as long as the ring exists.
        let tail = unsafe { AtomicU16::from_ptr(addr_of_mut!((*self.shared.ring.as_ptr()).resv)) };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// Updates the reader accounting for `bid` coming back.
    fn release(&self, bid: u16) {
        let slot = self.holder[usize::from(bid)].replace(NO_READER);
        if slot == NO_READER {
            return;
        }
        let mut readers = self.readers.borrow_mut();
        let hold = &mut readers[slot as usize];
        hold.held -= 1;
        if hold.held == 0 && !hold.open {
            readers.remove(slot as usize);
        }
    }

    /// Puts `bid` back into the ring now (owning core).
    fn give_back_local(&self, bid: u16) {
        self.release(bid);
        self.push_entry(bid);
        self.publish_tail();
        self.wake_waiters();
    }

    /// Puts back buffers released on other threads. Owning core only, after its wake-up read
    /// completed (see `buf_return`).
    pub(crate) fn drain_returns(&self) {
        let n = self.shared.home.drain(|bid| {
            self.release(bid);
            self.push_entry(bid);
        });
        if n > 0 {
            self.publish_tail();
            self.wake_waiters();
        }
    }

    /// Returns a buffer the kernel filled but nobody will read (a cancelled receive's data, or
    /// a receive that was copied out).
    pub(crate) fn recycle(&self, bid: u16) {
        self.give_back_local(bid);
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
    /// rather than held: below an eighth of the ring.
    ///
    /// Received `Bytes` live as long as the requests and replies that slice them (an echo reply
    /// links the request's bytes), so with many large calls in flight every buffer can end up
    /// held and every receive on the core stalls (`ENOBUFS`) until replies go out. Copying the
    /// last eighth keeps receives flowing at the cost of one copy per receive under pressure.
    pub(crate) fn is_low(&self) -> bool {
        self.available.get() < (u32::from(self.shared.count) / 8).max(1)
    }

    /// Opens the buffer account of one reader (one connection's receive side).
    pub(crate) fn open_reader(self: &Rc<Self>) -> ReaderAccount {
        let slot = self.readers.borrow_mut().insert(ReaderHold {
            held: 0,
            open: true,
        });
        assert!(slot < NO_READER as usize, "too many reader accounts");
        ReaderAccount {
            pool: self.clone(),
            slot,
        }
    }

    fn close_reader(&self, slot: usize) {
        let mut readers = self.readers.borrow_mut();
        if readers[slot].held == 0 {
            readers.remove(slot);
        } else {
            readers[slot].open = false;
        }
    }

    /// Hands up buffer `bid`, which the kernel filled with `len` bytes for `reader`: over the
    /// buffer, or as a copy (the buffer then goes straight back). See the [module docs](self).
    pub(crate) fn receive(&self, bid: u16, len: u32, reader: &ReaderAccount) -> (Bytes, RecvPath) {
        assert!(
            bid < self.shared.count && len <= self.shared.buf_size,
            "kernel named a bad buffer"
        );
        assert!(std::ptr::eq(&*reader.pool, self), "reader of another pool");
        let path = if len <= SMALL_RECV_COPY {
            RecvPath::Small
        } else if self.readers.borrow()[reader.slot].held >= self.reader_cap() {
            RecvPath::ReaderCap
        } else if self.is_low() {
            RecvPath::LowRing
        } else {
            RecvPath::Held
        };
        if path != RecvPath::Held {
            return (self.copy_out(bid, len), path);
        }
        self.readers.borrow_mut()[reader.slot].held += 1;
        // `open_reader` keeps slab keys below NO_READER.
        self.holder[usize::from(bid)].set(reader.slot as u32);
        let bytes = Bytes::from_owner(BufOwner {
            shared: self.shared.clone(),
            bid,
            len,
        });
        (bytes, RecvPath::Held)
    }

    /// Copies buffer `bid`'s `len` received bytes into memory of their own; the buffer goes
    /// straight back into the ring.
    fn copy_out(&self, bid: u16, len: u32) -> Bytes {
        assert!(
            len <= self.shared.buf_size,
            "receive longer than its buffer"
        );
        // SAFETY: the buffer is out of the ring (the completion naming it was just reaped and
        // nothing holds it), so the kernel does not write it; it filled `len` <= buf_size bytes,
        // which lie inside the buffer. The slice is not used after the buffer goes back below.
        let src = unsafe { std::slice::from_raw_parts(self.shared.buf_ptr(bid), len as usize) };
        let out = if len <= SMALL_RECV_COPY {
            Bytes::copy_from_slice(src)
        } else {
            copy_avoiding_4k_alias(src)
        };
        self.recycle(bid);
        out
    }

    /// Buffers the pool has, and how many of them are in the ring as far as the core knows.
    #[cfg(test)]
    fn available(&self) -> u32 {
        self.available.get()
    }
}

/// Copies `src` into a fresh `Bytes` placed so that the destination does not sit 1-64 bytes past
/// the source modulo 4 KiB: that 4K-aliasing case runs glibc's memcpy at a fraction of its speed
/// here. The capacity covers the largest skip, so nothing reallocates after the gap is measured.
fn copy_avoiding_4k_alias(src: &[u8]) -> Bytes {
    let mut dst = bytes::BytesMut::with_capacity(src.len() + 128);
    let gap = (dst.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize) % 4096;
    let skip = if (1..=64).contains(&gap) {
        128 - gap
    } else {
        0
    };
    dst.resize(skip, 0);
    dst.extend_from_slice(src);
    let mut out = dst.freeze();
    bytes::Buf::advance(&mut out, skip);
    out
}

/// One reader's account of the ring buffers it holds (see [`BufPool::reader_cap`]). Closed on
/// drop; its buffers still out come back as usual.
pub(crate) struct ReaderAccount {
    pool: Rc<BufPool>,
    slot: usize,
}

impl ReaderAccount {
    /// The pool this account belongs to.
    pub(crate) fn pool(&self) -> &Rc<BufPool> {
        &self.pool
    }
}

impl Drop for ReaderAccount {
    fn drop(&mut self) {
        self.pool.close_reader(self.slot);
    }
}

/// Owner of one received buffer inside a `Bytes`; gives the buffer back on drop.
struct BufOwner {
    shared: Arc<BufShared>,
    bid: u16,
    len: u32,
}

impl AsRef<[u8]> for BufOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the buffer is out of the ring (the kernel filled it and posted its completion;
        // it is not put back until this owner drops), so nothing writes it; `len` bytes were
        // written by the kernel and lie inside the buffer; the `Arc` keeps the memory alive.
        unsafe { std::slice::from_raw_parts(self.shared.buf_ptr(self.bid), self.len as usize) }
    }
}

impl Drop for BufOwner {
    fn drop(&mut self) {
        // On the owning core the pool is in the thread-local; anywhere else (or while this
        // thread's locals are being torn down) the id travels home through the queue.
        let local = LOCAL_POOL
            .try_with(|p| {
                p.try_borrow().ok().and_then(|p| {
                    p.as_ref()
                        .filter(|pool| Arc::ptr_eq(&pool.shared, &self.shared))
                        .cloned()
                })
            })
            .ok()
            .flatten();
        match local {
            Some(pool) => pool.give_back_local(self.bid),
            None => self.shared.home.send_home(self.bid),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool over its own ring memory with no kernel attached: the test plays the kernel
    //! (takes entries below the published tail, fills buffers). Also what the Miri run checks.

    use super::*;

    /// Plays the kernel's side of the ring.
    struct FakeKernel {
        head: u16,
    }

    impl FakeKernel {
        /// Takes the next buffer from the ring and fills it with `len` bytes of `fill`, as a
        /// receive completion would; the core notes it.
        fn recv(&mut self, pool: &BufPool, len: u32, fill: u8) -> u16 {
            let shared = &pool.shared;
            // SAFETY: test-only reads of the ring the test owns; the tail is read atomically.
            let tail = unsafe {
                AtomicU16::from_ptr(addr_of_mut!((*shared.ring.as_ptr()).resv))
                    .load(Ordering::Acquire)
            };
            assert_ne!(self.head, tail, "ring empty");
            let idx = usize::from(self.head & (shared.count - 1));
            // SAFETY: idx < count; the entry is below the published tail, so the pool does not
            // write it now.
            let (addr, len_field, bid) = unsafe {
                let e = shared.ring.as_ptr().add(idx);
                (
                    addr_of_mut!((*e).addr).read(),
                    addr_of_mut!((*e).len).read(),
                    addr_of_mut!((*e).bid).read(),
                )
            };
            assert_eq!(addr, shared.buf_ptr(bid) as u64);
            assert_eq!(len_field, shared.buf_size);
            assert!(len <= len_field);
            // SAFETY: the buffer was in the ring (ours to write, as the kernel); len <= size.
            unsafe { std::ptr::write_bytes(shared.buf_ptr(bid), fill, len as usize) };
            self.head = self.head.wrapping_add(1);
            pool.note_taken();
            bid
        }
    }

    fn pool(count: u16) -> Rc<BufPool> {
        BufPool::new(0, count, 4096, Remote::new().expect("eventfd"))
    }

    #[test]
    fn small_receives_are_copied_and_the_buffer_returns_at_once() {
        let pool = pool(8);
        let reader = pool.open_reader();
        let mut k = FakeKernel { head: 0 };
        let bid = k.recv(&pool, 1, 0xab);
        assert_eq!(pool.available(), 7);
        let (bytes, path) = pool.receive(bid, 1, &reader);
        assert_eq!(path, RecvPath::Small);
        assert_eq!(&bytes[..], &[0xab]);
        assert_eq!(pool.available(), 8, "the buffer went straight back");
        assert_eq!(pool.readers.borrow()[reader.slot].held, 0);
    }

    #[test]
    fn held_receives_come_back_on_drop_here_and_from_other_threads() {
        let pool = pool(8);
        BufPool::set_local(Some(&pool));
        let reader = pool.open_reader();
        let mut k = FakeKernel { head: 0 };
        let a = k.recv(&pool, 3000, 1);
        let b = k.recv(&pool, 3000, 2);
        let (ba, pa) = pool.receive(a, 3000, &reader);
        let (bb, pb) = pool.receive(b, 3000, &reader);
        assert_eq!((pa, pb), (RecvPath::Held, RecvPath::Held));
        assert!(ba.iter().all(|&x| x == 1) && bb.iter().all(|&x| x == 2));
        assert_eq!(pool.available(), 6);
        assert_eq!(pool.readers.borrow()[reader.slot].held, 2);
        drop(ba);
        assert_eq!(pool.available(), 7, "dropped on its core: back at once");
        std::thread::spawn(move || drop(bb)).join().unwrap();
        assert_eq!(pool.available(), 7, "dropped elsewhere: queued");
        pool.drain_returns();
        assert_eq!(pool.available(), 8);
        assert_eq!(pool.readers.borrow()[reader.slot].held, 0);
        // The ring carries every buffer again: the kernel can take all eight.
        let mut seen: Vec<u16> = (0..8).map(|_| k.recv(&pool, 1, 0)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        for bid in seen {
            pool.recycle(bid);
        }
        BufPool::set_local(None);
    }

    #[test]
    fn a_reader_past_its_cap_gets_copies() {
        let pool = pool(64);
        BufPool::set_local(Some(&pool));
        let cap = pool.reader_cap();
        assert_eq!(cap, 4);
        let hog = pool.open_reader();
        let other = pool.open_reader();
        let mut k = FakeKernel { head: 0 };
        let mut held = Vec::new();
        for _ in 0..cap {
            let bid = k.recv(&pool, 2000, 7);
            let (b, path) = pool.receive(bid, 2000, &hog);
            assert_eq!(path, RecvPath::Held);
            held.push(b);
        }
        let bid = k.recv(&pool, 2000, 8);
        let (copy, path) = pool.receive(bid, 2000, &hog);
        assert_eq!(path, RecvPath::ReaderCap);
        assert!(copy.iter().all(|&x| x == 8));
        let bid = k.recv(&pool, 2000, 9);
        assert_eq!(pool.receive(bid, 2000, &other).1, RecvPath::Held);
        drop(held.pop());
        let bid = k.recv(&pool, 2000, 10);
        assert_eq!(pool.receive(bid, 2000, &hog).1, RecvPath::Held);
        BufPool::set_local(None);
    }

    #[test]
    fn a_low_ring_copies_everyone() {
        let pool = pool(16);
        BufPool::set_local(Some(&pool));
        let mut k = FakeKernel { head: 0 };
        let mut held = Vec::new();
        // Eight readers of two buffers each (their cap) would take the whole ring.
        let readers: Vec<_> = (0..8).map(|_| pool.open_reader()).collect();
        let mut paths = Vec::new();
        for r in &readers {
            for _ in 0..2 {
                let bid = k.recv(&pool, 2000, 0);
                let (b, path) = pool.receive(bid, 2000, r);
                paths.push(path);
                held.push(b);
            }
        }
        // Held until fewer than an eighth (2) would stay in the ring after the kernel's take.
        assert_eq!(paths.iter().filter(|p| **p == RecvPath::Held).count(), 14);
        assert_eq!(paths[14..], [RecvPath::LowRing, RecvPath::LowRing]);
        drop(held);
        assert_eq!(pool.available(), 16);
        BufPool::set_local(None);
    }

    #[test]
    fn a_closed_reader_account_goes_with_its_last_buffer() {
        let pool = pool(8);
        BufPool::set_local(Some(&pool));
        let reader = pool.open_reader();
        let mut k = FakeKernel { head: 0 };
        let bid = k.recv(&pool, 2000, 3);
        let (b, _) = pool.receive(bid, 2000, &reader);
        drop(reader);
        assert_eq!(pool.readers.borrow().len(), 1, "kept while a buffer is out");
        drop(b);
        assert_eq!(pool.readers.borrow().len(), 0);
        BufPool::set_local(None);
    }

    #[test]
    fn bytes_outlive_the_pool() {
        let pool = pool(8);
        let reader = pool.open_reader();
        let mut k = FakeKernel { head: 0 };
        let bid = k.recv(&pool, 2000, 5);
        let (b, _) = pool.receive(bid, 2000, &reader);
        drop(reader);
        drop(pool);
        // The memory lives on in the `Arc`; the last drop queues the id and frees everything.
        assert!(b.iter().all(|&x| x == 5));
        std::thread::spawn(move || drop(b)).join().unwrap();
    }

    #[test]
    #[should_panic(expected = "given back to a full ring")]
    fn a_double_give_back_is_refused() {
        let pool = pool(8);
        pool.recycle(0);
    }
}
