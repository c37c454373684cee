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
    accept_dropped: AtomicU64,
    tasks_panicked: AtomicU64,
    busy_poll_spins: AtomicU64,
    enter_errors: AtomicU64,
    leaked_at_exit: AtomicU64,
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

    /// Counts one accepted connection dropped before it was handed up (its socket failed while
    /// being set up, e.g. reset before `setsockopt`/`getpeername`); the listener keeps accepting.
    #[inline]
    pub fn add_accept_dropped(&self) {
        bump(&self.accept_dropped, 1);
    }
    /// Counts one task that panicked: it was dropped and its core kept running.
    #[inline]
    pub fn add_task_panicked(&self) {
        bump(&self.tasks_panicked, 1);
    }
    /// Counts one non-blocking enter made while busy-polling before a sleep.
    #[inline]
    pub fn add_busy_poll_spin(&self) {
        bump(&self.busy_poll_spins, 1);
    }
    /// Counts one `io_uring_enter` that failed.
    #[inline]
    pub fn add_enter_error(&self) {
        bump(&self.enter_errors, 1);
    }
    /// Adds operations still in flight when an exiting core gave up waiting for them and leaked
    /// its ring and buffers on purpose.
    #[inline]
    pub fn add_leaked_at_exit(&self, n: u64) {
        bump(&self.leaked_at_exit, n);
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
            accept_dropped: self.accept_dropped.load(Ordering::Relaxed),
            tasks_panicked: self.tasks_panicked.load(Ordering::Relaxed),
            busy_poll_spins: self.busy_poll_spins.load(Ordering::Relaxed),
            enter_errors: self.enter_errors.load(Ordering::Relaxed),
            leaked_at_exit: self.leaked_at_exit.load(Ordering::Relaxed),
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
    /// Accepted connections dropped because setting them up failed.
    pub accept_dropped: u64,
    /// Tasks that panicked and were dropped (the core kept running).
    pub tasks_panicked: u64,
    /// Non-blocking enters made while busy-polling (io_uring with `busy_poll` only).
    pub busy_poll_spins: u64,
    /// `io_uring_enter` calls that failed.
    pub enter_errors: u64,
    /// Operations abandoned in flight at exit (ring and buffers leaked on purpose).
    pub leaked_at_exit: u64,
}
