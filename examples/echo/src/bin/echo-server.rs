//! Serves the echo service until SIGINT/SIGTERM.
//!
//! `echo-server [ADDR] [uring|baseline]` (default `127.0.0.1:8888 uring`).

use ringrpc_server::{EngineKind, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8888".into())
        .parse()?;
    let engine = match args.next().as_deref() {
        None | Some("uring") => EngineKind::Uring,
        Some("baseline") => EngineKind::Baseline,
        Some(other) => {
            return Err(format!("unknown engine {other:?}: use uring or baseline").into())
        }
    };
    let server = Server::builder()
        .addr(addr)
        .engine(engine)
        .service(ringrpc_example_echo::echo_service)
        .start()?;
    // The handler goes in before the announcement, so a signal right after it is handled.
    server.shutdown_on_signal()?;
    println!("echo server on {} ({})", server.local_addr(), engine.name());
    server.wait();
    Ok(())
}
