//! Bounded lock-free MPMC ring (being written).
