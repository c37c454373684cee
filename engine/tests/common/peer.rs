//! A slow TCP peer on a plain thread, for checking that a send dropped mid-write keeps its
//! buffers alive: the peer accepts one connection with a tiny receive buffer (so a large send
//! stays partial in the kernel), reads nothing until released, then reads to end of stream and
//! checks every byte.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use super::pattern;

/// The peer: its address, the release switch, and its verdict.
pub struct SlowPeer {
    /// Where to connect.
    pub addr: SocketAddr,
    release: mpsc::Sender<()>,
    reader: JoinHandle<Result<usize, String>>,
}

/// Starts a peer expecting message `seed` (bytes `pattern(seed, i)`).
pub fn slow_peer(seed: u64) -> SlowPeer {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    // Inherited by the accepted socket: the sender's data mostly waits in its own queue.
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(1).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let listener: std::net::TcpListener = socket.into();
    let (release, released) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
        // Wait (bounded) for the test to drop the send and scribble over freed memory.
        let _ = released.recv_timeout(Duration::from_secs(30));
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(got);
            }
            for (k, &b) in buf[..n].iter().enumerate() {
                if b != pattern(seed, got + k) {
                    return Err(format!(
                        "byte {} is {b:#x}, not {:#x}: the kernel sent freed memory",
                        got + k,
                        pattern(seed, got + k)
                    ));
                }
            }
            got += n;
        }
    });
    SlowPeer {
        addr,
        release,
        reader,
    }
}

impl SlowPeer {
    /// Lets the peer read; returns how many bytes arrived (all checked) once the sender closed.
    pub fn release_and_check(self) -> usize {
        let _ = self.release.send(());
        match self.reader.join().expect("peer thread") {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Allocates and fills `count` buffers of `size` bytes with `0xEE` and keeps them: memory freed
/// just before is likely reused, so a kernel still reading it sends `0xEE` instead of the data.
pub fn scribble(count: usize, size: usize) -> Vec<Vec<u8>> {
    (0..count).map(|_| vec![0xEE; size]).collect()
}

/// Message `seed` of `len` bytes as chunks of `chunk` bytes whose owners count themselves:
/// the counter is the number of chunks whose memory is still alive (a `Bytes` or an op holds
/// them). A send that frees its chunks while the kernel may still read them shows up as the
/// count dropping too early.
pub fn tracked_chunks(seed: u64, len: usize, chunk: usize) -> (Vec<Bytes>, Arc<AtomicUsize>) {
    let alive = Arc::new(AtomicUsize::new(0));
    let chunks = (0..len)
        .step_by(chunk)
        .map(|off| {
            let end = (off + chunk).min(len);
            alive.fetch_add(1, Ordering::SeqCst);
            Bytes::from_owner(Tracked {
                data: (off..end).map(|i| pattern(seed, i)).collect(),
                alive: alive.clone(),
            })
        })
        .collect();
    (chunks, alive)
}

struct Tracked {
    data: Vec<u8>,
    alive: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Scribble first: were the kernel still reading this memory, the peer would see it.
        self.data.fill(0xEE);
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}
