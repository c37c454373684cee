//! The echo server binary serves until SIGTERM or SIGINT, then shuts down gracefully and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve_then_signal(signal: i32, engine: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["127.0.0.1:0", engine])
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo-server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("echo server on 127.0.0.1:"), "{line:?}");
    let addr: std::net::SocketAddr = line
        .trim_start_matches("echo server on ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // It really serves: a TCP connect succeeds.
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("listening");
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped only sends a signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop after the signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn sigterm_stops_the_uring_server() {
    serve_then_signal(libc::SIGTERM, "uring");
}

#[test]
fn sigint_stops_the_baseline_server() {
    serve_then_signal(libc::SIGINT, "baseline");
}
