//! The server's connection deadlines, over raw sockets, once per engine: a frame must complete
//! within `read_timeout` of its first byte however its bytes trickle in; whole frames sent
//! slowly are fine; a connection with no frame in progress and no call running is closed after
//! `idle_timeout`, counted from the end of its last call.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

engine_tests!(
    a_trickled_frame_is_closed_at_its_read_deadline,
    whole_frames_sent_slowly_are_served,
    an_idle_connection_is_closed_after_the_idle_timeout,
    idle_counts_from_the_end_of_the_last_call,
);

const READ_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether the server closed `s`, waiting at most the socket's read timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected {n} bytes from the server"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// Three peers each send the start of a frame one byte every 100 ms (each byte arriving well
/// within the read timeout): the server closes each within a bounded time of its first byte.
fn a_trickled_frame_is_closed_at_its_read_deadline<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| {
        b.read_timeout(READ_TIMEOUT)
            .idle_timeout(Duration::from_secs(30))
    });
    let addr = server.local_addr();
    let frame = raw_echo_call(1, "echo", &"x".repeat(100));
    let tricklers: Vec<_> = (0..3)
        .map(|_| {
            let frame = frame.clone();
            std::thread::spawn(move || {
                let mut s = raw_connect(addr, Duration::from_millis(100));
                let start = Instant::now();
                // 4 s of trickling is 40 bytes: the frame never completes.
                for byte in &frame[..40] {
                    if s.write_all(std::slice::from_ref(byte)).is_err() || closed_by_server(&mut s)
                    {
                        return Some(start.elapsed());
                    }
                }
                None
            })
        })
        .collect();
    for t in tricklers {
        let closed_after = t.join().unwrap();
        let closed_after = closed_after.expect("a trickling peer was never closed");
        assert!(
            closed_after >= READ_TIMEOUT - Duration::from_millis(50)
                && closed_after < Duration::from_secs(3),
            "closed after {closed_after:?} with a read timeout of {READ_TIMEOUT:?}"
        );
    }
    server.shutdown();
}

/// Every frame is sent in two parts 100 ms apart, and frames 250 ms apart: the connection lives
/// far longer than the read timeout and every call is answered.
fn whole_frames_sent_slowly_are_served<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| {
        b.read_timeout(READ_TIMEOUT)
            .idle_timeout(Duration::from_secs(30))
    });
    let mut s = raw_connect(server.local_addr(), Duration::from_secs(5));
    let start = Instant::now();
    for seq in 1..=6 {
        let frame = raw_echo_call(seq, "echo", &format!("slow {seq}"));
        let (head, tail) = frame.split_at(frame.len() / 2);
        s.write_all(head).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(tail).unwrap();
        let (f, _) = read_frame(&mut s);
        assert_eq!(f.head.seq_id, seq);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(start.elapsed() > READ_TIMEOUT * 4);
    raw_echo(&mut s, 7, "still open");
    server.shutdown();
}

/// A connection that made one call and then says nothing is closed after the idle timeout.
fn an_idle_connection_is_closed_after_the_idle_timeout<E: TestEngine>() {
    const IDLE: Duration = Duration::from_millis(500);
    let probe = Arc::new(Probe::default());
    let server =
        start_test_server::<E>(&probe, |b| b.read_timeout(READ_TIMEOUT).idle_timeout(IDLE));
    let mut s = raw_connect(server.local_addr(), Duration::from_secs(5));
    raw_echo(&mut s, 1, "then silence");
    let start = Instant::now();
    let (rest, end) = read_until_close(&mut s);
    let took = start.elapsed();
    assert_eq!((rest.len(), end), (0, ReadEnd::Closed));
    assert!(
        took >= IDLE - Duration::from_millis(50) && took < Duration::from_secs(4),
        "closed after {took:?} with an idle timeout of {IDLE:?}"
    );
    server.shutdown();
}

/// A call running longer than the idle timeout keeps its connection open; once it is answered
/// and the peer says nothing more, the idle timeout closes the connection.
fn idle_counts_from_the_end_of_the_last_call<E: TestEngine>() {
    const IDLE: Duration = Duration::from_millis(500);
    let probe = Arc::new(Probe::default());
    let server =
        start_test_server::<E>(&probe, |b| b.read_timeout(READ_TIMEOUT).idle_timeout(IDLE));
    let mut s = raw_connect(server.local_addr(), Duration::from_secs(5));
    s.write_all(&raw_echo_call(1, "sleep", "1000")).unwrap();
    let (f, _) = read_frame(&mut s);
    assert_eq!(f.head.seq_id, 1, "the long call was answered");
    let start = Instant::now();
    let (rest, end) = read_until_close(&mut s);
    let took = start.elapsed();
    assert_eq!(
        (rest.len(), end),
        (0, ReadEnd::Closed),
        "an idle connection stayed open for {took:?} after its last call"
    );
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    server.shutdown();
}
