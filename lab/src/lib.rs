//! The emulated cats lab: nodes as network namespaces, links with one-way delay, compute
//! instances with heterogeneous speed, and clients.

pub mod client;
pub mod control;
pub mod faults;
pub mod instance;
pub mod netns;
pub mod network;
pub mod offload;
pub mod relay;
pub mod run;
pub mod scenario;
pub mod wire;
