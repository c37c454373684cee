//! Pooled connections: one call per connection at a time, like Kitex's long connections.
//!
//! A call takes an idle connection of its address (or connects), writes the request, reads
//! until the reply is whole, and puts the connection back unless the reply carried `crrst`, the
//! call failed, or it was oneway (Kitex discards those too). If the call is dropped mid-way (its
//! deadline passed), the connection is dropped with it: a late reply can never be read by the
//! next call. An idle connection the server closed is noticed on reuse (end of stream right
//! after the request went out) and the call is retried once on a fresh one, since the server
//! never saw the request. An end of stream that comes later may follow a request the server
//! did receive (it died mid-call): that call fails with `Closed` and is never sent again.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_codec::{Decoded, DecoderConfig, Frame, FrameDecoder, LinkBuf, MessageType};
use ringrpc_engine::time::timeout;
use ringrpc_engine::{Engine, Stream, StreamReader, StreamWriter};

use super::{has_conn_reset, ConnCount, CorePool, TransportReply};
use crate::config::ConnMode;
use crate::{ClientContext, ClientError};

/// A connection not in use.
struct PooledConn<E: Engine> {
    reader: <E::Stream as Stream>::Reader,
    writer: <E::Stream as Stream>::Writer,
    buf: LinkBuf,
    decoder: FrameDecoder,
    idle_since: Instant,
    /// Counts the connection in the client's metrics while it is open.
    _counted: ConnCount,
}

/// The idle connections of one address on one core (most recently used last).
pub(crate) struct IdleConns<E: Engine> {
    addr: SocketAddr,
    idle: RefCell<Vec<PooledConn<E>>>,
}

impl<E: Engine> IdleConns<E> {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: RefCell::new(Vec::new()),
        }
    }

    /// Drops the idle connections for which `which(idle_since)` holds.
    pub(super) fn drop_idle(&self, which: impl Fn(Instant) -> bool) {
        let dropped: Vec<_> = {
            let mut list = self.idle.borrow_mut();
            let (drop, keep) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|c| which(c.idle_since));
            *list = keep;
            drop
        };
        drop(dropped);
    }
}

/// An end of stream this soon after the request was sent on a reused connection means the
/// server had closed it while idle (its FIN was already queued), not that it died mid-call.
const STALE_WINDOW: Duration = Duration::from_millis(20);

/// How one attempt ended.
enum Attempt {
    Done(Result<TransportReply, ClientError>),
    /// A reused connection turned out closed before any reply byte: safe to retry.
    StaleConn,
}

pub(super) async fn call<E: Engine>(
    pool: &CorePool<E>,
    idle: &IdleConns<E>,
    cx: &mut ClientContext,
    body: Bytes,
) -> Result<TransportReply, ClientError> {
    let (max_idle, idle_timeout) = match pool.config.conn_mode {
        ConnMode::Pooled {
            max_idle_per_addr,
            idle_timeout,
        } => (max_idle_per_addr, idle_timeout),
        ConnMode::Multiplexed { .. } => (0, Duration::ZERO),
    };
    let mut retried = false;
    loop {
        let reused = {
            let mut list = idle.idle.borrow_mut();
            // Drop connections idle for too long; take the most recently used.
            list.retain(|c| c.idle_since.elapsed() < idle_timeout);
            list.pop()
        };
        let was_reused = reused.is_some();
        let conn = match reused {
            Some(c) => c,
            None => {
                let (stream, counted) = match pool.connect(idle.addr).await {
                    Ok(s) => s,
                    // The retry of a stale connection: the call's failure is the closed one.
                    Err(_) if retried => return Err(ClientError::Closed),
                    Err(e) => return Err(e),
                };
                let (reader, writer) = stream.into_split();
                PooledConn {
                    reader,
                    writer,
                    buf: LinkBuf::new(),
                    decoder: FrameDecoder::new(DecoderConfig {
                        max_frame_size: pool.config.max_frame_size,
                    }),
                    idle_since: Instant::now(),
                    _counted: counted,
                }
            }
        };
        match attempt(pool, idle, conn, cx, body.clone(), max_idle).await {
            Attempt::Done(r) => return r,
            Attempt::StaleConn if was_reused && !retried => retried = true,
            Attempt::StaleConn => return Err(ClientError::Closed),
        }
    }
}

async fn attempt<E: Engine>(
    pool: &CorePool<E>,
    idle: &IdleConns<E>,
    mut conn: PooledConn<E>,
    cx: &ClientContext,
    body: Bytes,
    max_idle: usize,
) -> Attempt {
    let seq = pool.next_seq();
    let chunks = match pool.encode(cx, seq, false, body) {
        Ok(c) => c,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let io_timeout = pool.config.read_write_timeout;
    let sent = match io_timeout {
        None => conn.writer.send(chunks).await.0,
        Some(t) => match timeout::<E, _>(t, conn.writer.send(chunks)).await {
            Ok((sent, _)) => sent,
            // The connection is dropped with this attempt: nothing else reads its bytes.
            Err(_) => return Attempt::Done(Err(ClientError::Timeout(t))),
        },
    };
    if sent.is_err() {
        return Attempt::StaleConn;
    }
    let sent_at = Instant::now();
    if cx.oneway {
        return Attempt::Done(Ok(None));
    }
    let mut received_any = false;
    let frame: Frame = loop {
        match conn.decoder.decode(&mut conn.buf) {
            Ok(Decoded::Frame(f)) => break f,
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => return Attempt::Done(Err(ClientError::Codec(e))),
        }
        let received = match io_timeout {
            None => conn.reader.recv().await,
            Some(t) => match timeout::<E, _>(t, conn.reader.recv()).await {
                Ok(r) => r,
                Err(_) => return Attempt::Done(Err(ClientError::Timeout(t))),
            },
        };
        match received {
            Ok(Some(chunk)) => {
                received_any = true;
                conn.buf.push(chunk);
            }
            Ok(None) | Err(_) if !received_any && sent_at.elapsed() < STALE_WINDOW => {
                return Attempt::StaleConn
            }
            Ok(None) | Err(_) => return Attempt::Done(Err(ClientError::Closed)),
        }
    };
    // Proxies may build exceptions with seq 0 (Kitex does not check them either).
    if frame.head.seq_id != seq && frame.head.message_type != MessageType::Exception {
        return Attempt::Done(Err(ClientError::BadSequence {
            sent: seq,
            got: frame.head.seq_id,
        }));
    }
    // A stopping runtime keeps no idle connection (see `spawn_keeper`).
    if !has_conn_reset(&frame) && conn.buf.is_empty() && !super::runtime_stopping() {
        let mut list = idle.idle.borrow_mut();
        if list.len() < max_idle {
            conn.idle_since = Instant::now();
            list.push(conn);
        }
    }
    Attempt::Done(Ok(Some(frame)))
}
