//! Calls the echo service a few times and prints the replies.
//!
//! `echo-client [ADDR] [MESSAGE]` (default `127.0.0.1:8888 hello`).

use std::time::Duration;

use ringrpc_client::{CallOptions, Client, ClientConfig, ClientError};
use ringrpc_codec::apache::{Args1, SuccessResult};
use ringrpc_engine::uring::Uring;
use ringrpc_engine::{Engine, RuntimeConfig};
use ringrpc_example_echo::{Request, Response, SERVICE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8888".into())
        .parse()?;
    let msg = args.next().unwrap_or_else(|| "hello".into());
    let client = Client::<Uring>::new(ClientConfig::new(vec![addr]).service_name(SERVICE));
    let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<Response>, ClientError>>();
    let runtime = Uring::launch(RuntimeConfig::with_cores(1), move |_core| {
        let (client, tx, msg) = (client.clone(), tx.clone(), msg.clone());
        async move {
            let mut replies = Vec::new();
            for i in 0..3 {
                let req = Args1(Request::new("echo".into(), format!("{msg} #{i}")));
                match client
                    .call_thrift::<_, SuccessResult<Response>>("Echo", &req, CallOptions::default())
                    .await
                {
                    Ok(SuccessResult(r)) => replies.push(r),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(replies));
        }
    })?;
    let result = rx.recv_timeout(Duration::from_secs(10))?;
    runtime.stop(Duration::from_millis(100));
    for r in result? {
        println!("{} {}", r.action, r.msg);
    }
    Ok(())
}
