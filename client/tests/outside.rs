//! Calls from outside a runtime: every typed call of `OutsideClient` (Thrift, Kitex Protobuf,
//! raw; awaited and blocking) from the plain test thread, on both engines, with their errors
//! (timeout, unknown method, business error, exception, stopped runtime) coming back typed.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringrpc_client::{CallOptions, Client, ClientConfig, ClientError, OutsideClient};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_codec::ExceptionKind;
use ringrpc_engine::oneshot::block_on;
use ringrpc_engine::{Runtime, RuntimeConfig};
use ringrpc_example_echo::Response;

engine_tests!(
    typed_calls_from_a_plain_thread,
    errors_from_a_plain_thread_come_back_typed,
);

/// A server of the test service, a two-core client runtime, and an outside client on it.
fn setup<E: TestEngine>() -> (ringrpc_server::RunningServer, Runtime, OutsideClient<E>) {
    let server = start_test_server::<E>(&Arc::new(Probe::default()), |b| b);
    let runtime = E::launch(RuntimeConfig::with_cores(2), |_| async {}).expect("runtime");
    let client =
        Client::<E>::new(ClientConfig::new(vec![server.local_addr()]).service_name(SERVICE));
    let outside = OutsideClient::new(client, runtime.handle());
    (server, runtime, outside)
}

type EchoResult = SuccessResult<Response>;

fn typed_calls_from_a_plain_thread<E: TestEngine>() {
    let (server, runtime, outside) = setup::<E>();
    let opts = CallOptions::default;
    // Several of each, so both cores serve some (the outside client goes round-robin).
    for i in 0..4 {
        let msg = format!("thrift {i}");
        let SuccessResult(r) = block_on(outside.call_thrift::<_, EchoResult>(
            "Echo",
            &req("echo", msg.clone()),
            opts(),
        ))
        .expect("thrift call");
        assert_eq!((r.action.as_str(), r.msg.as_str()), ("echo", msg.as_str()));

        let msg = format!("thrift blocking {i}");
        let SuccessResult(r) = outside
            .call_thrift_blocking::<_, EchoResult>("Echo", &req("echo", msg.clone()), opts())
            .expect("blocking thrift call");
        assert_eq!(r.msg, msg);

        let pb = PbRequest {
            action: "pb".into(),
            msg: format!("protobuf {i}"),
            n: i,
        };
        let got: PbResponse =
            block_on(outside.call_protobuf("PbEcho", &pb, opts())).expect("protobuf call");
        assert_eq!((got.msg.as_str(), got.n), (pb.msg.as_str(), i));
        assert!(got.seen.contains("KitexProtobuf"), "seen {}", got.seen);
        let got: PbResponse = outside
            .call_protobuf_blocking("PbEcho", &pb, opts())
            .expect("blocking protobuf call");
        assert_eq!(got.n, i);

        let mut body = bytes::BytesMut::new();
        ringrpc_codec::apache::write_body(&req("echo", format!("raw {i}")), &mut body).unwrap();
        let body = body.freeze();
        for reply in [
            block_on(outside.call_raw("Echo", body.clone(), opts())),
            outside.call_raw_blocking("Echo", body, opts()),
        ] {
            let reply = reply.expect("raw call");
            let SuccessResult(r): EchoResult =
                ringrpc_codec::apache::read_body(reply.body).expect("raw reply decodes");
            assert_eq!(r.msg, format!("raw {i}"));
        }
    }
    // The client itself, called off a core, says so.
    let client = Client::<E>::new(ClientConfig::new(vec![server.local_addr()]));
    assert!(matches!(
        block_on(client.call_thrift::<_, EchoResult>("Echo", &req("echo", "x"), opts())),
        Err(ClientError::NotOnCore)
    ));
    runtime.stop(Duration::from_millis(50));
    server.shutdown();
}

fn errors_from_a_plain_thread_come_back_typed<E: TestEngine>() {
    let (server, runtime, outside) = setup::<E>();
    let short = CallOptions::default().timeout(Duration::from_millis(50));
    let r = block_on(outside.call_thrift::<_, EchoResult>("Echo", &req("sleep", "2000"), short));
    assert!(matches!(r, Err(ClientError::Timeout(_))), "{r:?}");

    let r = outside.call_thrift_blocking::<_, EchoResult>(
        "NoSuchMethod",
        &req("echo", "x"),
        CallOptions::default(),
    );
    assert!(
        matches!(
            r,
            Err(ClientError::Remote {
                kind: ExceptionKind::UnknownMethod,
                ..
            })
        ),
        "{r:?}"
    );
    let pb = PbRequest::default();
    let r: Result<PbResponse, _> =
        block_on(outside.call_protobuf("NoSuchPbMethod", &pb, CallOptions::default()));
    assert!(
        matches!(
            r,
            Err(ClientError::Remote {
                kind: ExceptionKind::UnknownMethod,
                ..
            })
        ),
        "{r:?}"
    );
    let r = block_on(outside.call_thrift::<_, EchoResult>(
        "Echo",
        &req("biz", "no stock"),
        CallOptions::default(),
    ));
    assert!(
        matches!(&r, Err(ClientError::Biz(b)) if b.status == 1234 && b.message == "no stock"),
        "{r:?}"
    );
    let r = outside.call_thrift_blocking::<_, EchoResult>(
        "Echo",
        &req("exception", "bad"),
        CallOptions::default(),
    );
    assert!(
        matches!(
            &r,
            Err(ClientError::Remote { kind: ExceptionKind::InternalError, message }) if message == "bad"
        ),
        "{r:?}"
    );
    // A stopped runtime runs no more calls.
    runtime.stop(Duration::from_millis(50));
    let r = outside.call_thrift_blocking::<_, EchoResult>(
        "Echo",
        &req("echo", "x"),
        CallOptions::default(),
    );
    assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
    server.shutdown();
}
