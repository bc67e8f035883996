//! The node agent: brings one node to the state the controller computed for it.

pub mod health;
pub mod kernel;
pub mod node;
pub mod remote;
