//! A connection's outgoing queue and the task that drains it: replies batched per loop turn.
//!
//! Producers (request handlers, callers) append encoded chunks with [`Outbox::push`]; one writer
//! task per connection takes *everything* queued each time it wakes and hands it to the engine
//! as one vectored send. Replies that complete in the same loop turn therefore leave together,
//! and a reply queued while a send is in flight joins the next batch. The outbox knows nothing of
//! frames; callers push whole frames so the stream stays well formed.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::local::Notify;
use crate::time::timeout;
use crate::{Engine, StreamWriter};

#[derive(Debug, Default)]
struct Shared {
    queue: RefCell<Vec<Bytes>>,
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
        let shared = Rc::new(Shared::default());
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
        let mut n = 0;
        for c in chunks {
            n += c.len();
            q.push(c);
        }
        drop(q);
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
    loop {
        if shared.queue.borrow().is_empty() {
            if shared.closing.get() {
                let _ = writer.shutdown().await;
                break;
            }
            shared.wake_writer.notified().await;
            continue;
        }
        std::mem::swap(&mut *shared.queue.borrow_mut(), &mut batch);
        let sent: usize = batch.iter().map(Bytes::len).sum();
        let (result, emptied) = match write_timeout {
            None => writer.send(batch).await,
            // On expiry the send future is dropped (cancel-safe: the engine keeps the buffers
            // until the kernel is done with them) and the batch with it.
            Some(t) => match timeout::<E, _>(t, writer.send(batch)).await {
                Ok(sent) => sent,
                Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
            },
        };
        batch = emptied;
        batch.clear();
        shared
            .queued_bytes
            .set(shared.queued_bytes.get().saturating_sub(sent));
        shared.drained.notify();
        if let Err(e) = result {
            *shared.error.borrow_mut() = Some(e.kind());
            break;
        }
    }
    shared.done.set(true);
    shared.queue.borrow_mut().clear();
    shared.queued_bytes.set(0);
    shared.drained.notify();
}
