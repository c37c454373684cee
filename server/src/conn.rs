//! One server connection: read, decode, dispatch concurrently, reply in batches.
//!
//! The connection task reads chunks from the engine into a [`LinkBuf`], cuts every whole frame
//! out of it and starts one call per frame. A call is polled once right away and only becomes a
//! task of its own if it has to wait, so a handler that answers at once costs no spawn. Replies
//! are encoded in the request's framing and pushed to the connection's [`Outbox`], whose writer
//! sends everything queued in one vectored send: replies finished in the same loop turn leave
//! together, in completion order (peers match them by seq id).
//!
//! Backpressure: at most `max_in_flight` calls run per connection and at most
//! `max_queued_bytes` of replies wait for the socket; past either, the connection stops reading,
//! so a slow or greedy client holds back only itself.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::Bytes;
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{
    ApplicationException, CodecError, Decoded, DecoderConfig, ExceptionKind, Frame, FrameDecoder,
    FrameEncoder, FrameHead, Framing, LinkBuf, MessageType, PayloadProtocol,
};
use ringrpc_engine::local::Notify;
use ringrpc_engine::outbox::Outbox;
use ringrpc_engine::time::timeout_at;
use ringrpc_engine::{CoreId, Engine, Stream, StreamReader};
use ringrpc_governance::obs::CoreMetrics;
use ringrpc_governance::Service;

use crate::race::{race, Either};
use crate::server::ServerConfig;
use crate::{BizError, CallContext, HandlerError};

/// What one core of a server shares among its connections.
pub(crate) struct CoreServer<S> {
    pub(crate) pipeline: S,
    /// This core's call metrics, when on (connections are counted here).
    pub(crate) metrics: Option<Rc<CoreMetrics>>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) core: CoreId,
    pub(crate) shutting_down: Cell<bool>,
    pub(crate) shutdown: Notify,
    /// Connections open on every core of this server.
    pub(crate) open_conns: Arc<AtomicUsize>,
}

impl<S> CoreServer<S> {
    /// Marks every later reply with `crrst` and tells connections to stop reading.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.shutdown.notify();
    }
}

/// State of one connection shared by its reader and its calls.
struct Conn {
    outbox: Outbox,
    encoder: RefCell<FrameEncoder>,
    chunks: RefCell<Vec<Bytes>>,
    in_flight: Cell<usize>,
    /// Notified when a call finishes.
    progress: Notify,
    peer: SocketAddr,
}

/// Decrements the open-connection count (and the metrics' gauge) when the connection ends.
struct ConnSlot(Arc<AtomicUsize>, Option<Rc<CoreMetrics>>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.1 {
            m.connection_closed();
        }
    }
}

/// Serves one accepted connection until the peer leaves, the connection fails, or the server
/// shuts down. The caller has already counted it in `open_conns`.
pub(crate) async fn serve<E, S>(stream: E::Stream, peer: SocketAddr, core: Rc<CoreServer<S>>)
where
    E: Engine,
    S: Service<CallContext, Bytes, Response = Bytes, Error = HandlerError> + 'static,
{
    if let Some(m) = &core.metrics {
        m.connection_opened();
    }
    let _slot = ConnSlot(core.open_conns.clone(), core.metrics.clone());
    let config = core.config.clone();
    let (mut reader, writer) = stream.into_split();
    let conn = Rc::new(Conn {
        outbox: Outbox::spawn_with_timeout::<E, _>(writer, Some(config.write_timeout)),
        encoder: RefCell::new(FrameEncoder::new()),
        chunks: RefCell::new(Vec::new()),
        in_flight: Cell::new(0),
        progress: Notify::new(),
        peer,
    });
    let mut buf = LinkBuf::new();
    let mut decoder = FrameDecoder::new(DecoderConfig {
        max_frame_size: config.max_frame_size,
    });
    'read: loop {
        // One clock read per batch of frames: they all arrived with the same receive.
        let received = Instant::now();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Frame(frame)) => dispatch::<E, S>(&core, &conn, frame, received),
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "bad frame; closing connection");
                    conn.reply_decode_error(&buf, &e);
                    break 'read;
                }
            }
        }
        if core.shutting_down.get() {
            break;
        }
        while conn.in_flight.get() >= config.max_in_flight_per_conn {
            conn.progress.notified().await;
        }
        conn.outbox.wait_below(config.max_queued_bytes).await;
        if conn.outbox.is_closed() {
            break;
        }
        // A partly received frame must complete within the read timeout; an idle connection
        // (nothing buffered, nothing running) is closed after the idle timeout.
        let limit = if !buf.is_empty() {
            Some(config.read_timeout)
        } else if conn.in_flight.get() == 0 {
            Some(config.idle_timeout)
        } else {
            None
        };
        let received = match limit {
            Some(limit) => {
                let recv = timeout_at::<E, _>(Instant::now() + limit, reader.recv());
                match race(recv, core.shutdown.notified()).await {
                    Either::Left(Ok(r)) => r,
                    Either::Left(Err(_)) => {
                        tracing::debug!(%peer, "read or idle timeout; closing connection");
                        break;
                    }
                    Either::Right(()) => break,
                }
            }
            None => match race(reader.recv(), core.shutdown.notified()).await {
                Either::Left(r) => r,
                Either::Right(()) => break,
            },
        };
        match received {
            Ok(Some(chunk)) => buf.push(chunk),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "receive failed");
                break;
            }
        }
    }
    // Every request already decoded gets its reply before the connection closes.
    while conn.in_flight.get() > 0 {
        conn.progress.notified().await;
    }
    conn.outbox.close().await;
}

/// Starts the call carried by `frame`.
fn dispatch<E, S>(core: &Rc<CoreServer<S>>, conn: &Rc<Conn>, frame: Frame, received: Instant)
where
    E: Engine,
    S: Service<CallContext, Bytes, Response = Bytes, Error = HandlerError> + 'static,
{
    let oneway = match frame.head.message_type {
        MessageType::Call => false,
        MessageType::Oneway => true,
        // A reply or exception sent to a server answers nothing here.
        MessageType::Reply | MessageType::Exception => return,
    };
    conn.in_flight.set(conn.in_flight.get() + 1);
    let core = core.clone();
    let conn = conn.clone();
    let call = async move {
        let mut cx = CallContext::new(frame.head, conn.peer, core.core, received);
        let result = core.pipeline.call(&mut cx, frame.body).await;
        if !oneway {
            conn.reply(&cx, result, core.shutting_down.get());
        }
        conn.in_flight.set(conn.in_flight.get() - 1);
        conn.progress.notify();
    };
    let mut call = Box::pin(call);
    // Poll once in place: most handlers answer at once and need no task. One that waits is
    // spawned; the spawned task is polled again promptly, which registers its real waker.
    if call
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
    {
        E::spawn(call);
    }
}

impl Conn {
    /// Encodes the reply to `cx`'s request and queues it.
    fn reply(&self, cx: &CallContext, result: Result<Bytes, HandlerError>, crrst: bool) {
        let request = &cx.head;
        let mut encoder = self.encoder.borrow_mut();
        let mut chunks = self.chunks.borrow_mut();
        let encoded = match result {
            Ok(body) => {
                let head = reply_head(cx, MessageType::Reply, crrst);
                encoder.encode(&head, body, &mut chunks)
            }
            Err(HandlerError::Biz(biz)) if request.framing.has_ttheader() => {
                let mut head = reply_head(cx, MessageType::Reply, crrst);
                set_biz(&mut head, &biz);
                // An empty result: a Thrift struct with only STOP, or an empty protobuf message.
                let body: &[u8] = match request.protocol {
                    PayloadProtocol::ThriftBinary => &[0],
                    PayloadProtocol::KitexProtobuf => &[],
                };
                encoder.encode(&head, body, &mut chunks)
            }
            Err(HandlerError::Biz(biz)) => {
                let head = reply_head(cx, MessageType::Exception, crrst);
                let e = ApplicationException::new(ExceptionKind::InternalError, biz.to_string());
                encoder.encode_exception(&head, &e, &mut chunks)
            }
            Err(HandlerError::Exception(e)) => {
                // Kitex and Volo mark routing failures with crrst (see the golden vectors).
                let routing = matches!(
                    e.kind,
                    ExceptionKind::UnknownMethod | ExceptionKind::UnknownService
                );
                let head = reply_head(cx, MessageType::Exception, crrst || routing);
                encoder.encode_exception(&head, &e, &mut chunks)
            }
        };
        if let Err(e) = encoded {
            // The reply itself could not be framed (e.g. metadata over the header limit):
            // answer with an exception that says so instead of leaving the caller waiting.
            let head = reply_head(cx, MessageType::Exception, crrst);
            let e = ApplicationException::new(
                ExceptionKind::InternalError,
                format!("encode reply: {e}"),
            );
            if let Err(e) = encoder.encode_exception(&head, &e, &mut chunks) {
                tracing::error!(error = %e, "cannot encode an exception reply");
            }
        }
        self.outbox.push(chunks.drain(..));
    }

    /// Answers a frame that failed to decode with a `PROTOCOL_ERROR` exception, framed as the
    /// start of the bad input suggests (Volo answers garbage the same way: seq 0, no method).
    fn reply_decode_error(&self, buf: &LinkBuf, error: &CodecError) {
        let framing = guess_framing(buf);
        let mut head = FrameHead::new(
            framing,
            PayloadProtocol::ThriftBinary,
            MessageType::Exception,
            Bytes::new(),
            0,
        );
        if framing.has_ttheader() {
            head.header_mut()
                .set_str_kv(skeys::CONN_RESET, Bytes::from_static(b"1"));
        }
        let e = ApplicationException::new(ExceptionKind::ProtocolError, error.to_string());
        let mut chunks = self.chunks.borrow_mut();
        if self
            .encoder
            .borrow_mut()
            .encode_exception(&head, &e, &mut chunks)
            .is_ok()
        {
            self.outbox.push(chunks.drain(..));
        }
    }
}

/// The head of the reply to `cx`'s request, with backward metainfo and `crrst` when asked.
fn reply_head(cx: &CallContext, message_type: MessageType, crrst: bool) -> FrameHead {
    let mut head = cx.head.reply_to(message_type);
    if let Some(h) = head.header.as_mut() {
        cx.backward().write_reply(h);
        if crrst {
            h.set_str_kv(skeys::CONN_RESET, Bytes::from_static(b"1"));
        }
    }
    head
}

fn set_biz(head: &mut FrameHead, biz: &BizError) {
    let h = head.header_mut();
    h.set_str_kv(skeys::BIZ_STATUS, biz.status.to_string());
    h.set_str_kv(skeys::BIZ_MESSAGE, biz.message.clone());
    if !biz.extra.is_empty() {
        h.set_str_kv(skeys::BIZ_EXTRA, json_object(&biz.extra));
    }
}

/// A JSON object of strings (Kitex parses `biz-extra` as `map[string]string`).
pub(crate) fn json_object(pairs: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, k);
        out.push(':');
        json_string(&mut out, v);
    }
    out.push('}');
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Which framing the (undecodable) input starts with, for the error reply.
fn guess_framing(buf: &LinkBuf) -> Framing {
    let second = buf.peek_u32(4).unwrap_or(0);
    if second >> 16 == 0x1000 {
        Framing::TtHeader
    } else if second >> 16 == 0x8001 {
        Framing::Framed
    } else {
        Framing::Buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    #[test]
    fn biz_extra_is_escaped_json() {
        let s = json_object(&[("a\"b".into(), "x\ny".into()), ("k".into(), "v".into())]);
        assert_eq!(s, r#"{"a\"b":"x\ny","k":"v"}"#);
    }

    #[test]
    fn poll_state_is_ready_for_immediate_handlers() {
        let mut f = Box::pin(async { 1 });
        assert!(matches!(
            f.as_mut().poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(1)
        ));
    }
}
