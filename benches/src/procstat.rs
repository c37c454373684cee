//! CPU-time accounting for the benchmark's "CPU per request" figures.
//!
//! The server's CPU time comes from `/proc/<pid>/stat` (user + system clock
//! ticks, usually 10 ms each, so measure over seconds); the client's own time
//! comes from `getrusage` (microseconds) or, per thread, from
//! `CLOCK_THREAD_CPUTIME_ID` (nanoseconds). Also reports which CPUs this
//! process may run on, to pick default client cores.

use std::io;
use std::time::Duration;

/// Why a `/proc/<pid>/stat` line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcStatError {
    /// No `(comm)` section: the line does not look like a stat line.
    #[error("malformed /proc stat line: missing '(comm)'")]
    MissingComm,
    /// Fewer fields than needed after the command name.
    #[error(
        "malformed /proc stat line: expected at least {expected} fields after comm, found {found}"
    )]
    TooFewFields {
        /// Fields needed.
        expected: usize,
        /// Fields present.
        found: usize,
    },
    /// A numeric field did not parse.
    #[error("malformed /proc stat line: field '{name}' is not a number: '{value}'")]
    BadField {
        /// Field name as in proc(5).
        name: &'static str,
        /// The text found.
        value: String,
    },
}

impl From<ProcStatError> for io::Error {
    fn from(e: ProcStatError) -> Self {
        Self::new(io::ErrorKind::InvalidData, e)
    }
}

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Command name without the surrounding parentheses (may contain spaces
    /// and parentheses).
    pub comm: String,
    /// State letter (`R`, `S`, ...).
    pub state: char,
    /// User-mode time in clock ticks.
    pub utime_ticks: u64,
    /// Kernel-mode time in clock ticks.
    pub stime_ticks: u64,
    /// Number of threads.
    pub num_threads: u64,
}

impl ProcStat {
    /// Parses one stat line. The command name is taken between the first
    /// `(` and the *last* `)`, so names like `a) (b` do not shift fields.
    pub fn parse(line: &str) -> Result<Self, ProcStatError> {
        let open = line.find('(').ok_or(ProcStatError::MissingComm)?;
        let close = line.rfind(')').ok_or(ProcStatError::MissingComm)?;
        if close < open {
            return Err(ProcStatError::MissingComm);
        }
        let pid_text = line[..open].trim();
        let pid = pid_text.parse().map_err(|_| ProcStatError::BadField {
            name: "pid",
            value: pid_text.to_owned(),
        })?;
        let comm = line[open + 1..close].to_owned();
        // Fields after comm, numbered from 3 in proc(5).
        let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
        const NEEDED: usize = 18; // up to field 20, num_threads
        if rest.len() < NEEDED {
            return Err(ProcStatError::TooFewFields {
                expected: NEEDED,
                found: rest.len(),
            });
        }
        let field = |index: usize, name: &'static str| -> Result<u64, ProcStatError> {
            let text = rest[index - 3];
            text.parse().map_err(|_| ProcStatError::BadField {
                name,
                value: text.to_owned(),
            })
        };
        let mut state_chars = rest[0].chars();
        let (Some(state), None) = (state_chars.next(), state_chars.next()) else {
            return Err(ProcStatError::BadField {
                name: "state",
                value: rest[0].to_owned(),
            });
        };
        Ok(Self {
            pid,
            comm,
            state,
            utime_ticks: field(14, "utime")?,
            stime_ticks: field(15, "stime")?,
            num_threads: field(20, "num_threads")?,
        })
    }

    /// User + system time, converted with `ticks_per_sec` (see
    /// [`clock_ticks_per_sec`]).
    pub fn cpu_time(&self, ticks_per_sec: u64) -> Duration {
        let ticks = self.utime_ticks.saturating_add(self.stime_ticks);
        let tps = ticks_per_sec.max(1);
        Duration::from_secs(ticks / tps) + Duration::from_nanos((ticks % tps) * 1_000_000_000 / tps)
    }
}

/// Kernel clock ticks per second (`sysconf(_SC_CLK_TCK)`, almost always 100).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Reads and parses `/proc/<pid>/stat`.
pub fn proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ProcStat::parse(text.trim_end())?)
}

/// Total CPU time (user + system, all threads) consumed so far by process
/// `pid`, at clock-tick resolution.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    Ok(proc_stat(pid)?.cpu_time(clock_ticks_per_sec()))
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// CPU time (user + system, all threads) consumed so far by this process,
/// with microsecond resolution (`getrusage(RUSAGE_SELF)`).
pub fn self_cpu_time() -> io::Result<Duration> {
    // SAFETY: rusage is plain old data for which all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

/// CPU time consumed so far by the calling thread, with nanosecond
/// resolution (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::from_secs(ts.tv_sec.max(0) as u64)
        + Duration::from_nanos(ts.tv_nsec.max(0) as u64))
}

/// The CPU ids this process is allowed to run on (`sched_getaffinity`),
/// in increasing order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain old data for which all-zero is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is initialised and `cpu` is below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// CPU used per request in microseconds, or `None` if no request completed.
pub fn cpu_us_per_request(cpu: Duration, requests: u64) -> Option<f64> {
    (requests > 0).then(|| cpu.as_nanos() as f64 / 1e3 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "1234 (ringrpc-bench) S 1 1234 1234 0 -1 4194560 2913 0 0 0 \
        250 75 0 0 20 0 4 0 123456 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_a_plain_line() {
        let s = ProcStat::parse(PLAIN).unwrap();
        assert_eq!(s.pid, 1234);
        assert_eq!(s.comm, "ringrpc-bench");
        assert_eq!(s.state, 'S');
        assert_eq!(s.utime_ticks, 250);
        assert_eq!(s.stime_ticks, 75);
        assert_eq!(s.num_threads, 4);
        assert_eq!(s.cpu_time(100), Duration::from_millis(3_250));
        assert_eq!(s.cpu_time(1000), Duration::from_millis(325));
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line = PLAIN.replace("(ringrpc-bench)", "(a) (b) c)");
        let s = ProcStat::parse(&line).unwrap();
        assert_eq!(s.comm, "a) (b) c");
        assert_eq!(s.utime_ticks, 250);
        assert_eq!(s.stime_ticks, 75);
        let line = PLAIN.replace("(ringrpc-bench)", "(x 1 2 3 R)");
        let s = ProcStat::parse(&line).unwrap();
        assert_eq!(s.comm, "x 1 2 3 R");
        assert_eq!(s.state, 'S');
        assert_eq!(s.num_threads, 4);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(ProcStat::parse("garbage"), Err(ProcStatError::MissingComm));
        assert!(matches!(
            ProcStat::parse("12 (x) S 1 2 3"),
            Err(ProcStatError::TooFewFields { found: 4, .. })
        ));
        let bad = PLAIN.replace(" 250 75 ", " 250 x75 ");
        assert_eq!(
            ProcStat::parse(&bad),
            Err(ProcStatError::BadField {
                name: "stime",
                value: "x75".into()
            })
        );
        let err: io::Error = ProcStatError::MissingComm.into();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    fn spin(for_at_least: Duration) -> u64 {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < for_at_least {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        x
    }

    #[test]
    fn own_cpu_time_grows_after_busy_loop() {
        let self_before = self_cpu_time().unwrap();
        let thread_before = thread_cpu_time().unwrap();
        let proc_before = cpu_time(std::process::id()).unwrap();
        spin(Duration::from_millis(60));
        let self_after = self_cpu_time().unwrap();
        let thread_after = thread_cpu_time().unwrap();
        // Tick resolution is coarse: spin until /proc shows progress too.
        let mut proc_after = cpu_time(std::process::id()).unwrap();
        for _ in 0..50 {
            if proc_after > proc_before {
                break;
            }
            spin(Duration::from_millis(20));
            proc_after = cpu_time(std::process::id()).unwrap();
        }
        assert!(
            self_after > self_before,
            "{self_before:?} -> {self_after:?}"
        );
        assert!(
            thread_after >= thread_before + Duration::from_millis(10),
            "{thread_before:?} -> {thread_after:?}"
        );
        assert!(
            proc_after > proc_before,
            "{proc_before:?} -> {proc_after:?}"
        );
    }

    #[test]
    fn reads_own_stat_and_affinity() {
        let s = proc_stat(std::process::id()).unwrap();
        assert_eq!(s.pid, std::process::id());
        assert!(s.num_threads >= 1);
        assert!(clock_ticks_per_sec() > 0);
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        assert!(cpu_time(u32::MAX).is_err());
    }

    #[test]
    fn per_request_cpu() {
        assert_eq!(
            cpu_us_per_request(Duration::from_millis(10), 1000),
            Some(10.0)
        );
        assert_eq!(cpu_us_per_request(Duration::from_millis(10), 0), None);
    }
}
