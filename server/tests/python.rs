//! A client written with Apache Thrift's Python library (PyPI `thrift`: TSocket,
//! TFramedTransport and TBufferedTransport, TBinaryProtocol) calls our echo server on each
//! engine. Its generated code is committed in `tests/python/gen-py`, made with thrift-compiler
//! 0.17:
//!
//! ```sh
//! thrift -o server/tests/python --gen py examples/echo/idl/echo.thrift
//! ```
//!
//! `scripts/install-test-deps.sh` installs the Python package. Without `python3` or its
//! `thrift` package this test fails: it never skips.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

engine_tests!(apache_thrift_python_client);

fn apache_thrift_python_client<E: TestEngine>() {
    let check = Command::new("python3")
        .args(["-c", "import thrift"])
        .output()
        .expect("python3 must be installed (scripts/install-test-deps.sh)");
    assert!(
        check.status.success(),
        "python3 cannot import thrift; run scripts/install-test-deps.sh: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let server = builder::<E>()
        .service(ringrpc_example_echo::echo_service)
        .start()
        .expect("server starts");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/echo_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(server.local_addr().port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python client did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("python3 output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "the Python client failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("calls ok"), "{stdout}");
    eprintln!("{}: {}", E::NAME, stdout.trim());
    server.shutdown();
}
