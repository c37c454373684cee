//! The per-call context of the client pipeline.

use std::net::SocketAddr;
use std::time::Instant;

use ringrpc_codec::PayloadProtocol;
use ringrpc_governance::{Backward, CallDeadline, Metainfo};

/// What the client pipeline knows about one call.
#[derive(Debug, Default)]
pub struct ClientContext {
    /// Method name.
    pub method: String,
    /// Address chosen for the call (set by the pool).
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
