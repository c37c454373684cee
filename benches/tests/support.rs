//! End-to-end use of the support modules the way `ringrpc-bench load` uses
//! them: parse flags, pace an open-loop schedule across workers, record
//! latencies from intended starts, then report, plot and print.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ringrpc_benches::args::{Cli, Command};
use ringrpc_benches::histogram::LatencyHistogram;
use ringrpc_benches::pacing::{latency_since_intended, Pacer};
use ringrpc_benches::plot::render_percentile_svg;
use ringrpc_benches::procstat::{cpu_us_per_request, self_cpu_time};
use ringrpc_benches::progress::LoadCounters;
use ringrpc_benches::report::{format_comparison, format_run, Report, RunReport};

/// Simulates a run of `workers` senders at `rate`, where the simulated
/// server takes `service` per call and one worker stalls for `stall` once.
fn simulate(rate: f64, workers: usize, service: Duration, stall: Duration) -> LatencyHistogram {
    let start = Instant::now();
    let global = Pacer::new(rate, start).unwrap();
    let mut total = LatencyHistogram::new();
    for w in 0..workers {
        let mut pacer = global.for_worker(w, workers).unwrap();
        let mut h = LatencyHistogram::new();
        // Virtual clock: when this worker is free to send again.
        let mut free_at = start;
        for call in 0..(rate as usize / workers) {
            let intended = pacer.next_intended();
            let mut send = intended.max(free_at);
            if w == 0 && call == 10 {
                send += stall;
            }
            let done = send + service;
            free_at = done;
            h.record(latency_since_intended(intended, done));
        }
        total.merge(&h);
    }
    total
}

#[test]
fn load_pipeline_from_flags_to_reports() {
    let cli = Cli::try_parse_from([
        "ringrpc-bench",
        "load",
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--label",
        "sim",
    ])
    .unwrap();
    cli.validate().unwrap();
    let Command::Load(args) = cli.command else {
        panic!("expected load");
    };
    let rate = args.load.rate.unwrap();

    let cpu_before = self_cpu_time().unwrap();
    let smooth = simulate(rate, 4, Duration::from_micros(200), Duration::ZERO);
    let stalled = simulate(
        rate,
        4,
        Duration::from_micros(200),
        Duration::from_millis(50),
    );
    let cpu = self_cpu_time().unwrap().saturating_sub(cpu_before);
    assert_eq!(smooth.count(), 1000);
    assert_eq!(stalled.count(), 1000);
    assert_eq!(smooth.max(), Duration::from_micros(200));
    // The stall is charged to every call queued behind it, not hidden: at
    // 250 calls/s per worker, about 13 calls wait behind a 50 ms stall.
    assert!(stalled.max() >= Duration::from_millis(50));
    assert!(stalled.percentile(99.0) > Duration::from_millis(5));

    let counters = Arc::new(LoadCounters::new());
    for _ in 0..stalled.count() {
        counters.add_request();
    }
    let (requests, errors) = counters.snapshot();
    let run = |label: &str, h: &LatencyHistogram| RunReport {
        label: Some(label.to_owned()),
        engine: None,
        protocol: args.load.protocol.to_string(),
        conn_mode: args.load.conn_mode.to_string(),
        concurrency: args.load.concurrency as u64,
        payload: args.load.payload as u64,
        rate: args.load.rate,
        duration_s: args.load.duration.as_secs_f64(),
        requests,
        errors,
        qps: RunReport::qps_for(requests, args.load.duration),
        latency_us: h.summary(),
        server_cpu_us_per_req: None,
        client_cpu_us_per_req: cpu_us_per_request(cpu, requests),
        errors_by_kind: Default::default(),
    };
    let runs = vec![run("smooth", &smooth), run("stalled", &stalled)];
    let text = format_run(&runs[0]);
    assert!(text.contains("open loop at 1000 req/s"), "{text}");
    let table = format_comparison(&runs);
    let p99 = table.lines().find(|l| l.starts_with("p99 ")).unwrap();
    assert!(p99.contains("stalled/smooth"), "{p99}");

    let json = Report::new(runs.clone()).to_json().unwrap();
    assert!(json.contains("\"server_cpu_us_per_req\": null"));
    assert_eq!(
        Report::from_json(&json).unwrap().runs[0].label,
        runs[0].label
    );

    let svg = render_percentile_svg(&[("smooth", &smooth), ("stalled", &stalled)]).unwrap();
    assert_eq!(svg.matches("<path").count(), 2);
}
