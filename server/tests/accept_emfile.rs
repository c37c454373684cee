//! Accepting when the process is out of descriptors: the listener backs off (a bounded number
//! of retries, little CPU) instead of spinning, connections already open keep being served, and
//! accepting resumes once descriptors are free again. Its own binary, one test, because it
//! lowers the process's `RLIMIT_NOFILE` (restored before it returns).

mod common;

use std::fs::File;
use std::time::{Duration, Instant};

use common::*;
use ringrpc_engine::baseline::Baseline;
use ringrpc_engine::uring::Uring;

/// How long the test holds the process out of descriptors.
const EXHAUSTED_FOR: Duration = Duration::from_secs(1);

#[test]
fn accept_out_of_descriptors_backs_off_and_resumes() {
    exhaust_and_recover::<Uring>();
    exhaust_and_recover::<Baseline>();
}

/// The process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Lowers the soft descriptor limit to `soft`; returns the limits before.
fn set_nofile(soft: libc::rlim_t) -> libc::rlimit {
    // SAFETY: getrlimit/setrlimit read and write one `rlimit` we own.
    unsafe {
        let mut old: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
        old
    }
}

fn restore_nofile(old: &libc::rlimit) {
    // SAFETY: as in `set_nofile`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, old) }, 0);
}

fn exhaust_and_recover<E: TestEngine>() {
    // The limit is lowered before the server starts: io_uring reads it when an accept is
    // submitted, so the listener's accepts see the lowered limit from the first.
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let old = set_nofile(highest + 128);
    let probe = std::sync::Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let addr = server.local_addr();
    let stats = server.stats();
    let mut served = raw_connect(addr, Duration::from_secs(5));
    raw_echo(&mut served, 1, "before");

    // Use up every descriptor but one, for the next client socket: the server's accept of it
    // then finds none (EMFILE).
    let mut fillers = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        fillers.push(f);
    }
    drop(fillers.pop());
    let waiting = std::net::TcpStream::connect(addr);
    let backoffs_before = stats.accept_backoffs();
    let cpu_before = cpu_time();
    let start = Instant::now();
    // Existing connections are served meanwhile (the socket already exists on both sides).
    let mut seq = 2;
    while start.elapsed() < EXHAUSTED_FOR {
        raw_echo(&mut served, seq, "while out of descriptors");
        seq += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let backoffs = stats.accept_backoffs() - backoffs_before;
    let cpu = cpu_time() - cpu_before;
    drop(fillers);
    restore_nofile(&old);

    let mut waiting = waiting.expect("the client socket was created before the limit bit");
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Accepting resumes now that descriptors are free: the queued connection is served.
    raw_echo(&mut waiting, 1, "after");
    assert!(
        (1..=40).contains(&backoffs),
        "{}: {backoffs} accept back-offs in {EXHAUSTED_FOR:?} out of descriptors \
         ({} accept errors)",
        E::NAME,
        stats.accept_errors()
    );
    assert!(
        cpu < EXHAUSTED_FOR / 2,
        "{}: {cpu:?} of CPU in {EXHAUSTED_FOR:?} out of descriptors",
        E::NAME
    );
    server.shutdown();
}
