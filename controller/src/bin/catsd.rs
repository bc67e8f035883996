//! `catsd`: the cats daemon (controller + node agents) and its offline tools.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use cats_controller::{
    agent::{kernel::Kernel, remote::RemoteAgentConfig},
    compile::{self, Metrics, Selector},
    daemon::{self, DaemonConfig, StoreChoice},
    dataplane::program::remove_pins,
    diff, explain, paths, registry, running,
    state::NodeState,
    store::{
        etcd::{EtcdConfig, TlsFiles},
        keys,
    },
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "cats: compute-aware traffic steering over SRv6")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller and the agents of the given nodes (all nodes by default).
    Run {
        /// Directory of intent YAML files (Topology, ComputeService, SteeringPolicy).
        #[arg(long)]
        intent: PathBuf,
        /// A node this process serves (repeat for several; default: every node).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Lab mode: node N lives in network namespace PREFIX+N.
        #[arg(long)]
        netns_prefix: Option<String>,
        #[arg(long, default_value = paths::DEFAULT_BPFFS)]
        bpffs: PathBuf,
        /// Directory where instances report utilisation (`<instance>.json`).
        #[arg(long)]
        metrics_dir: Option<PathBuf>,
        /// Where to write the status (JSON), refreshed every poll.
        #[arg(long)]
        status_file: Option<PathBuf>,
        /// How often to look for intent and metric changes.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// Where to record the desired state published for each node (`catsd compile` diffs
        /// against it).
        #[arg(long, default_value = paths::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Who picks instances: cats, or, to compare it on the same dataplane,
        /// nearest-site (anycast), least-loaded, random or seed-formula.
        #[arg(long, default_value = "cats")]
        selector: Selector,
        /// Where the CNI plugin (`cats-cni`) registers pods; they are merged into the intent.
        #[arg(long, default_value = registry::DEFAULT_REGISTRY_DIR)]
        registry: PathBuf,
        /// The local API's Unix socket, for `catsctl`.
        #[arg(long, default_value = cats_controller::api::DEFAULT_API_SOCKET)]
        api_socket: PathBuf,
        /// No local API socket.
        #[arg(long, conflicts_with = "api_socket")]
        no_api: bool,
        /// Serve Prometheus metrics (OpenMetrics text, GET /metrics) on this address, e.g.
        /// 127.0.0.1:9464 [default: off].
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// With `--etcd`: steer agents elsewhere (`catsd agent`) through etcd, leading when
        /// elected; no agent runs in this process.
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The name this controller campaigns under [default: hostname-pid].
        #[arg(long, requires = "endpoints")]
        name: Option<String>,
        /// Load the XDP programs with their aya-log events on (drops, failover decisions,
        /// new affinity pins), logged with target `cats_dataplane`. Programs pinned by an
        /// earlier run keep the setting they were loaded with until replaced.
        #[arg(long)]
        ebpf_log: bool,
    },
    /// Run one node's agent, following its desired state in etcd.
    Agent {
        #[arg(long)]
        node: String,
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Lab mode: the node lives in network namespace PREFIX+NODE.
        #[arg(long)]
        netns_prefix: Option<String>,
        #[arg(long, default_value = paths::DEFAULT_BPFFS)]
        bpffs: PathBuf,
        /// Directory where this node's instances report utilisation (`<instance>.json`).
        #[arg(long)]
        metrics_dir: Option<PathBuf>,
        #[arg(long, default_value = registry::DEFAULT_REGISTRY_DIR)]
        registry: PathBuf,
        /// Load the XDP programs with their aya-log events on (see `catsd run --ebpf-log`).
        #[arg(long)]
        ebpf_log: bool,
    },
    /// Validate an intent directory; errors name file, line and field.
    Validate { dir: PathBuf },
    /// Print the desired state of each node and what it changes against the running state.
    /// Nothing is ever applied: a running daemon picks up intent changes by itself.
    Compile {
        dir: PathBuf,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Say it: nothing is applied (compile never applies anything; accepted for clarity).
        #[arg(long)]
        dry_run: bool,
        /// The daemon's state directory to diff against [default: the default state
        /// directory, if it exists].
        #[arg(long)]
        running: Option<PathBuf>,
        /// Compile with the metrics of this daemon status file [default: the utilisation
        /// recorded with the running state].
        #[arg(long)]
        metrics_from: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = StateFormat::Yaml)]
        format: StateFormat,
        /// Print the selection figures of every service instead of the state.
        #[arg(long)]
        explain: bool,
    },
    /// The figures that decided each candidate instance of a service, per ingress.
    Explain {
        service: String,
        /// Directory of intent YAML files.
        #[arg(long)]
        intent: PathBuf,
        /// Compile with the metrics of this daemon status file (`catsd run --status-file`).
        #[arg(long)]
        metrics_from: Option<PathBuf>,
        /// Only this ingress node.
        #[arg(long)]
        ingress: Option<String>,
        #[arg(long, value_enum, default_value_t = ExplainFormat::Table)]
        format: ExplainFormat,
    },
    /// Remove everything cats installed on the given nodes: pinned programs, maps, routes.
    Cleanup {
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        #[arg(long)]
        netns_prefix: Option<String>,
        #[arg(long, default_value = paths::DEFAULT_BPFFS)]
        bpffs: PathBuf,
    },
    /// Mint the certificates of an etcd deployment into DIR: a CA, etcd's server certificate,
    /// and client certificates for root, the controllers and each node (CN = etcd user).
    /// What is there already is kept; an existing CA signs what is missing.
    Certs {
        #[arg(long)]
        dir: PathBuf,
        /// A node's agent (repeat for several): node-N.pem, CN cats-node-N.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A further name or IP address of etcd for its server certificate (repeat; localhost,
        /// 127.0.0.1 and ::1 are always in).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Set up etcd's users, roles and permissions for the controllers and the given nodes,
    /// then turn auth on. Connects as root (a client certificate with CN root); safe to run
    /// again, also after auth is on (e.g. to add nodes).
    EtcdInit {
        /// etcd client URL (repeat for several), e.g. https://127.0.0.1:2379.
        #[arg(long = "etcd", required = true)]
        endpoints: Vec<String>,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = cats_controller::store::keys::DEFAULT_PREFIX)]
        prefix: String,
        /// A node whose agent gets a user and role (repeat for several).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
}

/// Where etcd is and who to be there.
#[derive(Args)]
struct EtcdArgs {
    /// etcd client URL (repeat for several), e.g. https://127.0.0.1:2379.
    #[arg(long = "etcd")]
    endpoints: Vec<String>,
    /// CA certificate that signed etcd's server certificate.
    #[arg(long, requires_all = ["etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// This client's certificate: its CN is its etcd user (`cats-controller`,
    /// `cats-node-<node>`); see `catsd certs`.
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// Key prefix of this deployment.
    #[arg(long, default_value = keys::DEFAULT_PREFIX)]
    etcd_prefix: String,
}

impl EtcdArgs {
    fn config(&self) -> Option<EtcdConfig> {
        if self.endpoints.is_empty() {
            return None;
        }
        let tls = match (&self.etcd_ca, &self.etcd_cert, &self.etcd_key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            _ => None,
        };
        Some(EtcdConfig {
            endpoints: self.endpoints.clone(),
            tls,
            keys: keys::Keys::new(&self.etcd_prefix),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StateFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExplainFormat {
    Table,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("catsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            intent,
            nodes,
            netns_prefix,
            bpffs,
            metrics_dir,
            status_file,
            poll_ms,
            state_dir,
            selector,
            registry,
            etcd,
            name,
            api_socket,
            no_api,
            metrics_listen,
            ebpf_log,
        } => {
            let store = match etcd.config() {
                Some(etcd) => {
                    if !nodes.is_empty() {
                        bail!("with --etcd the agents run as `catsd agent`; drop --node");
                    }
                    let name = name.unwrap_or_else(default_name);
                    StoreChoice::Etcd { etcd, name }
                }
                None => StoreChoice::Embedded,
            };
            let config = DaemonConfig {
                intent_dir: intent,
                nodes,
                netns_prefix,
                bpffs,
                metrics_dir,
                status_file,
                poll: Duration::from_millis(poll_ms),
                state_dir: Some(state_dir),
                selector,
                registry: Some(registry),
                store,
                api_socket: (!no_api).then_some(api_socket),
                metrics_listen,
                ebpf_log,
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(daemon::run(config, shutdown_signal()))
        }
        Command::Agent { node, etcd, netns_prefix, bpffs, metrics_dir, registry, ebpf_log } => {
            let etcd = etcd.config().context("`catsd agent` needs --etcd")?;
            let config = RemoteAgentConfig {
                node,
                etcd,
                netns_prefix,
                bpffs,
                metrics_dir,
                registry: Some(registry),
                ebpf_log,
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cats_controller::agent::remote::run(config, shutdown_signal()))
        }
        Command::Validate { dir } => {
            let intent = daemon::validate(&dir)?;
            print(&format!(
                "{}: valid ({} nodes, {} links, {} services, {} policies)",
                dir.display(),
                intent.topology.nodes.len(),
                intent.topology.links.len(),
                intent.services.len(),
                intent.policies.len()
            ))
        }
        Command::Compile { dir, node, dry_run: _, running, metrics_from, format, explain } => {
            let intent = daemon::validate(&dir)?;
            // An explicit --running must exist; the default one only if it does.
            let running = running.or_else(|| {
                let default = PathBuf::from(paths::DEFAULT_STATE_DIR);
                paths::running_nodes_dir(&default).is_dir().then_some(default)
            });
            let metrics = match (&metrics_from, &running) {
                (Some(file), _) => metrics_of_status(file)?,
                (None, Some(state_dir)) => running::load_decisions(state_dir)?
                    .map(|d| explain::metrics_from_status(&d))
                    .unwrap_or_default(),
                (None, None) => Metrics::default(),
            };
            let compiled = compile::compile(&intent, &metrics, 1)?;
            if explain {
                let mut out = String::new();
                for svc in &intent.services {
                    let entries: Vec<_> = compiled
                        .decisions
                        .iter()
                        .filter(|d| d.service == svc.name)
                        .cloned()
                        .collect();
                    out.push_str(&format!("{}:\n{}\n", svc.name, explain::table(&entries)));
                }
                return print(out.trim_end());
            }
            if let Some(n) = &node
                && !compiled.nodes.contains_key(n)
            {
                bail!("node {n} is not in the topology of {}", dir.display());
            }
            let wanted = |name: &String| node.as_ref().is_none_or(|n| n == name);
            let new: BTreeMap<String, NodeState> =
                compiled.nodes.into_iter().filter(|(name, _)| wanted(name)).collect();
            let comparison = match &running {
                Some(state_dir) => Some(compare(state_dir, &new, node.is_some())?),
                None => None,
            };
            print(&compile_output(&new, running.as_deref(), comparison.as_ref(), format)?)
        }
        Command::Explain { service, intent, metrics_from, ingress, format } => {
            let intent_dir = intent;
            let intent = daemon::validate(&intent_dir)?;
            if !intent.services.iter().any(|s| s.name == service) {
                let known: Vec<_> = intent.services.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "no service {service} in {} (services: {})",
                    intent_dir.display(),
                    known.join(", ")
                );
            }
            if let Some(n) = &ingress
                && intent.node(n).is_none()
            {
                bail!("node {n} is not in the topology of {}", intent_dir.display());
            }
            let metrics = match &metrics_from {
                Some(file) => metrics_of_status(file)?,
                None => Metrics::default(),
            };
            let compiled = compile::compile(&intent, &metrics, 1)?;
            let entries: Vec<_> = compiled
                .decisions
                .into_iter()
                .filter(|d| d.service == service)
                .filter(|d| ingress.as_ref().is_none_or(|n| &d.ingress == n))
                .collect();
            if entries.is_empty() {
                bail!(
                    "no ingress steers {service}{}",
                    ingress.map(|n| format!(" at {n}")).unwrap_or_default()
                );
            }
            match format {
                ExplainFormat::Table => print(explain::table(&entries).trim_end()),
                ExplainFormat::Json => print(&serde_json::to_string_pretty(&entries)?),
            }
        }
        Command::Cleanup { nodes, netns_prefix, bpffs } => {
            for node in &nodes {
                let scope = netns_prefix.as_deref().unwrap_or("");
                remove_pins(&paths::node_pins(&bpffs, scope, node))?;
                let flush = move || -> Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    rt.block_on(async { Kernel::connect()?.flush().await.map(drop) })
                };
                match paths::node_netns(netns_prefix.as_deref(), node) {
                    Some(ns) => cats_controller::netns::run_in(&ns, flush),
                    None => flush(),
                }
                .with_context(|| format!("cleaning up node {node}"))?;
                println!("{node}: cats routes, programs and maps removed");
            }
            Ok(())
        }
        Command::Certs { dir, nodes, sans } => {
            for outcome in cats_controller::certs::mint(&dir, &nodes, &sans)? {
                println!("{outcome}");
            }
            Ok(())
        }
        Command::EtcdInit { endpoints, ca, cert, key, prefix, nodes } => {
            use cats_controller::store::{auth, etcd, keys::Keys};
            let config = etcd::EtcdConfig {
                endpoints,
                tls: Some(etcd::TlsFiles { ca, cert, key }),
                keys: Keys::new(&prefix),
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let changes = rt.block_on(async {
                let client = config.connect().await?;
                auth::setup(&client, &config.keys, &nodes).await
            })?;
            for change in &changes {
                println!("{change}");
            }
            if changes.is_empty() {
                println!("users and roles were already set up");
            }
            println!("auth is on");
            Ok(())
        }
    }
}

/// The diff of the new states against a recorded running state.
struct Comparison {
    diff: diff::Diff,
    /// Nodes of the new states the running state has no record of (each daemon records only
    /// the nodes it serves); left out of the diff.
    unrecorded: Vec<String>,
}

/// Compares `new` with the running state in `state_dir`. Without `--node`, only the nodes the
/// running state records are compared: a daemon records only the nodes it serves.
fn compare(
    state_dir: &Path,
    new: &BTreeMap<String, NodeState>,
    one_node: bool,
) -> Result<Comparison> {
    let recorded = running::load_running(state_dir)?;
    let (mut compared, mut unrecorded) = (BTreeMap::new(), Vec::new());
    for (name, state) in new {
        if one_node || recorded.contains_key(name) {
            compared.insert(name.clone(), state.clone());
        } else {
            unrecorded.push(name.clone());
        }
    }
    let running: BTreeMap<String, NodeState> =
        recorded.into_iter().filter(|(name, _)| !one_node || new.contains_key(name)).collect();
    Ok(Comparison { diff: diff::diff(&running, &compared), unrecorded })
}

/// The states (YAML documents or one JSON object), then the diff and a summary per node.
fn compile_output(
    new: &BTreeMap<String, NodeState>,
    running: Option<&Path>,
    comparison: Option<&Comparison>,
    format: StateFormat,
) -> Result<String> {
    let summary = |c: &Comparison| -> Vec<String> {
        let mut lines = c.diff.summary();
        lines.extend(c.unrecorded.iter().map(|n| format!("{n}: not in the running state")));
        lines
    };
    if format == StateFormat::Json {
        let diff = comparison.map(|c| {
            let changes: BTreeMap<&str, &[String]> =
                c.diff.nodes.iter().map(|n| (n.node.as_str(), n.lines.as_slice())).collect();
            serde_json::json!({ "changes": changes, "summary": summary(c) })
        });
        let out = serde_json::json!({
            "nodes": new.values().collect::<Vec<_>>(),
            "running": running,
            "diff": diff,
        });
        return Ok(serde_json::to_string_pretty(&out)?);
    }
    let mut out = String::new();
    for (name, state) in new {
        out.push_str(&format!("--- # {name}\n"));
        out.push_str(&serde_saphyr::to_string(state).context("writing YAML")?);
    }
    if let (Some(dir), Some(c)) = (running, comparison) {
        out.push_str(&format!("\n== diff against the running state in {}\n", dir.display()));
        out.push_str(&c.diff.render());
        out.push_str("\n== summary\n");
        for line in summary(c) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Ok(out.trim_end().to_string())
}

/// The metrics in a daemon status file.
fn metrics_of_status(file: &Path) -> Result<Metrics> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let status: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", file.display()))?;
    Ok(explain::metrics_from_status(&status))
}

/// Prints a result; a closed pipe (`catsd compile ... | head`) is not an error.
fn print(text: &str) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A controller's campaign name: host and process, unique enough to tell controllers apart.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
