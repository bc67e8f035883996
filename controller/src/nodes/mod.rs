//! What the controller loop needs of the nodes it steers, whichever way it reaches them:
//! handing them their desired states, and reading back what they measured and did.
//!
//! - [`local`]: the agents run in this process, joined by the embedded store; measurement
//!   (link probes, headend counters) runs here too.
//! - [`remote`]: the agents run elsewhere and talk through etcd; this controller publishes
//!   only while it leads, and reads what the agents report.

pub mod local;
pub mod remote;

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::{
    agent::node::AgentStatus,
    compile::Compiled,
    intent::Intent,
    measure::{Gathered, affinity::AffinityReport},
};

/// One reading of the nodes.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// Links and instances: fresh metrics for the compile, everything for the status.
    pub gathered: Gathered,
    /// Per service, per ingress: packets/s its headend steers.
    pub ingress_rates: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per headend node, its affinity table.
    pub affinity: BTreeMap<String, AffinityReport>,
    pub nodes: BTreeMap<String, NodeStatus>,
}

/// One node in the status file: what it should run and what its agent last did.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// Generation of the node's desired state (the last compile that changed this node).
    pub desired_generation: Option<u64>,
    /// The node's agent showed it runs: a heartbeat within the last 2 s (in this process),
    /// or its liveness lease in etcd.
    pub alive: bool,
    #[serde(flatten)]
    pub agent: AgentStatus,
    /// The headend's affinity table, on ingress nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityReport>,
}

impl Observation {
    /// Per ingress node, the instances its health prober finds unreachable.
    pub fn unreachable(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        self.nodes
            .iter()
            .filter_map(|(node, s)| {
                let down: std::collections::BTreeSet<String> =
                    s.agent.health.as_ref()?.unreachable.iter().cloned().collect();
                (!down.is_empty()).then(|| (node.clone(), down))
            })
            .collect()
    }
}

/// The nodes, as the controller loop drives them.
pub trait Nodes {
    /// Hands the nodes their states of `compiled`; a node whose state did not change (apart
    /// from the generation) keeps its old one.
    fn publish(&mut self, intent: &Intent, compiled: &Compiled)
    -> impl Future<Output = Result<()>>;

    /// Follows a changed intent (which links are measured).
    fn retarget(&mut self, intent: &Intent);

    /// Reads what the nodes measured and did, now.
    fn observe(&mut self, intent: &Intent, compiled: &Compiled) -> Observation;

    /// Generation of the state `node` has been handed (it moves with every publish, so the
    /// status reads it after publishing, not from the poll's earlier observation).
    fn desired_generation(&self, node: &str) -> Option<u64>;

    /// Why this controller must stop driving the nodes (it lost the lead), if it must.
    fn must_stop(&self) -> Option<String> {
        None
    }
}
