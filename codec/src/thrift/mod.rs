//! Thrift binary, in the codec's own types: the message envelope, `TApplicationException`
//! ([`ApplicationException`]), and the allocation-free skip pass. Bodies of the `thrift` crate's
//! generated types are read and written in module `apache`.

pub mod envelope;
pub mod exception;
pub mod skip;

pub use envelope::{Envelope, KITEX_PROTOBUF_MAGIC, THRIFT_BINARY_MAGIC};
pub use exception::{ApplicationException, ExceptionKind};
pub use skip::{skip_struct_len, ttype, MAX_SKIP_DEPTH};
