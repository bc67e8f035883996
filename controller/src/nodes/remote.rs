//! Nodes whose agents run elsewhere (`catsd agent`) and talk through etcd: this controller
//! publishes their states while it leads, and reads their reports and liveness.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{NodeStatus, Nodes, Observation};
use crate::{
    compile::{Compiled, Metrics},
    intent::Intent,
    measure::{self, Gathered, MetricsReport},
    metrics_files,
    store::etcd::{
        agent::Desired,
        controller::{Leadership, SharedView},
    },
};

pub struct RemoteNodes {
    leadership: Leadership,
    view: SharedView,
    state_dir: Option<std::path::PathBuf>,
}

impl RemoteNodes {
    pub fn new(
        leadership: Leadership,
        view: SharedView,
        state_dir: Option<std::path::PathBuf>,
    ) -> Self {
        RemoteNodes { leadership, view, state_dir }
    }

    /// The generation the store's newest state has.
    pub fn last_generation(&self) -> u64 {
        self.leadership.last_generation()
    }

    /// Gives the lead up.
    pub async fn resign(self) {
        self.leadership.resign().await
    }
}

/// What `node` gets from a compile: its state, its links to probe, its instances.
pub fn desired_of(intent: &Intent, compiled: &Compiled, node: &str) -> Option<Desired> {
    let state = compiled.nodes.get(node)?.clone();
    let instances = intent
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter(|i| i.node == node)
        .map(|i| i.name.clone())
        .collect();
    Some(Desired { state, probes: measure::targets(intent, node), instances })
}

impl Nodes for RemoteNodes {
    async fn publish(&mut self, intent: &Intent, compiled: &Compiled) -> Result<()> {
        let states = compiled
            .nodes
            .keys()
            .filter_map(|n| Some((n.clone(), desired_of(intent, compiled, n)?)))
            .collect();
        self.leadership.publish(states).await?;
        let all: Vec<String> = compiled.nodes.keys().cloned().collect();
        super::local::record(self.state_dir.as_deref(), compiled, &all);
        Ok(())
    }

    fn desired_generation(&self, node: &str) -> Option<u64> {
        self.leadership.generation(node)
    }

    /// The links each node probes travel with its desired state.
    fn retarget(&mut self, _intent: &Intent) {}

    fn observe(&mut self, intent: &Intent, _compiled: &Compiled) -> Observation {
        // Read under the lock: the reports of every node are not copied each poll.
        let view = self.view.lock().expect("view lock");
        let mut snapshots = BTreeMap::new();
        let mut instances = Vec::new();
        let mut ingress_rates: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let mut affinity = BTreeMap::new();
        for (node, report) in &view.reports {
            // A node without its lease says nothing current: what it last reported is stale,
            // and its demand is not counted.
            let alive = view.alive.contains(node);
            for (link, snapshot) in &report.links {
                let mut s = *snapshot;
                s.stale |= !alive;
                s.down &= alive;
                snapshots.insert((*link, node.clone()), s);
            }
            for i in &report.instances {
                let mut i = i.clone();
                i.stale |= !alive;
                instances.push(i);
            }
            if alive {
                for (svc, rate) in &report.demand {
                    ingress_rates.entry(svc.clone()).or_default().insert(node.clone(), *rate);
                }
            }
            if let Some(a) = report.affinity {
                affinity.insert(node.clone(), a);
            }
        }
        let links = measure::link_reports(intent, &snapshots);
        let metrics = Metrics {
            links: measure::link_metrics(&links),
            instances: metrics_files::fresh(&instances),
            ..Default::default()
        };
        let nodes = intent
            .topology
            .nodes
            .iter()
            .map(|n| {
                let report = view.reports.get(&n.name);
                let status = NodeStatus {
                    desired_generation: self.leadership.generation(&n.name),
                    alive: view.alive.contains(&n.name),
                    agent: report.map(|r| r.status.clone()).unwrap_or_default(),
                    affinity: report.and_then(|r| r.affinity),
                };
                (n.name.clone(), status)
            })
            .collect();
        Observation {
            gathered: Gathered { metrics, report: MetricsReport { links, instances } },
            ingress_rates,
            affinity,
            nodes,
        }
    }

    fn must_stop(&self) -> Option<String> {
        self.leadership.is_lost().then(|| "this controller lost the lead".to_string())
    }
}
