//! The daemon: controller loop (watch intent and metrics, compile, publish) plus the agents of
//! the nodes this process serves, joined by the embedded store.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::{
    agent::node::{self, AgentConfig, AgentStatus, SharedStatus},
    compile::{Compiled, Compiler, Metrics, Selector, ServiceDecisions},
    dataplane::program::ensure_bpffs,
    intent::{self, Intent},
    measure::{
        self, Gathered, Gatherer, MetricsReport, ProbeConfig, affinity::AffinityReport,
        headend_counters::HeadendCounters,
    },
    paths, registry,
    store::EmbeddedStore,
};

/// An agent silent for this long (no heartbeat) is reported dead.
pub(crate) const AGENT_SILENCE: Duration = Duration::from_secs(2);

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
    /// The local API's Unix socket (`catsctl`), if any ([`crate::api`]).
    pub api_socket: Option<PathBuf>,
    /// Where to serve `GET /metrics` (Prometheus), if anywhere ([`crate::metrics_endpoint`]).
    pub metrics_listen: Option<SocketAddr>,
}

/// What the daemon reports in its status file.
#[derive(Serialize)]
struct Status<'a> {
    generation: u64,
    /// The last intent load error, if the newest files are bad (the running state is the
    /// previous good one).
    intent_error: Option<&'a str>,
    /// The last compile error after a metric change (the running state is the previous
    /// compile's); cleared by the next compile that succeeds.
    compile_error: Option<&'a str>,
    /// Pod registrations left out of the intent, and why.
    registry_problems: &'a [String],
    nodes: BTreeMap<&'a str, NodeReport>,
    decisions: &'a [ServiceDecisions],
    /// Measured links and reported instances, stale ones marked.
    metrics: &'a MetricsReport,
}

/// One node in the status file: what it should run and what its agent last did.
#[derive(Serialize)]
struct NodeReport {
    /// Generation of the node's desired state (the last compile that changed this node).
    desired_generation: Option<u64>,
    /// The node's agent showed it runs within the last [`AGENT_SILENCE`].
    alive: bool,
    #[serde(flatten)]
    agent: AgentStatus,
    /// The headend's affinity table, on ingress nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    affinity: Option<AffinityReport>,
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
    let mut seen = sources_fingerprint(&config);
    let (mut intent, mut registry_problems) =
        registry::load_intent(&config.intent_dir, config.registry.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    report_registry(&registry_problems);
    ensure_bpffs(&config.bpffs)?;

    let served: Vec<String> = if config.nodes.is_empty() {
        intent.topology.nodes.iter().map(|n| n.name.clone()).collect()
    } else {
        for n in &config.nodes {
            if intent.node(n).is_none() {
                bail!("node {n} is not in the topology of {}", config.intent_dir.display());
            }
        }
        config.nodes.clone()
    };

    let store = Arc::new(EmbeddedStore::default());
    let mut statuses: BTreeMap<String, SharedStatus> = BTreeMap::new();
    let mut gatherer = start_measurement(&config, &intent, &served);
    let mut gathered = gatherer.gather(&intent, &served);
    let mut metrics = gathered.metrics.clone();
    let mut generation = 1;
    // Hold-down and hysteresis need a clock; any monotonic one will do.
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut compiler = Compiler::new(intent.clone(), generation)?.with_selector(config.selector);
    compiler.update(&metrics, generation, now_ms())?;
    let mut compiled = compiler.compiled();
    publish(&store, &compiled, &served, config.state_dir.as_deref());

    for node in &served {
        let scope = config.netns_prefix.as_deref().unwrap_or("");
        let agent = AgentConfig {
            node: node.clone(),
            netns: paths::node_netns(config.netns_prefix.as_deref(), node),
            pins: paths::node_pins(&config.bpffs, scope, node),
            registry: config.registry.clone(),
        };
        let status: SharedStatus = Arc::new(Mutex::new(AgentStatus::default()));
        node::spawn(agent, store.watch(node), status.clone())?;
        statuses.insert(node.clone(), status);
    }
    info!(nodes = ?served, generation, "controller started");
    let observers = {
        let (bpffs, scope) =
            (config.bpffs.clone(), config.netns_prefix.clone().unwrap_or_default());
        let pins_of: crate::api::PinsOf =
            Arc::new(move |node: &str| paths::node_pins(&bpffs, &scope, node));
        crate::api::Observers::start(config.api_socket.as_deref(), config.metrics_listen, pins_of)
            .await?
    };

    let mut backups_pending = true;
    let mut counters = {
        let (bpffs, scope) =
            (config.bpffs.clone(), config.netns_prefix.clone().unwrap_or_default());
        HeadendCounters::new(move |node| paths::node_pins(&bpffs, &scope, node))
    };
    let mut demand = measure::demand::DemandMeter::default();
    let mut pinned_flows = measure::affinity::AffinityMeter::default();
    let mut intent_error: Option<String> = None;
    let mut compile_error: Option<String> = None;
    let mut last_status: Vec<u8> = Vec::new();
    let mut ticker = tokio::time::interval(config.poll);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let mut changed = false;
        let now_seen = sources_fingerprint(&config);
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
                    gatherer.retarget(&intent, &served);
                }
                Err(e) => {
                    error!("intent rejected, running state unchanged:\n{e}");
                    intent_error = Some(e);
                }
            }
        }
        gathered = gatherer.gather(&intent, &served);
        let rates = demand.read(compiled.nodes.values(), &mut counters, Instant::now());
        let affinity =
            pinned_flows.read(compiled.nodes.values(), &mut counters, Instant::now()).clone();
        let shifted = measure::demand::shares_moved(&metrics.ingress_rates, rates, 0.1);
        let mut remeasured = take_metrics(&mut metrics, &gathered);
        // What the headends' probers cannot reach gets no new flows (the headends already
        // moved the flows it had).
        let unreachable = unreachable_by_ingress(&statuses);
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
                Ok(nodes) => {
                    compile_error = None;
                    changed |= !nodes.is_empty();
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
            publish(&store, &compiled, &served, config.state_dir.as_deref());
            backups_pending = true;
        }
        if backups_pending {
            // Backups become the headends' alternate paths and backup instances.
            match compiler.fill_backups(BACKUP_BUDGET, generation + 1) {
                Ok((pending, nodes)) => {
                    backups_pending = pending;
                    if !nodes.is_empty() {
                        generation += 1;
                        compiled = compiler.compiled();
                        publish(&store, &compiled, &served, config.state_dir.as_deref());
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
        if let Some(path) = &config.status_file {
            let status = status_json(
                generation,
                (intent_error.as_deref(), compile_error.as_deref(), &registry_problems),
                &store,
                &statuses,
                &compiled,
                &gathered.report,
                &affinity,
            )?;
            // Rewritten only when it differs (metric ages make that most polls).
            if status != last_status {
                crate::atomic_file::write(path, &status)
                    .with_context(|| format!("writing {}", path.display()))?;
                last_status = status;
            }
        }
        if let Some(observers) = &observers {
            observers.publish(crate::api::DaemonView::new(
                generation,
                (intent_error.as_deref(), compile_error.as_deref()),
                |n| store.generation(n),
                &statuses,
                &intent,
                &compiled,
                &gathered.report,
                &affinity,
            ));
        }
    }
    info!("controller stopping; pinned programs and maps keep forwarding");
    Ok(())
}

/// Link probers for the served nodes (C-NMA) and the instance report reader (C-SMA). They stop
/// when the returned value drops, at the latest when `run` returns.
/// Whether two intents list the same links, in the same order.
fn same_links(a: &Intent, b: &Intent) -> bool {
    let ends = |i: &Intent| -> Vec<(String, String)> {
        i.topology.links.iter().map(|l| (l.a.clone(), l.b.clone())).collect()
    };
    ends(a) == ends(b)
}

fn start_measurement(config: &DaemonConfig, intent: &Intent, served: &[String]) -> Gatherer {
    Gatherer::start(
        intent,
        served,
        config.netns_prefix.as_deref(),
        config.metrics_dir.as_deref(),
        ProbeConfig::default(),
    )
}

/// Per ingress node, the instances its health prober finds unreachable.
fn unreachable_by_ingress(
    statuses: &BTreeMap<String, SharedStatus>,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    statuses
        .iter()
        .filter_map(|(node, s)| {
            let s = s.lock().expect("status lock");
            let down = s
                .health
                .as_ref()?
                .unreachable
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>();
            (!down.is_empty()).then(|| (node.clone(), down))
        })
        .collect()
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

fn publish(
    store: &EmbeddedStore,
    compiled: &Compiled,
    served: &[String],
    state_dir: Option<&Path>,
) {
    for node in served {
        if let Some(state) = compiled.nodes.get(node) {
            store.publish(state.clone());
        }
    }
    // A record for `catsd compile --dry-run`; failing to write it does not stop steering.
    if let Some(dir) = state_dir
        && let Err(e) = crate::running::record(dir, compiled, served)
    {
        error!("recording the running state in {}: {e:#}", dir.display());
    }
}

fn status_json(
    generation: u64,
    (intent_error, compile_error, registry_problems): (Option<&str>, Option<&str>, &[String]),
    store: &EmbeddedStore,
    statuses: &BTreeMap<String, SharedStatus>,
    compiled: &Compiled,
    metrics: &MetricsReport,
    affinity: &BTreeMap<String, AffinityReport>,
) -> Result<Vec<u8>> {
    let nodes = statuses
        .iter()
        .map(|(n, s)| {
            let agent = s.lock().expect("status lock").clone();
            let affinity = affinity.get(n).copied();
            let alive = agent.heartbeat.is_some_and(|at| at.elapsed() < AGENT_SILENCE);
            let desired_generation = store.generation(n);
            (n.as_str(), NodeReport { desired_generation, alive, agent, affinity })
        })
        .collect();
    let status = Status {
        generation,
        intent_error,
        compile_error,
        registry_problems,
        nodes,
        decisions: &compiled.decisions,
        metrics,
    };
    Ok(serde_json::to_vec_pretty(&status)?)
}

/// Loads and validates an intent directory without touching anything.
pub fn validate(dir: &Path) -> Result<Intent> {
    intent::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))
}
