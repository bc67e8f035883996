//! Running cats on the lab: the daemon (controller and every node's agent) on a thread of this
//! process, and the emulated compute instances in their namespaces.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cats_controller::{
    daemon::{self, DaemonConfig},
    dataplane::program::remove_pins,
    intent::Intent,
    paths,
};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{instance::InstanceConfig, network::LabNetwork};

/// Port the lab's instances listen on when a service matches every port.
pub const DEFAULT_PORT: u16 = 7000;

/// The daemon, running in this process. Stopping it leaves the dataplane forwarding on its
/// pinned programs and maps, exactly like stopping `catsd`.
pub struct Daemon {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
    pub status_file: PathBuf,
}

impl Daemon {
    pub fn start(config: DaemonConfig) -> Result<Self> {
        let status_file = config.status_file.clone().context("the lab needs a status file")?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("catsd".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(daemon::run(config, async {
                let _ = rx.await;
            }))
        })?;
        Ok(Daemon { shutdown: Some(tx), thread: Some(thread), status_file })
    }

    /// Stops the controller and agents (not the dataplane) and reports how the daemon ended.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("daemon thread panicked"))?,
            None => Ok(()),
        }
    }

    /// The daemon's status file, parsed.
    pub fn status(&self) -> Result<Value> {
        let text = std::fs::read_to_string(&self.status_file)
            .with_context(|| format!("reading {}", self.status_file.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until every node applied its newest desired state without error.
    pub fn wait_applied(&self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no status yet");
        while Instant::now() < deadline {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                bail!("the daemon stopped early (see its log)");
            }
            if let Ok(status) = self.status() {
                let nodes = status["nodes"].as_object().cloned().unwrap_or_default();
                let done = !nodes.is_empty()
                    && nodes.values().all(|n| {
                        n["applied_generation"].is_u64()
                            && n["applied_generation"] == n["desired_generation"]
                            && n["last_error"].is_null()
                    });
                if done {
                    return Ok(status);
                }
                last = serde_json::to_string(&status["nodes"])?;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("nodes did not apply the desired state within {timeout:?}: {last}")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            eprintln!("lab: daemon ended with: {e:#}");
        }
    }
}

/// The daemon settings for a lab whose namespaces start with `lab.prefix()`.
pub fn daemon_config(
    lab: &LabNetwork,
    intent_dir: &Path,
    bpffs: &Path,
    run_dir: &Path,
) -> DaemonConfig {
    DaemonConfig {
        intent_dir: intent_dir.to_path_buf(),
        nodes: Vec::new(),
        netns_prefix: Some(lab.prefix().to_string()),
        bpffs: bpffs.to_path_buf(),
        metrics_dir: Some(run_dir.join("metrics")),
        status_file: Some(run_dir.join("status.json")),
        poll: Duration::from_millis(200),
        state_dir: Some(run_dir.join("state")),
        selector: Default::default(),
        registry: Some(lab_registry(run_dir)),
        store: Default::default(),
        api_socket: Some(lab_api_socket(run_dir)),
        // Any free port: `catsctl status` (or the API's /v1/status) says which.
        metrics_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ebpf_log: false,
    }
}

/// The daemon's API socket in a lab: `<run_dir>/catsd.sock`.
pub fn lab_api_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("catsd.sock")
}

/// Where pods attached to a lab's nodes by the CNI plugin are registered: `<run_dir>/pods`.
pub fn lab_registry(run_dir: &Path) -> PathBuf {
    run_dir.join("pods")
}

/// Removes the pins of every node of a lab (its programs and maps), once its namespaces are
/// gone or about to go.
pub fn remove_lab_pins(intent: &Intent, bpffs: &Path, prefix: &str) -> Result<()> {
    for node in &intent.topology.nodes {
        remove_pins(&paths::node_pins(bpffs, prefix, &node.name))?;
    }
    Ok(())
}

/// Starts every instance of the intent in its namespace, on the service's ports and its
/// policies' health port, reporting metrics to `<run_dir>/metrics/<instance>.json`. Each can then be stopped and started on its own
/// ([`LabNetwork::stop_instance`], [`LabNetwork::start_instance`]).
pub fn start_instances(lab: &mut LabNetwork, intent: &Intent, run_dir: &Path) -> Result<()> {
    let metrics = run_dir.join("metrics");
    std::fs::create_dir_all(&metrics)?;
    for svc in &intent.services {
        let mut ports: Vec<u16> = if svc.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            svc.ports.iter().map(|p| p.port).collect()
        };
        // A policy may have the headends probe on a port of its own: listen there too, or
        // every probe would go unanswered.
        for policy in intent.policies.iter().filter(|p| p.service == svc.name) {
            if let Some(port) = policy.health.port.filter(|p| !ports.contains(p)) {
                ports.push(port);
            }
        }
        let listen: Vec<SocketAddr> = svc
            .addresses
            .iter()
            .flat_map(|a: &IpAddr| ports.iter().map(move |p| SocketAddr::new(*a, *p)))
            .collect();
        for inst in &svc.instances {
            let cfg = InstanceConfig {
                name: inst.name.clone(),
                listen: listen.clone(),
                tops: inst.tops,
                request_cost: svc.request_cost,
                workers: 1,
                metrics_file: Some(metrics.join(format!("{}.json", inst.name))),
            };
            lab.add_instance(cfg)?;
        }
    }
    Ok(())
}
