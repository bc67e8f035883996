//! cats controller and node agent.

pub mod agent;
pub mod compile;
pub mod dataplane;
pub mod intent;
pub mod netns;
pub mod state;
