//! A connection's outgoing queue and the task that drains it: replies batched per loop turn.
//!
//! Producers (request handlers, callers) append encoded chunks with [`Outbox::push`]; one writer
//! task per connection takes *everything* queued each time it wakes and hands it to the engine
//! as one vectored send. Replies that complete in the same loop turn therefore leave together,
//! and a reply queued while a send is in flight joins the next batch. The outbox knows nothing of
//! frames; callers push whole frames so the stream stays well formed.
//!
//! How much leaves per send is the engine's choice ([`Engine::batches_sends`]): the io_uring
//! engine takes everything queued at once; the gonet-style baseline writes each pushed message
//! with its own send, as a Go server writing every reply to its `net.Conn` does.
//!
//! The write timeout is one [`LazyDeadline`] per writer, not a timer per send: each send that
//! has to wait moves the deadline to its start plus the timeout, and the one timer is re-armed
//! only when it fires while the deadline has moved on.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::deadline::LazyDeadline;
use crate::local::Notify;
use crate::{Engine, StreamWriter};

#[derive(Debug, Default)]
struct Shared {
    queue: RefCell<Vec<Bytes>>,
    /// Chunks per pushed message, in order; kept only when sends are not batched.
    message_chunks: RefCell<Vec<usize>>,
    per_message: bool,
    queued_bytes: Cell<usize>,
    /// Wakes the writer: data queued or close requested.
    wake_writer: Notify,
    /// Wakes producers waiting for the queue to drain (or for the writer to fail or finish).
    drained: Notify,
    closing: Cell<bool>,
    /// Set when the writer stopped (error or closed); later pushes are dropped.
    done: Cell<bool>,
    error: RefCell<Option<io::ErrorKind>>,
}

/// The sending side of one connection; cheap to clone (an `Rc`).
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Rc<Shared>,
}

impl Outbox {
    /// Spawns the writer task for `writer` on the current core and returns the queue feeding it.
    pub fn spawn<E: Engine, W: StreamWriter>(writer: W) -> Self {
        Self::spawn_with_timeout::<E, W>(writer, None)
    }

    /// Like [`Outbox::spawn`], and a send that has not completed within `write_timeout` (the
    /// peer stopped reading) stops the writer with [`io::ErrorKind::TimedOut`]: the connection's
    /// owner sees [`Outbox::is_closed`] and closes it, so a client that never reads cannot hold
    /// a connection and its queued replies forever.
    pub fn spawn_with_timeout<E: Engine, W: StreamWriter>(
        writer: W,
        write_timeout: Option<Duration>,
    ) -> Self {
        let shared = Rc::new(Shared {
            per_message: !E::batches_sends(),
            ..Shared::default()
        });
        E::spawn(run_writer::<E, W>(writer, shared.clone(), write_timeout));
        Self { shared }
    }

    /// Queues whole frames' chunks. Returns `false` (dropping them) if the writer has stopped.
    pub fn push(&self, chunks: impl IntoIterator<Item = Bytes>) -> bool {
        if self.shared.done.get() || self.shared.closing.get() {
            return false;
        }
        let mut q = self.shared.queue.borrow_mut();
        let was_empty = q.is_empty();
        let first = q.len();
        let mut n = 0;
        for c in chunks {
            n += c.len();
            q.push(c);
        }
        let pushed = q.len() - first;
        drop(q);
        if self.shared.per_message && pushed > 0 {
            self.shared.message_chunks.borrow_mut().push(pushed);
        }
        self.shared
            .queued_bytes
            .set(self.shared.queued_bytes.get() + n);
        if was_empty {
            self.shared.wake_writer.notify();
        }
        true
    }

    /// Bytes queued and not yet handed to the engine.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.get()
    }

    /// Whether the writer stopped (after an error or a close).
    pub fn is_closed(&self) -> bool {
        self.shared.done.get()
    }

    /// The error that stopped the writer, if one did.
    pub fn error(&self) -> Option<io::ErrorKind> {
        *self.shared.error.borrow()
    }

    /// Waits until fewer than `limit` bytes are queued, or the writer stopped.
    pub async fn wait_below(&self, limit: usize) {
        while self.shared.queued_bytes.get() >= limit && !self.shared.done.get() {
            self.shared.drained.notified().await;
        }
    }

    /// Asks the writer to send what is queued, then shut down the sending side; returns at once.
    /// Later pushes are refused.
    pub fn begin_close(&self) {
        self.shared.closing.set(true);
        self.shared.wake_writer.notify();
    }

    /// Sends what is queued, then shuts down the sending side; resolves when the writer is done.
    pub async fn close(&self) {
        self.begin_close();
        while !self.shared.done.get() {
            self.shared.drained.notified().await;
        }
    }
}

async fn run_writer<E: Engine, W: StreamWriter>(
    mut writer: W,
    shared: Rc<Shared>,
    write_timeout: Option<Duration>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut lens: Vec<usize> = Vec::new();
    let mut one: Vec<Bytes> = Vec::new();
    let mut deadline = WriteDeadline::<E> {
        timeout: write_timeout,
        timer: LazyDeadline::new(),
    };
    'run: loop {
        if shared.queue.borrow().is_empty() {
            if shared.closing.get() {
                let _ = writer.shutdown().await;
                break;
            }
            shared.wake_writer.notified().await;
            continue;
        }
        std::mem::swap(&mut *shared.queue.borrow_mut(), &mut batch);
        if !shared.per_message {
            let (result, emptied) = deadline.send(&mut writer, batch).await;
            batch = emptied;
            if !sent(&shared, result) {
                break;
            }
            continue;
        }
        // One send per message: the gonet-style baseline's plain write per reply.
        std::mem::swap(&mut *shared.message_chunks.borrow_mut(), &mut lens);
        let mut chunks = batch.drain(..);
        for &k in &lens {
            one.extend(chunks.by_ref().take(k));
            let (result, emptied) = deadline.send(&mut writer, one).await;
            one = emptied;
            if !sent(&shared, result) {
                break 'run;
            }
        }
        drop(chunks);
        lens.clear();
    }
    shared.done.set(true);
    shared.queue.borrow_mut().clear();
    shared.message_chunks.borrow_mut().clear();
    shared.queued_bytes.set(0);
    shared.drained.notify();
}

/// The writer's one write-timeout timer.
struct WriteDeadline<E: Engine> {
    timeout: Option<Duration>,
    timer: LazyDeadline<E>,
}

impl<E: Engine> WriteDeadline<E> {
    /// Sends `chunks`, giving up when the send has not completed `timeout` after it began to
    /// wait; returns the result and the emptied vector. A send that completes on its first
    /// poll (the socket had room) touches neither clock nor timer.
    async fn send<W: StreamWriter>(
        &mut self,
        writer: &mut W,
        chunks: Vec<Bytes>,
    ) -> (io::Result<usize>, Vec<Bytes>) {
        let n: usize = chunks.iter().map(Bytes::len).sum();
        let mut send = pin!(writer.send(chunks));
        let mut due: Option<Option<Instant>> = None;
        let (result, mut emptied) = poll_fn(|cx| {
            if let Poll::Ready(sent) = send.as_mut().poll(cx) {
                return Poll::Ready(sent);
            }
            let due = *due.get_or_insert_with(|| {
                self.timeout
                    .and_then(|t| crate::runtime::turn_now().checked_add(t))
            });
            // On expiry the send future is dropped (cancel-safe: the engine keeps the buffers
            // until the kernel is done with them) and the chunks with it.
            self.timer
                .poll_expired(cx, || due)
                .map(|()| (Err(io::ErrorKind::TimedOut.into()), Vec::new()))
        })
        .await;
        emptied.clear();
        (result.map(|()| n), emptied)
    }
}

/// Accounts for a finished send; `false` (with the error recorded) if the writer must stop.
fn sent(shared: &Shared, result: io::Result<usize>) -> bool {
    match result {
        Ok(n) => {
            shared
                .queued_bytes
                .set(shared.queued_bytes.get().saturating_sub(n));
            shared.drained.notify();
            true
        }
        Err(e) => {
            *shared.error.borrow_mut() = Some(e.kind());
            false
        }
    }
}
