//! Nodes whose agents run in this process: the embedded store carries their states, and the
//! measurement (link probers, headend counters, instance reports) runs here.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use tracing::error;

use super::{NodeStatus, Nodes, Observation};
use crate::{
    agent::node::{self, AgentConfig, AgentStatus, SharedStatus},
    compile::Compiled,
    daemon::DaemonConfig,
    intent::Intent,
    measure::{
        Gatherer, ProbeConfig, affinity::AffinityMeter, demand::DemandMeter,
        headend_counters::HeadendCounters,
    },
    paths,
    store::EmbeddedStore,
};

/// An agent silent for this long (no heartbeat) is reported dead.
const AGENT_SILENCE: Duration = Duration::from_secs(2);

pub struct LocalNodes {
    served: Vec<String>,
    store: Arc<EmbeddedStore>,
    statuses: BTreeMap<String, SharedStatus>,
    gatherer: Gatherer,
    counters: HeadendCounters,
    demand: DemandMeter,
    pinned_flows: AffinityMeter,
    state_dir: Option<PathBuf>,
}

impl LocalNodes {
    /// Starts the agents of `served` (each waits for its first state) and their probers.
    pub fn start(config: &DaemonConfig, intent: &Intent, served: &[String]) -> Result<Self> {
        let store = Arc::new(EmbeddedStore::default());
        let scope = config.netns_prefix.as_deref().unwrap_or("");
        let mut statuses = BTreeMap::new();
        for node in served {
            let agent = AgentConfig {
                node: node.clone(),
                netns: paths::node_netns(config.netns_prefix.as_deref(), node),
                pins: paths::node_pins(&config.bpffs, scope, node),
                registry: config.registry.clone(),
                applied: None,
                ebpf_log: config.ebpf_log,
            };
            let status: SharedStatus = Arc::new(Mutex::new(AgentStatus::default()));
            node::spawn(agent, store.watch(node), status.clone())?;
            statuses.insert(node.clone(), status);
        }
        let gatherer = Gatherer::start(
            intent,
            served,
            config.netns_prefix.as_deref(),
            config.metrics_dir.as_deref(),
            ProbeConfig::default(),
        );
        let counters = {
            let (bpffs, scope) = (config.bpffs.clone(), scope.to_string());
            HeadendCounters::new(move |node| paths::node_pins(&bpffs, &scope, node))
        };
        Ok(LocalNodes {
            served: served.to_vec(),
            store,
            statuses,
            gatherer,
            counters,
            demand: DemandMeter::default(),
            pinned_flows: AffinityMeter::default(),
            state_dir: config.state_dir.clone(),
        })
    }
}

impl Nodes for LocalNodes {
    async fn publish(&mut self, _intent: &Intent, compiled: &Compiled) -> Result<()> {
        for node in &self.served {
            if let Some(state) = compiled.nodes.get(node) {
                self.store.publish(state.clone());
            }
        }
        record(self.state_dir.as_deref(), compiled, &self.served);
        Ok(())
    }

    fn desired_generation(&self, node: &str) -> Option<u64> {
        self.store.generation(node)
    }

    fn retarget(&mut self, intent: &Intent) {
        self.gatherer.retarget(intent, &self.served);
    }

    fn observe(&mut self, intent: &Intent, compiled: &Compiled) -> Observation {
        let now = Instant::now();
        let gathered = self.gatherer.gather(intent);
        let ingress_rates = self.demand.read(compiled.nodes.values(), &mut self.counters, now);
        let affinity = self.pinned_flows.read(compiled.nodes.values(), &mut self.counters, now);
        let nodes = self
            .statuses
            .iter()
            .map(|(n, s)| {
                let agent = s.lock().expect("status lock").clone();
                let status = NodeStatus {
                    desired_generation: self.store.generation(n),
                    alive: agent.heartbeat.is_some_and(|at| at.elapsed() < AGENT_SILENCE),
                    affinity: affinity.get(n).copied(),
                    agent,
                };
                (n.clone(), status)
            })
            .collect();
        Observation {
            gathered,
            ingress_rates: ingress_rates.clone(),
            affinity: affinity.clone(),
            nodes,
        }
    }
}

/// Records the published states for `catsd compile --dry-run`; failing to write them does
/// not stop steering.
pub(crate) fn record(state_dir: Option<&std::path::Path>, compiled: &Compiled, nodes: &[String]) {
    if let Some(dir) = state_dir
        && let Err(e) = crate::running::record(dir, compiled, nodes)
    {
        error!("recording the running state in {}: {e:#}", dir.display());
    }
}
