//! TCP on the io_uring engine.
//!
//! - [`UringListener`]: a per-core `SO_REUSEPORT` listener with one multishot accept armed;
//!   accepted sockets queue in the op until `accept` takes them (or are closed if the listener is
//!   dropped first).
//! - [`UringReader`]: one multishot receive into the core's provided-buffer ring; each completion
//!   goes up as `Bytes` over the ring buffer (no copy), unless the pool copies it out (a small
//!   receive, a reader holding its share of the ring already, or a low ring: see `buf_ring`).
//!   `ENOBUFS` counts a miss and waits for a buffer to come back before re-arming; the data stays
//!   in the socket, nothing is dropped. A multishot receive that ends (no `IORING_CQE_F_MORE`) is
//!   re-armed on the next `recv`.
//! - [`UringWriter`]: `SENDMSG` over the chunk chain (up to [`MAX_IOV`] slices per SQE); the op
//!   owns the chunks, the iovec array and the msghdr until its completion; a partial write
//!   continues where it stopped.
//!
//! The socket fd is shared (`Rc`) by the halves and by every op in flight on it, so it closes
//! when the last of them is gone.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use io_uring::{opcode, types};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::buf_ring::{ReaderAccount, RecvPath};
use super::op::{Op, OpKind};
use super::with_core;
use crate::{Listener, Stream, StreamReader, StreamWriter};

/// Most slices handed to one `sendmsg` (the kernel's `UIO_MAXIOV`).
pub(crate) const MAX_IOV: usize = 1024;

/// Bytes each fallback (single-shot, no buffer ring) receive reads into a fresh buffer.
const FALLBACK_RECV_SIZE: usize = 16 * 1024;

/// A per-core TCP listener with multishot accept.
pub struct UringListener {
    inner: Rc<TcpListener>,
    accept: Option<Op>,
}

impl std::fmt::Debug for UringListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringListener")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl UringListener {
    fn arm(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.inner.as_raw_fd());
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let multishot = with_core(|c| c.multishot_accept.get());
        let entry = if multishot {
            opcode::AcceptMulti::new(fd).flags(flags).build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(flags)
                .build()
        };
        // SAFETY: the entry points only at the listener fd, kept open by the `Rc` the op owns.
        let op = unsafe {
            Op::submit(
                entry,
                OpKind::Accept,
                Some(Box::new(Rc::clone(&self.inner))),
            )
        }?;
        self.accept = Some(op);
        Ok(())
    }

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<(UringStream, SocketAddr)>>> {
        loop {
            if with_core(|c| c.stopping()) {
                return Poll::Ready(Ok(None));
            }
            if self.accept.is_none() {
                if let Err(e) = self.arm() {
                    return Poll::Ready(Err(e));
                }
            }
            let op = self.accept.as_mut().expect("armed above");
            let cqe = match op.poll_next(cx) {
                Poll::Ready(Some(cqe)) => cqe,
                Poll::Ready(None) => {
                    self.accept = None;
                    continue;
                }
                Poll::Pending => {
                    with_core(|c| c.on_stop(cx.waker()));
                    return Poll::Pending;
                }
            };
            if op.is_finished() {
                self.accept = None;
            }
            match cqe.result() {
                Ok(_) => {
                    // SAFETY: a successful accept returns a new fd that nobody else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(cqe.res) };
                    let stream = UringStream { fd: Rc::new(fd) };
                    match set_up_accepted(&stream) {
                        Ok(peer) => {
                            with_core(|c| c.counters().add_accepted());
                            return Poll::Ready(Ok(Some((stream, peer))));
                        }
                        Err(e) => {
                            // This connection's trouble (reset before we got to it, say), not
                            // the listener's: drop it (closing the socket) and keep accepting.
                            tracing::debug!(error = %e, "accepted connection failed setup; dropped");
                            with_core(|c| c.counters().add_accept_dropped());
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                    // A connection aborted while queued: also that connection's, not ours.
                    with_core(|c| c.counters().add_accept_dropped());
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && with_core(|c| c.multishot_accept.get()) =>
                {
                    tracing::warn!("kernel refused multishot accept; using single-shot accept");
                    with_core(|c| c.multishot_accept.set(false));
                    self.accept = None;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// `TCP_NODELAY` and the peer address of an accepted connection; either fails if the peer
/// reset the connection before it was handled.
fn set_up_accepted(stream: &UringStream) -> io::Result<SocketAddr> {
    #[cfg(feature = "fault-injection")]
    if let Some(errno) = super::faults::take(super::faults::Fault::AcceptSetup) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    SockRef::from(&*stream.fd).set_nodelay(true)?;
    stream.peer_addr()
}

impl Listener for UringListener {
    type Stream = UringStream;

    fn bind(addr: SocketAddr, backlog: u32) -> io::Result<Self> {
        Ok(Self {
            inner: Rc::new(crate::socket::bind_reuseport(addr, backlog)?),
            accept: None,
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<Option<(UringStream, SocketAddr)>> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }
}

/// A TCP connection on the io_uring engine.
#[derive(Debug)]
pub struct UringStream {
    fd: Rc<OwnedFd>,
}

/// What a connect op owns until its completion.
struct ConnectRes {
    _addr: SockAddr,
    _fd: Rc<OwnedFd>,
}

impl Stream for UringStream {
    type Reader = UringReader;
    type Writer = UringWriter;

    async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        let fd = Rc::new(OwnedFd::from(socket));
        let sa = SockAddr::from(addr);
        let entry =
            opcode::Connect::new(types::Fd(fd.as_raw_fd()), sa.as_ptr().cast(), sa.len()).build();
        let res = Box::new(ConnectRes {
            _addr: sa,
            _fd: fd.clone(),
        });
        // SAFETY: the entry points at the SockAddr inside `res` (heap, does not move with the
        // box) and at the fd, which `res` keeps open; the op owns `res` until completion, so a
        // dropped connect future closes the socket only after the kernel is done with it.
        let mut op = unsafe { Op::submit(entry, OpKind::Plain, Some(res)) }?;
        let cqe = op.next().await.expect("connect completes once");
        cqe.result()?;
        SockRef::from(&*fd).set_nodelay(true)?;
        Ok(Self { fd })
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&*self.fd)
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer is not an IP socket"))
    }

    fn into_split(self) -> (UringReader, UringWriter) {
        (
            UringReader {
                fd: self.fd.clone(),
                op: None,
                eof: false,
                account: None,
            },
            UringWriter { fd: self.fd },
        )
    }
}

/// What a fallback receive owns: its buffer and the fd.
struct RecvBuf {
    buf: Vec<u8>,
    _fd: Rc<OwnedFd>,
}

/// Receiving half: multishot receive into the core's buffer ring.
pub struct UringReader {
    fd: Rc<OwnedFd>,
    op: Option<Op>,
    eof: bool,
    /// This reader's account of the ring buffers it holds (opened on its first buffer).
    account: Option<ReaderAccount>,
}

impl std::fmt::Debug for UringReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReader")
            .field("fd", &self.fd)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl UringReader {
    /// Arms a receive; `Ok(false)` when the buffer ring is empty (the waker is registered).
    fn arm(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let fd = types::Fd(self.fd.as_raw_fd());
        with_core(|c| {
            if c.multishot_recv.get() {
                let pool = c
                    .bufs
                    .as_ref()
                    .expect("multishot receive needs the buffer ring");
                if !pool.has_buffers() {
                    pool.wait_for_buffers(cx.waker());
                    return Ok(false);
                }
                let entry = opcode::RecvMulti::new(fd, pool.bgid()).build();
                // SAFETY: the kernel writes only into provided buffers (which live in the pool
                // the core keeps until every op completed); the fd is kept open by the `Rc`.
                let op = unsafe {
                    Op::submit(entry, OpKind::Recv, Some(Box::new(Rc::clone(&self.fd))))
                }?;
                self.op = Some(op);
            } else {
                let mut res = Box::new(RecvBuf {
                    buf: Vec::with_capacity(FALLBACK_RECV_SIZE),
                    _fd: self.fd.clone(),
                });
                let entry = opcode::Recv::new(
                    fd,
                    res.buf.as_mut_ptr(),
                    u32::try_from(FALLBACK_RECV_SIZE).unwrap_or(u32::MAX),
                )
                .build();
                // SAFETY: the kernel writes into `res.buf`'s heap allocation (capacity
                // FALLBACK_RECV_SIZE), which the op owns until completion; fd kept open by `res`.
                let op = unsafe { Op::submit(entry, OpKind::Plain, Some(res)) }?;
                self.op = Some(op);
            }
            Ok(true)
        })
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            if self.op.is_none() && !self.arm(cx)? {
                return Poll::Pending;
            }
            let op = self.op.as_mut().expect("armed above");
            let cqe = match op.poll_next(cx) {
                Poll::Ready(Some(cqe)) => cqe,
                Poll::Ready(None) => {
                    self.op = None;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            let finished = op.is_finished();
            let fallback_buf = if finished {
                op.take_resources::<RecvBuf>()
            } else {
                None
            };
            if finished {
                self.op = None;
            }
            match cqe.res {
                n if n > 0 => {
                    let n = n.unsigned_abs();
                    with_core(|c| c.counters().add_received(u64::from(n)));
                    let bytes = if let Some(bid) = cqe.buffer() {
                        let account = self.account.get_or_insert_with(|| {
                            with_core(|c| c.bufs.as_ref().expect("buffer ring").open_reader())
                        });
                        let (bytes, path) = account.pool().receive(bid, n, account);
                        match path {
                            RecvPath::Held => {}
                            RecvPath::Small => with_core(|c| c.counters().add_small_copy()),
                            RecvPath::ReaderCap => {
                                with_core(|c| c.counters().add_reader_cap_copy());
                            }
                            RecvPath::LowRing => with_core(|c| c.counters().add_buf_copy()),
                        }
                        bytes
                    } else if let Some(mut b) = fallback_buf {
                        assert!(n as usize <= b.buf.capacity(), "receive past its buffer");
                        // SAFETY: the kernel initialized the first `n` bytes of the buffer, which
                        // lie inside its capacity (asserted above).
                        unsafe { b.buf.set_len(n as usize) };
                        Bytes::from(b.buf)
                    } else {
                        return Poll::Ready(Err(io::Error::other(
                            "receive completion without a buffer",
                        )));
                    };
                    return Poll::Ready(Ok(Some(bytes)));
                }
                0 => {
                    if cqe.buffer().is_some() {
                        with_core(|c| c.discard(OpKind::Recv, cqe));
                    }
                    self.eof = true;
                    self.op = None;
                    return Poll::Ready(Ok(None));
                }
                e if -e == libc::ENOBUFS => {
                    with_core(|c| c.counters().add_buf_ring_miss());
                    // Re-armed at the top of the loop, or parked until a buffer returns.
                }
                e if -e == libc::EINVAL && with_core(|c| c.multishot_recv.get()) => {
                    tracing::warn!("kernel refused multishot receive; using single-shot receive");
                    with_core(|c| c.multishot_recv.set(false));
                }
                e => return Poll::Ready(Err(io::Error::from_raw_os_error(-e))),
            }
        }
    }
}

impl StreamReader for UringReader {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// What a send op owns until completion: the chunks, their iovecs, the msghdr, the fd.
struct SendState {
    chunks: Vec<Bytes>,
    first: usize,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    _fd: Rc<OwnedFd>,
}

impl SendState {
    /// Fills the iovec array from the unsent chunks; `false` when everything was sent.
    fn prepare(&mut self) -> bool {
        while self.first < self.chunks.len() && self.chunks[self.first].is_empty() {
            self.first += 1;
        }
        if self.first == self.chunks.len() {
            return false;
        }
        self.iov.clear();
        self.iov.extend(
            self.chunks[self.first..]
                .iter()
                .filter(|c| !c.is_empty())
                .take(MAX_IOV)
                .map(|c| libc::iovec {
                    iov_base: c.as_ptr().cast_mut().cast(),
                    iov_len: c.len(),
                }),
        );
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
        true
    }

    /// Drops `n` sent bytes from the front of the chain.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.first < self.chunks.len() {
            let c = &mut self.chunks[self.first];
            let take = n.min(c.len());
            c.advance(take);
            n -= take;
            if c.is_empty() {
                self.first += 1;
            }
        }
    }
}

/// Sending half: vectored `sendmsg` over the chunk chain.
#[derive(Debug)]
pub struct UringWriter {
    fd: Rc<OwnedFd>,
}

impl UringWriter {
    async fn send_all(&mut self, state: &mut Option<Box<SendState>>) -> io::Result<()> {
        loop {
            let mut st = state.take().expect("send state present");
            if !st.prepare() {
                *state = Some(st);
                return Ok(());
            }
            let msg: *const libc::msghdr = &raw const st.msg;
            let entry = opcode::SendMsg::new(types::Fd(self.fd.as_raw_fd()), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build();
            // SAFETY: the msghdr, the iovec array it points to and the chunks the iovecs point
            // into all live in `st` (heap; moving the box does not move them), which the op owns
            // until its completion; `st` also keeps the fd open.
            let mut op = unsafe { Op::submit(entry, OpKind::Plain, Some(st)) }?;
            let cqe = op.next().await.expect("sendmsg completes once");
            let st = op
                .take_resources::<SendState>()
                .expect("send state returned");
            drop(op);
            *state = Some(st);
            let n = cqe.result()? as usize;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            with_core(|c| c.counters().add_sent(n as u64));
            state.as_mut().expect("just stored").advance(n);
        }
    }
}

impl StreamWriter for UringWriter {
    async fn send(&mut self, chunks: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        // SAFETY: an all-zero msghdr is valid (null name/control, no iovecs yet).
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut state = Some(Box::new(SendState {
            chunks,
            first: 0,
            iov: Vec::new(),
            msg,
            _fd: self.fd.clone(),
        }));
        let r = self.send_all(&mut state).await;
        let mut chunks = state.map(|s| s.chunks).unwrap_or_default();
        chunks.clear();
        (r, chunks)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        let entry = opcode::Shutdown::new(types::Fd(self.fd.as_raw_fd()), libc::SHUT_WR).build();
        // SAFETY: the entry only names the fd, which the op keeps open through its `Rc`.
        let mut op =
            unsafe { Op::submit(entry, OpKind::Plain, Some(Box::new(Rc::clone(&self.fd)))) }?;
        let cqe = op.next().await.expect("shutdown completes once");
        cqe.result().map(drop)
    }
}
