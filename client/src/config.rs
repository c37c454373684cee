//! Client configuration and per-call options.

use std::net::SocketAddr;
use std::time::Duration;

use ringrpc_codec::{Framing, PayloadProtocol};
use ringrpc_governance::Metainfo;

/// How requests are framed on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TTHeader then a framed Thrift message (Volo's default; Kitex mux). Default.
    #[default]
    TtHeaderFramed,
    /// TTHeader then an unframed Thrift message.
    TtHeader,
    /// A u32 length then the Thrift message (Kitex's default since v0.13).
    Framed,
    /// The Thrift message alone (Kitex's old default, "PurePayload").
    Buffered,
    /// Kitex Protobuf inside TTHeaderFramed, as Kitex clients send it.
    KitexProtobuf,
}

impl Protocol {
    /// The framing this protocol writes.
    pub fn framing(self) -> Framing {
        match self {
            Self::TtHeaderFramed | Self::KitexProtobuf => Framing::TtHeaderFramed,
            Self::TtHeader => Framing::TtHeader,
            Self::Framed => Framing::Framed,
            Self::Buffered => Framing::Buffered,
        }
    }

    /// The payload codec this protocol writes.
    pub fn payload(self) -> PayloadProtocol {
        match self {
            Self::KitexProtobuf => PayloadProtocol::KitexProtobuf,
            _ => PayloadProtocol::ThriftBinary,
        }
    }
}

/// How a core's connections are shared by calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// One call per connection at a time; idle connections are kept for reuse.
    Pooled {
        /// Idle connections kept per address per core. Kitex's default is 10.
        max_idle_per_addr: usize,
        /// An idle connection older than this is closed instead of reused. Kitex: 1 min.
        idle_timeout: Duration,
    },
    /// `conns_per_addr` connections per address per core, each carrying any number of calls
    /// at once, replies matched by seq id.
    Multiplexed {
        /// Connections per address per core (Kitex's benchmark uses 2).
        conns_per_addr: usize,
    },
}

impl Default for ConnMode {
    fn default() -> Self {
        Self::Multiplexed { conns_per_addr: 1 }
    }
}

impl ConnMode {
    /// Pooled mode with Kitex's defaults.
    pub fn pooled() -> Self {
        Self::Pooled {
            max_idle_per_addr: 10,
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// Multiplexed mode with `n` connections per address per core.
    pub fn multiplexed(n: usize) -> Self {
        Self::Multiplexed {
            conns_per_addr: n.max(1),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server addresses, used round-robin.
    pub targets: Vec<SocketAddr>,
    /// Wire protocol. Default TTHeaderFramed.
    pub protocol: Protocol,
    /// Connection sharing. Default multiplexed, one connection per address per core.
    pub conn_mode: ConnMode,
    /// Longest wait for a TCP connection. Default 1 s.
    pub connect_timeout: Duration,
    /// Longest a call may take, also sent to the server (TTHeader int key 12). Default 3 s.
    pub rpc_timeout: Option<Duration>,
    /// Largest reply accepted. Default 16 MiB.
    pub max_frame_size: usize,
    /// The IDL service name of the callee, sent as `isn` and ToService for routing.
    pub service_name: Option<String>,
    /// This caller's service name, sent as FromService.
    pub caller_name: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            protocol: Protocol::default(),
            conn_mode: ConnMode::default(),
            connect_timeout: Duration::from_secs(1),
            rpc_timeout: Some(Duration::from_secs(3)),
            max_frame_size: ringrpc_codec::DEFAULT_MAX_FRAME_SIZE,
            service_name: None,
            caller_name: None,
        }
    }
}

impl ClientConfig {
    /// A config calling `targets` with default settings.
    pub fn new(targets: Vec<SocketAddr>) -> Self {
        Self {
            targets,
            ..Self::default()
        }
    }

    /// Sets the protocol.
    pub fn protocol(mut self, p: Protocol) -> Self {
        self.protocol = p;
        self
    }

    /// Sets the connection mode.
    pub fn conn_mode(mut self, m: ConnMode) -> Self {
        self.conn_mode = m;
        self
    }

    /// Sets the RPC timeout (`None`: calls wait as long as it takes).
    pub fn rpc_timeout(mut self, t: Option<Duration>) -> Self {
        self.rpc_timeout = t;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the callee's IDL service name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }
}

/// Options of one call, overriding the client's.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// RPC timeout for this call.
    pub timeout: Option<Duration>,
    /// Metainfo sent with this call (TTHeader protocols only).
    pub metainfo: Metainfo,
    /// Call this address instead of picking one.
    pub address: Option<SocketAddr>,
    /// A oneway call: sent as ONEWAY, no reply awaited.
    pub oneway: bool,
}

impl CallOptions {
    /// Sets the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sets the metainfo.
    pub fn metainfo(mut self, m: Metainfo) -> Self {
        self.metainfo = m;
        self
    }
}
