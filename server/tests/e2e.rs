//! End-to-end tests: a ringrpc server and a ringrpc client (or a raw socket) over loopback, each
//! test once per engine (`uring::*` and `baseline::*`; server and client on the same engine).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use ringrpc_client::{
    CallOptions, Client, ClientConfig, ClientError, ConnMode, OutsideClient, Protocol, Reply,
};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_codec::keys::str as skeys;
use ringrpc_codec::{
    ExceptionKind, FrameEncoder, FrameHead, Framing, MessageType, PayloadProtocol,
};
use ringrpc_example_echo::Response;
use ringrpc_governance::Metainfo;

engine_tests!(
    mux_100k_calls_64_callers_one_connection,
    pooled_200_concurrent_callers,
    client_deadline_fires_and_server_sees_it,
    unknown_method_and_service_keep_connection_usable,
    biz_errors_and_exceptions_round_trip,
    metainfo_both_ways,
    shutdown_with_calls_in_flight,
    server_killed_mid_call_then_back_on_same_port_mux,
    server_killed_mid_call_then_back_on_same_port_pooled,
    malformed_and_oversized_frames,
    kitex_protobuf_over_ttheader_and_framed,
    oneway_calls_run_and_get_no_reply,
    outside_client_calls_from_a_plain_thread,
    a_client_that_never_reads_is_closed_after_the_write_timeout,
    client_read_write_timeout_fails_a_silent_connection,
    a_panicking_handler_fails_only_its_call,
    accept_errors_do_not_stall_the_listener,
);

fn client<E: TestEngine>(addr: SocketAddr) -> ClientConfig {
    ClientConfig::new(vec![addr]).service_name(SERVICE)
}

/// Calls `Echo` with `action`/`msg` and checks the reply echoes both.
async fn echo_ok<E: TestEngine>(c: &Client<E>, action: &str, msg: String) -> Result<(), String> {
    match c
        .call_thrift::<_, SuccessResult<Response>>(
            "Echo",
            &req(action, msg.clone()),
            CallOptions::default(),
        )
        .await
    {
        Ok(SuccessResult(r)) if r.action == action && r.msg == msg => Ok(()),
        Ok(SuccessResult(r)) => Err(format!(
            "reply {:?}/{:?} to request {action:?}/{msg:?}",
            r.action, r.msg
        )),
        Err(e) => Err(format!("call {action:?}/{msg:?} failed: {e}")),
    }
}

/// The body of an `Echo` call, for `call_raw`.
fn echo_body(action: &str, msg: &str) -> Bytes {
    let mut buf = BytesMut::new();
    ringrpc_codec::apache::write_body(&req(action, msg), &mut buf).unwrap();
    buf.freeze()
}

fn decode_response(reply: &Reply) -> Response {
    ringrpc_codec::apache::read_body::<SuccessResult<Response>>(reply.body.clone())
        .expect("reply body decodes")
        .0
}

/// `calls` calls spread over `callers` concurrent tasks of one client core, handlers sleeping
/// 0–2 ms, each reply checked against its own request. Returns the calls that succeeded.
fn load<E: TestEngine>(config: ClientConfig, callers: usize, calls: usize) -> usize {
    let client = Client::<E>::new(config);
    let results = on_core::<E, _, _>(Duration::from_secs(90), move || async move {
        join_all::<E, _>((0..callers).map(|c| {
            let client = client.clone();
            async move {
                let mine = calls / callers + usize::from(c < calls % callers);
                for i in 0..mine {
                    let msg = format!("caller {c} call {i} nonce {:016x}", rand::random::<u64>());
                    echo_ok(&client, "rand-sleep", msg).await?;
                }
                Ok::<usize, String>(mine)
            }
        }))
        .await
    });
    let mut ok = 0;
    for r in results {
        ok += r.unwrap_or_else(|e| panic!("{e}"));
    }
    ok
}

fn mux_100k_calls_64_callers_one_connection<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let config = client::<E>(server.local_addr())
        .conn_mode(ConnMode::multiplexed(1))
        .rpc_timeout(Some(Duration::from_secs(20)));
    let started = Instant::now();
    assert_eq!(load::<E>(config, 64, 100_000), 100_000);
    eprintln!("{}: 100,000 calls in {:?}", E::NAME, started.elapsed());
    let peers = probe.peers.lock().unwrap().len();
    assert_eq!(peers, 1, "all calls on one connection");
    server.shutdown();
}

fn pooled_200_concurrent_callers<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let config = client::<E>(server.local_addr())
        .conn_mode(ConnMode::Pooled {
            max_idle_per_addr: 200,
            idle_timeout: Duration::from_secs(60),
        })
        .rpc_timeout(Some(Duration::from_secs(20)));
    let started = Instant::now();
    assert_eq!(load::<E>(config, 200, 20_000), 20_000);
    eprintln!(
        "{}: 20,000 pooled calls in {:?}",
        E::NAME,
        started.elapsed()
    );
    let peers = probe.peers.lock().unwrap().len();
    assert!(
        (2..=200).contains(&peers),
        "{peers} connections for 200 concurrent pooled callers"
    );
    server.shutdown();
}

fn client_deadline_fires_and_server_sees_it<E: TestEngine>() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    for mode in [ConnMode::multiplexed(1), ConnMode::pooled()] {
        probe.deadlines.lock().unwrap().clear();
        probe.finished.store(0, Ordering::SeqCst);
        // The client's own timeout, and a per-call one overriding "none".
        for per_call in [false, true] {
            let config = client::<E>(server.local_addr()).conn_mode(mode);
            let (config, opts) = if per_call {
                (
                    config.rpc_timeout(None),
                    CallOptions::default().timeout(TIMEOUT),
                )
            } else {
                (config.rpc_timeout(Some(TIMEOUT)), CallOptions::default())
            };
            let client = Client::<E>::new(config);
            let (result, elapsed, after) =
                on_core::<E, _, _>(Duration::from_secs(10), move || async move {
                    let start = Instant::now();
                    let r = client
                        .call_thrift::<_, SuccessResult<Response>>(
                            "Echo",
                            &req("deadline", "3000"),
                            opts,
                        )
                        .await;
                    let elapsed = start.elapsed();
                    // The client (and its connections) still work afterwards.
                    let after = echo_ok(&client, "echo", "after timeout".into()).await;
                    (r.map(|_| ()).map_err(|e| format!("{e:?}")), elapsed, after)
                });
            assert!(
                result.as_ref().is_err_and(|e| e.starts_with("Timeout(")),
                "{mode:?}: expected a timeout, got {result:?}"
            );
            assert!(
                elapsed >= TIMEOUT && elapsed < TIMEOUT + Duration::from_millis(250),
                "{mode:?}: timed out after {elapsed:?}"
            );
            after.unwrap();
        }
        let seen = probe.deadlines.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        for left in seen {
            let left = left.expect("the handler sees the caller's deadline");
            assert!(
                left <= TIMEOUT && left > TIMEOUT - Duration::from_millis(150),
                "{mode:?}: handler saw {left:?} left of a {TIMEOUT:?} timeout"
            );
        }
        // The server enforces the deadline too: the 3 s handlers were cancelled at it.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(probe.finished.load(Ordering::SeqCst), 0);
    }
    server.shutdown();
}

fn unknown_method_and_service_keep_connection_usable<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();
    for protocol in [
        Protocol::TtHeaderFramed,
        Protocol::Framed,
        Protocol::Buffered,
    ] {
        let good = Client::<E>::new(client::<E>(addr).protocol(protocol));
        let wrong_service = Client::<E>::new(
            ClientConfig::new(vec![addr])
                .protocol(protocol)
                .service_name("NoSuchService"),
        );
        let out = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
            let mut out = Vec::new();
            for i in 0..3 {
                let r = good
                    .call_raw("Nope", echo_body("echo", "x"), CallOptions::default())
                    .await;
                out.push(format!("{:?}", r.map(|_| ()).map_err(kind_of)));
                out.push(format!(
                    "{:?}",
                    echo_ok(&good, "echo", format!("a{i}")).await
                ));
                let r = wrong_service
                    .call_raw("Echo", echo_body("echo", "x"), CallOptions::default())
                    .await;
                out.push(format!("{:?}", r.map(|_| ()).map_err(kind_of)));
                out.push(format!(
                    "{:?}",
                    echo_ok(&good, "echo", format!("b{i}")).await
                ));
            }
            out
        });
        // Without TTHeader there is no service name to route by: the only service answers.
        let service_err = if protocol == Protocol::TtHeaderFramed {
            "Err(Some(UnknownService))"
        } else {
            "Ok(())"
        };
        let expected: Vec<String> = (0..3)
            .flat_map(|_| ["Err(Some(UnknownMethod))", "Ok(())", service_err, "Ok(())"])
            .map(String::from)
            .collect();
        assert_eq!(out, expected, "{protocol:?}");
    }
    // On one raw connection: an unknown method, then a good call, in both framings; the
    // server answers both on the same connection.
    for (bad, good) in [
        ("volo/framed-unknown-method", "volo/framed"),
        (
            "volo/ttheader-framed-unknown-method",
            "volo/ttheader-framed",
        ),
    ] {
        let mut s = raw_connect(addr, Duration::from_secs(5));
        for _ in 0..2 {
            write_lenient(&mut s, &vector(&format!("{bad}.request")));
            let (f, _) = read_frame(&mut s);
            assert_eq!(f.head.message_type, MessageType::Exception, "{bad}");
            assert_eq!(f.exception().unwrap().kind, ExceptionKind::UnknownMethod);
            write_lenient(&mut s, &vector(&format!("{good}.request")));
            let (f, _) = read_frame(&mut s);
            assert_eq!(f.head.message_type, MessageType::Reply, "{good}");
        }
    }
    server.shutdown();
}

fn kind_of(e: ClientError) -> Option<ExceptionKind> {
    match e {
        ClientError::Remote { kind, .. } => Some(kind),
        other => {
            eprintln!("unexpected error: {other:?}");
            None
        }
    }
}

fn biz_errors_and_exceptions_round_trip<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();
    for protocol in [
        Protocol::TtHeaderFramed,
        Protocol::TtHeader,
        Protocol::Framed,
    ] {
        let c = Client::<E>::new(client::<E>(addr).protocol(protocol));
        let (biz, exc, after) = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
            let call = |action: &'static str, msg: &'static str| {
                let c = c.clone();
                async move {
                    c.call_thrift::<_, SuccessResult<Response>>(
                        "Echo",
                        &req(action, msg),
                        CallOptions::default(),
                    )
                    .await
                }
            };
            let biz = call("biz", "not enough credit").await;
            let exc = call("exception", "it broke").await;
            let after = echo_ok(&c, "echo", "still fine".into()).await;
            (biz.map(|_| ()), exc.map(|_| ()), after)
        });
        if protocol.framing().has_ttheader() {
            match biz {
                Err(ClientError::Biz(b)) => {
                    assert_eq!(b.status, 1234);
                    assert_eq!(b.message, "not enough credit");
                    assert_eq!(b.extra.as_deref(), Some(r#"{"k":"v","q":"\""}"#));
                }
                other => panic!("{protocol:?}: expected a biz error, got {other:?}"),
            }
        } else {
            // No TTHeader to carry it: an INTERNAL_ERROR exception with the status and message.
            match biz {
                Err(ClientError::Remote { kind, message }) => {
                    assert_eq!(kind, ExceptionKind::InternalError);
                    assert!(
                        message.contains("1234") && message.contains("not enough credit"),
                        "{message}"
                    );
                }
                other => panic!("{protocol:?}: expected an exception, got {other:?}"),
            }
        }
        match exc {
            Err(ClientError::Remote { kind, message }) => {
                assert_eq!(kind, ExceptionKind::InternalError);
                assert_eq!(message, "it broke");
            }
            other => panic!("{protocol:?}: expected an exception, got {other:?}"),
        }
        after.unwrap();
    }
    server.shutdown();
}

fn metainfo_both_ways<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    for protocol in [Protocol::TtHeaderFramed, Protocol::TtHeader] {
        let c = Client::<E>::new(client::<E>(server.local_addr()).protocol(protocol));
        let replies = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
            let mut out = Vec::new();
            for (i, meta) in [
                Metainfo::new()
                    .with_transient("t", "tv")
                    .with_persistent("p", "pv"),
                Metainfo::new().with_persistent("p", "only-p"),
                Metainfo::new(),
            ]
            .into_iter()
            .enumerate()
            {
                let opts = CallOptions::default().metainfo(meta);
                let r = c
                    .call_raw("Echo", echo_body("meta", &format!("m{i}")), opts)
                    .await
                    .map(|r| {
                        (
                            decode_response(&r).msg,
                            r.backward.get("b").map(String::from),
                        )
                    })
                    .map_err(|e| e.to_string());
                out.push(r);
            }
            out
        });
        let expected = vec![
            Ok(("tv|pv".to_string(), Some("back-m0".to_string()))),
            Ok(("-|only-p".to_string(), Some("back-m1".to_string()))),
            Ok(("-|-".to_string(), Some("back-m2".to_string()))),
        ];
        assert_eq!(replies, expected, "{protocol:?}");
    }
    server.shutdown();
}

fn shutdown_with_calls_in_flight<E: TestEngine>() {
    const CALLS: usize = 50;
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b.shutdown_grace(Duration::from_secs(3)));
    let addr = server.local_addr();
    let c = Client::<E>::new(
        client::<E>(addr)
            .conn_mode(ConnMode::multiplexed(1))
            .rpc_timeout(Some(Duration::from_secs(5))),
    );
    let (tx, rx) = mpsc::channel();
    let caller = std::thread::spawn(move || {
        let out = on_core::<E, _, _>(Duration::from_secs(15), move || async move {
            let replies = join_all::<E, _>((0..CALLS).map(|i| {
                let c = c.clone();
                async move {
                    let msg = i.to_string();
                    let r = c
                        .call_raw("Echo", echo_body("sleep", "200"), CallOptions::default())
                        .await;
                    r.map(|r| {
                        let crrst = r
                            .header
                            .as_ref()
                            .and_then(|h| h.str_kv_bytes(skeys::CONN_RESET.as_bytes()));
                        (decode_response(&r).msg == "200", crrst, msg)
                    })
                    .map_err(|e| format!("{e:?}"))
                }
            }))
            .await;
            // After shutdown: nobody listens any more.
            let late = c
                .call_raw("Echo", echo_body("echo", "late"), CallOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"));
            (replies, late)
        });
        let _ = tx.send(out);
    });
    let until = Instant::now() + Duration::from_secs(10);
    while probe.started.load(Ordering::SeqCst) < CALLS {
        assert!(Instant::now() < until, "calls never all started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let shutdown_at = Instant::now();
    server.shutdown();
    let shutdown_took = shutdown_at.elapsed();
    let (replies, late) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("every call ends");
    caller.join().unwrap();
    assert!(
        shutdown_took < Duration::from_secs(2),
        "shutdown took {shutdown_took:?}"
    );
    let mut replied = 0;
    for r in &replies {
        match r {
            Ok((body_ok, crrst, _)) => {
                assert!(body_ok, "reply matches its request");
                assert_eq!(
                    crrst.as_deref(),
                    Some(&b"1"[..]),
                    "reply after shutdown lacks crrst"
                );
                replied += 1;
            }
            // A clear error is allowed; a timeout (a hang until the deadline) is not.
            Err(e) => assert!(e == "Closed", "call ended with {e}"),
        }
    }
    // The grace period (3 s) is far longer than the handlers (200 ms): all of them answer.
    assert_eq!(replied, CALLS, "{replies:?}");
    assert_eq!(probe.finished.load(Ordering::SeqCst), CALLS);
    assert!(
        late.as_ref().is_err_and(|e| e.starts_with("Connect")),
        "a call after shutdown: {late:?}"
    );
}

fn server_killed_mid_call_then_back_on_same_port_mux<E: TestEngine>() {
    killed_mid_call::<E>(ConnMode::multiplexed(1));
}

fn server_killed_mid_call_then_back_on_same_port_pooled<E: TestEngine>() {
    killed_mid_call::<E>(ConnMode::pooled());
}

fn killed_mid_call<E: TestEngine>(mode: ConnMode) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let probe = Arc::new(Probe::default());
    // No grace: the server drops its calls and connections at once, as if killed.
    let kill = |b: ringrpc_server::ServerBuilder| b.shutdown_grace(Duration::ZERO);
    let server = start_test_server::<E>(&probe, kill);
    let addr = server.local_addr();
    let c = Client::<E>::new(client::<E>(addr).conn_mode(mode).rpc_timeout(Some(TIMEOUT)));
    let back = Arc::new(AtomicBool::new(false));
    let (phase_tx, phase_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let back2 = back.clone();
    let caller = std::thread::spawn(move || {
        let out = on_core::<E, _, _>(Duration::from_secs(20), move || async move {
            let mut out = Vec::new();
            out.push(format!("{:?}", echo_ok(&c, "echo", "before".into()).await));
            let start = Instant::now();
            let r = c
                .call_raw("Echo", echo_body("sleep", "5000"), CallOptions::default())
                .await;
            let elapsed = start.elapsed();
            out.push(format!("{:?}", r.map(|_| ()).map_err(|e| short(&e))));
            // While nobody listens: a quick connect error.
            let r = c
                .call_raw("Echo", echo_body("echo", "down"), CallOptions::default())
                .await;
            out.push(format!("{:?}", r.map(|_| ()).map_err(|e| short(&e))));
            // Only now may the server come back (sent earlier, a fast restart raced this call).
            let _ = phase_tx.send(());
            let until = Instant::now() + Duration::from_secs(10);
            while !back2.load(Ordering::SeqCst) && Instant::now() < until {
                E::sleep(Duration::from_millis(5)).await;
            }
            for i in 0..3 {
                out.push(format!(
                    "{:?}",
                    echo_ok(&c, "echo", format!("after {i}")).await
                ));
            }
            (out, elapsed)
        });
        let _ = tx.send(out);
    });
    let until = Instant::now() + Duration::from_secs(10);
    while probe.started.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < until, "the long call never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Well into the call (a connection that ends at once looks stale to a pooled client).
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    phase_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the call in flight and the call while down end");
    let server = start_test_server::<E>(&probe, |b| kill(b).addr(addr));
    back.store(true, Ordering::SeqCst);
    let (out, elapsed) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("client ends");
    caller.join().unwrap();
    server.shutdown();
    assert_eq!(out[0], "Ok(())");
    assert!(
        out[1] == "Err(\"Closed\")" || out[1] == "Err(\"Timeout\")",
        "{mode:?}: the call in flight ended with {}",
        out[1]
    );
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(300),
        "{mode:?}: it took {elapsed:?}"
    );
    assert_eq!(
        out[2], "Err(\"Connect\")",
        "{mode:?}: while the server is down"
    );
    assert_eq!(
        &out[3..],
        ["Ok(())", "Ok(())", "Ok(())"],
        "{mode:?}: after it is back"
    );
}

/// An error's variant name.
fn short(e: &ClientError) -> String {
    let s = format!("{e:?}");
    s.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

fn malformed_and_oversized_frames<E: TestEngine>() {
    const MAX: usize = 1 << 20;
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| {
        b.max_frame_size(MAX)
            .read_timeout(Duration::from_millis(500))
    });
    let addr = server.local_addr();
    // A well-behaved client keeps calling on its own connection throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let good_calls = Arc::new(AtomicUsize::new(0));
    let c = Client::<E>::new(client::<E>(addr));
    let (stop2, good2) = (stop.clone(), good_calls.clone());
    let good = std::thread::spawn(move || {
        on_core::<E, _, _>(Duration::from_secs(60), move || async move {
            let until = Instant::now() + Duration::from_secs(30);
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < until {
                echo_ok(&c, "rand-sleep", format!("good {i}")).await?;
                good2.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            Ok::<u64, String>(i)
        })
    });

    let mut oversized_buffered = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4];
    oversized_buffered.extend_from_slice(b"Echo");
    oversized_buffered.extend_from_slice(&[0, 0, 0, 1, 0x0b, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    let over = (MAX as u32 + 1).to_be_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("volo garbage", vector("volo/garbage.request")),
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("zeros", vec![0; 64]),
        (
            "ttheader length too small",
            vec![0, 0, 0, 4, 0x10, 0, 0, 0, 0, 0, 0, 1],
        ),
        (
            "ttheader header size past the frame",
            vec![0, 0, 0, 12, 0x10, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0],
        ),
        (
            "ttheader streaming flag",
            vec![0, 0, 0, 12, 0x10, 0, 0, 2, 0, 0, 0, 1, 0, 1, 0, 0],
        ),
        (
            "ttheader unknown info id",
            vec![0, 0, 0, 14, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x77, 0],
        ),
        (
            "oversized framed",
            [&over[..], &[0x80, 0x01, 0x00, 0x01][..]].concat(),
        ),
        (
            "oversized ttheader",
            [&over[..], &[0x10, 0x00, 0x00, 0x00][..]].concat(),
        ),
        (
            "framed length 0x7fffffff",
            vec![0x7f, 0xff, 0xff, 0xff, 0x80, 0x01, 0x00, 0x01],
        ),
        ("oversized unframed string", oversized_buffered),
    ];
    for (name, bytes) in &cases {
        let mut s = raw_connect(addr, Duration::from_secs(5));
        write_lenient(&mut s, bytes);
        let (reply, end) = read_until_close(&mut s);
        assert_eq!(end, ReadEnd::Closed, "{name}: the server must close");
        if !reply.is_empty() {
            let frames = decode_all(&reply);
            assert_eq!(frames.len(), 1, "{name}");
            let e = frames[0].exception().expect("an exception");
            assert_eq!(e.kind, ExceptionKind::ProtocolError, "{name}: {e:?}");
        }
    }
    // A frame that never completes is dropped after the read timeout (500 ms).
    let mut s = raw_connect(addr, Duration::from_secs(5));
    write_lenient(&mut s, &[0, 0, 1, 0, 0x80, 0x01, 0x00, 0x01, 0, 0]);
    let start = Instant::now();
    let (reply, end) = read_until_close(&mut s);
    assert_eq!((reply.len(), end), (0, ReadEnd::Closed), "partial frame");
    assert!(start.elapsed() < Duration::from_secs(3));
    // A good frame after garbage on the same connection is never answered (closed at the
    // garbage); a good raw frame on a fresh connection is.
    let mut s = raw_connect(addr, Duration::from_secs(5));
    write_lenient(&mut s, &vector("volo/framed.request"));
    let (f, _) = read_frame(&mut s);
    assert_eq!(f.head.message_type, MessageType::Reply);

    let before = good_calls.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(5);
    while good_calls.load(Ordering::SeqCst) < before + 20 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let made = good.join().unwrap().expect("every good call succeeds");
    assert!(made >= 20, "only {made} good calls");
    server.shutdown();
}

fn kitex_protobuf_over_ttheader_and_framed<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();
    for (protocol, seen) in [
        (Protocol::KitexProtobuf, "TtHeaderFramed/KitexProtobuf"),
        (Protocol::Framed, "Framed/KitexProtobuf"),
        (Protocol::TtHeaderFramed, "TtHeaderFramed/KitexProtobuf"),
    ] {
        let c = Client::<E>::new(client::<E>(addr).protocol(protocol));
        let out = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
            let mut out = Vec::new();
            for n in 0..3i64 {
                let request = PbRequest {
                    action: "echo".into(),
                    msg: format!("pb {n} ünïcode"),
                    n: n * 1_000_000_007,
                };
                let r = c
                    .call_protobuf::<_, PbResponse>("PbEcho", &request, CallOptions::default())
                    .await;
                out.push(
                    r.map(|r| {
                        (
                            r.action == request.action && r.msg == request.msg && r.n == request.n,
                            r.seen,
                        )
                    })
                    .map_err(|e| e.to_string()),
                );
            }
            let unknown = c
                .call_protobuf::<_, PbResponse>(
                    "Nope",
                    &PbRequest::default(),
                    CallOptions::default(),
                )
                .await
                .map(|_| ())
                .map_err(kind_of);
            (out, unknown)
        });
        let (out, unknown) = out;
        for r in out {
            assert_eq!(r, Ok((true, seen.to_string())), "{protocol:?}");
        }
        assert_eq!(
            unknown,
            Err(Some(ExceptionKind::UnknownMethod)),
            "{protocol:?}"
        );
    }
    // A hand-encoded Kitex Protobuf request on a raw socket (Framed, magic 0x9001): the reply
    // has the same framing and codec.
    let mut s = raw_connect(addr, Duration::from_secs(5));
    let head = FrameHead::new(
        Framing::Framed,
        PayloadProtocol::KitexProtobuf,
        MessageType::Call,
        "PbEcho",
        77,
    );
    let request = PbRequest {
        action: "raw".into(),
        msg: "socket".into(),
        n: -5,
    };
    let mut chunks = Vec::new();
    FrameEncoder::new()
        .encode(&head, ringrpc_codec::ProstBody(&request), &mut chunks)
        .unwrap();
    write_lenient(&mut s, &chunks.concat());
    let (f, raw) = read_frame(&mut s);
    assert_eq!(&raw[4..6], &[0x90, 0x01], "Kitex Protobuf magic");
    assert_eq!(f.head.framing, Framing::Framed);
    assert_eq!(f.head.protocol, PayloadProtocol::KitexProtobuf);
    assert_eq!(
        (f.head.message_type, f.head.seq_id),
        (MessageType::Reply, 77)
    );
    let r: PbResponse = ringrpc_codec::protobuf::read_body(f.body).unwrap();
    assert_eq!(
        (r.action.as_str(), r.msg.as_str(), r.n),
        ("raw", "socket", -5)
    );
    server.shutdown();
}

/// A oneway call (message type ONEWAY) runs its handler and gets no reply: on a raw socket the
/// first frame back answers the CALL sent after it; through the client the call returns at once
/// and the connection keeps working.
fn oneway_calls_run_and_get_no_reply<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();

    let mut s = raw_connect(addr, Duration::from_secs(5));
    let mut wire = Vec::new();
    let mut encoder = FrameEncoder::new();
    for (kind, seq, action) in [
        (MessageType::Oneway, 5, "sleep"),
        (MessageType::Call, 6, "echo"),
    ] {
        let head = FrameHead::new(
            Framing::Framed,
            PayloadProtocol::ThriftBinary,
            kind,
            "Echo",
            seq,
        );
        encoder
            .encode(&head, echo_body(action, "0"), &mut wire)
            .unwrap();
    }
    write_lenient(&mut s, &wire.concat());
    let (f, _) = read_frame(&mut s);
    assert_eq!(
        (f.head.message_type, f.head.seq_id),
        (MessageType::Reply, 6)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe.finished.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the oneway handler never ran");
        std::thread::sleep(Duration::from_millis(5));
    }

    let c = Client::<E>::new(client::<E>(addr));
    let out = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
        let oneway = CallOptions {
            oneway: true,
            ..CallOptions::default()
        };
        let r = c.call_raw("Echo", echo_body("sleep", "0"), oneway).await;
        let after = echo_ok(&c, "echo", "after oneway".into()).await;
        (
            r.map(|reply| reply.body.len()).map_err(|e| e.to_string()),
            after,
        )
    });
    assert_eq!(out, (Ok(0), Ok(())));
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe.finished.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the client's oneway call never ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.shutdown();
}

/// Code outside the runtime (the test thread) calls through `OutsideClient`: each call is
/// posted to a client core and its reply comes back across threads.
fn outside_client_calls_from_a_plain_thread<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let runtime = E::launch(
        ringrpc_engine::RuntimeConfig::with_cores(2),
        |_core| async {},
    )
    .expect("client runtime starts");
    let outside = OutsideClient::new(
        Client::<E>::new(client::<E>(server.local_addr())),
        runtime.handle(),
    );
    for i in 0..20 {
        let msg = format!("from outside {i}");
        let reply = outside
            .call_raw_blocking("Echo", echo_body("echo", &msg), CallOptions::default())
            .expect("call through the handle");
        assert_eq!(decode_response(&reply).msg, msg);
    }
    runtime.stop(Duration::from_millis(200));
    let after = outside.call_raw_blocking("Echo", echo_body("echo", "x"), CallOptions::default());
    assert!(matches!(after, Err(ClientError::Closed)), "{after:?}");
    server.shutdown();
}

/// A client that sends requests but never reads the replies: once the socket buffers are full
/// the server's send makes no progress, and after the write timeout the server closes the
/// connection (our writes then fail with a reset) while a well-behaved client keeps working.
fn a_client_that_never_reads_is_closed_after_the_write_timeout<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| {
        b.write_timeout(Duration::from_millis(300))
            .idle_timeout(Duration::from_secs(60))
    });
    let addr = server.local_addr();
    let mut s = raw_connect(addr, Duration::from_secs(5));
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = "x".repeat(64 * 1024);
    let mut frame = Vec::new();
    let head = FrameHead::new(
        Framing::Framed,
        PayloadProtocol::ThriftBinary,
        MessageType::Call,
        "Echo",
        1,
    );
    FrameEncoder::new()
        .encode(&head, echo_body("echo", &msg), &mut frame)
        .unwrap();
    let frame = frame.concat();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(20) {
        match std::io::Write::write_all(&mut s, &frame) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ),
                    "{e:?}"
                );
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "the server kept a connection whose client never reads"
    );
    let c = Client::<E>::new(client::<E>(addr));
    let ok = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
        echo_ok(&c, "echo", "still serving".into()).await
    });
    assert_eq!(ok, Ok(()));
    server.shutdown();
}

/// A peer that accepts, reads and never answers: with a read/write timeout the client fails the
/// call (and, multiplexed, the connection) after that timeout, long before the RPC timeout.
fn client_read_write_timeout_fails_a_silent_connection<E: TestEngine>() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let silent = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for mode in [ConnMode::multiplexed(1), ConnMode::pooled()] {
        let c = Client::<E>::new(
            client::<E>(addr)
                .conn_mode(mode)
                .rpc_timeout(Some(Duration::from_secs(10)))
                .read_write_timeout(Duration::from_millis(300)),
        );
        let (r, took) = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
            let t = Instant::now();
            let r = echo_ok(&c, "echo", "anyone?".into()).await;
            (r, t.elapsed())
        });
        assert!(r.is_err(), "{mode:?}: {r:?}");
        assert!(
            r.as_ref().unwrap_err().contains("timeout"),
            "{mode:?}: {r:?}"
        );
        assert!(took < Duration::from_secs(3), "{mode:?}: took {took:?}");
    }
    stop.store(true, Ordering::SeqCst);
    silent.join().unwrap();
}

/// A handler that panics on every 10th call, under multiplexed (one connection) and pooled
/// load: each panicking call gets an `INTERNAL_ERROR` exception naming the panic, every other
/// call succeeds, the server keeps serving on the same connections, and its counter says 10%.
/// A Kitex Protobuf handler's panic is answered the same way, in that codec.
fn a_panicking_handler_fails_only_its_call<E: TestEngine>() {
    const CALLS: usize = 1_000;
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();
    let stats = server.stats();
    for (n, mode) in [ConnMode::multiplexed(1), ConnMode::pooled()]
        .into_iter()
        .enumerate()
    {
        probe.peers.lock().unwrap().clear();
        let c = Client::<E>::new(
            client::<E>(addr)
                .conn_mode(mode)
                .rpc_timeout(Some(Duration::from_secs(20))),
        );
        let results = on_core::<E, _, _>(Duration::from_secs(60), move || async move {
            join_all::<E, _>((0..20).map(|caller| {
                let c = c.clone();
                async move {
                    let mut out = Vec::new();
                    for i in 0..CALLS / 20 {
                        let msg = format!("caller {caller} call {i}");
                        let r = c
                            .call_thrift::<_, SuccessResult<Response>>(
                                "Echo",
                                &req("panic-every-10th", msg.clone()),
                                CallOptions::default(),
                            )
                            .await;
                        out.push(match r {
                            Ok(SuccessResult(r)) if r.msg == msg => Ok(()),
                            Ok(SuccessResult(r)) => Err(format!("wrong reply {:?}", r.msg)),
                            Err(ClientError::Remote { kind, message }) => {
                                Err(format!("{kind:?}: {message}"))
                            }
                            Err(e) => Err(format!("other error: {e}")),
                        });
                    }
                    out
                }
            }))
            .await
        });
        let results: Vec<_> = results.into_iter().flatten().collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        for e in &failed {
            assert!(
                e.starts_with("InternalError: ") && e.contains("planned panic of call"),
                "{mode:?}: {e}"
            );
        }
        assert_eq!((ok, failed.len()), (CALLS * 9 / 10, CALLS / 10), "{mode:?}");
        assert_eq!(
            stats.handler_panics(),
            (n as u64 + 1) * CALLS as u64 / 10,
            "{mode:?}"
        );
        if matches!(mode, ConnMode::Multiplexed { .. }) {
            let peers = probe.peers.lock().unwrap().len();
            assert_eq!(peers, 1, "the multiplexed connection survived every panic");
        }
    }
    // Kitex Protobuf: the panic comes back as the codec's exception; the connection goes on.
    let c = Client::<E>::new(client::<E>(addr).protocol(Protocol::KitexProtobuf));
    let (panicked, after) = on_core::<E, _, _>(Duration::from_secs(10), move || async move {
        let call = |action: &str| {
            let c = c.clone();
            let request = PbRequest {
                action: action.into(),
                msg: "m".into(),
                n: 1,
            };
            async move {
                c.call_protobuf::<_, PbResponse>("PbEcho", &request, CallOptions::default())
                    .await
            }
        };
        let panicked = call("panic").await.map(|_| ());
        let after = call("echo").await.map(|r| r.msg);
        (panicked, after)
    });
    match panicked {
        Err(ClientError::Remote { kind, message }) => {
            assert_eq!(kind, ExceptionKind::InternalError);
            assert!(message.contains("planned protobuf panic"), "{message}");
        }
        other => panic!("expected an exception, got {other:?}"),
    }
    assert_eq!(after.map_err(|e| e.to_string()), Ok("m".to_string()));
    server.shutdown();
}

/// Connections reset by their peer while waiting in the accept queue fail as they are accepted
/// (on io_uring the peer address can no longer be read). Each must cost only itself: a
/// well-behaved connection made right after hundreds of them is served at once, not after the
/// listener slept over each failure.
fn accept_errors_do_not_stall_the_listener<E: TestEngine>() {
    const RESETS: usize = 400;
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();
    for _ in 0..RESETS {
        let s = std::net::TcpStream::connect(addr).expect("connect");
        // Linger 0: close sends a reset instead of a FIN.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    let start = Instant::now();
    let mut good = raw_connect(addr, Duration::from_secs(20));
    raw_echo(&mut good, 2, "after the resets");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a good connection waited {took:?} behind {RESETS} reset ones \
         ({} accept errors counted)",
        server.stats().accept_errors()
    );
    server.shutdown();
}
