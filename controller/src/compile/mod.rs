//! The compile step: intent + topology + metrics → the desired state of every node.
//!
//! A pure, deterministic function: the same input gives the same output on every controller,
//! so it can be tested without a kernel and shown to an operator as a dry run. [`Compiler`]
//! keeps the result between metric updates and re-derives only what an update affects.
//!
//! - `node`: addresses, underlay routes, local SIDs, endpoint settings (intent only).
//! - `graph`, `segments`: paths over measured latencies and the fewest SIDs that force them.
//! - `steer`: per ingress and service, routes and the selector's inputs.
//! - `select`: the instance selector (C-PS).

pub mod addressing;
pub mod baseline;
mod compiler;
pub mod graph;
pub mod metrics;
mod node;
pub mod segments;
pub mod select;
mod steer;

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;

use self::select::Decision;
use crate::{intent::Intent, state::NodeState};
use cats_common::maps::{MAX_INSTANCES, MAX_SERVICES};

pub use self::metrics::{InstanceMetric, LinkMetric, Metrics};
pub use self::{baseline::Selector, compiler::Compiler};

/// Desired state of every node, and the figures behind every weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Compiled {
    pub nodes: BTreeMap<String, NodeState>,
    pub decisions: Vec<ServiceDecisions>,
}

/// How one ingress weighs one service's instances.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDecisions {
    pub service: String,
    pub ingress: String,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Error, PartialEq)]
pub enum CompileError {
    /// More services steered at one headend than its maps hold.
    #[error("node {node}: {count} services, but a headend holds at most {MAX_SERVICES}")]
    TooManyServices { node: String, count: usize },
    /// More instances reachable from one headend than its maps hold.
    #[error("node {node}: {count} instances, but a headend holds at most {MAX_INSTANCES}")]
    TooManyInstances { node: String, count: usize },
    /// The derived IPv4 link addresses ran out.
    #[error("link {link}: no IPv4 link address left in 198.19.0.0/16")]
    OutOfLinkAddresses { link: usize },
}

/// Compiles `intent` with `metrics` into the desired state of every node, from scratch.
pub fn compile(
    intent: &Intent,
    metrics: &Metrics,
    generation: u64,
) -> Result<Compiled, CompileError> {
    let mut compiler = Compiler::new(intent.clone(), generation)?;
    compiler.update(metrics, generation, 0)?;
    compiler.fill_backups(std::time::Duration::MAX, generation)?;
    Ok(compiler.compiled())
}

#[cfg(test)]
mod tests;
