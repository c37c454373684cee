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
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{
    ApplicationException, CodecError, Decoded, DecoderConfig, ExceptionKind, Frame, FrameDecoder,
    FrameEncoder, FrameHead, Framing, LinkBuf, MessageType, PayloadProtocol,
};
use ringrpc_engine::deadline::LazyDeadline;
use ringrpc_engine::local::Notify;
use ringrpc_engine::outbox::Outbox;
use ringrpc_engine::{turn_now, CoreId, Engine, Stream, StreamReader};
use ringrpc_governance::obs::CoreMetrics;
use ringrpc_governance::Service;

use crate::server::ServerConfig;
use crate::stats::ServerStats;
use crate::unwind::{panic_message, CatchUnwind};
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
    /// The server's counters (open connections, panics, accept errors), shared by its cores.
    pub(crate) stats: ServerStats,
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
    /// The last receive, or the end of the last call: the idle timeout counts from here.
    last_activity: Cell<Instant>,
    peer: SocketAddr,
}

/// Decrements the open-connection count (and the metrics' gauge) when the connection ends.
struct ConnSlot(ServerStats, Option<Rc<CoreMetrics>>);

impl ConnSlot {
    /// Counts the connection in the metrics' gauge; `stats` has counted it already (at accept).
    fn open<S>(core: &CoreServer<S>) -> Self {
        if let Some(m) = &core.metrics {
            m.connection_opened();
        }
        Self(core.stats.clone(), core.metrics.clone())
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connection_closed();
        if let Some(m) = &self.1 {
            m.connection_closed();
        }
    }
}

/// What is received and not yet cut into frames, and since when a frame is in progress.
struct Input {
    buf: LinkBuf,
    decoder: FrameDecoder,
    /// When the first byte of the frame now partly in `buf` arrived (`None`: no frame in
    /// progress). The frame must be whole within the read timeout of it.
    frame_started: Option<Instant>,
    /// When the last chunk arrived.
    received: Instant,
}

impl Input {
    fn new(config: &ServerConfig, now: Instant) -> Self {
        Self {
            buf: LinkBuf::new(),
            decoder: FrameDecoder::new(DecoderConfig {
                max_frame_size: config.max_frame_size,
            }),
            frame_started: None,
            received: now,
        }
    }

    fn push(&mut self, chunk: Bytes, received: Instant) {
        if self.buf.is_empty() {
            self.frame_started = Some(received);
        }
        self.buf.push(chunk);
        self.received = received;
    }

    /// The read deadline of the frame in progress, if one is.
    fn frame_deadline(&self, read_timeout: Duration) -> Option<Instant> {
        self.frame_started.and_then(|t| t.checked_add(read_timeout))
    }

    /// Moves the frame in progress's start later by a pause in reading that was the server's
    /// doing (backpressure), so the peer is not timed out for it.
    fn excuse_pause(&mut self, paused: Duration) {
        if let Some(t) = &mut self.frame_started {
            *t += paused;
        }
    }
}

/// Why a connection stops reading.
#[derive(Debug)]
enum Stop {
    /// The peer sent end of stream.
    PeerClosed,
    /// A frame failed to decode (answered with a `PROTOCOL_ERROR` exception).
    BadFrame,
    /// The server is shutting down.
    Shutdown,
    /// The outbox's writer stopped (send failed or timed out).
    WriterStopped,
    /// A frame did not complete within the read timeout of its first byte.
    ReadTimeout,
    /// No frame in progress and no call running for the idle timeout.
    IdleTimeout,
    /// The receive failed.
    RecvFailed(std::io::Error),
}

/// The connection's two read-side timers, each one per connection (see [`LazyDeadline`]).
struct ReadTimers<E: Engine> {
    read: LazyDeadline<E>,
    idle: LazyDeadline<E>,
}

/// Serves one accepted connection until the peer leaves, the connection fails, or the server
/// shuts down. The caller has already counted it in `core.stats`.
pub(crate) async fn serve<E, S>(stream: E::Stream, peer: SocketAddr, core: Rc<CoreServer<S>>)
where
    E: Engine,
    S: Service<CallContext, Bytes, Response = Bytes, Error = HandlerError> + 'static,
{
    let _slot = ConnSlot::open(&core);
    let config = core.config.clone();
    let (mut reader, writer) = stream.into_split();
    let now = Instant::now();
    let conn = Rc::new(Conn {
        outbox: Outbox::spawn_with_timeout::<E, _>(writer, Some(config.write_timeout)),
        encoder: RefCell::new(FrameEncoder::new()),
        chunks: RefCell::new(Vec::new()),
        in_flight: Cell::new(0),
        progress: Notify::new(),
        last_activity: Cell::new(now),
        peer,
    });
    let mut input = Input::new(&config, now);
    let mut timers = ReadTimers {
        read: LazyDeadline::<E>::new(),
        idle: LazyDeadline::<E>::new(),
    };
    let stop = loop {
        if let Err(stop) = dispatch_frames::<E, S>(&core, &conn, &mut input) {
            break stop;
        }
        if core.shutting_down.get() {
            break Stop::Shutdown;
        }
        wait_for_capacity(&conn, &config, &mut input).await;
        if conn.outbox.is_closed() {
            break Stop::WriterStopped;
        }
        match next_chunk(&mut reader, &core, &conn, &input, &mut timers).await {
            Ok(chunk) => {
                let now = Instant::now();
                conn.last_activity.set(now);
                input.push(chunk, now);
            }
            Err(stop) => break stop,
        }
    };
    match stop {
        Stop::PeerClosed | Stop::Shutdown => {}
        Stop::RecvFailed(e) => tracing::debug!(%peer, error = %e, "receive failed; closing"),
        other => tracing::debug!(%peer, reason = ?other, "closing connection"),
    }
    finish(&conn).await;
}

/// Cuts every whole frame out of `input` and starts its call; `Err` after a bad frame (already
/// answered).
fn dispatch_frames<E, S>(
    core: &Rc<CoreServer<S>>,
    conn: &Rc<Conn>,
    input: &mut Input,
) -> Result<(), Stop>
where
    E: Engine,
    S: Service<CallContext, Bytes, Response = Bytes, Error = HandlerError> + 'static,
{
    let mut decoded_any = false;
    loop {
        match input.decoder.decode(&mut input.buf) {
            // One clock read per receive: every frame it completed arrived with it.
            Ok(Decoded::Frame(frame)) => {
                decoded_any = true;
                dispatch::<E, S>(core, conn, frame, input.received);
            }
            Ok(Decoded::NeedMore(_)) => break,
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "bad frame");
                conn.reply_decode_error(&input.buf, &e);
                return Err(Stop::BadFrame);
            }
        }
    }
    if input.buf.is_empty() {
        input.frame_started = None;
    } else if decoded_any {
        // What is left began in the receive that completed the frame before it.
        input.frame_started = Some(input.received);
    }
    Ok(())
}

/// Waits while the connection is at its limit of calls in flight or of queued reply bytes. The
/// wait is the server's doing, so it does not count against the frame in progress.
async fn wait_for_capacity(conn: &Conn, config: &ServerConfig, input: &mut Input) {
    let full = || {
        conn.in_flight.get() >= config.max_in_flight_per_conn
            || conn.outbox.queued_bytes() >= config.max_queued_bytes
    };
    if !full() || conn.outbox.is_closed() {
        return;
    }
    let paused = Instant::now();
    while conn.in_flight.get() >= config.max_in_flight_per_conn {
        conn.progress.notified().await;
    }
    conn.outbox.wait_below(config.max_queued_bytes).await;
    input.excuse_pause(paused.elapsed());
}

/// The next received chunk, or why there is none: end of stream, a failed receive, shutdown,
/// or the frame's read deadline or the connection's idle deadline passing.
async fn next_chunk<E, S, R>(
    reader: &mut R,
    core: &CoreServer<S>,
    conn: &Conn,
    input: &Input,
    timers: &mut ReadTimers<E>,
) -> Result<Bytes, Stop>
where
    E: Engine,
    R: StreamReader,
{
    let config = &core.config;
    let frame_deadline = input.frame_deadline(config.read_timeout);
    // A peer whose bytes keep coming never lets the timer be the first to wake us: check here.
    if frame_deadline.is_some_and(|d| input.received >= d) {
        return Err(Stop::ReadTimeout);
    }
    let in_frame = frame_deadline.is_some();
    // Idle counts only while no frame is in progress and no call runs; otherwise the deadline
    // is pushed on (read when the timer fires, so it costs no clock read per receive).
    let idle_deadline = || {
        let since = if in_frame || conn.in_flight.get() > 0 {
            turn_now()
        } else {
            conn.last_activity.get()
        };
        since.checked_add(config.idle_timeout)
    };
    let mut recv = pin!(reader.recv());
    let mut shutdown = pin!(core.shutdown.notified());
    poll_fn(|cx| {
        if let Poll::Ready(received) = recv.as_mut().poll(cx) {
            return Poll::Ready(match received {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => Err(Stop::PeerClosed),
                Err(e) => Err(Stop::RecvFailed(e)),
            });
        }
        if shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Stop::Shutdown));
        }
        if timers.read.poll_expired(cx, || frame_deadline).is_ready() {
            return Poll::Ready(Err(Stop::ReadTimeout));
        }
        if timers.idle.poll_expired(cx, idle_deadline).is_ready() {
            return Poll::Ready(Err(Stop::IdleTimeout));
        }
        Poll::Pending
    })
    .await
}

/// Lets every call already decoded send its reply, then closes the sending side.
async fn finish(conn: &Conn) {
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
        let result = match CatchUnwind::new(core.pipeline.call(&mut cx, frame.body)).await {
            Ok(result) => result,
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::error!(
                    method = cx.method(),
                    peer = %conn.peer,
                    panic = message,
                    "handler panicked; answering its call with an exception"
                );
                core.stats.count_handler_panic();
                Err(HandlerError::internal(format!(
                    "handler panicked: {message}"
                )))
            }
        };
        if !oneway {
            conn.reply(&cx, result, core.shutting_down.get());
        }
        conn.in_flight.set(conn.in_flight.get() - 1);
        if conn.in_flight.get() == 0 {
            conn.last_activity.set(turn_now());
        }
        conn.progress.notify();
    };
    if let Some(waiting) = poll_in_place(Box::pin(call)) {
        E::spawn(waiting);
    }
}

/// Polls `call` once in place: most handlers answer at once and need no task. Returns it if it
/// has to wait, for the caller to spawn; the spawned task is polled again promptly, which
/// registers its real waker.
fn poll_in_place<F: Future<Output = ()>>(mut call: Pin<Box<F>>) -> Option<Pin<Box<F>>> {
    call.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
        .then_some(call)
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

    #[test]
    fn biz_extra_is_escaped_json() {
        let s = json_object(&[("a\"b".into(), "x\ny".into()), ("k".into(), "v".into())]);
        assert_eq!(s, r#"{"a\"b":"x\ny","k":"v"}"#);
    }

    #[test]
    fn an_immediate_call_runs_in_place_and_a_waiting_one_is_handed_back() {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let immediate = poll_in_place(Box::pin(async move { r.set(true) }));
        assert!(
            immediate.is_none(),
            "a call that answered at once needs no task"
        );
        assert!(ran.get(), "the call ran to completion in place");

        let wake = Rc::new(Notify::new());
        let (w, r) = (wake.clone(), ran.clone());
        ran.set(false);
        let waiting = poll_in_place(Box::pin(async move {
            w.notified().await;
            r.set(true);
        }));
        let mut waiting = waiting.expect("a call that waits is handed back to be spawned");
        assert!(!ran.get());
        wake.notify();
        let polled = waiting
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            polled.is_ready() && ran.get(),
            "the handed-back call resumes"
        );
    }
}
