//! Offload settings the lab needs on its veths: the controller's, shared with the CNI plugin.

pub use cats_controller::offload::{disable_tx_checksum, enable_gro, gro_enabled};
