//! The daemon: the controller loop (watch intent and metrics, compile, publish) over the nodes
//! it steers: the agents in this process (embedded store), or agents elsewhere through etcd.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::{
    compile::{Compiled, Compiler, Metrics, Selector, ServiceDecisions},
    dataplane::program::ensure_bpffs,
    intent::{self, Intent},
    measure::{self, Gathered, MetricsReport},
    nodes::{NodeStatus, Nodes, local::LocalNodes, remote::RemoteNodes},
    paths, registry,
    store::etcd::{EtcdConfig, controller as etcd_controller},
};

/// Time per poll spent on disjoint backup paths (they do not hold back the weights).
const BACKUP_BUDGET: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub intent_dir: PathBuf,
    /// Nodes whose agent runs in this process; empty means every node of the intent.
    pub nodes: Vec<String>,
    /// Lab mode: node N lives in network namespace `<prefix>N`.
    pub netns_prefix: Option<String>,
    pub bpffs: PathBuf,
    pub metrics_dir: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    pub poll: Duration,
    /// Where to record the published desired states (`running::record`), if anywhere.
    pub state_dir: Option<PathBuf>,
    /// Who picks instances: cats, or a baseline to compare it with.
    pub selector: Selector,
    /// Pods the CNI plugin registered, merged into the intent ([`crate::registry`]).
    pub registry: Option<PathBuf>,
    /// How the controller reaches the agents.
    pub store: StoreChoice,
    /// The local API's Unix socket (`catsctl`), if any ([`crate::api`]).
    pub api_socket: Option<PathBuf>,
    /// Where to serve `GET /metrics` (Prometheus), if anywhere ([`crate::metrics_endpoint`]).
    pub metrics_listen: Option<SocketAddr>,
    /// Load the XDP programs with their aya-log events on (`--ebpf-log`).
    pub ebpf_log: bool,
}

/// How the controller reaches the agents.
#[derive(Clone, Debug, Default)]
pub enum StoreChoice {
    /// The agents of the served nodes run in this process.
    #[default]
    Embedded,
    /// The agents run elsewhere (`catsd agent`) and talk through etcd; this controller
    /// campaigns as `name` and publishes only while it leads.
    Etcd { etcd: EtcdConfig, name: String },
}

/// What the daemon reports in its status file.
#[derive(Serialize)]
struct Status<'a> {
    generation: u64,
    /// With etcd: this controller's part (it leads; a standby writes no status of the nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    /// The last intent load error, if the newest files are bad (the running state is the
    /// previous good one).
    intent_error: Option<&'a str>,
    /// The last compile error after a metric change (the running state is the previous
    /// compile's); cleared by the next compile that succeeds.
    compile_error: Option<&'a str>,
    /// Pod registrations left out of the intent, and why.
    registry_problems: &'a [String],
    nodes: &'a BTreeMap<String, NodeStatus>,
    decisions: &'a [ServiceDecisions],
    /// Measured links and reported instances, stale ones marked.
    metrics: &'a MetricsReport,
}

/// Modification times and sizes of the intent files: a cheap change detector.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.modified().ok()?, m.len()))
        })
        .collect();
    out.sort();
    out
}

/// What a recompile follows: the intent files and the pod registry.
fn sources_fingerprint(config: &DaemonConfig) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut seen = fingerprint(&config.intent_dir);
    if let Some(dir) = &config.registry {
        seen.extend(registry::fingerprint(dir));
    }
    seen
}

/// Logs the registrations left out of the intent (once per change, not every poll).
fn report_registry(problems: &[String]) {
    for problem in problems {
        warn!("pod registration left out: {problem}");
    }
}

pub async fn run(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (intent, registry_problems) =
        registry::load_intent(&config.intent_dir, config.registry.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    report_registry(&registry_problems);
    let sources = Sources { intent, registry_problems };
    let observers = {
        let (bpffs, scope) =
            (config.bpffs.clone(), config.netns_prefix.clone().unwrap_or_default());
        let pins_of: crate::api::PinsOf =
            Arc::new(move |node: &str| paths::node_pins(&bpffs, &scope, node));
        crate::api::Observers::start(config.api_socket.as_deref(), config.metrics_listen, pins_of)
            .await?
    };
    let observers = observers.as_ref();
    match config.store.clone() {
        StoreChoice::Embedded => {
            ensure_bpffs(&config.bpffs)?;
            let served = served_nodes(&config, &sources.intent)?;
            let nodes = LocalNodes::start(&config, &sources.intent, &served)?;
            info!(nodes = ?served, "controller started");
            tokio::pin!(shutdown);
            let lead = Lead { first_generation: 1, role: None, observers };
            control(&config, sources, nodes, lead, &mut shutdown).await?;
        }
        StoreChoice::Etcd { etcd, name } => {
            lead_when_elected(&config, sources, (&etcd, &name), observers, shutdown).await?
        }
    }
    info!("controller stopping; pinned programs and maps keep forwarding");
    Ok(())
}

/// The intent in force and the pod registrations left out of it.
struct Sources {
    intent: Intent,
    registry_problems: Vec<String>,
}

fn served_nodes(config: &DaemonConfig, intent: &Intent) -> Result<Vec<String>> {
    if config.nodes.is_empty() {
        return Ok(intent.topology.nodes.iter().map(|n| n.name.clone()).collect());
    }
    for n in &config.nodes {
        if intent.node(n).is_none() {
            bail!("node {n} is not in the topology of {}", config.intent_dir.display());
        }
    }
    Ok(config.nodes.clone())
}

/// With etcd: campaigns, leads until shutdown or until the lead is lost, then campaigns
/// again. A standby writes a status that says so, and touches nothing else.
async fn lead_when_elected(
    config: &DaemonConfig,
    mut sources: Sources,
    (etcd, name): (&EtcdConfig, &str),
    observers: Option<&crate::api::Observers>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let view = etcd_controller::spawn_view(etcd);
    loop {
        write_standby_status(config, name);
        let leadership = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            won = etcd_controller::campaign(etcd, name) => won,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "campaign failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let nodes = RemoteNodes::new(leadership, view.clone(), config.state_dir.clone());
        let lead =
            Lead { first_generation: nodes.last_generation() + 1, role: Some("leader"), observers };
        let (ended, nodes, why) = control(config, sources, nodes, lead, &mut shutdown).await?;
        sources = ended;
        // Either way the lead goes at once, not when the lease runs out.
        nodes.resign().await;
        if why == Ended::Shutdown {
            return Ok(());
        }
        warn!("lead lost; standing by");
    }
}

fn write_standby_status(config: &DaemonConfig, name: &str) {
    if let Some(path) = &config.status_file {
        let status = serde_json::json!({ "role": "standby", "name": name });
        if let Err(e) = crate::atomic_file::write(path, status.to_string().as_bytes()) {
            warn!("writing {}: {e}", path.display());
        }
    }
}

/// How the controller loop starts and whom it tells.
struct Lead<'o> {
    /// The generation of the first compile.
    first_generation: u64,
    /// This controller's part, for the status (`None` without etcd).
    role: Option<&'static str>,
    /// The local API and the metrics endpoint, handed each poll's view.
    observers: Option<&'o crate::api::Observers>,
}

/// Why the controller loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Shutdown,
    /// The nodes said this controller must stop driving them (it lost the lead).
    MustStop,
}

/// The controller loop: watch the intent and the nodes' readings, compile, publish. Returns
/// at shutdown, or when `nodes` must stop; the nodes are handed back either way. A publish
/// that fails (the store unreachable) is tried again every poll.
async fn control<N: Nodes>(
    config: &DaemonConfig,
    sources: Sources,
    mut nodes: N,
    lead: Lead<'_>,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<(Sources, N, Ended)> {
    let Sources { mut intent, mut registry_problems } = sources;
    let mut seen = sources_fingerprint(config);
    let Lead { first_generation, role, observers } = lead;
    let mut generation = first_generation;
    let mut observed = nodes.observe(&intent, &Compiled::default());
    let mut metrics = observed.gathered.metrics.clone();
    // Hold-down and hysteresis need a clock; any monotonic one will do.
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut compiler = Compiler::new(intent.clone(), generation)?.with_selector(config.selector);
    compiler.update(&metrics, generation, now_ms())?;
    let mut compiled = compiler.compiled();
    let mut unpublished = !publish(&mut nodes, &intent, &compiled).await;

    let mut backups_pending = true;
    let mut intent_error: Option<String> = None;
    let mut compile_error: Option<String> = None;
    let mut last_status: Vec<u8> = Vec::new();
    let mut ticker = tokio::time::interval(config.poll);
    loop {
        tokio::select! {
            _ = &mut *shutdown => {
                return Ok((Sources { intent, registry_problems }, nodes, Ended::Shutdown));
            }
            _ = ticker.tick() => {}
        }
        if let Some(why) = nodes.must_stop() {
            warn!("{why}");
            return Ok((Sources { intent, registry_problems }, nodes, Ended::MustStop));
        }
        let mut changed = false;
        let now_seen = sources_fingerprint(config);
        if now_seen != seen {
            seen = now_seen;
            // All or nothing: a new intent replaces the running one only when it loads and
            // compiles; otherwise the running state stays the last good one.
            let fresh = registry::load_intent(&config.intent_dir, config.registry.as_deref())
                .map_err(|e| e.to_string())
                .and_then(|(new, problems)| {
                    if problems != registry_problems {
                        report_registry(&problems);
                        registry_problems = problems;
                    }
                    // Link measurements are keyed by position in `spec.links`: a changed list
                    // starts unmeasured (the probers restart for it below).
                    let mut m = metrics.clone();
                    if !same_links(&intent, &new) {
                        m.links.clear();
                    }
                    let mut c = Compiler::new(new.clone(), generation + 1)
                        .map_err(|e| e.to_string())?
                        .with_selector(config.selector)
                        .with_slots_of(&compiler);
                    c.update(&m, generation + 1, now_ms()).map_err(|e| e.to_string())?;
                    Ok((new, c, m))
                });
            match fresh {
                Ok((new, c, m)) => {
                    info!("intent changed; recompiled");
                    intent = new;
                    compiler = c;
                    metrics = m;
                    intent_error = None;
                    changed = true;
                    nodes.retarget(&intent);
                }
                Err(e) => {
                    error!("intent rejected, running state unchanged:\n{e}");
                    intent_error = Some(e);
                }
            }
        }
        observed = nodes.observe(&intent, &compiled);
        let rates = &observed.ingress_rates;
        let shifted = measure::demand::shares_moved(&metrics.ingress_rates, rates, 0.1);
        let mut remeasured = take_metrics(&mut metrics, &observed.gathered);
        // What the headends' probers cannot reach gets no new flows (the headends already
        // moved the flows it had).
        let unreachable = observed.unreachable();
        if metrics.unreachable != unreachable {
            info!(?unreachable, "instance reachability changed; recompiling");
            metrics.unreachable = unreachable;
            remeasured = true;
        }
        if shifted || (remeasured && *rates != metrics.ingress_rates) {
            metrics.ingress_rates = rates.clone();
            remeasured = true;
        }
        // Weights a hold-down held back are looked at again once it ends.
        if remeasured || compiler.has_held(now_ms()) {
            match compiler.update(&metrics, generation + 1, now_ms()) {
                Ok(changed_nodes) => {
                    compile_error = None;
                    changed |= !changed_nodes.is_empty();
                    // The figures move even when no weight does.
                    compiled.decisions = compiler.decisions();
                }
                Err(e) => {
                    error!("compile failed, running state unchanged: {e}");
                    compile_error = Some(e.to_string());
                }
            }
        }
        if changed {
            generation += 1;
            compiled = compiler.compiled();
            unpublished = true;
            backups_pending = true;
        }
        if backups_pending {
            // Backups become the headends' alternate paths and backup instances.
            match compiler.fill_backups(BACKUP_BUDGET, generation + 1) {
                Ok((pending, changed_nodes)) => {
                    backups_pending = pending;
                    if !changed_nodes.is_empty() {
                        generation += 1;
                        compiled = compiler.compiled();
                        unpublished = true;
                    }
                }
                Err(e) => {
                    error!("filling in backups failed, running state unchanged: {e}");
                    compile_error = Some(e.to_string());
                    backups_pending = false;
                }
            }
            compiled.decisions = compiler.decisions();
        }
        if unpublished {
            unpublished = !publish(&mut nodes, &intent, &compiled).await;
        }
        // What the nodes were handed is what was just published, not what the poll saw
        // before: a status whose nodes look applied must not lag the compile it shows.
        for (node, status) in &mut observed.nodes {
            status.desired_generation = nodes.desired_generation(node);
        }
        if let Some(path) = &config.status_file {
            let status = Status {
                generation,
                role,
                intent_error: intent_error.as_deref(),
                compile_error: compile_error.as_deref(),
                registry_problems: &registry_problems,
                nodes: &observed.nodes,
                decisions: &compiled.decisions,
                metrics: &observed.gathered.report,
            };
            let status = serde_json::to_vec_pretty(&status)?;
            // Rewritten only when it differs (metric ages make that most polls).
            if status != last_status {
                crate::atomic_file::write(path, &status)
                    .with_context(|| format!("writing {}", path.display()))?;
                last_status = status;
            }
        }
        if let Some(observers) = observers {
            observers.publish(crate::api::DaemonView::new(
                generation,
                (intent_error.as_deref(), compile_error.as_deref()),
                &observed.nodes,
                &intent,
                &compiled,
                &observed.gathered.report,
                &observed.affinity,
            ));
        }
    }
}

/// Hands the nodes `compiled`; false (logged) if that failed and must be tried again.
async fn publish(nodes: &mut impl Nodes, intent: &Intent, compiled: &Compiled) -> bool {
    let generation = compiled.nodes.values().map(|n| n.generation).max().unwrap_or(0);
    match nodes.publish(intent, compiled).await {
        Ok(()) => {
            info!(generation, "desired states published");
            true
        }
        Err(e) => {
            error!(generation, error = %format!("{e:#}"), "publishing failed; trying again");
            false
        }
    }
}

/// Whether two intents list the same links, in the same order.
fn same_links(a: &Intent, b: &Intent) -> bool {
    let ends = |i: &Intent| -> Vec<(String, String)> {
        i.topology.links.iter().map(|l| (l.a.clone(), l.b.clone())).collect()
    };
    ends(a) == ends(b)
}

/// Takes the new reading as the metrics to compile with if it differs enough from `used`.
fn take_metrics(used: &mut Metrics, gathered: &Gathered) -> bool {
    let new = &gathered.metrics;
    if !measure::changed_enough(used, new) {
        return false;
    }
    let links: BTreeMap<usize, String> =
        new.links.iter().map(|(k, m)| (*k, format!("{:.2} ms", m.one_way_ms))).collect();
    let utilization: BTreeMap<&str, f64> =
        new.instances.iter().map(|(k, m)| (k.as_str(), m.utilization)).collect();
    info!(?links, ?utilization, "measurements changed; recompiling");
    *used = new.clone();
    true
}

/// Loads and validates an intent directory without touching anything.
pub fn validate(dir: &Path) -> Result<Intent> {
    intent::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))
}
