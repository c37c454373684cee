//! TCP for the baseline engine: tokio sockets, a per-connection read buffer, vectored writes.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::{stop_notify, stopping, with_counters};
use crate::{Listener, Stream, StreamReader, StreamWriter};

/// Bytes each read may fill: the per-connection buffer grows by this much when it runs low.
const READ_CHUNK: usize = 64 * 1024;

/// Most slices handed to one `writev` (the kernel's `UIO_MAXIOV` is 1024).
const MAX_IOV: usize = 1024;

/// A per-core listener on tokio.
#[derive(Debug)]
pub struct BaselineListener {
    inner: TcpListener,
}

impl Listener for BaselineListener {
    type Stream = BaselineStream;

    fn bind(addr: SocketAddr, backlog: u32) -> io::Result<Self> {
        let std = crate::socket::bind_reuseport(addr, backlog)?;
        Ok(Self {
            inner: TcpListener::from_std(std)?,
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<Option<(BaselineStream, SocketAddr)>> {
        let stop = stop_notify();
        let notified = stop.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stopping() {
            return Ok(None);
        }
        tokio::select! {
            r = self.inner.accept() => {
                let (stream, peer) = r?;
                stream.set_nodelay(true)?;
                with_counters(|c| c.add_accepted());
                Ok(Some((BaselineStream { inner: stream }, peer)))
            }
            () = &mut notified => Ok(None),
        }
    }
}

/// A TCP connection on tokio.
#[derive(Debug)]
pub struct BaselineStream {
    inner: TcpStream,
}

impl Stream for BaselineStream {
    type Reader = BaselineReader;
    type Writer = BaselineWriter;

    async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let inner = TcpStream::connect(addr).await?;
        inner.set_nodelay(true)?;
        Ok(Self { inner })
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn into_split(self) -> (BaselineReader, BaselineWriter) {
        let (r, w) = self.inner.into_split();
        (
            BaselineReader {
                inner: r,
                buf: BytesMut::new(),
            },
            BaselineWriter { inner: w },
        )
    }
}

/// Receiving half: reads into a per-connection buffer and hands up what arrived.
#[derive(Debug)]
pub struct BaselineReader {
    inner: OwnedReadHalf,
    buf: BytesMut,
}

impl StreamReader for BaselineReader {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.inner.read_buf(&mut self.buf).await?;
        with_counters(|c| {
            c.add_submissions(1);
            c.add_received(n as u64);
        });
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.buf.split().freeze()))
    }
}

/// Sending half: a `writev` loop over the chunk chain.
#[derive(Debug)]
pub struct BaselineWriter {
    inner: OwnedWriteHalf,
}

impl StreamWriter for BaselineWriter {
    async fn send(&mut self, mut chunks: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        let r = write_chain(&mut self.inner, &mut chunks).await;
        chunks.clear();
        (r, chunks)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

async fn write_chain(w: &mut OwnedWriteHalf, chunks: &mut [Bytes]) -> io::Result<()> {
    let mut first = 0;
    let mut total = 0u64;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_IOV)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        drop(slices);
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        total += n as u64;
        while n > 0 {
            let c = &mut chunks[first];
            let take = n.min(c.len());
            c.advance(take);
            n -= take;
            if c.is_empty() {
                first += 1;
            }
        }
    }
    with_counters(|c| {
        c.add_submissions(1);
        c.add_sent(total);
    });
    Ok(())
}
