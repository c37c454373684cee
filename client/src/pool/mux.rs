//! Multiplexed connections: many calls at once on each connection, replies matched by seq id.
//!
//! Each connection has a writer (an [`Outbox`], so requests issued in the same loop turn leave
//! in one send) and a reader task that decodes replies and completes the pending call with the
//! same seq id. A failing connection fails only its own pending calls; the slot reconnects on
//! the next call. A reply carrying `crrst` (or Kitex's seq-0 control frame) retires the
//! connection: no new calls go to it, the calls already on it still get their replies. When
//! the pool goes (the client's last handle was dropped), each connection closes as soon as no
//! call waits on it: its reader stops, its writer sends what is queued and shuts down.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use ringrpc_codec::{Decoded, DecoderConfig, Frame, FrameDecoder, LinkBuf};
use ringrpc_engine::local::{oneshot, Notify};
use ringrpc_engine::outbox::Outbox;
use ringrpc_engine::time::timeout;
use ringrpc_engine::{Engine, Stream, StreamReader};

use super::{has_conn_reset, ConnCount, CorePool, TransportReply};
use crate::{ClientContext, ClientError};

type Pending = oneshot::Sender<Result<Frame, ClientError>>;

/// One multiplexed connection.
pub(crate) struct MuxConn {
    outbox: Outbox,
    pending: RefCell<FxHashMap<i32, Pending>>,
    /// The reader stopped: the connection is dead.
    closed: Cell<bool>,
    /// The server asked us to stop using it (`crrst`).
    retired: Cell<bool>,
    /// Its pool is gone: close once nothing is pending.
    closing: Cell<bool>,
    /// Tells the reader to stop (set with `closing` once nothing is pending).
    stop_reader: Notify,
    /// Counts the connection in the client's metrics while it is open.
    _counted: ConnCount,
}

impl MuxConn {
    fn usable(&self) -> bool {
        !self.closed.get() && !self.retired.get() && !self.outbox.is_closed()
    }

    fn deliver(&self, frame: Frame) {
        if has_conn_reset(&frame) {
            self.retired.set(true);
        }
        if frame.head.seq_id == 0 {
            // Kitex's control frame: only the crrst above matters.
            return;
        }
        let waiter = self.pending.borrow_mut().remove(&frame.head.seq_id);
        if let Some(tx) = waiter {
            let _ = tx.send(Ok(frame));
        }
        // A reply nobody waits for (its call timed out) is dropped.
        if self.retired.get() && self.pending.borrow().is_empty() {
            self.outbox.begin_close();
        }
        self.close_if_idle();
    }

    /// Closes the connection once no call waits on it (its pool is gone).
    fn close(&self) {
        self.closing.set(true);
        self.retired.set(true);
        self.close_if_idle();
    }

    /// If closing and nothing is pending: stops the reader and closes the writer.
    fn close_if_idle(&self) {
        if self.closing.get() && self.pending.borrow().is_empty() {
            self.outbox.begin_close();
            self.stop_reader.notify();
        }
    }

    fn fail_all(&self, error: impl Fn() -> ClientError) {
        self.closed.set(true);
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (_, tx) in pending {
            let _ = tx.send(Err(error()));
        }
    }
}

/// Removes a call's pending entry if the call is dropped (timed out) before its reply.
struct PendingGuard<'a> {
    conn: &'a MuxConn,
    seq: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.pending.borrow_mut().remove(&self.seq);
        self.conn.close_if_idle();
    }
}

enum Slot {
    Empty,
    Connecting(Rc<Notify>),
    Ready(Rc<MuxConn>),
}

/// The connections of one address on one core.
pub(crate) struct MuxSlots<E: Engine> {
    addr: SocketAddr,
    slots: Vec<RefCell<Slot>>,
    next: Cell<usize>,
    _engine: std::marker::PhantomData<E>,
}

impl<E: Engine> MuxSlots<E> {
    pub(crate) fn new(addr: SocketAddr, n: usize) -> Self {
        Self {
            addr,
            slots: (0..n).map(|_| RefCell::new(Slot::Empty)).collect(),
            next: Cell::new(0),
            _engine: std::marker::PhantomData,
        }
    }

    /// A usable connection, round-robin over the slots; connects a slot that has none.
    async fn conn(&self, pool: &CorePool<E>) -> Result<Rc<MuxConn>, ClientError> {
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        let slot = &self.slots[i % self.slots.len()];
        loop {
            let waiting = match &*slot.borrow() {
                Slot::Ready(c) if c.usable() => return Ok(c.clone()),
                Slot::Connecting(n) => Some(n.clone()),
                _ => None,
            };
            match waiting {
                Some(n) => n.notified().await,
                None => break,
            }
        }
        let notify = Rc::new(Notify::new());
        *slot.borrow_mut() = Slot::Connecting(notify.clone());
        // Boxed: connecting is rare, and its future would otherwise sit in every call's.
        let result = Box::pin(pool.connect(self.addr)).await;
        let result = result.map(|(stream, counted)| {
            let (reader, writer) = stream.into_split();
            let conn = Rc::new(MuxConn {
                _counted: counted,
                outbox: Outbox::spawn_with_timeout::<E, _>(writer, pool.config.read_write_timeout),
                pending: RefCell::new(FxHashMap::default()),
                closed: Cell::new(false),
                retired: Cell::new(false),
                closing: Cell::new(false),
                stop_reader: Notify::new(),
            });
            E::spawn(read_replies::<E, _>(
                reader,
                conn.clone(),
                pool.config.max_frame_size,
                pool.config.read_write_timeout,
            ));
            conn
        });
        *slot.borrow_mut() = match &result {
            Ok(c) => Slot::Ready(c.clone()),
            Err(_) => Slot::Empty,
        };
        notify.notify();
        result
    }

    /// Closes every connection once the calls on it are done (the pool is going).
    pub(crate) fn close(&self) {
        for slot in &self.slots {
            if let Slot::Ready(c) = &*slot.borrow() {
                c.close();
            }
        }
    }
}

/// Sends one call on a multiplexed connection and waits for its reply.
pub(super) async fn call<E: Engine>(
    pool: &CorePool<E>,
    slots: &MuxSlots<E>,
    cx: &mut ClientContext,
    body: Bytes,
) -> Result<TransportReply, ClientError> {
    let conn = slots.conn(pool).await?;
    let seq = pool.next_seq();
    let chunks = pool.encode(cx, seq, true, body)?;
    if cx.oneway {
        return if conn.outbox.push(chunks) {
            Ok(None)
        } else {
            Err(ClientError::Closed)
        };
    }
    let (tx, rx) = oneshot::channel();
    conn.pending.borrow_mut().insert(seq, tx);
    let _guard = PendingGuard { conn: &conn, seq };
    if !conn.outbox.push(chunks) {
        return Err(ClientError::Closed);
    }
    match rx.await {
        Some(r) => r.map(Some),
        None => Err(ClientError::Closed),
    }
}

/// `f`'s output, or `None` if `stop` finishes first (`f` is then dropped).
async fn unless<F: Future>(f: F, stop: impl Future<Output = ()>) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut stop = pin!(stop);
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        stop.as_mut().poll(cx).map(|()| None)
    })
    .await
}

async fn read_replies<E: Engine, R: StreamReader>(
    mut reader: R,
    conn: Rc<MuxConn>,
    max_frame_size: usize,
    read_timeout: Option<Duration>,
) {
    let mut buf = LinkBuf::new();
    let mut decoder = FrameDecoder::new(DecoderConfig { max_frame_size });
    let failure = 'read: loop {
        // With calls waiting, a silent connection fails after the read timeout; an idle one
        // (nothing pending) may stay silent. A closing connection stops reading once nothing
        // is pending (`stop_reader`).
        let recv = async {
            match read_timeout {
                Some(t) if !conn.pending.borrow().is_empty() => {
                    timeout::<E, _>(t, reader.recv()).await.map_err(|_| t)
                }
                _ => Ok(reader.recv().await),
            }
        };
        let received = match unless(recv, conn.stop_reader.notified()).await {
            Some(Ok(r)) => r,
            Some(Err(t)) => break ClientError::Timeout(t),
            None => break ClientError::Closed,
        };
        match received {
            Ok(Some(chunk)) => buf.push(chunk),
            Ok(None) | Err(_) => break ClientError::Closed,
        }
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Frame(f)) => conn.deliver(f),
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => break 'read ClientError::Codec(e),
            }
        }
        if conn.retired.get() && conn.pending.borrow().is_empty() && conn.outbox.is_closed() {
            break ClientError::Closed;
        }
    };
    tracing::debug!(error = %failure, "multiplexed connection ended");
    let (codec, timed_out) = match failure {
        ClientError::Codec(e) => (Some(e), None),
        ClientError::Timeout(t) => (None, Some(t)),
        _ => (None, None),
    };
    conn.fail_all(|| match (&codec, timed_out) {
        (Some(e), _) => ClientError::Codec(e.clone()),
        (None, Some(t)) => ClientError::Timeout(t),
        (None, None) => ClientError::Closed,
    });
    conn.outbox.begin_close();
}
