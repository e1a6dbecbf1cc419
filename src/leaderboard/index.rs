//! Order-statistic index of leaderboard keys (being written).
