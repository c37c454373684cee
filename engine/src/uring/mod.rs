//! The io_uring engine: under construction in this commit series.
