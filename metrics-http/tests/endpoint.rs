//! The `/metrics` endpoint over real loopback connections: what it serves for `GET` and `HEAD`,
//! how it refuses other requests, and that it stops listening on shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ringrpc_governance::obs::prometheus::CONTENT_TYPE;
use ringrpc_governance::obs::{CoreMetrics, MetricsConfig, MetricsRegistry};
use ringrpc_metrics_http::MetricsServer;

/// Sends `request` on a fresh connection and reads the whole response (the server closes).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn endpoint_serves_get_metrics() {
    let registry = MetricsRegistry::new(MetricsConfig::subsystem("client"));
    let metrics = CoreMetrics::new(&[0.01]);
    metrics
        .method("Ping")
        .record(Duration::from_millis(1), None);
    registry.publish(0, metrics.snapshot());
    let server = MetricsServer::serve("127.0.0.1:0".parse().unwrap(), registry.clone()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let resp = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    );
    let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("content-type: {CONTENT_TYPE}"))),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    // Exactly the registry's rendering, which counts the one call.
    assert_eq!(body, registry.render());
    assert!(
        body.lines()
            .any(|l| l.starts_with("ringrpc_client_calls_total{") && l.ends_with(" 1")),
        "{body}"
    );

    let head_only = http(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head_only.starts_with("HTTP/1.1 200 OK"));
    assert!(head_only.ends_with("\r\n\r\n"), "HEAD has no body");
    assert!(http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 405"));
    server.shutdown();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
}

#[test]
fn an_oversized_request_head_is_refused_and_the_endpoint_keeps_serving() {
    let server = MetricsServer::serve_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(|| "up 1\n".to_owned()),
    )
    .unwrap();
    let addr = server.local_addr();
    // Over the 8 KiB limit, and a whole number of the server's 1 KiB reads, so it has read
    // everything when it answers (unread input would make its close a reset, not a FIN).
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.resize(9 * 1024, b'a');
    let resp = http(addr, &huge);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let resp = http(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(resp.ends_with("\r\n\r\nup 1\n"), "{resp}");
}
