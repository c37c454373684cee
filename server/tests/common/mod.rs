//! Shared support of the end-to-end tests: the test service (generic over the engine its
//! handlers sleep on), server start-up on port 0, running a client task on a fresh one-core
//! runtime, raw-socket helpers, and the golden vectors.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use ringrpc_codec::apache::{Args1, SuccessResult};
use ringrpc_codec::{
    ApplicationException, Decoded, DecoderConfig, ExceptionKind, Frame, FrameDecoder, LinkBuf,
};
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::local::oneshot;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, RuntimeConfig};
use ringrpc_example_echo::{Request, Response};
use ringrpc_governance::CallDeadline;
use ringrpc_server::{
    BizError, CallContext, EngineKind, HandlerError, RunningServer, ServerBuilder, ServiceDef,
};

/// An engine the tests run on, with the matching server [`EngineKind`].
pub trait TestEngine: Engine {
    const KIND: EngineKind;
}

impl TestEngine for Uring {
    const KIND: EngineKind = EngineKind::Uring;
}

impl TestEngine for Baseline {
    const KIND: EngineKind = EngineKind::Baseline;
}

/// Instantiates each generic test `fn name<E: TestEngine>()` once per engine, as
/// `uring::name` and `baseline::name`.
#[macro_export]
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { super::$name::<ringrpc_engine::uring::Uring>(); })*
        }
        mod baseline {
            $(#[test] fn $name() { super::$name::<ringrpc_engine::baseline::Baseline>(); })*
        }
    };
}

/// The IDL service name of the test service (the echo IDL's).
pub const SERVICE: &str = ringrpc_example_echo::SERVICE;

/// What the test service's handlers record for the test to look at.
#[derive(Debug, Default)]
pub struct Probe {
    /// Calls that entered a handler.
    pub started: AtomicUsize,
    /// Calls whose handler finished (returned, not cancelled).
    pub finished: AtomicUsize,
    /// The deadline each `deadline` call saw, as time left when the handler started.
    pub deadlines: Mutex<Vec<Option<Duration>>>,
    /// The peer address of every `Echo` call (one per client connection).
    pub peers: Mutex<HashSet<SocketAddr>>,
    /// `panic-every-10th` calls so far.
    pub panicky: AtomicUsize,
}

/// A Kitex Protobuf message, as in kitex-benchmark's `echo-kitex.proto` plus a number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbRequest {
    #[prost(string, tag = "1")]
    pub action: String,
    #[prost(string, tag = "2")]
    pub msg: String,
    #[prost(int64, tag = "3")]
    pub n: i64,
}

/// The protobuf method's answer: the request back, plus the framing the server saw.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbResponse {
    #[prost(string, tag = "1")]
    pub action: String,
    #[prost(string, tag = "2")]
    pub msg: String,
    #[prost(int64, tag = "3")]
    pub n: i64,
    /// `format!("{:?}/{:?}", framing, protocol)` of the request.
    #[prost(string, tag = "4")]
    pub seen: String,
}

/// The test service: the echo IDL's `Echo`, whose `action` selects a behaviour, and `PbEcho`.
///
/// Actions of `Echo` (the reply echoes `action` and `msg` unless said otherwise):
/// - `echo`: answers at once;
/// - `rand-sleep`: sleeps 0–2 ms (random) first;
/// - `sleep`: sleeps `msg` ms (counted in `started`/`finished`);
/// - `deadline`: records the call's deadline in the probe, then sleeps `msg` ms;
/// - `biz`: a business error (status 1234, message `msg`, extra `{k: v, q: "\"}`);
/// - `exception`: an INTERNAL_ERROR exception with message `msg`;
/// - `meta`: answers `transient(t)|persistent(p)` and sets backward `b` = `back-<msg>`;
/// - `panic-every-10th`: panics on every 10th such call (counted in `panicky`), alternately at
///   once and after a 1 ms sleep, so both a call answered in place and one running as a task
///   panic.
///
/// `PbEcho` with action `panic` panics at once.
pub fn test_service<E: Engine>(probe: Arc<Probe>) -> ServiceDef {
    ServiceDef::new(SERVICE)
        .thrift_method(
            "Echo",
            async move |cx: &mut CallContext,
                        Args1(req): Args1<Request>|
                        -> Result<SuccessResult<Response>, HandlerError> {
                probe.peers.lock().unwrap().insert(cx.peer());
                match req.action.as_str() {
                    "echo" => {}
                    "rand-sleep" => {
                        let us = rand::thread_rng().gen_range(0..=2000);
                        if us > 0 {
                            E::sleep(Duration::from_micros(us)).await;
                        }
                    }
                    "sleep" | "deadline" => {
                        if req.action == "deadline" {
                            let left = cx
                                .deadline()
                                .map(|d| d.saturating_duration_since(Instant::now()));
                            probe.deadlines.lock().unwrap().push(left);
                        }
                        probe.started.fetch_add(1, Ordering::SeqCst);
                        let ms = req.msg.parse().unwrap_or(0);
                        E::sleep(Duration::from_millis(ms)).await;
                        probe.finished.fetch_add(1, Ordering::SeqCst);
                    }
                    "biz" => {
                        return Err(HandlerError::Biz(BizError {
                            status: 1234,
                            message: req.msg,
                            extra: vec![("k".into(), "v".into()), ("q".into(), "\"".into())],
                        }))
                    }
                    "exception" => {
                        return Err(HandlerError::Exception(ApplicationException::new(
                            ExceptionKind::InternalError,
                            req.msg,
                        )))
                    }
                    "meta" => {
                        let m = cx.metainfo();
                        let seen = format!(
                            "{}|{}",
                            m.transient("t").unwrap_or("-"),
                            m.persistent("p").unwrap_or("-")
                        );
                        cx.set_backward("b", format!("back-{}", req.msg));
                        return Ok(SuccessResult(Response::new(req.action, seen)));
                    }
                    "panic-every-10th" => {
                        let n = probe.panicky.fetch_add(1, Ordering::SeqCst) + 1;
                        if n % 10 == 0 {
                            if n % 20 == 0 {
                                E::sleep(Duration::from_millis(1)).await;
                            }
                            panic!("planned panic of call {n}");
                        }
                    }
                    other => return Err(HandlerError::internal(format!("bad action {other}"))),
                }
                Ok(SuccessResult(Response::new(req.action, req.msg)))
            },
        )
        .protobuf_method(
            "PbEcho",
            async |cx: &mut CallContext, req: PbRequest| -> Result<PbResponse, HandlerError> {
                if req.action == "panic" {
                    panic!("planned protobuf panic");
                }
                let head = cx.request_head();
                Ok(PbResponse {
                    seen: format!("{:?}/{:?}", head.framing, head.protocol),
                    action: req.action,
                    msg: req.msg,
                    n: req.n,
                })
            },
        )
}

/// A builder for a one-core server of engine `E` on 127.0.0.1, port 0.
pub fn builder<E: TestEngine>() -> ServerBuilder {
    ringrpc_server::Server::builder()
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .cores(1)
        .engine(E::KIND)
}

/// Starts the test service on engine `E` (one core, port 0), with `tune` applied to the builder.
pub fn start_test_server<E: TestEngine>(
    probe: &Arc<Probe>,
    tune: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> RunningServer {
    let probe = probe.clone();
    tune(builder::<E>())
        .service(move || test_service::<E>(probe.clone()))
        .start()
        .expect("server starts")
}

/// Runs `f()` as a task on a fresh one-core runtime of engine `E` and returns its output;
/// panics if it takes longer than `limit`. The runtime is stopped afterwards either way.
pub fn on_core<E: Engine, T, Fut>(limit: Duration, f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let f = Mutex::new(Some(f));
    let runtime = E::launch(RuntimeConfig::with_cores(1), move |_core| {
        let f = f.lock().unwrap().take().expect("one core, one init");
        let tx = tx.clone();
        async move {
            let _ = tx.send(f().await);
        }
    })
    .expect("client runtime starts");
    let result = rx.recv_timeout(limit);
    let t = Instant::now();
    runtime.stop(Duration::from_millis(50));
    // Stopping must not wait on the client's idle connections (they live outside any task).
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "client runtime stop took {:?}",
        t.elapsed()
    );
    match result {
        Ok(v) => v,
        Err(_) => panic!("client task did not finish within {limit:?}"),
    }
}

/// Runs every future as its own task on the current core and collects the outputs in order.
pub async fn join_all<E: Engine, T: 'static>(
    futures: impl IntoIterator<Item = impl Future<Output = T> + 'static>,
) -> Vec<T> {
    let mut receivers = Vec::new();
    for f in futures {
        let (tx, rx) = oneshot::channel();
        E::spawn(async move {
            let _ = tx.send(f.await);
        });
        receivers.push(rx);
    }
    let mut out = Vec::with_capacity(receivers.len());
    for rx in receivers {
        out.push(rx.await.expect("task finished"));
    }
    out
}

/// An echo request.
pub fn req(action: &str, msg: impl Into<String>) -> Args1<Request> {
    Args1(Request::new(action.into(), msg.into()))
}

/// The codec's test support, for its golden-vector loading.
#[path = "../../../codec/tests/common/mod.rs"]
mod codec_common;

/// Reads `codec/tests/vectors/<name>.hex`.
pub fn vector(name: &str) -> Vec<u8> {
    codec_common::vector(name)
}

/// Decodes every whole frame of `bytes`; panics on a decode error or trailing bytes.
pub fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = LinkBuf::new();
    buf.push(Bytes::copy_from_slice(bytes));
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut frames = Vec::new();
    loop {
        match dec.decode(&mut buf).expect("reply decodes") {
            Decoded::Frame(f) => frames.push(f),
            Decoded::NeedMore(n) => {
                assert!(
                    buf.is_empty(),
                    "{} trailing bytes (need {n} more)",
                    buf.len()
                );
                return frames;
            }
        }
    }
}

/// A blocking socket to `addr` whose reads give up after `timeout`.
pub fn raw_connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// How a raw read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The peer closed (or reset) the connection.
    Closed,
    /// Nothing more arrived within the socket's read timeout.
    TimedOut,
}

/// Reads until the peer closes or the read timeout passes; returns what arrived.
pub fn read_until_close(s: &mut TcpStream) -> (Vec<u8>, ReadEnd) {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, ReadEnd::Closed),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, ReadEnd::TimedOut)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (out, ReadEnd::Closed),
        }
    }
}

/// Reads exactly one frame (decoded incrementally); panics on timeout or close first.
pub fn read_frame(s: &mut TcpStream) -> (Frame, Vec<u8>) {
    let mut dec = FrameDecoder::new(DecoderConfig::default());
    let mut buf = LinkBuf::new();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Decoded::Frame(f) = dec.decode(&mut buf).expect("reply decodes") {
            assert!(buf.is_empty(), "more than one frame arrived");
            return (f, raw);
        }
        let n = s
            .read(&mut chunk)
            .expect("reply arrives before the read timeout");
        assert!(n > 0, "connection closed before a whole frame");
        raw.extend_from_slice(&chunk[..n]);
        buf.push(Bytes::copy_from_slice(&chunk[..n]));
    }
}

/// A whole Framed Thrift `Echo` call with sequence id `seq`, for raw sockets.
pub fn raw_echo_call(seq: i32, action: &str, msg: &str) -> Vec<u8> {
    let head = ringrpc_codec::FrameHead::new(
        ringrpc_codec::Framing::Framed,
        ringrpc_codec::PayloadProtocol::ThriftBinary,
        ringrpc_codec::MessageType::Call,
        "Echo",
        seq,
    );
    let mut body = bytes::BytesMut::new();
    ringrpc_codec::apache::write_body(&req(action, msg), &mut body).unwrap();
    let mut chunks = Vec::new();
    ringrpc_codec::FrameEncoder::new()
        .encode(&head, body.freeze(), &mut chunks)
        .unwrap();
    chunks.concat()
}

/// Sends `raw_echo_call(seq, "echo", msg)` on `s` and checks the reply answers it.
pub fn raw_echo(s: &mut TcpStream, seq: i32, msg: &str) {
    s.write_all(&raw_echo_call(seq, "echo", msg))
        .expect("request sent");
    let (f, _) = read_frame(s);
    assert_eq!(
        (f.head.message_type, f.head.seq_id),
        (ringrpc_codec::MessageType::Reply, seq)
    );
    let SuccessResult(r) =
        ringrpc_codec::apache::read_body::<SuccessResult<Response>>(f.body).expect("reply");
    assert_eq!(r.msg, msg);
}

/// Counts the process's threads (`Threads:` of /proc/self/status).
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// Writes `bytes`, ignoring a reset (the server may close before reading everything).
pub fn write_lenient(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// Counts the process's open descriptors.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
