//! Arbitrary bytes never panic any decoder and never make it allocate more than the
//! configured limit allows. A counting global allocator records, per thread and only while
//! a decode call runs, the largest single allocation and the total allocated.
//!
//! Bounds checked (limit = `max_frame_size`): for the frame decoder, no single allocation over
//! the limit and at most twice the limit (plus a few small fixed allocations) per decode call;
//! for the other decoders, which have no limit of their own, every single allocation ≤ 16 ×
//! limit and the total per call ≤ 32 × limit (the TTHeader info decoder called directly, for
//! one, indexes 40–64 bytes per entry of at least 4 wire bytes). Nothing is ever sized from an
//! untrusted length or count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use ringrpc_codec::apache::read_body;
use ringrpc_codec::thrift::Envelope;
use ringrpc_codec::*;

struct CountingAllocator;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    if TRACKING.with(Cell::get) {
        LARGEST.with(|l| l.set(l.get().max(size)));
        TOTAL.with(|t| t.set(t.get() + size));
    }
}

// SAFETY: forwards every call to `System` unchanged; only records sizes in thread-locals
// with const initialisers (no allocation, no destructor).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const LIMIT: usize = 1024;

/// Runs the frame decoder with allocation tracking and checks the strict bound: no single
/// allocation over the limit, and at most the limit twice per call (the frame copied once when
/// it straddles segments, plus the TTHeader key-value index, which the decoder caps at the
/// limit) plus a few small fixed allocations.
fn strictly_bounded<R>(f: impl FnOnce() -> R) -> R {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    let (largest, total) = (LARGEST.with(Cell::get), TOTAL.with(Cell::get));
    assert!(largest <= LIMIT, "single allocation of {largest} bytes");
    assert!(
        total <= 2 * LIMIT + 256,
        "{total} bytes allocated in one decode"
    );
    r
}

/// Runs `f` with allocation tracking and checks the bounds.
fn bounded<R>(f: impl FnOnce() -> R) -> R {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    let (largest, total) = (LARGEST.with(Cell::get), TOTAL.with(Cell::get));
    assert!(
        largest <= 16 * LIMIT,
        "single allocation of {largest} bytes"
    );
    assert!(total <= 32 * LIMIT, "{total} bytes allocated in one decode");
    r
}

/// Inputs: pure noise, or noise behind a plausible prefix so that deeper paths run.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..1500);
    let prefixes: Vec<&'static [u8]> = vec![
        &[],
        &[0, 0, 0, 0x40, 0x10, 0, 0, 0, 0, 0, 0, 1],
        &[0, 0, 0, 0x40, 0x80, 1, 0, 1],
        &[0, 0, 0, 0x40, 0x90, 1, 0, 2],
        &[0x80, 1, 0, 1, 0, 0, 0, 1, b'm', 0, 0, 0, 1],
    ];
    (proptest::sample::select(prefixes), noise).prop_map(|(p, n)| [p, &n].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn frame_decoder_never_panics_or_overallocates(data in input(), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.extend([0, data.len()]);
        points.sort_unstable();
        points.dedup();
        let mut dec = FrameDecoder::new(DecoderConfig { max_frame_size: LIMIT });
        let mut buf = LinkBuf::new();
        'feed: for w in points.windows(2) {
            buf.push(Bytes::copy_from_slice(&data[w[0]..w[1]]));
            loop {
                match strictly_bounded(|| dec.decode(&mut buf)) {
                    Ok(Decoded::Frame(f)) => {
                        prop_assert!(f.body.len() <= LIMIT);
                        if f.head.message_type == MessageType::Exception {
                            let _ = bounded(|| f.exception());
                        }
                    }
                    Ok(Decoded::NeedMore(n)) => { prop_assert!(n > 0); break; }
                    Err(_) => break 'feed,
                }
            }
        }
    }

    #[test]
    fn ttheader_info_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..LIMIT)) {
        let _ = bounded(|| TtHeader::decode_info(Bytes::from(data), 0, 0));
    }

    #[test]
    fn envelope_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..LIMIT), pb in any::<bool>()) {
        let magic = if pb { thrift::KITEX_PROTOBUF_MAGIC } else { thrift::THRIFT_BINARY_MAGIC };
        let _ = bounded(|| Envelope::decode(Bytes::from(data), magic));
    }

    #[test]
    fn exception_and_skip_never_panic(data in proptest::collection::vec(any::<u8>(), 0..LIMIT)) {
        let _ = bounded(|| ApplicationException::decode(&data));
        let _ = bounded(|| thrift::skip_struct_len(&data));
    }

    #[test]
    fn thrift_crate_bodies_never_overallocate(data in proptest::collection::vec(any::<u8>(), 0..LIMIT)) {
        let _ = bounded(|| read_body::<common::EchoWrapper>(Bytes::from(data)));
    }

    #[test]
    fn protobuf_error_proto_never_panics(data in proptest::collection::vec(any::<u8>(), 0..LIMIT)) {
        let _ = bounded(|| protobuf::read_body::<ErrorProto>(Bytes::from(data)));
    }
}
