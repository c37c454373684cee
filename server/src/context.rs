//! The per-call context a handler sees: who called, which method, until when, and metainfo.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrpc_codec::keys::{int, str as skeys};
use ringrpc_codec::FrameHead;
use ringrpc_engine::CoreId;
use ringrpc_governance::obs::CallInfo;
use ringrpc_governance::{Backward, CallDeadline, CallMethod, Metainfo};

/// Everything about one call except its body.
#[derive(Debug)]
pub struct CallContext {
    /// The request's head: framing, protocol, method, seq id and TTHeader; the reply reuses it.
    pub(crate) head: FrameHead,
    /// The service the call was routed to.
    pub(crate) service: Option<Bytes>,
    peer: SocketAddr,
    core: CoreId,
    deadline: Option<Instant>,
    metainfo: Metainfo,
    backward: Backward,
}

impl CallContext {
    /// Builds the context of a request received at `received` from `peer`. The caller's RPC
    /// timeout (TTHeader int key 12, in ms) becomes the deadline.
    pub(crate) fn new(head: FrameHead, peer: SocketAddr, core: CoreId, received: Instant) -> Self {
        let (deadline, metainfo, service) = match head.header() {
            Some(h) => (
                h.int_kv_number(int::RPC_TIMEOUT)
                    .filter(|ms| *ms > 0)
                    .map(|ms| received + Duration::from_millis(ms as u64)),
                if !h.has_str_kvs() {
                    Metainfo::default()
                } else {
                    Metainfo::read_request(h)
                },
                h.str_kv_bytes(skeys::IDL_SERVICE_NAME.as_bytes())
                    .or_else(|| h.int_kv_bytes(int::TO_SERVICE))
                    .filter(|s| !s.is_empty()),
            ),
            None => (None, Metainfo::default(), None),
        };
        Self {
            head,
            service,
            peer,
            core,
            deadline,
            metainfo,
            backward: Backward::default(),
        }
    }

    /// The method name as sent.
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.head.method).unwrap_or("")
    }

    /// The service name the caller asked for (`isn` or int key ToService), if it said.
    pub fn service(&self) -> Option<&str> {
        self.service
            .as_deref()
            .and_then(|s| std::str::from_utf8(s).ok())
    }

    /// The request's sequence id.
    pub fn seq_id(&self) -> i32 {
        self.head.seq_id
    }

    /// The caller's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The core running this call.
    pub fn core(&self) -> CoreId {
        self.core
    }

    /// The request's full head, including its TTHeader if it had one.
    pub fn request_head(&self) -> &FrameHead {
        &self.head
    }

    /// Transient and persistent metainfo sent by the caller.
    pub fn metainfo(&self) -> &Metainfo {
        &self.metainfo
    }

    /// Adds a backward value, sent to the caller in the reply's TTHeader.
    pub fn set_backward(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.backward.push(key, value);
    }

    /// Backward values set so far.
    pub fn backward(&self) -> &Backward {
        &self.backward
    }
}

impl CallDeadline for CallContext {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

impl CallMethod for CallContext {
    fn method(&self) -> &str {
        std::str::from_utf8(&self.head.method).unwrap_or("")
    }
}

impl CallInfo for CallContext {
    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn seq_id(&self) -> Option<i32> {
        Some(self.head.seq_id)
    }
}
