//! `ringrpc-bench`: the echo server, the load generator, and the engine comparison.
//!
//! - `server`: the kitex-benchmark echo service on either engine, every framing auto-detected.
//! - `load`: drive any Kitex-compatible echo server and report QPS, latency and CPU per request.
//! - `compare`: run the echo server on each engine in turn (a child process pinned to the
//!   server CPUs), load it from the other CPUs, and print the results side by side.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use ringrpc_benches::args::{Cli, Command, CompareArgs, EngineArg, LoadArgs, ServerArgs};
use ringrpc_benches::echo::echo_service;
use ringrpc_benches::histogram::LatencyHistogram;
use ringrpc_benches::load::{run_load, LoadOutcome, LoadPlan};
use ringrpc_benches::plot::write_percentile_svg;
use ringrpc_benches::procstat::allowed_cpus;
use ringrpc_benches::report::{print_comparison, print_run, Report, RunReport};
use ringrpc_server::governance::limit::LimitConfig;
use ringrpc_server::governance::obs::{MetricsConfig, MetricsRegistry};
use ringrpc_server::{EngineKind, Server};

/// What the `server` subcommand prints once it listens; `compare` waits for it.
const READY_PREFIX: &str = "listening on ";

/// Keeps freed memory in the process: glibc otherwise trims the heap top past 128 KiB free and
/// maps blocks past its (adaptive) mmap threshold afresh, so a load with 1,000 × 16 KiB calls in
/// flight page-faults on every round (8 % of the generator's CPU in `exc_page_fault`, and the
/// 16 KiB × 1,000 rows measured the allocator, not the engines). Both engines' servers and the
/// generator run with the same setting.
fn keep_freed_memory() {
    // SAFETY: mallopt only changes glibc allocator parameters; it runs before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse_and_validate();
    let result = match cli.command {
        Command::Server(a) => serve(&a),
        Command::Load(a) => load(&a),
        Command::Compare(a) => compare(&a),
    };
    if let Err(e) = result {
        eprintln!("ringrpc-bench: {e}");
        std::process::exit(1);
    }
}

type AnyError = Box<dyn std::error::Error>;

fn engine_kind(e: EngineArg) -> EngineKind {
    match e {
        EngineArg::Uring => EngineKind::Uring,
        EngineArg::Baseline => EngineKind::Baseline,
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, AnyError> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address").into())
}

fn serve(a: &ServerArgs) -> Result<(), AnyError> {
    let mut builder = Server::builder()
        .addr(resolve(&a.addr)?)
        .cores(a.cores)
        .engine(engine_kind(a.engine))
        .service(echo_service)
        .shutdown_grace(Duration::from_secs(1));
    if a.governance {
        // Limits far above any load here: every call pays for the check, none is refused.
        builder = builder
            .rate_limit(LimitConfig {
                max_qps: Some(100_000_000),
                max_concurrency: Some(1_000_000),
                ..LimitConfig::default()
            })
            .handler_timeout(Duration::from_secs(5))
            .metrics(MetricsRegistry::new(MetricsConfig::subsystem("server")));
    }
    let server = builder.start()?;
    let gov = if a.governance { " governance" } else { "" };
    // The handler goes in before the announcement: `compare` may signal right after reading it.
    server.shutdown_on_signal()?;
    println!(
        "{READY_PREFIX}{} engine {}{gov}",
        server.local_addr(),
        a.engine
    );
    std::io::stdout().flush()?;
    server.wait();
    Ok(())
}

fn write_outputs(
    outcomes: &[LoadOutcome],
    json: Option<&std::path::Path>,
    plot: Option<&std::path::Path>,
) -> Result<(), AnyError> {
    if let Some(path) = json {
        Report::new(outcomes.iter().map(|o| o.report.clone()).collect()).write_json(path)?;
    }
    if let Some(path) = plot {
        let runs: Vec<(&str, &LatencyHistogram)> = outcomes
            .iter()
            .map(|o| (o.report.name(), &o.histogram))
            .collect();
        write_percentile_svg(path, &runs)?;
    }
    Ok(())
}

fn load(a: &LoadArgs) -> Result<(), AnyError> {
    let targets = a
        .addrs
        .iter()
        .map(|s| resolve(s))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = run_load(&LoadPlan {
        targets,
        options: a.load.clone(),
        cores: a.cores,
        pin: None,
        server_pid: a.server_pid,
        label: a.label.clone(),
        engine: None,
    })?;
    print_run(&outcome.report);
    write_outputs(
        std::slice::from_ref(&outcome),
        a.json.as_deref(),
        a.plot.as_deref(),
    )
}

/// A server child process, stopped (SIGTERM, then kill) when dropped.
struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) only sends a signal.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ringrpc-bench server` on `engine`, pinned to `cpus` with taskset, and waits until it
/// listens.
fn spawn_server(
    engine: EngineArg,
    addr: &str,
    cpus: &str,
    cores: usize,
    governance: bool,
) -> Result<(ServerChild, SocketAddr), AnyError> {
    let exe = std::env::current_exe()?;
    let mut child = Process::new("taskset")
        .args(["-c", cpus])
        .arg(exe)
        .args(["server", "--engine", engine.as_str(), "--addr", addr])
        .args(["--cores", &cores.to_string()])
        .args(governance.then_some("--governance"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the server with taskset: {e}"))?;
    let stdout = child.stdout.take().ok_or("server has no stdout")?;
    let child = ServerChild(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let listening = line
        .strip_prefix(READY_PREFIX)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("server did not start: {line:?}"))?;
    Ok((child, listening.parse()?))
}

/// The median of `values` (the upper one of an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Of runs made in rounds of `configs` runs each (the same order every round), the run of
/// median QPS of each configuration, in that order.
fn median_runs(reports: &[RunReport], configs: usize) -> Vec<RunReport> {
    (0..configs)
        .map(|c| {
            let mut runs: Vec<&RunReport> = reports.iter().skip(c).step_by(configs).collect();
            runs.sort_by(|x, y| x.qps.total_cmp(&y.qps));
            runs[runs.len() / 2].clone()
        })
        .collect()
}

fn compare(a: &CompareArgs) -> Result<(), AnyError> {
    let allowed = allowed_cpus()?;
    let client_cpus = a.client_cpus(&allowed)?;
    // With --governance each engine runs bare, then governed on both sides.
    let modes: &[bool] = if a.load.governance {
        &[false, true]
    } else {
        &[false]
    };
    // Runs in order: round by round, engine by engine, bare before governed.
    let mut outcomes = Vec::new();
    for round in 1..=a.rounds {
        for &engine in &a.engines {
            for &governance in modes {
                let (child, addr) = spawn_server(
                    engine,
                    &a.addr,
                    &a.server_cores.to_string(),
                    a.server_cores.len(),
                    governance,
                )?;
                let label = if governance {
                    format!("{engine}+governance")
                } else {
                    engine.as_str().to_owned()
                };
                let of = if a.rounds > 1 {
                    format!(" (round {round} of {})", a.rounds)
                } else {
                    String::new()
                };
                eprintln!(
                    "{label}{of}: server on {addr} (cpus {}), load from cpus {client_cpus}",
                    a.server_cores
                );
                let mut options = a.load.clone();
                options.governance = governance;
                let outcome = run_load(&LoadPlan {
                    targets: vec![addr],
                    options,
                    cores: client_cpus.len(),
                    pin: Some(client_cpus.cpus().to_vec()),
                    server_pid: Some(child.0.id()),
                    label: Some(label),
                    engine: Some(engine.as_str().to_owned()),
                })?;
                drop(child);
                print_run(&outcome.report);
                outcomes.push(outcome);
            }
        }
    }
    let reports: Vec<_> = outcomes.iter().map(|o| o.report.clone()).collect();
    let configs = a.engines.len() * modes.len();
    print_comparison(&median_runs(&reports, configs));
    if a.load.governance {
        // Bare and governed of one engine ran back to back: compare them pairwise, per round.
        for (e, engine) in a.engines.iter().enumerate() {
            let mut costs = Vec::new();
            for round in reports.chunks(configs) {
                if let [bare, governed] = &round[2 * e..2 * e + 2] {
                    costs.push(governed.qps / bare.qps - 1.0);
                    println!(
                        "governance overhead ({engine}): {:.0} -> {:.0} QPS, {:+.1}%",
                        bare.qps,
                        governed.qps,
                        costs[costs.len() - 1] * 100.0
                    );
                }
            }
            if costs.len() > 1 {
                let all: Vec<String> = costs
                    .iter()
                    .map(|c| format!("{:+.1}%", c * 100.0))
                    .collect();
                println!(
                    "governance overhead ({engine}), median of {} rounds: {:+.1}% (rounds: {})",
                    costs.len(),
                    median(&mut costs) * 100.0,
                    all.join(", ")
                );
            }
        }
    }
    write_outputs(&outcomes, a.json.as_deref(), a.plot.as_deref())
}
