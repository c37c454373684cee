//! What governance layers need to read from a call's context.

use std::time::Instant;

/// A call context that carries a deadline.
///
/// The server sets it from the caller's RPC timeout (TTHeader int key 12); the client from its
/// RPC timeout option. Layers such as [`crate::timeout`] tighten it and honour it.
pub trait CallDeadline {
    /// When the call must be answered by, if anyone said.
    fn deadline(&self) -> Option<Instant>;
    /// Sets the deadline.
    fn set_deadline(&mut self, deadline: Option<Instant>);
}
