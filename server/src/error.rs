//! What a handler can answer instead of a reply, and what can stop a server.

use ringrpc_codec::{ApplicationException, ExceptionKind};
use ringrpc_governance::acl::AclError;
use ringrpc_governance::limit::LimitError;
use ringrpc_governance::timeout::TimeoutError;

/// A business error: a normal reply whose TTHeader carries `biz-status`, `biz-message` and
/// optionally `biz-extra` (Kitex `BizStatusError`, Volo `BizError`). Without TTHeader there is
/// nowhere to put it, so it goes out as an `INTERNAL_ERROR` exception with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("biz error {status}: {message}")]
pub struct BizError {
    /// Non-zero status code.
    pub status: i32,
    /// Message.
    pub message: String,
    /// Extra key-values, sent as a JSON object of strings.
    pub extra: Vec<(String, String)>,
}

impl BizError {
    /// A business error with no extras.
    pub fn new(status: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: Vec::new(),
        }
    }
}

/// Why a call produced no normal reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A business error (see [`BizError`]).
    #[error(transparent)]
    Biz(#[from] BizError),
    /// An application exception (message type EXCEPTION).
    #[error("{0}")]
    Exception(ApplicationException),
}

impl HandlerError {
    /// An `INTERNAL_ERROR` exception with `message`, as Kitex sends for a handler error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Exception(ApplicationException::new(
            ExceptionKind::InternalError,
            message.into(),
        ))
    }
}

impl From<ApplicationException> for HandlerError {
    fn from(e: ApplicationException) -> Self {
        Self::Exception(e)
    }
}

impl From<TimeoutError> for HandlerError {
    fn from(e: TimeoutError) -> Self {
        Self::internal(e.to_string())
    }
}

/// How the exception answering a call over the server's rate or concurrency limit starts
/// (Kitex's `ErrOverlimit` text); the client's `ClientError::is_over_limit` looks for it.
pub const OVER_LIMIT_MESSAGE: &str = "request over limit";

impl From<LimitError> for HandlerError {
    /// An `INTERNAL_ERROR` exception `request over limit: <which limit>`, sent at once.
    fn from(e: LimitError) -> Self {
        Self::internal(format!("{OVER_LIMIT_MESSAGE}: {e}"))
    }
}

impl From<AclError> for HandlerError {
    /// An `INTERNAL_ERROR` exception with the rule's reason.
    fn from(e: AclError) -> Self {
        Self::internal(e.to_string())
    }
}

/// Errors starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] ringrpc_engine::EngineError),
    /// No service was registered.
    #[error("a server needs at least one service")]
    NoService,
    /// The metrics endpoint could not listen.
    #[error("cannot serve metrics: {0}")]
    Metrics(std::io::Error),
    /// Registering with the service registry failed.
    #[error("cannot register: {0}")]
    Register(ringrpc_governance::discovery::DiscoveryError),
    /// Installing the signal handler failed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}
