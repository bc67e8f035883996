//! The daemon's local API and what it serves: a snapshot of the daemon handed over every poll
//! ([`DaemonView`]), read by the Unix-socket API (`catsctl`) and the Prometheus endpoint.
//!
//! - [`http`]: a small HTTP/1.1 server (one GET per connection, JSON or text bodies) for both
//!   listeners, and the blocking client `catsctl` uses.
//! - [`views`]: the API's documents (status, nodes, services, instances, paths, flows,
//!   topology), built from a [`DaemonView`]; SID decoding.
//! - [`table`]: the documents as tables, for `catsctl -o table`.
//!
//! The daemon loop only calls [`Observers::publish`]; everything else runs on tasks of its
//! own and never holds up a poll.

pub mod http;
pub mod table;
pub mod views;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::info;

use crate::{
    agent::node::AgentStatus,
    compile::{Compiled, ServiceDecisions},
    intent::Intent,
    measure::{MetricsReport, affinity::AffinityReport},
    nodes::NodeStatus,
    state::NodeState,
};

/// Where the daemon listens by default for `catsctl`.
pub const DEFAULT_API_SOCKET: &str = "/run/cats/catsd.sock";

/// One node's agent as the daemon last saw it.
#[derive(Clone, Debug, Default)]
pub struct AgentView {
    pub status: AgentStatus,
    /// The agent showed it runs recently (the status file's `alive`).
    pub alive: bool,
    /// Generation of the node's desired state in the store.
    pub desired_generation: Option<u64>,
}

/// What the daemon knows after one poll: the status file's content, as values.
#[derive(Clone, Debug)]
pub struct DaemonView {
    pub generation: u64,
    pub intent_error: Option<String>,
    pub compile_error: Option<String>,
    /// The intent in force (the last good one).
    pub intent: Arc<Intent>,
    /// The compiled desired state of every node.
    pub states: BTreeMap<String, NodeState>,
    pub decisions: Vec<ServiceDecisions>,
    /// The agents this daemon runs, by node.
    pub agents: BTreeMap<String, AgentView>,
    pub metrics: MetricsReport,
    /// The headends' affinity tables (read every few seconds by the daemon).
    pub affinity: BTreeMap<String, AffinityReport>,
}

impl Default for DaemonView {
    /// Before the first poll: an empty intent, nothing compiled.
    fn default() -> Self {
        let topology = crate::intent::Topology {
            name: String::new(),
            sr_block: "fc00::/32".parse().expect("a valid network"),
            underlay: Default::default(),
            nodes: Vec::new(),
            links: Vec::new(),
        };
        DaemonView {
            generation: 0,
            intent_error: None,
            compile_error: None,
            intent: Arc::new(Intent { topology, services: Vec::new(), policies: Vec::new() }),
            states: BTreeMap::new(),
            decisions: Vec::new(),
            agents: BTreeMap::new(),
            metrics: MetricsReport::default(),
            affinity: BTreeMap::new(),
        }
    }
}

impl DaemonView {
    /// The view of one poll, from what the daemon loop holds (the status file's sources).
    pub fn new(
        generation: u64,
        (intent_error, compile_error): (Option<&str>, Option<&str>),
        nodes: &BTreeMap<String, NodeStatus>,
        intent: &Intent,
        compiled: &Compiled,
        metrics: &MetricsReport,
        affinity: &BTreeMap<String, AffinityReport>,
    ) -> Self {
        let agents = nodes
            .iter()
            .map(|(n, s)| {
                let view = AgentView {
                    status: s.agent.clone(),
                    alive: s.alive,
                    desired_generation: s.desired_generation,
                };
                (n.clone(), view)
            })
            .collect();
        DaemonView {
            generation,
            intent_error: intent_error.map(String::from),
            compile_error: compile_error.map(String::from),
            intent: Arc::new(intent.clone()),
            states: compiled.nodes.clone(),
            decisions: compiled.decisions.clone(),
            agents,
            metrics: metrics.clone(),
            affinity: affinity.clone(),
        }
    }
}

/// Where a node's pins are (`paths::node_pins` with the daemon's bpffs and scope).
pub type PinsOf = Arc<dyn Fn(&str) -> PathBuf + Send + Sync>;

/// What the daemon's views changed over its life: counted at each publish, so no poll is
/// missed (a scrape sees the totals).
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Per (ingress, service): publishes in which some instance's weight changed.
    pub selection: BTreeMap<(String, String), u64>,
    /// Per (ingress, service, instance): publishes in which the segment list changed.
    pub paths: BTreeMap<(String, String, String), u64>,
    /// Per headend: the `affinity_pinned` count and the largest evictions figure seen with
    /// it (see `metrics_endpoint`).
    pub evictions: BTreeMap<String, (u64, u64)>,
    last_weights: BTreeMap<(String, String), Vec<(String, u32)>>,
    last_segments: BTreeMap<(String, String, String), Vec<std::net::Ipv6Addr>>,
}

impl Changes {
    /// Counts what `view` changed against the previous one; the first view sets the start.
    pub fn observe(&mut self, view: &DaemonView) {
        for sd in &view.decisions {
            let key = (sd.ingress.clone(), sd.service.clone());
            let weights: Vec<(String, u32)> =
                sd.decisions.iter().map(|d| (d.instance.clone(), d.weight)).collect();
            let count = self.selection.entry(key.clone()).or_default();
            match self.last_weights.insert(key, weights.clone()) {
                Some(before) if before != weights => *count += 1,
                _ => {}
            }
        }
        for state in view.states.values() {
            let Some(headend) = &state.headend else { continue };
            for inst in &headend.instances {
                let key = (state.node.clone(), inst.service.clone(), inst.name.clone());
                let count = self.paths.entry(key.clone()).or_default();
                match self.last_segments.insert(key, inst.segments.clone()) {
                    Some(before) if before != inst.segments => *count += 1,
                    _ => {}
                }
            }
        }
    }
}

/// What the servers share: the newest view, the change counts, where the pins are.
#[derive(Clone)]
pub struct Shared {
    pub view: watch::Receiver<Arc<DaemonView>>,
    pub changes: Arc<Mutex<Changes>>,
    pub pins_of: PinsOf,
    /// The metrics endpoint's bound address, if it listens.
    pub metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("metrics_addr", &self.metrics_addr).finish_non_exhaustive()
    }
}

/// The API socket and the metrics endpoint of a running daemon. Dropping it stops both and
/// removes the socket file.
pub struct Observers {
    view: watch::Sender<Arc<DaemonView>>,
    changes: Arc<Mutex<Changes>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket: Option<PathBuf>,
}

impl Observers {
    /// Binds the listeners asked for (none: `None`, and the daemon builds no views). Must run
    /// inside the daemon's tokio runtime.
    pub async fn start(
        api_socket: Option<&Path>,
        metrics_listen: Option<SocketAddr>,
        pins_of: PinsOf,
    ) -> Result<Option<Self>> {
        if api_socket.is_none() && metrics_listen.is_none() {
            return Ok(None);
        }
        let (tx, rx) = watch::channel(Arc::new(DaemonView::default()));
        let changes = Arc::new(Mutex::new(Changes::default()));
        let mut tasks = Vec::new();
        let metrics = match metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("metrics endpoint: listening on {addr}"))?;
                Some((listener.local_addr()?, listener))
            }
            None => None,
        };
        let shared = Shared {
            view: rx,
            changes: changes.clone(),
            pins_of,
            metrics_addr: metrics.as_ref().map(|(a, _)| *a),
        };
        if let Some((addr, listener)) = metrics {
            info!(%addr, "metrics endpoint: GET http://{addr}/metrics");
            let shared = shared.clone();
            tasks.push(tokio::spawn(http::serve(listener, "metrics endpoint", move |req| {
                crate::metrics_endpoint::route(&shared, req)
            })));
        }
        let mut socket = None;
        if let Some(path) = api_socket {
            let listener = http::bind_unix(path)?;
            info!(socket = %path.display(), "API listening (catsctl --socket {})", path.display());
            let shared = shared.clone();
            tasks.push(tokio::spawn(http::serve(listener, "API", move |req| {
                views::route(&shared, req)
            })));
            socket = Some(path.to_path_buf());
        }
        Ok(Some(Observers { view: tx, changes, tasks, socket }))
    }

    /// Hands the servers the daemon's newest view.
    pub fn publish(&self, view: DaemonView) {
        self.changes.lock().expect("changes lock").observe(&view);
        self.view.send_replace(Arc::new(view));
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::select::Decision,
        state::{HeadendState, InstanceState},
    };

    fn view(weights: &[(&str, u32)], segments: &[(&str, &str)]) -> DaemonView {
        let decisions = weights
            .iter()
            .map(|(i, w)| Decision { instance: i.to_string(), weight: *w, ..Default::default() })
            .collect();
        let instances = segments
            .iter()
            .enumerate()
            .map(|(slot, (name, sid))| InstanceState {
                name: name.to_string(),
                slot: slot as u32,
                service: "s".into(),
                cs_id: 1,
                instance_id: slot as u32 + 1,
                segments: vec![sid.parse().unwrap()],
                alternate_segments: Vec::new(),
                backup_slot: None,
            })
            .collect();
        let headend = HeadendState {
            interfaces: Vec::new(),
            encap_source: "fc00:0:1::1".parse().unwrap(),
            services: Vec::new(),
            instances,
            affinity_table_size: 1024,
        };
        let gw = NodeState { node: "gw".into(), headend: Some(headend), ..Default::default() };
        DaemonView {
            decisions: vec![ServiceDecisions {
                service: "s".into(),
                ingress: "gw".into(),
                decisions,
            }],
            states: BTreeMap::from([("gw".to_string(), gw)]),
            ..Default::default()
        }
    }

    #[test]
    fn changes_count_polls_that_moved_weights_or_segment_lists() {
        let mut c = Changes::default();
        let key = ("gw".to_string(), "s".to_string());
        let path = |i: &str| ("gw".to_string(), "s".to_string(), i.to_string());
        c.observe(&view(&[("a", 500), ("b", 500)], &[("a", "fc00:0:3:4001::1")]));
        assert_eq!(c.selection[&key], 0, "the first view is the start");
        c.observe(&view(&[("a", 500), ("b", 500)], &[("a", "fc00:0:3:4001::1")]));
        assert_eq!(c.selection[&key], 0);
        c.observe(&view(&[("a", 0), ("b", 1000)], &[("a", "fc00:0:3:4001::1")]));
        c.observe(&view(&[("a", 0), ("b", 1000)], &[("a", "fc00:0:4:4001::1")]));
        assert_eq!(c.selection[&key], 1);
        assert_eq!(c.paths[&path("a")], 1);
        c.observe(&view(&[("a", 1000), ("b", 0)], &[("a", "fc00:0:3:4001::1")]));
        assert_eq!((c.selection[&key], c.paths[&path("a")]), (2, 2));
    }
}
