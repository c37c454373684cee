//! Raw echo benchmark of the engines alone (no RPC): a server on one pinned CPU, a client load
//! generator on another, each connection doing ping-pong of fixed-size messages.
//!
//! `raw_echo` (the `bench` subcommand) runs every cell: for each engine, message size and
//! connection count it starts `raw_echo server` as a child process pinned to `--server-cpu`,
//! drives it from this process (always the io_uring engine, pinned to `--client-cpu`, so the
//! client side is equal for both servers), and reads the child's utime+stime from
//! `/proc/<pid>/stat` to get server CPU time per message.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, Listener, RuntimeConfig, Stream, StreamReader, StreamWriter};

#[derive(Parser, Debug)]
#[command(about = "Raw echo benchmark of the ringrpc engines (no RPC)")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs the echo server until killed (used by `bench`).
    Server {
        /// Engine to serve with.
        #[arg(long, value_enum)]
        engine: EngineKind,
        /// Address to bind (port 0: any); the bound address is printed as `ready <addr>`.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// CPU to pin the server core to.
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// Runs the benchmark table (default).
    Bench(BenchArgs),
}

#[derive(Parser, Debug, Clone)]
struct BenchArgs {
    /// Seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Engines to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [EngineKind::Uring, EngineKind::Baseline])]
    engines: Vec<EngineKind>,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1024])]
    sizes: Vec<usize>,
    /// Connection counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
    conns: Vec<usize>,
    /// CPU for the server.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the client.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum EngineKind {
    Uring,
    Baseline,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Baseline => "baseline",
        }
    }
}

fn main() {
    let args = Args::parse();
    match args.cmd {
        Some(Cmd::Server { engine, addr, cpu }) => match engine {
            EngineKind::Uring => serve::<Uring>(addr, cpu),
            EngineKind::Baseline => serve::<Baseline>(addr, cpu),
        },
        Some(Cmd::Bench(b)) => bench(&b),
        None => bench(&BenchArgs::parse_from(["bench"])),
    }
}

/// Echo server: one core pinned to `cpu`, replies with the received buffers as they are.
fn serve<E: Engine>(addr: SocketAddr, cpu: usize) {
    let rt = E::launch(
        RuntimeConfig::with_cores(1).pinned(vec![cpu]),
        move |_| async move {
            let mut l = E::Listener::bind(addr, 4096).expect("bind");
            println!("ready {}", l.local_addr().expect("local addr"));
            while let Ok(Some((s, _))) = l.accept().await {
                E::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let mut out = Vec::with_capacity(1);
                    while let Ok(Some(b)) = r.recv().await {
                        out.push(b);
                        let (res, v) = w.send(out).await;
                        out = v;
                        if res.is_err() {
                            break;
                        }
                    }
                });
            }
        },
    )
    .expect("launch server");
    if let Err(e) = rt.join() {
        eprintln!("raw_echo: a core died: {e}");
        std::process::exit(1);
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

struct Cell {
    engine: EngineKind,
    size: usize,
    conns: usize,
    msgs_per_sec: f64,
    cpu_us_per_msg: f64,
}

fn bench(b: &BenchArgs) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cells = Vec::new();
    for &engine in &b.engines {
        for &size in &b.sizes {
            for &conns in &b.conns {
                let mut child = Command::new(&exe)
                    .args(["server", "--engine", engine.name(), "--cpu"])
                    .arg(b.server_cpu.to_string())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start server");
                let mut line = String::new();
                BufReader::new(child.stdout.take().expect("stdout"))
                    .read_line(&mut line)
                    .expect("server ready line");
                let addr: SocketAddr = line
                    .trim()
                    .strip_prefix("ready ")
                    .expect("ready line")
                    .parse()
                    .expect("server address");
                let cpu0 = cpu_secs(child.id());
                let t0 = Instant::now();
                let msgs = drive(
                    addr,
                    size,
                    conns,
                    Duration::from_secs_f64(b.secs),
                    b.client_cpu,
                );
                let elapsed = t0.elapsed().as_secs_f64();
                let cpu = cpu_secs(child.id()) - cpu0;
                let _ = child.kill();
                let _ = child.wait();
                let cell = Cell {
                    engine,
                    size,
                    conns,
                    msgs_per_sec: msgs as f64 / elapsed,
                    cpu_us_per_msg: cpu * 1e6 / msgs.max(1) as f64,
                };
                eprintln!(
                    "{:9} {:5} B {:4} conns: {:>10.0} msg/s, {:6.2} µs server CPU/msg",
                    engine.name(),
                    size,
                    conns,
                    cell.msgs_per_sec,
                    cell.cpu_us_per_msg
                );
                cells.push(cell);
            }
        }
    }
    print_table(&cells, b);
}

/// Drives `conns` ping-pong connections for `dur`; returns completed round trips.
fn drive(addr: SocketAddr, size: usize, conns: usize, dur: Duration, cpu: usize) -> u64 {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let rt = Uring::launch(RuntimeConfig::with_cores(1).pinned(vec![cpu]), move |_| {
        let tx = tx.lock().expect("lock").take();
        async move {
            let Some(tx) = tx else { return };
            let count = Rc::new(std::cell::Cell::new(0u64));
            let live = Rc::new(std::cell::Cell::new(conns));
            let payload = Bytes::from(vec![0xA5u8; size]);
            let end = Instant::now() + dur;
            for _ in 0..conns {
                let (count, live, payload) = (count.clone(), live.clone(), payload.clone());
                Uring::spawn(async move {
                    let s = <Uring as Engine>::Stream::connect(addr)
                        .await
                        .expect("connect");
                    let (mut r, mut w) = s.into_split();
                    let mut out = Vec::with_capacity(1);
                    while Instant::now() < end {
                        out.push(payload.clone());
                        let (res, v) = w.send(out).await;
                        out = v;
                        res.expect("send");
                        let mut got = 0;
                        while got < size {
                            got += r.recv().await.expect("recv").expect("server closed").len();
                        }
                        count.set(count.get() + 1);
                    }
                    live.set(live.get() - 1);
                });
            }
            while live.get() > 0 {
                Uring::sleep(Duration::from_millis(10)).await;
            }
            let _ = tx.send(count.get());
        }
    })
    .expect("launch client");
    let n = rx.recv().expect("client result");
    rt.stop(Duration::from_millis(10));
    n
}

fn print_table(cells: &[Cell], b: &BenchArgs) {
    println!("| engine | msg size | conns | msgs/s | server CPU µs/msg |");
    println!("|---|---|---|---|---|");
    for c in cells {
        println!(
            "| {} | {} B | {} | {:.0} | {:.2} |",
            c.engine.name(),
            c.size,
            c.conns,
            c.msgs_per_sec,
            c.cpu_us_per_msg
        );
    }
    println!();
    println!("| msg size | conns | msgs/s uring/baseline | CPU/msg uring/baseline |");
    println!("|---|---|---|---|");
    for &size in &b.sizes {
        for &conns in &b.conns {
            let find = |e| {
                cells
                    .iter()
                    .find(|c| c.engine == e && c.size == size && c.conns == conns)
            };
            if let (Some(u), Some(base)) = (find(EngineKind::Uring), find(EngineKind::Baseline)) {
                println!(
                    "| {} B | {} | {:.2} | {:.2} |",
                    size,
                    conns,
                    u.msgs_per_sec / base.msgs_per_sec,
                    u.cpu_us_per_msg / base.cpu_us_per_msg
                );
            }
        }
    }
}
