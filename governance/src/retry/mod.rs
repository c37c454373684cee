//! placeholder
pub trait CallMethod {}
