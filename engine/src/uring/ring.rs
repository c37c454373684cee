//! One core's io_uring: setup with flag fallback, the opcode probe, queuing SQEs, and the single
//! `io_uring_enter` per loop turn that submits everything queued and waits for completions.
//!
//! This module never loops on the kernel: a full SQ is reported ([`SqFull`]) to the core, which
//! submits, reaps completions if the kernel took nothing (its CQ is full), and retries
//! (`Core::push`); a failed enter is returned to the core loop, which backs off and fails the
//! core after repeated errors. A failed opcode probe means "nothing beyond the base set" (see
//! [`Ring::new`]).
//!
//! The ring is created on the core thread that uses it (`SINGLE_ISSUER | DEFER_TASKRUN` require
//! it) and only ever touched from there. Its fd is registered (`IORING_REGISTER_RING_FDS`) so each
//! enter skips the fd lookup; the crate's `Submitter` forgets that registration between calls, so
//! this module issues the enter syscall itself.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

/// `user_data` of the eventfd read that wakes a sleeping core.
pub(crate) const WAKE_UD: u64 = u64::MAX;
/// `user_data` of `ASYNC_CANCEL` requests: their own completions carry nothing to act on.
pub(crate) const CANCEL_UD: u64 = u64::MAX - 1;

/// Submission queue entries per ring.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: multishot receive and accept post many CQEs per SQE, so the CQ is
/// sized well above the SQ (overflow is still lossless with `IORING_FEAT_NODROP`).
const CQ_ENTRIES: u32 = 16 * 1024;

const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
const IORING_REGISTER_RING_FDS: u32 = 20;

/// What a core's ring may use, decided once at setup (see [`crate::uring::ring_features`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFeatures {
    /// Multishot accept and receive into a provided-buffer ring. Off on the fallback path and
    /// when the opcode probe failed.
    pub multishot: bool,
}

/// The submission queue had no free entry; submit (and reap) before retrying.
#[derive(Debug)]
pub(crate) struct SqFull;

/// The opcodes the engine submits, probed once per process.
const NEEDED_OPS: [(u8, &str); 7] = [
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::Read::CODE, "READ"),
    (opcode::Shutdown::CODE, "SHUTDOWN"),
];

/// What the probe found, once per process: `Ok(true)` every needed opcode is there, `Ok(false)`
/// the probe itself failed (only the base set is assumed), `Err` a needed opcode is missing.
static PROBED: OnceLock<Result<bool, String>> = OnceLock::new();

/// Whether the fallback path is forced by `RINGRPC_URING_FALLBACK=1`.
pub(crate) fn fallback_forced_by_env() -> bool {
    crate::runtime::env_flag("RINGRPC_URING_FALLBACK")
}

/// `struct io_uring_getevents_arg` (EXT_ARG enter argument).
#[repr(C)]
struct GetEventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_rsrc_update` (ring fd registration).
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// One core's ring. Methods take `&self`; the inner `RefCell` is only borrowed inside them.
pub(crate) struct Ring {
    ring: RefCell<IoUring>,
    /// SQEs queued since the last enter.
    pending: Cell<u32>,
    /// Index of the registered ring fd, if registration worked.
    registered: Option<u32>,
    features: RingFeatures,
}

impl Ring {
    /// Builds the ring with the best flags this kernel takes; `fallback` forces plain flags and
    /// no multishot.
    ///
    /// The opcode probe (`IORING_REGISTER_PROBE`) decides what beyond the *base set* the ring
    /// uses. The base set is what every kernel this engine accepts has: it requires
    /// `IORING_FEAT_EXT_ARG` (Linux 5.11), by which every opcode in [`NEEDED_OPS`] exists
    /// (SHUTDOWN, the newest, came in 5.11), and single-shot use of them is all the fallback
    /// path needs. Multishot accept and receive and the provided-buffer ring came later (5.19,
    /// 6.0) and are flags, not opcodes: they are used only when the probe answered. A probe that
    /// fails therefore means the fallback path (single-shot accept and receive, no buffer ring),
    /// logged; a probe that answers without a needed opcode fails setup with its name.
    pub(crate) fn new(fallback: bool) -> io::Result<Self> {
        let ring = if fallback {
            tracing::warn!("RINGRPC_URING_FALLBACK: plain ring flags, no multishot");
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)?
        } else {
            match IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "SINGLE_ISSUER|DEFER_TASKRUN refused; trying COOP_TASKRUN only");
                    match IoUring::builder()
                        .setup_coop_taskrun()
                        .setup_cqsize(CQ_ENTRIES)
                        .build(SQ_ENTRIES)
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(error = %e, "COOP_TASKRUN refused; plain ring flags");
                            IoUring::builder()
                                .setup_cqsize(CQ_ENTRIES)
                                .build(SQ_ENTRIES)?
                        }
                    }
                }
            }
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel < 5.11) is not supported",
            ));
        }
        if !ring.params().is_feature_nodrop() {
            tracing::warn!(
                "io_uring without IORING_FEAT_NODROP: completions may be lost on CQ overflow"
            );
        }
        let probed = probe_once(&ring)?;
        let registered = register_ring_fd(&ring);
        Ok(Self {
            ring: RefCell::new(ring),
            pending: Cell::new(0),
            registered,
            features: RingFeatures {
                multishot: !fallback && probed,
            },
        })
    }

    /// What this ring may use.
    pub(crate) fn features(&self) -> RingFeatures {
        self.features
    }

    /// Runs `f` with the submitter (buffer ring registration).
    pub(crate) fn with_submitter<R>(&self, f: impl FnOnce(io_uring::Submitter<'_>) -> R) -> R {
        f(self.ring.borrow().submitter())
    }

    /// Queues one SQE, or reports that the SQ is full (the core submits, reaps and retries:
    /// `Core::push`).
    ///
    /// # Safety
    /// Every buffer, fd and pointer `entry` refers to must stay valid until its final completion
    /// is reaped (the op table keeps them owned for that long).
    pub(crate) unsafe fn try_push(&self, entry: &squeue::Entry) -> Result<(), SqFull> {
        #[cfg(feature = "fault-injection")]
        if super::faults::take(super::faults::Fault::PushFull).is_some() {
            return Err(SqFull);
        }
        let mut ring = self.ring.borrow_mut();
        // SAFETY: forwarded from the caller: the entry's resources outlive its completion.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            self.pending.set(self.pending.get() + 1);
            Ok(())
        } else {
            Err(SqFull)
        }
    }

    /// SQEs queued and not yet submitted.
    pub(crate) fn pending(&self) -> u32 {
        self.pending.get()
    }

    /// One `io_uring_enter`: submits every queued SQE and, if `wait`, blocks until at least one
    /// completion arrives or `timeout` passes. Returns how many SQEs the kernel took.
    ///
    /// `EINTR`, `ETIME` (the wait ended) and `EAGAIN`/`EBUSY` (the kernel could not take SQEs
    /// now: its CQ is full) are `Ok(0)`; the caller reaps, which makes room. Other errors are
    /// returned.
    pub(crate) fn enter(&self, wait: bool, timeout: Option<Duration>) -> io::Result<u32> {
        #[cfg(feature = "fault-injection")]
        if let Some(errno) = super::faults::take(super::faults::Fault::Enter) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let to_submit = self.pending.get();
        let ts = timeout.map(|d| KernelTimespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let arg = GetEventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: 0,
            ts: ts.as_ref().map_or(0, |t| std::ptr::from_ref(t) as u64),
        };
        let mut flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
        let fd = match self.registered {
            Some(idx) => {
                flags |= IORING_ENTER_REGISTERED_RING;
                idx as i64
            }
            None => i64::from(self.ring.borrow().as_raw_fd()),
        };
        // SAFETY: io_uring_enter reads `arg` (a valid io_uring_getevents_arg of the size passed)
        // and the timespec it points to, both alive for the call; the SQEs it consumes were
        // queued through `push`, whose contract keeps their resources alive.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                to_submit,
                u32::from(wait),
                flags,
                std::ptr::from_ref(&arg),
                size_of::<GetEventsArg>(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY) => {
                    // The kernel may still have consumed SQEs before the wait failed.
                    self.resync_pending();
                    Ok(0)
                }
                _ => Err(e),
            };
        }
        let took = u32::try_from(rc).unwrap_or(0);
        self.pending.set(to_submit.saturating_sub(took));
        Ok(took)
    }

    fn resync_pending(&self) {
        let mut ring = self.ring.borrow_mut();
        let n = ring.submission().len();
        self.pending.set(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Moves up to `max` completions into `out` as `(user_data, result, flags)`.
    pub(crate) fn reap(&self, out: &mut Vec<(u64, i32, u32)>, max: usize) {
        let mut ring = self.ring.borrow_mut();
        let cq = ring.completion();
        for cqe in cq.take(max) {
            out.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }

    /// Whether completions are waiting in the CQ.
    pub(crate) fn has_completions(&self) -> bool {
        let mut ring = self.ring.borrow_mut();
        let cq = ring.completion();
        !cq.is_empty()
    }
}

/// Whether a completion is followed by more from the same (multishot) request.
pub(crate) fn cqe_more(flags: u32) -> bool {
    cqueue::more(flags)
}

/// Probes the opcodes (once per process): `Ok(true)` all needed present, `Ok(false)` the probe
/// failed (base set only: no multishot, no buffer ring), `Err` a needed opcode is missing.
fn probe_once(ring: &IoUring) -> io::Result<bool> {
    #[cfg(feature = "fault-injection")]
    if let Some(errno) = super::faults::take(super::faults::Fault::Probe) {
        // Not cached: the injected failure is for this ring only.
        tracing::warn!(
            error = %io::Error::from_raw_os_error(errno),
            "io_uring probe failed; using the base opcode set only (no multishot, no buffer ring)"
        );
        return Ok(false);
    }
    let r = PROBED.get_or_init(|| {
        let mut probe = Probe::new();
        if let Err(e) = ring.submitter().register_probe(&mut probe) {
            tracing::warn!(
                error = %e,
                "io_uring probe failed; using the base opcode set only (no multishot, no buffer ring)"
            );
            return Ok(false);
        }
        let missing: Vec<&str> = NEEDED_OPS
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|(_, name)| *name)
            .collect();
        if missing.is_empty() {
            Ok(true)
        } else {
            Err(format!("io_uring lacks opcodes: {}", missing.join(", ")))
        }
    });
    r.clone()
        .map_err(|m| io::Error::new(io::ErrorKind::Unsupported, m))
}

fn register_ring_fd(ring: &IoUring) -> Option<u32> {
    let mut up = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: u64::try_from(ring.as_raw_fd()).unwrap_or(0),
    };
    // SAFETY: IORING_REGISTER_RING_FDS reads and writes one io_uring_rsrc_update, which `up` is,
    // alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_RING_FDS,
            std::ptr::from_mut(&mut up),
            1u32,
        )
    };
    if rc == 1 {
        Some(up.offset)
    } else {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "could not register the ring fd; entering with the plain fd"
        );
        None
    }
}
