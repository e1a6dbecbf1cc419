//! Streaming sketches: HyperLogLog, Count-Min, Space-Saving, sliding windows.
