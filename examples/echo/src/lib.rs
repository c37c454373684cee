//! The kitex-benchmark echo service (`idl/echo.thrift`) on ringrpc.
//!
//! `echo` is Apache Thrift's Rust generator output, committed as generated; regenerate with
//!
//! ```sh
//! thrift -out examples/echo/src --gen rs examples/echo/idl/echo.thrift   # thrift-compiler 0.17
//! ```
//!
//! The `thrift` crate is pinned to the generator's version (0.17.0). The generator keeps each
//! method's `_args`/`_result` structs private, so calls wrap the request and response in
//! [`ringrpc_codec::apache::Args1`] and [`ringrpc_codec::apache::SuccessResult`], which have the
//! same wire layout (field 1 = the request, field 0 = the return value).

#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::use_self,
    clippy::manual_let_else
)]
pub mod echo;

use ringrpc_codec::apache::{Args1, SuccessResult};
use ringrpc_server::{CallContext, HandlerError, ServiceDef};

pub use echo::{Request, Response};

/// The IDL service name (`isn`).
pub const SERVICE: &str = "EchoServer";

/// The echo service: `Echo` answers the request's action and message.
pub fn echo_service() -> ServiceDef {
    ServiceDef::new(SERVICE).thrift_method(
        "Echo",
        async |_cx: &mut CallContext,
               Args1(req): Args1<Request>|
               -> Result<SuccessResult<Response>, HandlerError> {
            Ok(SuccessResult(Response::new(req.action, req.msg)))
        },
    )
}
