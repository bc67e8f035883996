//! One node's agent: a thread inside the node's network namespace that reconciles the kernel
//! (addresses, routes, SIDs) and the XDP dataplane (maps, attachments) to the desired state.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use aya::programs::XdpMode;
use cats_common::maps::{AFFINITY_TABLE_SIZE, PROG_ENDPOINT, PROG_HEADEND};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use tokio::sync::watch;

use super::{
    health::{self, HealthReport, HealthSink},
    kernel::Kernel,
};
use crate::{
    dataplane::{Dataplane, health::HealthMap},
    state::{NodeState, SidBehavior},
    store::Watch,
};

/// How long to wait before retrying a state that failed to apply.
const RETRY: Duration = Duration::from_secs(1);
/// How often a running agent says so.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Where one agent runs and keeps its pins.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: String,
    /// Network namespace file to enter; `None` for the current one (a real node).
    pub netns: Option<PathBuf>,
    /// Pin directory of this node's maps and links (must be on bpffs).
    pub pins: PathBuf,
    /// The CNI plugin's pod registry: the links it pinned for registered pods are kept.
    pub registry: Option<PathBuf>,
    /// Told after every apply (a remote agent reports at once instead of at its next read).
    pub applied: Option<Arc<tokio::sync::Notify>>,
    /// Load the XDP programs with their aya-log events on and forward them to the log
    /// (`--ebpf-log`).
    pub ebpf_log: bool,
}

/// What an agent last did, for status output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Generation of the last state applied completely.
    pub applied_generation: Option<u64>,
    pub attached: Vec<String>,
    pub last_error: Option<String>,
    /// Flows the headend's affinity table holds (the pinned table's size, once loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_table_size: Option<u32>,
    /// When the agent last showed it is alive (every [`HEARTBEAT`]).
    #[serde(skip)]
    pub heartbeat: Option<std::time::Instant>,
    /// The headend's health prober: per probed path, and unreachable instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
}

pub type SharedStatus = Arc<Mutex<AgentStatus>>;

/// Starts the agent thread. It runs until the store's sender is dropped.
pub fn spawn(config: AgentConfig, desired: Watch, status: SharedStatus) -> Result<JoinHandle<()>> {
    let name = format!("agent:{}", config.node);
    Ok(std::thread::Builder::new().name(name).spawn(move || {
        if let Err(e) = run(&config, desired, &status) {
            warn!(node = %config.node, error = %format!("{e:#}"), "agent stopped");
            status.lock().expect("status lock").last_error = Some(format!("{e:#}"));
        }
    })?)
}

fn run(config: &AgentConfig, mut desired: Watch, status: &SharedStatus) -> Result<()> {
    if let Some(netns) = &config.netns {
        crate::netns::enter(netns)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let kernel = Kernel::connect()?;
        // The affinity table's size is set when the maps are made: wait for the first state.
        let Some(first) = first_state(&mut desired).await else { return Ok(()) };
        let size = first.headend.as_ref().map_or(AFFINITY_TABLE_SIZE, |h| h.affinity_table_size);
        let mut dataplane = Dataplane::load_logging(Some(&config.pins), size, config.ebpf_log)
            .with_context(|| format!("loading the dataplane of {}", config.node))?;
        if config.ebpf_log {
            dataplane.forward_log(&config.node)?;
            info!(node = %config.node, "eBPF log events on");
        }
        let in_force = dataplane.affinity_table_size()?;
        if in_force != size {
            warn!(
                node = %config.node,
                pinned = in_force,
                asked = size,
                "the pinned affinity table keeps its size (its pins are live flows); \
                 `catsd cleanup` and a restart make a new one"
            );
        }
        status.lock().expect("status lock").affinity_table_size = Some(in_force);
        // The prober probes what the maps hold: it gets each headend state once applied.
        let (applied_tx, applied_rx) = watch::channel(None);
        let health = HealthMap::take(&mut dataplane)?;
        // On a thread of its own: an apply (kernel reconcile, map writes) must never hold up
        // the probes and echoes a detection time is made of.
        let prober_status = status.clone();
        let node = config.node.clone();
        std::thread::Builder::new().name(format!("prober:{}", config.node)).spawn(move || {
            let report = move |r: HealthReport| {
                prober_status.lock().expect("status lock").health = Some(r);
            };
            let probing = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(health::run(applied_rx, health, report)));
            if let Err(e) = probing {
                warn!(node = %node, error = %format!("{e:#}"), "health prober stopped");
            }
        })?;
        let heartbeat = status.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                heartbeat.lock().expect("status lock").heartbeat = Some(std::time::Instant::now());
            }
        });
        loop {
            let state = desired.borrow_and_update().clone();
            if let Some(state) = state {
                // Read at each apply: a pod the plugin attached after this state was compiled
                // keeps its link.
                let pods = config
                    .registry
                    .as_deref()
                    .map(|dir| crate::registry::host_interfaces(dir, &config.node))
                    .unwrap_or_default();
                match apply(&kernel, &mut dataplane, &state, &pods).await {
                    Ok(attached) => {
                        applied_tx.send_replace(state.headend.clone().map(Arc::new));
                        let mut s = status.lock().expect("status lock");
                        s.applied_generation = Some(state.generation);
                        s.attached = attached;
                        s.last_error = None;
                        drop(s);
                        if let Some(applied) = &config.applied {
                            applied.notify_one();
                        }
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        warn!(node = %config.node, error = %msg, "applying desired state failed; retrying");
                        status.lock().expect("status lock").last_error = Some(msg);
                        // Retry unless a newer state arrives first.
                        match tokio::time::timeout(RETRY, desired.changed()).await {
                            Ok(Err(_)) => return Ok(()),
                            _ => continue,
                        }
                    }
                }
            }
            if desired.changed().await.is_err() {
                return Ok(());
            }
        }
    })
}

/// The first desired state; `None` if the store closes before there is one.
async fn first_state(desired: &mut Watch) -> Option<Arc<NodeState>> {
    loop {
        if let Some(state) = desired.borrow_and_update().clone() {
            return Some(state);
        }
        desired.changed().await.ok()?;
    }
}

/// Kernel first (the underlay and SIDs the encapsulated packets need), then the maps, then
/// the attachments: a packet the headend steers always finds its way. `pods` are the host
/// interfaces of registered pods: their links belong to the CNI plugin, which attaches them
/// on ADD and removes them on DEL, so they are never detached here, and a pod that is
/// already gone (its interface with it) does not fail the node.
#[tracing::instrument(name = "apply", skip_all, fields(node = %state.node, generation = state.generation))]
async fn apply(
    kernel: &Kernel,
    dataplane: &mut Dataplane,
    state: &NodeState,
    pods: &[String],
) -> Result<Vec<String>> {
    let changes = kernel.apply(state).await?;
    if !changes.is_empty() {
        info!(node = %state.node, added = changes.added.len(), removed = changes.removed.len(), "kernel reconciled");
    }
    let mut attached = Vec::new();
    if let Some(headend) = &state.headend {
        let tables = dataplane.apply_headend(headend)?;
        info!(node = %state.node, generation = state.generation, ?tables, "headend maps written");
        for iface in &headend.interfaces {
            match dataplane.attach(PROG_HEADEND, iface, XdpMode::default()) {
                Ok(how) => info!(node = %state.node, interface = %iface, ?how, "headend attached"),
                Err(e) if pods.contains(iface) => {
                    warn!(node = %state.node, interface = %iface, error = %format!("{e:#}"), "pod interface not attached");
                }
                Err(e) => return Err(e),
            }
            attached.push(iface.clone());
        }
    }
    if let Some(endpoint) = &state.endpoint {
        let nexthops: Vec<std::net::IpAddr> = state
            .sids
            .iter()
            .filter_map(|s| match s.behavior {
                // End.X next hops are link neighbours the underlay resolves anyway.
                SidBehavior::EndDx6 { nexthop } => Some(nexthop.into()),
                SidBehavior::EndDx4 { nexthop } => Some(nexthop.into()),
                _ => None,
            })
            .collect();
        kernel.manage_neighbours(&nexthops).await?;
        let bridges = kernel.bridges().await?;
        dataplane.apply_endpoint(endpoint, &state.sids, &bridges)?;
        // A headend interface keeps the headend program (one XDP program per interface).
        let todo: Vec<&String> =
            endpoint.interfaces.iter().filter(|i| !attached.contains(i)).collect();
        for iface in todo {
            let how = dataplane.attach(PROG_ENDPOINT, iface, XdpMode::default())?;
            info!(node = %state.node, interface = %iface, ?how, "endpoint attached");
            attached.push(iface.clone());
        }
    }
    let keep: Vec<String> = attached.iter().chain(pods).cloned().collect();
    for gone in dataplane.detach_others(&keep)? {
        info!(node = %state.node, interface = %gone, "headend detached");
    }
    Ok(attached)
}

impl HealthSink for HealthMap {
    fn write(&mut self, slot: u32, bits: u32) -> Result<()> {
        self.set(slot, bits)
    }

    fn read(&self, slot: u32) -> u32 {
        self.get(slot).unwrap_or(0)
    }
}
