//! Time-decayed leaderboard (forward decay over a counted B-tree).

pub mod index;
