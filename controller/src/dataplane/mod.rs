//! The userspace side of the eBPF dataplane: loading and attaching the XDP programs, writing a
//! headend's desired state into the maps, and reading the counters back.

pub mod affinity;
pub mod health;
pub mod maglev;
pub mod program;
pub mod sids;
pub mod stats;
pub mod tables;

pub use program::Dataplane;
