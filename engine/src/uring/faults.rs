//! Test-only fault injection at the ring boundary (cargo feature `fault-injection`; the
//! engine's dev-dependencies turn it on for its own tests, no normal build has it).
//!
//! A test arms a [`Fault`] for the next `times` occurrences; the hook in `ring.rs` or `net.rs`
//! then fails that many calls as the kernel would (an errno), without the call reaching the
//! kernel. So error paths are tested on purpose, not by hoping the kernel misbehaves. Armed
//! faults are process-wide (every core of every runtime sees them): tests that arm them must not
//! run alongside other tests in the same process (`tests/faults.rs` serializes its tests).

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// A fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `io_uring_enter` fails with the armed errno (`Ring::enter`).
    Enter,
    /// Queuing an SQE finds the submission queue full (`Ring::try_push`); the errno is unused.
    PushFull,
    /// The opcode probe (`IORING_REGISTER_PROBE`) fails with the armed errno, for the next ring
    /// set up (the process-wide probe cache is bypassed).
    Probe,
    /// Setting up an accepted connection (`setsockopt(TCP_NODELAY)` / `getpeername`) fails with
    /// the armed errno, as for a connection reset before it was handled.
    AcceptSetup,
}

const POINTS: usize = 4;

static REMAINING: [AtomicU32; POINTS] = [const { AtomicU32::new(0) }; POINTS];
static ERRNO: [AtomicI32; POINTS] = [const { AtomicI32::new(0) }; POINTS];

fn index(fault: Fault) -> usize {
    match fault {
        Fault::Enter => 0,
        Fault::PushFull => 1,
        Fault::Probe => 2,
        Fault::AcceptSetup => 3,
    }
}

/// Makes the next `times` occurrences of `fault` fail with `errno` (replacing what was armed).
pub fn inject(fault: Fault, times: u32, errno: i32) {
    let i = index(fault);
    ERRNO[i].store(errno, Ordering::Relaxed);
    REMAINING[i].store(times, Ordering::Release);
}

/// How many injected failures of `fault` have not happened yet.
pub fn remaining(fault: Fault) -> u32 {
    REMAINING[index(fault)].load(Ordering::Acquire)
}

/// Disarms every fault.
pub fn clear() {
    for r in &REMAINING {
        r.store(0, Ordering::Release);
    }
}

/// The hook: `Some(errno)` if this occurrence of `fault` must fail (and counts it).
pub(crate) fn take(fault: Fault) -> Option<i32> {
    let i = index(fault);
    // The common case, nothing armed, is one relaxed load.
    if REMAINING[i].load(Ordering::Relaxed) == 0 {
        return None;
    }
    REMAINING[i]
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .ok()
        .map(|_| ERRNO[i].load(Ordering::Relaxed))
}
