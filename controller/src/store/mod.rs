//! The boundary between the controller and the node agents: the controller publishes each
//! node's desired state, each agent watches its own part, applies it, and reports back.
//!
//! - [`embedded`]: in-process, the default for the lab and one machine.
//! - [`etcd`]: many machines, through etcd (TLS client certificates, one role per node).
//!
//! [`keys`] is the layout both the etcd store and its access control follow.

pub mod auth;
pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod report;

pub use embedded::{EmbeddedStore, Watch};
