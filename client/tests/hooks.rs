//! The user's hooks (`ClientConfig::hook`) in the client stack, both engines: they run in the
//! order added around every call, after the ACL and inside the metrics and fallback, so a
//! hook's rejection is sent nowhere, is seen by the hooks added before it, and reaches the
//! fallback.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringrpc_client::governance::acl::AclError;
use ringrpc_client::{
    CallOptions, Client, ClientConfig, ClientContext, ClientError, ClientHook, Reply,
};
use ringrpc_codec::apache::SuccessResult;
use ringrpc_example_echo::Response;

engine_tests!(user_hooks_run_in_order_and_may_reject);

/// Logs its events; rejects calls of method `rejects`.
struct Logger {
    name: &'static str,
    rejects: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl ClientHook for Logger {
    fn before(&self, cx: &mut ClientContext, _: &Bytes) -> Result<(), ClientError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} before {}", self.name, cx.method));
        if cx.method == self.rejects {
            return Err(ClientError::AclRejected(AclError::rejected(self.name)));
        }
        Ok(())
    }

    fn after(
        &self,
        cx: &mut ClientContext,
        result: Result<Reply, ClientError>,
    ) -> Result<Reply, ClientError> {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.log
            .lock()
            .unwrap()
            .push(format!("{} after {} {outcome}", self.name, cx.method));
        result
    }
}

fn user_hooks_run_in_order_and_may_reject<E: TestEngine>() {
    let probe = Arc::new(Probe::default());
    let server = start_test_server::<E>(&probe, |b| b);
    let log = Arc::new(Mutex::new(Vec::new()));
    let logger = |name, rejects| Logger {
        name,
        rejects,
        log: log.clone(),
    };
    let fallback_saw = Arc::new(Mutex::new(Vec::new()));
    let saw = fallback_saw.clone();
    let config = ClientConfig::new(vec![server.local_addr()])
        .service_name(SERVICE)
        .hook(logger("a", "-"))
        .hook(logger("b", "Blocked"))
        .fallback(move |_, e| {
            saw.lock().unwrap().push(e.to_string());
            Err(e)
        });
    let client = Client::<E>::new(config);
    let (ok, blocked) = on_core::<E, _, _>(Duration::from_secs(30), move || async move {
        let ok = client
            .call_thrift::<_, SuccessResult<Response>>(
                "Echo",
                &req("echo", "x"),
                CallOptions::default(),
            )
            .await
            .map(|SuccessResult(r)| r.msg);
        let blocked = client
            .call_thrift::<_, SuccessResult<Response>>(
                "Blocked",
                &req("echo", "x"),
                CallOptions::default(),
            )
            .await
            .map(|SuccessResult(r)| r.msg);
        (
            ok.map_err(|e| e.to_string()),
            blocked.map_err(|e| e.to_string()),
        )
    });
    assert_eq!(ok.as_deref(), Ok("x"));
    let rejection = ClientError::AclRejected(AclError::rejected("b")).to_string();
    assert_eq!(blocked, Err(rejection.clone()));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before Echo",
            "b before Echo",
            "b after Echo ok",
            "a after Echo ok",
            "a before Blocked",
            "b before Blocked",
            "a after Blocked error",
        ]
    );
    assert_eq!(
        *fallback_saw.lock().unwrap(),
        [rejection],
        "the fallback saw the rejection"
    );
    server.shutdown();
}
