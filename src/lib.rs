//! engagehub: a native engine for real-time community analytics.
//!
//! * [`pipeline`]: a bounded lock-free event ring drained by worker threads that keep
//!   live analytics and hand events back in batches to a flush callback.
//! * [`sketch`]: HyperLogLog, Count-Min and Space-Saving summaries, over sliding
//!   windows and standalone.
//! * [`community`]: active users by day, week and month, retention cohorts and
//!   activity heatmaps, per guild.
//! * [`leaderboard`]: a time-decayed leaderboard with O(log n) updates and rank queries.
//! * [`journal`]: durability (`journal=PATH`): an append-only log plus checkpoints.
//! * [`ffi`]: the C ABI (`include/engagehub.h`), the only module with `extern "C"`.
//!
//! The core modules are plain Rust and know nothing about C.

mod atfork;
pub mod community;
pub mod error;
pub mod ffi;
pub mod journal;
pub mod leaderboard;
mod mem;
pub mod pipeline;
mod quiet_panic;
pub mod sketch;

pub use error::{Error, Result};
