//! `catsd`: the cats daemon (controller + node agents) and its offline tools.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use cats_controller::{
    agent::kernel::Kernel,
    compile::{self, Metrics},
    daemon::{self, DaemonConfig},
    dataplane::program::remove_pins,
    paths,
};
use clap::{Parser, Subcommand};
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
    },
    /// Validate an intent directory; errors name file, line and field.
    Validate { dir: PathBuf },
    /// Print the desired state of each node (a dry run: nothing is applied).
    Compile {
        dir: PathBuf,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Print the selection figures instead of the state.
        #[arg(long)]
        explain: bool,
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
        Command::Run { intent, nodes, netns_prefix, bpffs, metrics_dir, status_file, poll_ms } => {
            let config = DaemonConfig {
                intent_dir: intent,
                nodes,
                netns_prefix,
                bpffs,
                metrics_dir,
                status_file,
                poll: Duration::from_millis(poll_ms),
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(daemon::run(config, shutdown_signal()))
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
        Command::Compile { dir, node, explain } => {
            let intent = daemon::validate(&dir)?;
            let compiled = compile::compile(&intent, &Metrics::default(), 1)?;
            if explain {
                return print(&serde_json::to_string_pretty(&compiled.decisions)?);
            }
            let nodes: Vec<_> = compiled
                .nodes
                .values()
                .filter(|s| node.as_ref().is_none_or(|n| &s.node == n))
                .collect();
            print(&serde_json::to_string_pretty(&nodes)?)
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
    }
}

/// Prints a result; a closed pipe (`catsd compile ... | head`) is not an error.
fn print(text: &str) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
