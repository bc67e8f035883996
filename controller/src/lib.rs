//! cats controller and node agent.

pub mod agent;
pub mod api;
pub mod atomic_file;
pub mod certs;
pub mod compile;
pub mod daemon;
pub mod dataplane;
pub mod diff;
pub mod explain;
pub mod graph;
pub mod intent;
pub mod measure;
pub mod metrics_endpoint;
pub mod metrics_files;
pub mod netns;
pub mod nodes;
pub mod offload;
pub mod paths;
pub mod registry;
pub mod running;
pub mod state;
pub mod store;
