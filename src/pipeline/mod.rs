//! Event pipeline: bounded MPMC ring, worker threads, batched flush.

pub mod ring;
