//! A tiny HTTP/1.1 endpoint serving `GET /metrics` from a plain thread: [`MetricsServer`].
//!
//! A crate of its own so that `ringrpc-governance` (the metrics, their Prometheus text in
//! `obs::prometheus`) has no sockets: only the servers and tools that expose an endpoint depend
//! on this one.
//!
//! One request per connection (`Connection: close`), handled in turn on the server's own
//! thread: scrapes come every few seconds, so nothing more is needed, and the cores never see
//! it. Requests other than `GET /metrics` (or `HEAD`) get `404` or `405`.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringrpc_governance::obs::prometheus::CONTENT_TYPE;
use ringrpc_governance::obs::MetricsRegistry;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// A running metrics endpoint; stops when dropped (or on [`MetricsServer::shutdown`]).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the endpoint serves: the body of `GET /metrics`.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

impl MetricsServer {
    /// Serves `registry` on `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    ///
    /// # Errors
    /// Binding `addr` or starting the thread failed.
    pub fn serve(addr: SocketAddr, registry: MetricsRegistry) -> io::Result<Self> {
        Self::serve_with(addr, Arc::new(move || registry.render()))
    }

    /// Serves whatever `render` returns (e.g. several registries concatenated).
    ///
    /// # Errors
    /// Binding `addr` or starting the thread failed.
    pub fn serve_with(addr: SocketAddr, render: Render) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringrpc-metrics".to_owned())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        if let Err(e) = handle(conn, &render) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                }
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

fn handle(mut conn: TcpStream, render: &Render) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
                false,
            );
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render();
            respond(&mut conn, "200 OK", CONTENT_TYPE, &body, method == "HEAD")
        }
        (_, "/metrics") => respond(
            &mut conn,
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "text/plain",
            "",
            false,
        ),
        _ => respond(
            &mut conn,
            "404 Not Found",
            "text/plain",
            "not found\n",
            false,
        ),
    }
}
