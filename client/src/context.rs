//! The per-call context of the client pipeline.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringrpc_codec::PayloadProtocol;
use ringrpc_governance::obs::CallInfo;
use ringrpc_governance::{Backward, CallDeadline, CallMethod, CallTarget, Metainfo};

/// What the client pipeline knows about one call.
///
/// Cloned for a backup request (the backup runs on its own copy; the winner's copy replaces the
/// caller's).
#[derive(Debug, Default, Clone)]
pub struct ClientContext {
    /// Method name.
    pub method: String,
    /// Address of the instance called: pinned by the caller ([`crate::CallOptions::address`]),
    /// else set by the load balancer for each attempt.
    pub address: Option<SocketAddr>,
    /// Metainfo to send.
    pub metainfo: Metainfo,
    /// Backward metainfo received with the reply.
    pub backward: Backward,
    /// Whether the call is oneway.
    pub oneway: bool,
    /// The payload codec of the body, when the call knows it (`call_thrift`, `call_protobuf`);
    /// `None` uses the configured protocol's.
    pub payload: Option<PayloadProtocol>,
    deadline: Option<Instant>,
    /// The RPC timeout the deadline came from (to report a late exception as a timeout).
    pub(crate) timeout: Option<Duration>,
    /// Instances an earlier attempt of this call failed on (a retry prefers the others).
    failed: Vec<SocketAddr>,
    /// The instance the last attempt was sent to (the balancer restores `address` afterwards).
    pub(crate) remote: Option<SocketAddr>,
    /// The seq id of the last attempt's request.
    pub(crate) seq: Cell<Option<i32>>,
}

impl ClientContext {
    /// A context for calling `method`.
    pub fn new(method: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            ..Self::default()
        }
    }
}

impl CallDeadline for ClientContext {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

impl CallMethod for ClientContext {
    fn method(&self) -> &str {
        &self.method
    }
}

impl CallTarget for ClientContext {
    fn target(&self) -> Option<SocketAddr> {
        self.address
    }

    fn set_target(&mut self, target: Option<SocketAddr>) {
        self.address = target;
    }

    fn failed_on(&self, addr: SocketAddr) -> bool {
        self.failed.contains(&addr)
    }

    fn note_failure(&mut self, addr: SocketAddr) {
        if !self.failed.contains(&addr) {
            self.failed.push(addr);
        }
    }
}

impl CallInfo for ClientContext {
    /// The instance called: the pinned address, else the one the last attempt went to.
    fn peer(&self) -> Option<SocketAddr> {
        self.address.or(self.remote)
    }

    /// The seq id of the last attempt, once sent.
    fn seq_id(&self) -> Option<i32> {
        self.seq.get()
    }
}
