//! Why a call failed.

use std::net::SocketAddr;
use std::time::Duration;

use ringrpc_codec::{CodecError, ExceptionKind};
use ringrpc_governance::acl::AclError;
use ringrpc_governance::balance::BalanceError;
use ringrpc_governance::breaker::BreakerError;
use ringrpc_governance::timeout::TimeoutError;

/// A business error the server answered (TTHeader `biz-status`, `biz-message`, `biz-extra`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BizError {
    /// Non-zero status.
    pub status: i32,
    /// Message.
    pub message: String,
    /// The raw `biz-extra` JSON, if sent.
    pub extra: Option<String>,
}

/// Errors of a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The call's deadline passed.
    #[error("rpc timeout after {0:?}")]
    Timeout(Duration),
    /// No connection within the connect timeout.
    #[error("connect to {addr} timed out")]
    ConnectTimeout {
        /// The target.
        addr: SocketAddr,
    },
    /// The connection was refused or failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server answered with an exception.
    #[error("remote exception {kind:?}: {message}")]
    Remote {
        /// Exception type.
        kind: ExceptionKind,
        /// Message.
        message: String,
    },
    /// The server answered with a business error.
    #[error("biz error {}: {}", .0.status, .0.message)]
    Biz(BizError),
    /// A frame could not be encoded or the reply could not be decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The reply's seq id does not match the request's (ping-pong connections).
    #[error("bad sequence id: sent {sent}, got {got}")]
    BadSequence {
        /// Seq id sent.
        sent: i32,
        /// Seq id received.
        got: i32,
    },
    /// The connection closed or failed before the reply arrived.
    #[error("connection closed before the reply")]
    Closed,
    /// The client has no target address.
    #[error("no target address configured")]
    NoTarget,
    /// The call was made outside a runtime core (use [`crate::OutsideClient`]).
    #[error("not on a runtime core")]
    NotOnCore,
    /// A circuit breaker failed the call fast: the method's ([`BreakerError::Open`]) or, for a
    /// call pinned to an address, that instance's ([`BreakerError::InstanceOpen`]). Nothing
    /// was sent.
    #[error("{0}")]
    CircuitOpen(BreakerError),
    /// The load balancer had no instance to pick: none configured
    /// ([`BalanceError::NoInstance`]) or every instance's breaker open
    /// ([`BalanceError::NoAvailable`]). Nothing was sent.
    #[error("{0}")]
    NoInstance(BalanceError),
    /// A client ACL rule rejected the call. Nothing was sent.
    #[error("{0}")]
    AclRejected(AclError),
}

impl ClientError {
    /// Whether the call may be retried safely on another connection: the request never
    /// reached a server, or the connection failed.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::ConnectTimeout { .. } | Self::Closed
        )
    }
}

impl ClientError {
    /// A short, bounded name of the error, the `kind` label of the client's error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::Connect { .. } => "connect",
            Self::Remote { .. } if self.is_over_limit() => "over_limit",
            Self::Remote { .. } => "remote",
            Self::Biz(_) => "biz",
            Self::Codec(_) => "codec",
            Self::BadSequence { .. } => "bad_sequence",
            Self::Closed => "closed",
            Self::NoTarget => "no_target",
            Self::NotOnCore => "not_on_core",
            Self::CircuitOpen(_) => "circuit_open",
            Self::NoInstance(_) => "no_instance",
            Self::AclRejected(_) => "acl",
        }
    }

    /// Whether the server turned the call away for its rate or concurrency limit (an
    /// exception whose message starts with [`OVER_LIMIT_MESSAGE`]). Nothing ran; the call may be
    /// sent again later or elsewhere.
    pub fn is_over_limit(&self) -> bool {
        matches!(self, Self::Remote { message, .. } if message.starts_with(OVER_LIMIT_MESSAGE))
    }

    /// Whether the call failed on this side before anything was sent: an open breaker, no
    /// instance, or an ACL rule.
    pub fn is_local_rejection(&self) -> bool {
        matches!(
            self,
            Self::CircuitOpen(_) | Self::NoInstance(_) | Self::AclRejected(_) | Self::NotOnCore
        )
    }
}

/// How a ringrpc server's over-limit exception message starts (Kitex's `ErrOverlimit` text).
pub const OVER_LIMIT_MESSAGE: &str = "request over limit";

impl From<BreakerError> for ClientError {
    fn from(e: BreakerError) -> Self {
        Self::CircuitOpen(e)
    }
}

impl From<BalanceError> for ClientError {
    fn from(e: BalanceError) -> Self {
        Self::NoInstance(e)
    }
}

impl From<AclError> for ClientError {
    fn from(e: AclError) -> Self {
        Self::AclRejected(e)
    }
}

impl From<TimeoutError> for ClientError {
    fn from(e: TimeoutError) -> Self {
        Self::Timeout(e.after)
    }
}
