//! `catsd agent`: one node's agent as a process of its own, talking to the controllers
//! through etcd. It follows its desired state, applies it (the same agent thread as in the
//! daemon), measures its links, instances and headend, and reports them, dampened.
//!
//! Cut off from etcd it keeps forwarding with the last state it applied (the maps and
//! programs are pinned; nothing is flushed), and converges when the store is back.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::watch;
use tracing::info;

use super::node::{self, AgentConfig, AgentStatus, SharedStatus};
use crate::{
    dataplane::program::ensure_bpffs,
    measure::{
        Gatherer, ProbeConfig, affinity::AffinityMeter, demand::DemandMeter,
        headend_counters::HeadendCounters,
    },
    paths,
    state::NodeState,
    store::{
        etcd::{
            EtcdConfig,
            agent::{Desired, follow_desired, keep_reporting},
        },
        report::NodeReport,
    },
};

/// How often the agent reads its measurements (what it writes is dampened).
const READ_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct RemoteAgentConfig {
    pub node: String,
    pub etcd: EtcdConfig,
    /// Lab mode: the node lives in network namespace `<prefix><node>`.
    pub netns_prefix: Option<String>,
    pub bpffs: PathBuf,
    /// Where this node's instances write their reports.
    pub metrics_dir: Option<PathBuf>,
    pub registry: Option<PathBuf>,
    /// Load the XDP programs with their aya-log events on (`--ebpf-log`).
    pub ebpf_log: bool,
}

pub async fn run(config: RemoteAgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    ensure_bpffs(&config.bpffs)?;
    let node = config.node.clone();
    let (desired_tx, mut desired) = watch::channel(None::<Arc<Desired>>);
    let connected = Arc::new(AtomicBool::new(false));
    tokio::spawn(follow_desired(config.etcd.clone(), node.clone(), desired_tx, connected.clone()));

    let scope = config.netns_prefix.as_deref().unwrap_or("");
    let pins = paths::node_pins(&config.bpffs, scope, &node);
    let (state_tx, state_rx) = watch::channel(None::<Arc<NodeState>>);
    let status: SharedStatus = Arc::new(Mutex::new(AgentStatus::default()));
    let applied = Arc::new(tokio::sync::Notify::new());
    node::spawn(
        AgentConfig {
            node: node.clone(),
            netns: paths::node_netns(config.netns_prefix.as_deref(), &node),
            pins: pins.clone(),
            registry: config.registry.clone(),
            applied: Some(applied.clone()),
            ebpf_log: config.ebpf_log,
        },
        state_rx,
        status.clone(),
    )?;
    let (report_tx, report_rx) = watch::channel(NodeReport::default());
    tokio::spawn(keep_reporting(config.etcd.clone(), node.clone(), report_rx));
    info!(node, "agent started; following its desired state in etcd");

    let mut meter = Meter::new(&config, pins);
    let mut current: Option<Arc<Desired>> = None;
    let mut tick = tokio::time::interval(READ_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
            _ = desired.changed() => {}
            _ = applied.notified() => {}
        }
        let latest = desired.borrow_and_update().clone();
        if let Some(d) = latest
            && current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &d))
        {
            state_tx.send_replace(Some(Arc::new(d.state.clone())));
            meter.retarget(&node, &d);
            current = Some(d);
        }
        let Some(d) = &current else { continue };
        let agent = status.lock().expect("status lock").clone();
        report_tx.send_replace(meter.read(&node, d, agent));
        if !connected.load(Ordering::Relaxed) {
            tracing::debug!(node, "etcd unreachable; forwarding with the last state");
        }
    }
    info!(node, "agent stopping; pinned programs and maps keep forwarding");
    Ok(())
}

/// The node's own measurements: link probes, instance reports, headend counters.
struct Meter {
    gatherer: Gatherer,
    counters: HeadendCounters,
    demand: DemandMeter,
    affinity: AffinityMeter,
}

impl Meter {
    fn new(config: &RemoteAgentConfig, pins: PathBuf) -> Self {
        Meter {
            gatherer: Gatherer::for_targets(
                BTreeMap::new(),
                config.netns_prefix.as_deref(),
                config.metrics_dir.as_deref(),
                ProbeConfig::default(),
            ),
            counters: HeadendCounters::new(move |_| pins.clone()),
            demand: DemandMeter::default(),
            affinity: AffinityMeter::default(),
        }
    }

    fn retarget(&mut self, node: &str, desired: &Desired) {
        self.gatherer.retarget_to(BTreeMap::from([(node.to_string(), desired.probes.clone())]));
    }

    fn read(&mut self, node: &str, desired: &Desired, status: AgentStatus) -> NodeReport {
        let now = Instant::now();
        let links = self
            .gatherer
            .link_ends()
            .into_iter()
            .filter(|((_, n), _)| n == node)
            .map(|((link, _), s)| (link, s))
            .collect();
        let instances = self
            .gatherer
            .instance_reports()
            .into_iter()
            .filter(|r| desired.instances.contains(&r.instance))
            .collect();
        let states = [&desired.state];
        let demand = self
            .demand
            .read(states, &mut self.counters, now)
            .iter()
            .filter_map(|(svc, by_node)| Some((svc.clone(), *by_node.get(node)?)))
            .collect();
        let affinity = self.affinity.read(states, &mut self.counters, now).get(node).copied();
        NodeReport { status, links, instances, demand, affinity }
    }
}
