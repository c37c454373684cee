//! Support library for `ringrpc-bench`, the wrk2-like load generator for
//! ringrpc and Kitex/Volo-compatible servers, and for the other bench binaries.
//!
//! The binaries live in `src/bin/`; this crate holds the pieces they share:
//! command-line parsing, latency histograms, open-loop pacing, CPU accounting,
//! reports (human and JSON), SVG percentile plots and a live progress line.

pub mod args;
pub mod duration;
pub mod echo;
pub mod histogram;
pub mod load;
pub mod pacing;
pub mod plot;
pub mod procstat;
pub mod progress;
pub mod report;
