//! What a receive costs handed up over its ring buffer (`Bytes::from_owner`, the owner holding
//! the pool's `Arc`, and the drop that gives the buffer back) against copying its bytes into
//! memory of their own, by size: the measurement behind `SMALL_RECV_COPY` in
//! `engine/src/uring/buf_ring.rs`. The source sits 2 KiB past a 4 KiB boundary, as ring buffers
//! do (`BUF_SKEW`).
//!
//! `cargo bench -p ringrpc-engine --bench recv_copy`

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};

/// Stands in for the engine's `BufOwner`: the pool's `Arc` and the buffer's id and length.
struct Owner {
    pool: Arc<Vec<u8>>,
    bid: u16,
    len: u32,
}

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        let start = 2048 + usize::from(self.bid) * 16384;
        &self.pool[start..start + self.len as usize]
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // The real owner writes a ring entry and publishes the tail (a few stores).
        black_box(self.bid);
    }
}

fn recv_copy(c: &mut Criterion) {
    let pool = Arc::new(vec![7u8; 4 * 16384]);
    let mut g = c.benchmark_group("recv");
    for len in [16usize, 128, 512, 1024, 2048, 4096, 8192, 14336] {
        g.bench_function(format!("hold/{len}"), |b| {
            b.iter(|| {
                let bytes = Bytes::from_owner(Owner {
                    pool: pool.clone(),
                    bid: 1,
                    len: len as u32,
                });
                black_box(&bytes);
            });
        });
        g.bench_function(format!("copy/{len}"), |b| {
            let src = &pool[2048 + 16384..2048 + 16384 + len];
            b.iter(|| {
                let mut dst = BytesMut::with_capacity(len);
                dst.extend_from_slice(black_box(src));
                black_box(dst.freeze());
            });
        });
    }
    g.finish();
}

mod group {
    //! The criterion group (in a module so its generated function can be documented-exempt).
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, recv_copy);
}
use group::benches;
criterion_main!(benches);
