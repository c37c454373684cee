//! A private etcd server on free loopback ports, for tests and local development.
//!
//! The etcd tests of this crate and the discovery tests of `ringrpc-server` start one each: a real etcd (Debian's
//! `etcd-server`, installed by `scripts/install-test-deps.sh`), its own data directory under the
//! system temp dir, killed and wiped on drop, so tests can run in parallel and leave nothing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringrpc_governance::discovery::DiscoveryError;

use crate::EtcdConfig;

/// How long [`LocalEtcd::start`] waits for the server to report healthy.
const START_LIMIT: Duration = Duration::from_secs(15);

/// A running private etcd; killed and its data removed on drop.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl LocalEtcd {
    /// Starts `etcd` from `PATH` on two free loopback ports and waits until it is healthy.
    ///
    /// # Errors
    /// `NotFound` if no `etcd` binary is installed; the spawn error; `TimedOut` (with etcd's log)
    /// if it is not healthy within 15 s or exits early.
    pub fn start() -> io::Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let found = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "etcd is not installed: run scripts/install-test-deps.sh (Debian package etcd-server)",
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "ringrpc-etcd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (client, peer) = (free_port()?, free_port()?);
        let client_addr = client.local_addr()?;
        let peer_url = format!("http://{}", peer.local_addr()?);
        let endpoint = format!("http://{client_addr}");
        drop((client, peer));
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .arg("--name=ringrpc-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=ringrpc-test={peer_url}"))
            // A short election timeout lowers etcd's minimum lease TTL to 1 s.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut etcd = Self {
            child,
            dir,
            endpoint,
        };
        let deadline = Instant::now() + START_LIMIT;
        while !healthy(client_addr) {
            let exited = etcd.child.try_wait()?;
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd not healthy (exit status {exited:?}):\n{log}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// The client endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client configuration for this server (quick retries, for tests).
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new([self.endpoint.clone()]).retry_backoff(Duration::from_millis(100))
    }

    /// Puts `key = value` as is, without a lease (to write entries as another registrant,
    /// such as a Kitex server, would).
    ///
    /// # Errors
    /// [`DiscoveryError::Registry`] if etcd cannot be reached or refuses.
    pub fn put(&self, key: &str, value: &str) -> Result<(), DiscoveryError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with_client(|mut c| async move {
            c.put(key, value, None).await?;
            Ok(())
        })
    }

    /// Every key under `prefix` with its value, in key order, as stored.
    ///
    /// # Errors
    /// [`DiscoveryError::Registry`] if etcd cannot be reached or refuses.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, DiscoveryError> {
        let prefix = prefix.to_owned();
        self.with_client(|mut c| async move {
            let resp = c
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await?;
            Ok(resp
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    )
                })
                .collect())
        })
    }

    /// Runs `f` with a fresh client on a throwaway one-thread runtime.
    fn with_client<T, F, Fut>(&self, f: F) -> Result<T, DiscoveryError>
    where
        F: FnOnce(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DiscoveryError::Registry(format!("tokio runtime: {e}")))?;
        let endpoint = self.endpoint.clone();
        rt.block_on(async move {
            let client = etcd_client::Client::connect([endpoint], None).await?;
            f(client).await
        })
        .map_err(|e| DiscoveryError::Registry(e.to_string()))
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
}

/// Whether etcd's `/health` endpoint answers healthy.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains(r#""health":"true""#)
}
