//! cats controller and node agent.

pub mod netns;
pub mod state;
