//! Helpers shared by the engine test binaries: run a test body on a core, an echo server, and
//! message patterns.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ringrpc_engine::uring::{Uring, UringConfig};
use ringrpc_engine::{
    CoreId, Engine, EngineError, Listener, Runtime, RuntimeConfig, Stream, StreamReader,
    StreamWriter,
};

pub mod peer;

/// A boxed per-core init function.
pub type Init = Box<dyn Fn(CoreId) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// How long any single test body may run.
pub const BODY_LIMIT: Duration = Duration::from_secs(60);

/// Runs `body` on core 0 of a runtime started by `launch`, returns its result, stops the runtime.
pub fn run_with<T, Fut>(
    launch: impl FnOnce(RuntimeConfig, Init) -> Result<Runtime, EngineError>,
    cores: usize,
    body: impl FnOnce() -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel::<T>();
    let slot = Mutex::new(Some((body, tx)));
    let init: Init = Box::new(move |core| {
        let taken = if core.0 == 0 {
            slot.lock().take()
        } else {
            None
        };
        Box::pin(async move {
            if let Some((body, tx)) = taken {
                let _ = tx.send(body().await);
            }
        })
    });
    let rt = launch(RuntimeConfig::with_cores(cores), init).expect("launch");
    let r = rx
        .recv_timeout(BODY_LIMIT)
        .expect("test body finished in time");
    rt.stop(Duration::from_millis(50));
    r
}

/// [`run_with`] on `E` with its default settings.
pub fn run<E: Engine, T, Fut>(cores: usize, body: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    run_with(|c, i| E::launch(c, i), cores, body)
}

/// [`run_with`] on the io_uring engine with explicit settings.
pub fn run_uring<T, Fut>(
    cfg: UringConfig,
    cores: usize,
    body: impl FnOnce() -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    run_with(move |c, i| Uring::launch_with(c, cfg, i), cores, body)
}

/// Binds a listener on the current core and echoes every connection until the runtime stops.
pub fn start_echo<E: Engine>() -> SocketAddr {
    let mut l = E::Listener::bind("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
    let addr = l.local_addr().unwrap();
    E::spawn(async move {
        while let Ok(Some((s, _))) = l.accept().await {
            E::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut out = Vec::new();
                while let Ok(Some(b)) = r.recv().await {
                    out.push(b);
                    let (res, v) = w.send(out).await;
                    out = v;
                    if res.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// The byte at offset `i` of test message `seed`.
pub fn pattern(seed: u64, i: usize) -> u8 {
    let x =
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 29) as u8
}

/// Message `seed` of `len` bytes, split into chunks of at most `chunk` bytes.
pub fn message(seed: u64, len: usize, chunk: usize) -> Vec<Bytes> {
    let data: Vec<u8> = (0..len).map(|i| pattern(seed, i)).collect();
    let data = Bytes::from(data);
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let end = (off + chunk).min(len);
        out.push(data.slice(off..end));
        off = end;
    }
    out
}

/// Sends message `seed` of `len` bytes over a new connection to `addr` and checks every byte of
/// the echo. Sending runs in its own task, so large messages do not deadlock.
pub async fn echo_check<E: Engine>(addr: SocketAddr, seed: u64, len: usize, chunk: usize) {
    let s = E::Stream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let chunks = message(seed, len, chunk);
    E::spawn(async move {
        let (res, _) = w.send(chunks).await;
        res.expect("send");
    });
    let mut got = 0usize;
    while got < len {
        let b = r.recv().await.expect("recv").expect("echo ended early");
        for (k, &byte) in b.iter().enumerate() {
            assert_eq!(
                byte,
                pattern(seed, got + k),
                "byte {} of message {seed}",
                got + k
            );
        }
        got += b.len();
    }
    assert_eq!(got, len);
}

/// Number of open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
