//! `catsctl`: asks a running `catsd` (its local API socket) where each service's traffic goes,
//! why, and whether it is healthy.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use cats_controller::{
    api::{
        self,
        http::{get_unix, percent_encode},
        table,
        views::{
            FlowView, InstanceView, NodeView, PathView, ServiceView, StatusView, TopologyView,
        },
    },
    explain, graph,
};
use clap::{Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;

#[derive(Parser)]
#[command(version, about = "Ask a running catsd where traffic goes, why, and how healthy it is")]
struct Cli {
    /// The daemon's API socket (`catsd run --api-socket`).
    #[arg(long, global = true, default_value = api::DEFAULT_API_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon at a glance: generation, nodes, links, errors.
    Status,
    /// Nodes: roles, dataplane, agent, applied generation, affinity table.
    Nodes,
    /// Services: addresses, ports, instances, ingresses.
    Services,
    /// Instances per ingress: weight, utilisation, prediction, health.
    Instances {
        #[arg(long)]
        service: Option<String>,
    },
    /// Segment lists per ingress and instance, every SID decoded.
    Paths {
        #[arg(long)]
        service: Option<String>,
    },
    /// Flows pinned in the headends' affinity tables.
    Flows {
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        /// At most this many flows.
        #[arg(long, default_value_t = api::views::DEFAULT_FLOW_LIMIT)]
        limit: usize,
    },
    /// The figures that decided each candidate instance of SERVICE, live.
    Explain {
        service: String,
        /// Only this ingress node.
        #[arg(long)]
        ingress: Option<String>,
    },
    /// Write a picture of the network: DIR/topology.dot and DIR/topology.svg (needs
    /// Graphviz's `dot`).
    Graph {
        /// Only the paths of this service.
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(text) => {
            use std::io::Write;
            match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("catsctl: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("catsctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `?service=S` (or nothing) as a query string.
fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent_encode(v))))
        .collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

fn run(cli: Cli) -> Result<String> {
    let get = |path: &str| -> Result<Vec<u8>> {
        Ok(get_unix(&cli.socket, path, Duration::from_secs(10))?)
    };
    let (path, render): (String, Render) = match &cli.command {
        Command::Status => ("/v1/status".into(), |b| Ok(table::status(&parse::<StatusView>(b)?))),
        Command::Nodes => ("/v1/nodes".into(), |b| Ok(table::nodes(&parse::<Vec<NodeView>>(b)?))),
        Command::Services => {
            ("/v1/services".into(), |b| Ok(table::services(&parse::<Vec<ServiceView>>(b)?)))
        }
        Command::Instances { service } => {
            (format!("/v1/instances{}", query(&[("service", service.clone())])), |b| {
                Ok(table::instances(&parse::<Vec<InstanceView>>(b)?))
            })
        }
        Command::Paths { service } => {
            (format!("/v1/paths{}", query(&[("service", service.clone())])), |b| {
                Ok(table::paths(&parse::<Vec<PathView>>(b)?))
            })
        }
        Command::Flows { node, service, instance, limit } => (
            format!(
                "/v1/flows{}",
                query(&[
                    ("node", node.clone()),
                    ("service", service.clone()),
                    ("instance", instance.clone()),
                    ("limit", Some(limit.to_string())),
                ])
            ),
            |b| Ok(table::flows(&parse::<Vec<FlowView>>(b)?)),
        ),
        Command::Explain { service, ingress } => {
            let body = get(&format!("/v1/explain/{}", percent_encode(service)))?;
            let mut entries: Vec<serde_json::Value> = parse(&body)?;
            if let Some(n) = ingress {
                entries.retain(|e| e["ingress"] == n.as_str());
                if entries.is_empty() {
                    anyhow::bail!("no ingress {n} steers {service}");
                }
            }
            return match cli.output {
                Output::Table => Ok(explain::table_from_json(&entries)),
                other => format_value(&serde_json::Value::Array(entries), other),
            };
        }
        Command::Graph { service, out } => {
            let body = get(&format!("/v1/topology{}", query(&[("service", service.clone())])))?;
            let topology: TopologyView = parse(&body)?;
            let (dot, svg) = graph::write(out, &topology)?;
            return Ok(format!(
                "wrote {} and {} ({} nodes, {} links, {} paths in use)",
                dot.display(),
                svg.display(),
                topology.nodes.len(),
                topology.links.len(),
                topology.paths.len()
            ));
        }
    };
    let body = get(&path)?;
    match cli.output {
        Output::Table => render(&body),
        other => format_value(&parse::<serde_json::Value>(&body)?, other),
    }
}

/// Turns the daemon's JSON answer into a table.
type Render = fn(&[u8]) -> Result<String>;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).context("the daemon's answer is not the JSON expected")
}

fn format_value(value: &serde_json::Value, output: Output) -> Result<String> {
    match output {
        Output::Yaml => serde_saphyr::to_string(value).context("writing YAML"),
        _ => Ok(serde_json::to_string_pretty(value)?),
    }
}
