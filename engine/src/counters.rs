//! Per-core engine counters: written only by their core, readable from any thread.
//!
//! Each field is an `AtomicU64` updated with a relaxed load and store (a single writer needs no
//! read-modify-write), so counting costs a plain add on the owning core.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one core. Only the owning core writes them.
#[derive(Debug, Default)]
pub struct Counters {
    submissions: AtomicU64,
    completions: AtomicU64,
    enters: AtomicU64,
    buf_ring_misses: AtomicU64,
    buf_copies: AtomicU64,
    small_copies: AtomicU64,
    reader_cap_copies: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    accepted: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Counters {
    /// Adds `n` submitted operations (io_uring SQEs; baseline: read/write syscalls issued).
    #[inline]
    pub fn add_submissions(&self, n: u64) {
        bump(&self.submissions, n);
    }
    /// Adds `n` completions reaped.
    #[inline]
    pub fn add_completions(&self, n: u64) {
        bump(&self.completions, n);
    }
    /// Counts one `io_uring_enter` (baseline: one wait on the poller).
    #[inline]
    pub fn add_enter(&self) {
        bump(&self.enters, 1);
    }
    /// Counts one receive that found the provided-buffer ring empty (`ENOBUFS`).
    #[inline]
    pub fn add_buf_ring_miss(&self) {
        bump(&self.buf_ring_misses, 1);
    }
    /// Counts one receive copied out of the buffer ring because the ring ran low.
    #[inline]
    pub fn add_buf_copy(&self) {
        bump(&self.buf_copies, 1);
    }
    /// Counts one small receive copied out of the buffer ring at once (it holds no buffer).
    #[inline]
    pub fn add_small_copy(&self) {
        bump(&self.small_copies, 1);
    }
    /// Counts one receive copied out because its reader already held its share of the ring.
    #[inline]
    pub fn add_reader_cap_copy(&self) {
        bump(&self.reader_cap_copies, 1);
    }
    /// Adds received bytes.
    #[inline]
    pub fn add_received(&self, n: u64) {
        bump(&self.bytes_received, n);
    }
    /// Adds sent bytes.
    #[inline]
    pub fn add_sent(&self, n: u64) {
        bump(&self.bytes_sent, n);
    }
    /// Counts one accepted connection.
    #[inline]
    pub fn add_accepted(&self) {
        bump(&self.accepted, 1);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            submissions: self.submissions.load(Ordering::Relaxed),
            completions: self.completions.load(Ordering::Relaxed),
            enters: self.enters.load(Ordering::Relaxed),
            buf_ring_misses: self.buf_ring_misses.load(Ordering::Relaxed),
            buf_copies: self.buf_copies.load(Ordering::Relaxed),
            small_copies: self.small_copies.load(Ordering::Relaxed),
            reader_cap_copies: self.reader_cap_copies.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one core's [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Operations submitted.
    pub submissions: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Calls into the kernel to submit and wait.
    pub enters: u64,
    /// Receives that found the buffer ring empty.
    pub buf_ring_misses: u64,
    /// Receives copied out of the buffer ring because it ran low (fewer than an eighth of its
    /// buffers left).
    pub buf_copies: u64,
    /// Small receives copied out at once (at most 1 KiB: copying costs no more than holding).
    pub small_copies: u64,
    /// Receives copied out because their connection already held its share of the ring.
    pub reader_cap_copies: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Connections accepted.
    pub accepted: u64,
}
