//! Command line of `ringrpc-bench`: `server`, `load` and `compare`.
//!
//! Flags are declared with clap's derive API; every value that clap cannot
//! check by type alone (durations, CPU lists, payload and rate bounds,
//! addresses) goes through a value parser here that fails with a one-line
//! [`ArgsError`], so a typo is reported as `error: invalid value ... : <why>`.
//! Checks that involve several flags live in [`Cli::validate`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::duration::{parse_duration, DurationError};

/// Largest accepted `--payload`, in bytes (16 MiB).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// Largest CPU id accepted in a CPU list (guards against typos like `1-99999`).
pub const MAX_CPU_ID: usize = 4095;
/// Default server address for every subcommand.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8888";
/// Connections per address in mux mode when `--conns` is not given.
pub const DEFAULT_MUX_CONNS: usize = 2;

/// A flag value or flag combination that is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArgsError {
    /// A count that must be at least one was zero or not a number.
    #[error("'{0}' is not a whole number of at least 1")]
    NotPositiveCount(String),
    /// `--payload` was not a byte count.
    #[error("'{0}' is not a byte count (e.g. 1024, 4KiB, 1MiB)")]
    InvalidPayload(String),
    /// `--payload` was above [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the 16 MiB (16777216 bytes) limit")]
    PayloadTooLarge(u64),
    /// `--rate` was not a positive finite number.
    #[error("rate must be a positive number of requests per second, got '{0}'")]
    InvalidRate(String),
    /// A duration did not parse.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A duration that must be positive was zero.
    #[error("duration must be greater than zero, got '{0}'")]
    ZeroDuration(String),
    /// A CPU list did not parse.
    #[error("invalid CPU list '{input}': {reason} (expected e.g. 0 or 0,2 or 1-3)")]
    InvalidCpuList {
        /// The whole input.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address was not `HOST:PORT`.
    #[error("invalid address '{0}': expected HOST:PORT (e.g. 127.0.0.1:8888 or [::1]:8888)")]
    InvalidAddr(String),
    /// `compare` would run client and server on the same CPU.
    #[error("client cores ({client}) overlap server cores ({server})")]
    CoresOverlap {
        /// The server CPU list.
        server: CpuList,
        /// The client CPU list.
        client: CpuList,
    },
    /// No CPU is left for the client once the server cores are taken.
    #[error("no CPU left for the client: server uses {server}, allowed CPUs are {allowed}; pass --client-cores")]
    NoClientCores {
        /// The server CPU list.
        server: CpuList,
        /// The CPUs this process may use.
        allowed: CpuList,
    },
    /// `--engines` named an engine twice.
    #[error("engine '{0}' is listed more than once in --engines")]
    DuplicateEngine(EngineArg),
}

/// `ringrpc-bench`: a wrk2-like load generator and echo server for ringrpc
/// and Kitex/Volo-compatible RPC servers.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringrpc-bench", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The three subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run an echo server until interrupted.
    Server(ServerArgs),
    /// Drive load against a running server and report latency and throughput.
    Load(LoadArgs),
    /// Start each engine's server in turn, load it, and print a side-by-side comparison.
    Compare(CompareArgs),
}

/// The server engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum EngineArg {
    /// Thread-per-core io_uring engine.
    Uring,
    /// The tokio-based baseline engine.
    Baseline,
}

/// Wire protocol spoken by the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ProtocolArg {
    /// TTHeader around unframed Thrift binary.
    Ttheader,
    /// TTHeader around framed Thrift binary (Kitex's default).
    TtheaderFramed,
    /// Framed Thrift binary.
    Framed,
    /// Buffered (unframed) Thrift binary.
    Buffered,
    /// Kitex protobuf.
    KitexProtobuf,
}

/// How requests share connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ConnModeArg {
    /// One request per connection at a time; up to `concurrency` connections.
    Pool,
    /// Many in-flight requests multiplexed over a few connections.
    Mux,
}

macro_rules! named_enum {
    ($t:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $t {
            /// The name as written on the command line and in reports.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),*
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(EngineArg { Uring => "uring", Baseline => "baseline" });
named_enum!(ProtocolArg {
    Ttheader => "ttheader",
    TtheaderFramed => "ttheader-framed",
    Framed => "framed",
    Buffered => "buffered",
    KitexProtobuf => "kitex-protobuf",
});
named_enum!(ConnModeArg { Pool => "pool", Mux => "mux" });

/// `server` flags.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Engine serving the requests.
    #[arg(long, value_enum, default_value_t = EngineArg::Uring)]
    pub engine: EngineArg,
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: String,
    /// Number of server cores (threads).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_count)]
    pub cores: usize,
    /// Serve through the governance pipeline: a server-wide QPS and concurrency limit far
    /// above the load, a handler timeout, and call metrics.
    #[arg(long)]
    pub governance: bool,
}

/// Load-shape flags shared by `load` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct LoadOptions {
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::TtheaderFramed)]
    pub protocol: ProtocolArg,
    /// Requests in flight at once (closed loop) or sender slots (open loop).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = parse_count)]
    pub concurrency: usize,
    /// Measured duration, after warm-up (e.g. 10s, 500ms, 2m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Warm-up before measuring; its requests are not counted.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Request payload size in bytes (at most 16 MiB).
    #[arg(long, value_name = "BYTES", default_value = "1024", value_parser = parse_payload)]
    pub payload: usize,
    /// Connection mode.
    #[arg(long, value_enum, default_value_t = ConnModeArg::Mux)]
    pub conn_mode: ConnModeArg,
    /// Connections per address in mux mode (default 2); ignored in pool
    /// mode, where up to `concurrency` connections are opened.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub conns: Option<usize>,
    /// Target requests per second (open loop, wrk2-style); absent means
    /// closed loop.
    #[arg(long, value_name = "REQ_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Call through the client's governance pipeline (method and instance breakers, weighted
    /// round-robin, call metrics). With `compare`, each engine runs
    /// twice, bare then governed (server with `--governance` too), to measure the overhead.
    #[arg(long)]
    pub governance: bool,
    /// How long each idle client core polls for replies before it sleeps (io_uring client
    /// only; 0s sleeps at once). Without it a ping-pong call also pays the generator's own
    /// wake-up (about 35 µs on this VM), which is not the server's latency.
    #[arg(long, value_name = "DURATION", default_value = "50us", value_parser = parse_duration)]
    pub busy_poll: Duration,
}

impl LoadOptions {
    /// Connections to open per server address: `--conns` (default 2) in mux
    /// mode, `concurrency` (the pool's maximum) in pool mode.
    pub fn connections_per_addr(&self) -> usize {
        match self.conn_mode {
            ConnModeArg::Mux => self.conns.unwrap_or(DEFAULT_MUX_CONNS),
            ConnModeArg::Pool => self.concurrency,
        }
    }

    /// Whether requests are paced at `--rate` rather than sent back to back.
    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }
}

/// `load` flags.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server address(es); comma-separate or repeat for several.
    #[arg(long = "addr", value_name = "HOST:PORT", default_value = DEFAULT_ADDR, value_delimiter = ',', value_parser = parse_addr)]
    pub addrs: Vec<String>,
    /// Load shape.
    #[command(flatten)]
    pub load: LoadOptions,
    /// Client cores (threads).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_count)]
    pub cores: usize,
    /// Server process id, to report server CPU time per request.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Write the run report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a latency-by-percentile SVG plot to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Name of this run in reports and plots.
    #[arg(long)]
    pub label: Option<String>,
}

/// `compare` flags.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// CPUs for the server (e.g. 0, 0,2 or 1-3).
    #[arg(long, value_name = "CPUS", default_value = "0", value_parser = parse_cpu_list)]
    pub server_cores: CpuList,
    /// CPUs for the client (default: every allowed CPU not used by the server).
    #[arg(long, value_name = "CPUS", value_parser = parse_cpu_list)]
    pub client_cores: Option<CpuList>,
    /// Engines to compare, in order; ratios compare the first with the others.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "uring,baseline"
    )]
    pub engines: Vec<EngineArg>,
    /// Address the servers listen on in turn.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: String,
    /// Load shape.
    #[command(flatten)]
    pub load: LoadOptions,
    /// Repeat the whole sequence of runs this many times, interleaved (every engine and mode
    /// once per round). On a machine whose speed drifts over seconds, per-round ratios and
    /// their median say more than one long run; the side-by-side table then shows the run of
    /// median QPS of each engine and mode.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Write all run reports as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a latency-by-percentile SVG plot of all runs to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

impl CompareArgs {
    /// The client CPUs: `--client-cores` if given, else every CPU in
    /// `allowed` (see [`crate::procstat::allowed_cpus`]) not used by the
    /// server.
    pub fn client_cpus(&self, allowed: &[usize]) -> Result<CpuList, ArgsError> {
        if let Some(list) = &self.client_cores {
            return Ok(list.clone());
        }
        let rest: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !self.server_cores.contains(*c))
            .collect();
        if rest.is_empty() {
            return Err(ArgsError::NoClientCores {
                server: self.server_cores.clone(),
                allowed: CpuList::new(allowed.to_vec()),
            });
        }
        Ok(CpuList::new(rest))
    }

    /// Checks that combine flags: no engine twice, no CPU shared between
    /// client and server.
    pub fn validate(&self) -> Result<(), ArgsError> {
        for (i, e) in self.engines.iter().enumerate() {
            if self.engines[..i].contains(e) {
                return Err(ArgsError::DuplicateEngine(*e));
            }
        }
        if let Some(client) = &self.client_cores {
            if client.cpus().iter().any(|c| self.server_cores.contains(*c)) {
                return Err(ArgsError::CoresOverlap {
                    server: self.server_cores.clone(),
                    client: client.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Cli {
    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<(), ArgsError> {
        match &self.command {
            Command::Compare(c) => c.validate(),
            Command::Server(_) | Command::Load(_) => Ok(()),
        }
    }

    /// Parses `std::env::args` and validates; on error prints a clap-style
    /// message and exits with status 2 (0 for `--help`/`--version`).
    pub fn parse_and_validate() -> Self {
        let cli = Self::parse();
        if let Err(e) = cli.validate() {
            Self::command()
                .error(clap::error::ErrorKind::ArgumentConflict, e)
                .exit();
        }
        cli
    }
}

/// A sorted, duplicate-free list of CPU ids, written `0`, `0,2` or `1-3`
/// (forms may be mixed: `0,2-3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// A list from ids in any order; duplicates are dropped.
    pub fn new(mut cpus: Vec<usize>) -> Self {
        cpus.sort_unstable();
        cpus.dedup();
        Self(cpus)
    }

    /// The ids in increasing order.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty (never true for a parsed list).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `cpu` is in the list.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }
}

impl FromStr for CpuList {
    type Err = ArgsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_cpu_list(s)
    }
}

impl fmt::Display for CpuList {
    /// Compact form with ranges: `0,2-5,7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let mut j = i;
            while j + 1 < self.0.len() && self.0[j + 1] == self.0[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j > i {
                write!(f, "{}-{}", self.0[i], self.0[j])?;
            } else {
                write!(f, "{}", self.0[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// Parses a CPU list: comma-separated ids and inclusive ranges.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, ArgsError> {
    let bad = |reason: String| ArgsError::InvalidCpuList {
        input: s.to_owned(),
        reason,
    };
    let id = |t: &str| -> Result<usize, ArgsError> {
        let t = t.trim();
        let v: usize = t
            .parse()
            .map_err(|_| bad(format!("'{t}' is not a CPU number")))?;
        if v > MAX_CPU_ID {
            return Err(bad(format!("CPU {v} is above {MAX_CPU_ID}")));
        }
        Ok(v)
    };
    if s.trim().is_empty() {
        return Err(bad("empty list".into()));
    }
    let mut cpus = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (id(lo)?, id(hi)?);
                if lo > hi {
                    return Err(bad(format!("range {lo}-{hi} is reversed")));
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(id(part)?),
        }
    }
    Ok(CpuList::new(cpus))
}

/// Parses a count that must be at least 1 (`--concurrency`, `--cores`, `--conns`).
pub fn parse_count(s: &str) -> Result<usize, ArgsError> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ArgsError::NotPositiveCount(s.to_owned())),
    }
}

/// Parses `--payload`: a byte count, optionally with a binary suffix
/// (`K`/`KiB`, `M`/`MiB`), at most [`MAX_PAYLOAD`]. Zero is allowed.
pub fn parse_payload(s: &str) -> Result<usize, ArgsError> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let multiplier: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1024,
        "M" | "MiB" => 1024 * 1024,
        _ => return Err(ArgsError::InvalidPayload(s.to_owned())),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| ArgsError::InvalidPayload(s.to_owned()))?;
    let bytes = n.saturating_mul(multiplier);
    if bytes > MAX_PAYLOAD as u64 {
        return Err(ArgsError::PayloadTooLarge(bytes));
    }
    Ok(bytes as usize)
}

/// Parses `--rate`: a positive, finite number of requests per second.
pub fn parse_rate(s: &str) -> Result<f64, ArgsError> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(ArgsError::InvalidRate(s.to_owned())),
    }
}

/// Parses a duration that must be greater than zero (`--duration`).
pub fn parse_positive_duration(s: &str) -> Result<Duration, ArgsError> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(ArgsError::ZeroDuration(s.to_owned()));
    }
    Ok(d)
}

/// Checks the `HOST:PORT` shape of an address (resolution happens later,
/// with `ToSocketAddrs`). IPv6 hosts go in brackets: `[::1]:8888`.
pub fn parse_addr(s: &str) -> Result<String, ArgsError> {
    let bad = || ArgsError::InvalidAddr(s.to_owned());
    let t = s.trim();
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if host.contains(':') && !bracketed {
        return Err(bad());
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringrpc-bench").chain(args.iter().copied()))
    }

    fn load(args: &[&str]) -> LoadArgs {
        let mut v = vec!["load"];
        v.extend_from_slice(args);
        match parse(&v).unwrap().command {
            Command::Load(l) => l,
            other => panic!("expected load, got {other:?}"),
        }
    }

    fn compare(args: &[&str]) -> CompareArgs {
        let mut v = vec!["compare"];
        v.extend_from_slice(args);
        match parse(&v).unwrap().command {
            Command::Compare(c) => c,
            other => panic!("expected compare, got {other:?}"),
        }
    }

    /// The first line of the rendered error, which must carry the reason.
    fn error_line(args: &[&str]) -> (ErrorKind, String) {
        let e = parse(args).unwrap_err();
        let text = e.to_string();
        (e.kind(), text.lines().next().unwrap_or_default().to_owned())
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults_and_flags() {
        let Command::Server(s) = parse(&["server"]).unwrap().command else {
            panic!("expected server");
        };
        assert_eq!(s.engine, EngineArg::Uring);
        assert_eq!(s.addr, DEFAULT_ADDR);
        assert_eq!(s.cores, 1);
        let Command::Server(s) = parse(&[
            "server",
            "--engine",
            "baseline",
            "--addr",
            "0.0.0.0:9000",
            "--cores",
            "2",
        ])
        .unwrap()
        .command
        else {
            panic!("expected server");
        };
        assert_eq!(s.engine, EngineArg::Baseline);
        assert_eq!(s.addr, "0.0.0.0:9000");
        assert_eq!(s.cores, 2);
    }

    #[test]
    fn load_defaults() {
        let l = load(&[]);
        assert_eq!(l.addrs, vec![DEFAULT_ADDR.to_owned()]);
        assert_eq!(l.load.protocol, ProtocolArg::TtheaderFramed);
        assert_eq!(l.load.concurrency, 100);
        assert_eq!(l.load.duration, Duration::from_secs(10));
        assert_eq!(l.load.warmup, Duration::from_secs(1));
        assert_eq!(l.load.payload, 1024);
        assert_eq!(l.load.conn_mode, ConnModeArg::Mux);
        assert_eq!(l.load.conns, None);
        assert_eq!(l.load.connections_per_addr(), 2);
        assert_eq!(l.load.rate, None);
        assert!(!l.load.is_open_loop());
        assert_eq!(l.load.busy_poll, Duration::from_micros(50));
        assert_eq!(load(&["--busy-poll", "0s"]).load.busy_poll, Duration::ZERO);
        assert_eq!(l.cores, 1);
        assert_eq!(l.server_pid, None);
        assert_eq!(l.json, None);
        assert_eq!(l.plot, None);
        assert_eq!(l.label, None);
    }

    #[test]
    fn load_all_flags() {
        let l = load(&[
            "--addr",
            "127.0.0.1:1,localhost:2",
            "--protocol",
            "kitex-protobuf",
            "--concurrency",
            "8",
            "--duration",
            "1.5s",
            "--warmup",
            "0s",
            "--payload",
            "4KiB",
            "--conn-mode",
            "pool",
            "--conns",
            "3",
            "--cores",
            "2",
            "--rate",
            "2500.5",
            "--server-pid",
            "42",
            "--json",
            "out.json",
            "--plot",
            "out.svg",
            "--label",
            "uring c8",
        ]);
        assert_eq!(l.addrs, vec!["127.0.0.1:1", "localhost:2"]);
        assert_eq!(l.load.protocol, ProtocolArg::KitexProtobuf);
        assert_eq!(l.load.concurrency, 8);
        assert_eq!(l.load.duration, Duration::from_millis(1500));
        assert_eq!(l.load.warmup, Duration::ZERO);
        assert_eq!(l.load.payload, 4096);
        assert_eq!(l.load.conn_mode, ConnModeArg::Pool);
        assert_eq!(l.load.connections_per_addr(), 8, "pool ignores --conns");
        assert_eq!(l.load.rate, Some(2500.5));
        assert!(l.load.is_open_loop());
        assert_eq!(l.cores, 2);
        assert_eq!(l.server_pid, Some(42));
        assert_eq!(l.json, Some(PathBuf::from("out.json")));
        assert_eq!(l.plot, Some(PathBuf::from("out.svg")));
        assert_eq!(l.label.as_deref(), Some("uring c8"));
        assert_eq!(load(&["--conns", "5"]).load.connections_per_addr(), 5);
    }

    #[test]
    fn protocol_names() {
        for (name, p) in [
            ("ttheader", ProtocolArg::Ttheader),
            ("ttheader-framed", ProtocolArg::TtheaderFramed),
            ("framed", ProtocolArg::Framed),
            ("buffered", ProtocolArg::Buffered),
            ("kitex-protobuf", ProtocolArg::KitexProtobuf),
        ] {
            assert_eq!(load(&["--protocol", name]).load.protocol, p);
            assert_eq!(p.as_str(), name);
            assert_eq!(p.to_string(), name);
        }
        // The printed names match clap's.
        for p in ProtocolArg::value_variants() {
            assert_eq!(p.to_possible_value().unwrap().get_name(), p.as_str());
        }
        for e in EngineArg::value_variants() {
            assert_eq!(e.to_possible_value().unwrap().get_name(), e.as_str());
        }
        for m in ConnModeArg::value_variants() {
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.as_str());
        }
        assert_eq!(EngineArg::Baseline.as_str(), "baseline");
        assert_eq!(ConnModeArg::Pool.to_string(), "pool");
    }

    #[test]
    fn compare_defaults_and_cores() {
        let c = compare(&[]);
        assert_eq!(c.server_cores.cpus(), &[0]);
        assert_eq!(c.client_cores, None);
        assert_eq!(c.engines, vec![EngineArg::Uring, EngineArg::Baseline]);
        assert_eq!(c.load.payload, 1024);
        assert_eq!(c.load.concurrency, 100);
        assert_eq!(c.load.conn_mode, ConnModeArg::Mux);
        assert_eq!(c.load.duration, Duration::from_secs(10));
        assert_eq!(c.client_cpus(&[0, 1, 2, 3]).unwrap().cpus(), &[1, 2, 3]);
        assert!(matches!(
            c.client_cpus(&[0]),
            Err(ArgsError::NoClientCores { .. })
        ));
        assert!(c.validate().is_ok());

        let c = compare(&[
            "--server-cores",
            "0-1",
            "--client-cores",
            "2,3",
            "--engines",
            "baseline",
            "--rate",
            "1000",
        ]);
        assert_eq!(c.server_cores.cpus(), &[0, 1]);
        assert_eq!(c.client_cpus(&[0]).unwrap().cpus(), &[2, 3]);
        assert_eq!(c.engines, vec![EngineArg::Baseline]);
        assert_eq!(c.load.rate, Some(1000.0));
    }

    #[test]
    fn compare_cross_checks() {
        let c = compare(&["--server-cores", "0,1", "--client-cores", "1-2"]);
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "client cores (1-2) overlap server cores (0-1)"
        );
        let c = compare(&["--engines", "uring,uring"]);
        assert_eq!(
            c.validate(),
            Err(ArgsError::DuplicateEngine(EngineArg::Uring))
        );
        let cli = parse(&["compare", "--engines", "baseline,baseline"]).unwrap();
        assert!(cli.validate().is_err());
        assert!(parse(&["load"]).unwrap().validate().is_ok());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0").unwrap().cpus(), &[0]);
        assert_eq!(parse_cpu_list("0,2").unwrap().cpus(), &[0, 2]);
        assert_eq!(parse_cpu_list("1-3").unwrap().cpus(), &[1, 2, 3]);
        assert_eq!(parse_cpu_list("5,0-1,1").unwrap().cpus(), &[0, 1, 5]);
        assert_eq!(parse_cpu_list("0,2-5,7").unwrap().to_string(), "0,2-5,7");
        assert_eq!("3".parse::<CpuList>().unwrap().len(), 1);
        for bad in ["", "a", "1-", "-1", "3-1", "0,,1", "99999", "1.5"] {
            assert!(
                matches!(parse_cpu_list(bad), Err(ArgsError::InvalidCpuList { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(parse_cpu_list("3-1")
            .unwrap_err()
            .to_string()
            .contains("reversed"));
    }

    #[test]
    fn value_errors_are_clear() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["load", "--concurrency", "0"],
                "'0' is not a whole number of at least 1",
            ),
            (&["load", "--payload", "16777217"], "exceeds the 16 MiB"),
            (&["load", "--payload", "17MiB"], "exceeds the 16 MiB"),
            (&["load", "--payload", "lots"], "is not a byte count"),
            (&["load", "--rate", "0"], "rate must be a positive number"),
            (&["load", "--rate=-5"], "rate must be a positive number"),
            (&["load", "--rate", "inf"], "rate must be a positive number"),
            (
                &["load", "--duration", "0s"],
                "duration must be greater than zero",
            ),
            (&["load", "--duration", "10"], "has no unit"),
            (&["load", "--warmup", "1x"], "unknown unit 'x'"),
            (&["load", "--addr", "localhost"], "expected HOST:PORT"),
            (&["load", "--addr", "::1:80"], "expected HOST:PORT"),
            (
                &["server", "--cores", "0"],
                "not a whole number of at least 1",
            ),
            (
                &["compare", "--server-cores", "2-1"],
                "invalid CPU list '2-1'",
            ),
            (&["compare", "--duration=-1s"], "invalid duration"),
        ];
        for (args, needle) in cases {
            let (kind, line) = error_line(args);
            assert_eq!(kind, ErrorKind::ValueValidation, "{args:?}: {line}");
            assert!(line.contains(needle), "{args:?}: {line}");
            assert!(line.starts_with("error: invalid value"), "{line}");
        }
    }

    #[test]
    fn clap_errors_for_unknown_values_and_flags() {
        let (kind, line) = error_line(&["load", "--protocol", "grpc"]);
        assert_eq!(kind, ErrorKind::InvalidValue);
        assert!(line.contains("grpc"), "{line}");
        let (kind, _) = error_line(&["load", "--conn-mode", "shared"]);
        assert_eq!(kind, ErrorKind::InvalidValue);
        let (kind, _) = error_line(&["compare", "--engines", "uring,epoll"]);
        assert_eq!(kind, ErrorKind::InvalidValue);
        let (kind, _) = error_line(&["load", "--bogus"]);
        assert_eq!(kind, ErrorKind::UnknownArgument);
        let (kind, _) = error_line(&["server", "--rate", "5"]);
        assert_eq!(kind, ErrorKind::UnknownArgument);
        let (kind, _) = error_line(&[]);
        assert_eq!(kind, ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    }

    #[test]
    fn value_parsers_directly() {
        assert_eq!(parse_payload("0").unwrap(), 0);
        assert_eq!(parse_payload("16MiB").unwrap(), MAX_PAYLOAD);
        assert_eq!(parse_payload("1M").unwrap(), 1 << 20);
        assert_eq!(parse_rate("1e6").unwrap(), 1e6);
        assert!(parse_rate("NaN").is_err());
        assert_eq!(parse_addr("[::1]:8888").unwrap(), "[::1]:8888");
        assert_eq!(parse_addr("example.com:80").unwrap(), "example.com:80");
        assert!(parse_addr("host:99999").is_err());
        assert!(parse_addr(":80").is_err());
        assert_eq!(parse_count("7").unwrap(), 7);
        assert_eq!(
            parse_positive_duration("250us").unwrap(),
            Duration::from_micros(250)
        );
    }
}
