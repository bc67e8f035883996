//! The API's documents, built from the daemon's newest [`DaemonView`], and its routes.
//!
//! | path | document |
//! |---|---|
//! | `/v1/status` | [`StatusView`] |
//! | `/v1/nodes` | [`NodeView`] list |
//! | `/v1/services` | [`ServiceView`] list |
//! | `/v1/instances?service=S` | [`InstanceView`] list: weights and health per ingress |
//! | `/v1/paths?service=S` | [`PathView`] list: segment lists, each SID decoded |
//! | `/v1/flows?node=N&service=S&instance=I&limit=K` | [`FlowView`] list, read from the pinned affinity tables |
//! | `/v1/explain/SERVICE` | the selection figures (`ServiceDecisions`) of the service |
//! | `/v1/topology?service=S` | [`TopologyView`]: what `catsctl graph` draws |

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use cats_common::{
    flow::{FlowEntry, FlowKey},
    maps::MAP_AFFINITY,
    sid::{self, SidFunction},
};
use serde::{Deserialize, Serialize};

use super::{
    DaemonView, Shared,
    http::{Request, Response},
};
use crate::{
    intent::{Intent, Role},
    state::NodeState,
};

/// Flows listed when the request sets no limit.
pub const DEFAULT_FLOW_LIMIT: usize = 100;

/// The daemon at a glance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub generation: u64,
    pub intent_error: Option<String>,
    pub compile_error: Option<String>,
    pub nodes: usize,
    pub nodes_alive: usize,
    /// Nodes whose agent applied the newest desired state without error.
    pub nodes_applied: usize,
    pub services: usize,
    pub instances: usize,
    pub links: usize,
    /// Links with a fresh measurement.
    pub links_measured: usize,
    pub links_down: usize,
    /// Instances whose report is missing or stale (their declared figures apply).
    pub instances_stale: usize,
    /// Per ingress, the instances its health prober cannot reach.
    pub unreachable: BTreeMap<String, Vec<String>>,
    /// Where the Prometheus endpoint listens, if it does.
    pub metrics_listen: Option<String>,
}

/// One node of the topology and its agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    pub index: u16,
    pub roles: Vec<String>,
    pub dataplane: String,
    /// Served by this daemon (it runs the node's agent).
    pub served: bool,
    pub alive: bool,
    pub desired_generation: Option<u64>,
    pub applied_generation: Option<u64>,
    pub attached: Vec<String>,
    pub last_error: Option<String>,
    /// Instances hosted here (egress nodes: the node is their site).
    pub instances: Vec<String>,
    /// Flow pins in the headend's affinity table (ingress nodes).
    pub affinity_flows: Option<u64>,
    pub affinity_table_size: Option<u32>,
}

/// One compute service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub cs_id: u16,
    pub addresses: Vec<String>,
    /// `udp/7000`; empty: every port.
    pub ports: Vec<String>,
    pub instances: Vec<String>,
    /// Ingress nodes that steer it.
    pub ingresses: Vec<String>,
    pub policy: Option<String>,
    pub objective: Option<String>,
}

/// One instance as one ingress weighs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub service: String,
    pub instance: String,
    /// Its egress node.
    pub site: String,
    pub ingress: String,
    pub weight: u32,
    /// The utilisation the selector used.
    pub utilization: f64,
    /// Round trip of the chosen path, as the selector saw it.
    pub network_ms: f64,
    pub predicted_ms: f64,
    /// `up`, `alternate` (primary path down, alternate up), `down`, or `unknown` (not probed,
    /// or no verdict yet).
    pub health: String,
    /// The health probes' round trip over the primary path.
    pub probe_rtt_ms: Option<f64>,
    /// Age of the instance's last utilisation report.
    pub report_age_ms: Option<u64>,
    pub excluded: Option<String>,
}

/// One SID of a segment list, decoded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    pub sid: String,
    /// The node whose locator holds the SID (`?` when none does).
    pub node: String,
    /// `End`, `End.X`, `End.DT6`, `End.DX6`, `End.DX4`, or `unknown`.
    pub behavior: String,
    /// What it names besides the node: `→ peer` for End.X, `service/instance` for a compute
    /// SID.
    pub target: Option<String>,
}

/// The segment list one headend pushes for one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathView {
    pub ingress: String,
    pub service: String,
    pub instance: String,
    /// `primary` or `alternate` (the disjoint path used while the primary is down).
    pub kind: String,
    pub weight: u32,
    /// Nodes the path crosses, as the controller computed it.
    pub nodes: Vec<String>,
    pub segments: Vec<SegmentView>,
}

/// One flow pinned in a headend's affinity table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowView {
    pub node: String,
    pub service: String,
    pub instance: String,
    pub protocol: String,
    pub source: String,
    pub destination: String,
    /// Time since the flow's last packet.
    pub idle_ms: u64,
    /// Idle longer than the service's affinity timeout: its next packet picks afresh.
    pub expired: bool,
}

/// One link: declared and measured latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    pub a: String,
    pub b: String,
    pub declared_ms: f64,
    /// Fresh measured one-way latency; `None`: the declared one applies.
    pub measured_ms: Option<f64>,
    pub down: bool,
}

/// An egress site and the load of its instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteView {
    pub node: String,
    /// Utilisation of the site's instances, weighted by their TOPS.
    pub load: f64,
    pub instances: Vec<SiteInstance>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteInstance {
    pub name: String,
    pub service: String,
    pub tops: f64,
    pub utilization: f64,
}

/// What `catsctl graph` draws: nodes, links, sites, and the paths in use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyView {
    pub name: String,
    pub nodes: Vec<NodeView>,
    pub links: Vec<LinkView>,
    pub sites: Vec<SiteView>,
    /// Primary paths of instances with weight above zero.
    pub paths: Vec<PathView>,
}

/// Answers one API request from the newest view.
pub fn route(shared: &Shared, req: Request) -> Response {
    let view = shared.view.borrow().clone();
    let service = req.param("service");
    if let Some(s) = service
        && view.intent.service(s).is_none()
    {
        return Response::error(404, &no_service(&view.intent, s));
    }
    match req.path.trim_end_matches('/') {
        "/v1/status" => Response::json(&status(&view, shared.metrics_addr)),
        "/v1/nodes" => Response::json(&nodes(&view)),
        "/v1/services" => Response::json(&services(&view)),
        "/v1/instances" => Response::json(&instances(&view, service)),
        "/v1/paths" => Response::json(&paths(&view, service)),
        "/v1/topology" => Response::json(&topology(&view, service)),
        "/v1/flows" => {
            let filter = FlowFilter {
                node: req.param("node").map(String::from),
                service: service.map(String::from),
                instance: req.param("instance").map(String::from),
                limit: match req.param("limit").map(str::parse::<usize>) {
                    None => DEFAULT_FLOW_LIMIT,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Response::error(400, "limit: not a number"),
                },
            };
            if let Some(n) = &filter.node
                && view.states.get(n).is_none_or(|s| s.headend.is_none())
            {
                return Response::error(
                    404,
                    &format!("{n} is not an ingress node of the topology"),
                );
            }
            match flows(&view, &filter, |node| (shared.pins_of)(node)) {
                Ok(f) => Response::json(&f),
                Err(e) => Response::error(500, &format!("{e:#}")),
            }
        }
        path if path.starts_with("/v1/explain/") => {
            let name = &path["/v1/explain/".len()..];
            if view.intent.service(name).is_none() {
                return Response::error(404, &no_service(&view.intent, name));
            }
            let entries: Vec<_> = view.decisions.iter().filter(|d| d.service == name).collect();
            Response::json(&entries)
        }
        other => Response::error(404, &format!("no such API path {other}")),
    }
}

fn no_service(intent: &Intent, name: &str) -> String {
    let known: Vec<&str> = intent.services.iter().map(|s| s.name.as_str()).collect();
    format!("no service {name} (services: {})", known.join(", "))
}

pub fn status(view: &DaemonView, metrics: Option<std::net::SocketAddr>) -> StatusView {
    let unreachable = view
        .agents
        .iter()
        .filter_map(|(n, a)| {
            let down = &a.status.health.as_ref()?.unreachable;
            (!down.is_empty()).then(|| (n.clone(), down.clone()))
        })
        .collect();
    let links = &view.metrics.links;
    let instances: usize = view.intent.services.iter().map(|s| s.instances.len()).sum();
    let fresh_reports =
        view.metrics.instances.iter().filter(|r| !r.stale).map(|r| r.instance.as_str());
    let fresh: std::collections::BTreeSet<&str> = fresh_reports.collect();
    let stale = view
        .intent
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter(|i| !fresh.contains(i.name.as_str()))
        .count();
    StatusView {
        generation: view.generation,
        intent_error: view.intent_error.clone(),
        compile_error: view.compile_error.clone(),
        nodes: view.intent.topology.nodes.len(),
        nodes_alive: view.agents.values().filter(|a| a.alive).count(),
        nodes_applied: view
            .agents
            .values()
            .filter(|a| {
                a.status.applied_generation.is_some()
                    && a.status.applied_generation == a.desired_generation
                    && a.status.last_error.is_none()
            })
            .count(),
        services: view.intent.services.len(),
        instances,
        links: view.intent.topology.links.len(),
        links_measured: links.iter().filter(|l| l.one_way_ms.is_some() && !l.stale).count(),
        links_down: links.iter().filter(|l| l.down).count(),
        instances_stale: stale,
        unreachable,
        metrics_listen: metrics.map(|a| a.to_string()),
    }
}

pub fn nodes(view: &DaemonView) -> Vec<NodeView> {
    view.intent
        .topology
        .nodes
        .iter()
        .map(|n| {
            let agent = view.agents.get(&n.name);
            let hosted = view.intent.services.iter().flat_map(|s| &s.instances);
            NodeView {
                name: n.name.clone(),
                index: n.index,
                roles: n.roles.iter().map(|r| role_name(*r).to_string()).collect(),
                dataplane: format!("{:?}", n.dataplane).to_lowercase(),
                served: agent.is_some(),
                alive: agent.is_some_and(|a| a.alive),
                desired_generation: agent.and_then(|a| a.desired_generation),
                applied_generation: agent.and_then(|a| a.status.applied_generation),
                attached: agent.map(|a| a.status.attached.clone()).unwrap_or_default(),
                last_error: agent.and_then(|a| a.status.last_error.clone()),
                instances: hosted.filter(|i| i.node == n.name).map(|i| i.name.clone()).collect(),
                affinity_flows: view.affinity.get(&n.name).map(|a| a.occupancy),
                // Every agent loads the table; only a headend uses it.
                affinity_table_size: agent
                    .filter(|_| n.has_role(Role::Ingress))
                    .and_then(|a| a.status.affinity_table_size),
            }
        })
        .collect()
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Ingress => "ingress",
        Role::Transit => "transit",
        Role::Egress => "egress",
    }
}

pub fn services(view: &DaemonView) -> Vec<ServiceView> {
    view.intent
        .services
        .iter()
        .map(|s| {
            let policy = view.intent.policy_for(&s.name);
            let mut ingresses: Vec<String> = view
                .decisions
                .iter()
                .filter(|d| d.service == s.name)
                .map(|d| d.ingress.clone())
                .collect();
            ingresses.dedup();
            ServiceView {
                name: s.name.clone(),
                cs_id: s.cs_id,
                addresses: s.addresses.iter().map(IpAddr::to_string).collect(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", format!("{:?}", p.protocol).to_lowercase(), p.port))
                    .collect(),
                instances: s.instances.iter().map(|i| i.name.clone()).collect(),
                ingresses,
                policy: policy.map(|p| p.name.clone()),
                objective: policy.map(|p| {
                    serde_json::to_value(p.objective)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_else(|| format!("{:?}", p.objective))
                }),
            }
        })
        .collect()
}

pub fn instances(view: &DaemonView, service: Option<&str>) -> Vec<InstanceView> {
    let mut out = Vec::new();
    for sd in view.decisions.iter().filter(|d| service.is_none_or(|s| s == d.service)) {
        let health = view.agents.get(&sd.ingress).and_then(|a| a.status.health.as_ref());
        for d in &sd.decisions {
            let probed = |kind: &str| {
                health.and_then(|h| {
                    h.paths.iter().find(|p| p.instance == d.instance && p.path == kind)
                })
            };
            let (primary, alternate) = (probed("primary"), probed("alternate"));
            let unreachable = health.is_some_and(|h| h.unreachable.contains(&d.instance));
            let state = match (primary, alternate) {
                _ if unreachable => "down",
                (Some(p), _) if p.up => "up",
                (Some(_), Some(a)) if a.up => "alternate",
                (Some(p), _) if p.rtt_ms.is_some() => "down",
                _ => "unknown",
            };
            let report = view.metrics.instances.iter().find(|r| r.instance == d.instance);
            out.push(InstanceView {
                service: sd.service.clone(),
                instance: d.instance.clone(),
                site: d.site.clone(),
                ingress: sd.ingress.clone(),
                weight: d.weight,
                utilization: d.utilization,
                network_ms: d.network_ms,
                predicted_ms: d.predicted_ms,
                health: state.to_string(),
                probe_rtt_ms: primary.and_then(|p| p.rtt_ms),
                report_age_ms: report.map(|r| r.age_ms),
                excluded: d.excluded.clone(),
            });
        }
    }
    out
}

pub fn paths(view: &DaemonView, service: Option<&str>) -> Vec<PathView> {
    let mut out = Vec::new();
    for sd in view.decisions.iter().filter(|d| service.is_none_or(|s| s == d.service)) {
        let Some(headend) = view.states.get(&sd.ingress).and_then(|s| s.headend.as_ref()) else {
            continue;
        };
        for d in &sd.decisions {
            let Some(inst) =
                headend.instances.iter().find(|i| i.name == d.instance && i.service == sd.service)
            else {
                continue;
            };
            let lists = [
                ("primary", &inst.segments, Some(d.path.clone())),
                ("alternate", &inst.alternate_segments, d.backup_path.clone()),
            ];
            for (kind, segments, nodes) in lists {
                if segments.is_empty() {
                    continue;
                }
                out.push(PathView {
                    ingress: sd.ingress.clone(),
                    service: sd.service.clone(),
                    instance: d.instance.clone(),
                    kind: kind.to_string(),
                    weight: d.weight,
                    nodes: nodes.unwrap_or_default(),
                    segments: segments.iter().map(|s| decode_sid(&view.intent, *s)).collect(),
                });
            }
        }
    }
    out
}

/// What a SID names in `intent`: its node (by the locator bits), its behaviour, and for End.X
/// the peer, for a compute SID the service and instance.
pub fn decode_sid(intent: &Intent, sid: Ipv6Addr) -> SegmentView {
    let topo = &intent.topology;
    let octets = sid.octets();
    let mut out = SegmentView {
        sid: sid.to_string(),
        node: "?".into(),
        behavior: "unknown".into(),
        target: None,
    };
    if !topo.sr_block.contains(sid) {
        out.behavior = "not a SID".into();
        return out;
    }
    let index = sid::node_of(&octets);
    let Some(node) = topo.nodes.iter().find(|n| n.index == index) else {
        return out;
    };
    out.node = node.name.clone();
    let compute = |cs_id: u16, instance: u32| {
        let svc = intent.services.iter().find(|s| s.cs_id == cs_id);
        let inst = svc.and_then(|s| s.instances.iter().find(|i| i.id == instance));
        match (svc, inst) {
            (Some(s), Some(i)) => format!("{}/{}", s.name, i.name),
            (Some(s), None) => format!("{}/#{instance}", s.name),
            _ => format!("cs-id {cs_id}/#{instance}"),
        }
    };
    let (behavior, target) = match sid::decode(&octets) {
        SidFunction::NodeAddress => ("node address", None),
        SidFunction::End => ("End", None),
        SidFunction::EndDt6 => ("End.DT6", None),
        SidFunction::EndX { adjacency } => {
            let peer = topo
                .links
                .iter()
                .filter(|l| l.a == node.name || l.b == node.name)
                .nth(adjacency as usize)
                .map(|l| if l.a == node.name { l.b.clone() } else { l.a.clone() });
            ("End.X", Some(format!("→ {}", peer.unwrap_or_else(|| format!("#{adjacency}")))))
        }
        SidFunction::ComputeV6 { cs_id, instance } => ("End.DX6", Some(compute(cs_id, instance))),
        SidFunction::ComputeV4 { cs_id, instance } => ("End.DX4", Some(compute(cs_id, instance))),
        SidFunction::Unknown { .. } => ("unknown", None),
    };
    out.behavior = behavior.into();
    out.target = target;
    out
}

/// Which flows to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub node: Option<String>,
    pub service: Option<String>,
    pub instance: Option<String>,
    pub limit: usize,
}

impl FlowFilter {
    /// Whether a flow of `service`/`instance` at `node` is wanted.
    pub fn wants(&self, node: &str, service: &str, instance: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
            && self.service.as_deref().is_none_or(|s| s == service)
            && self.instance.as_deref().is_none_or(|i| i == instance)
    }
}

/// The flows pinned in the headends' affinity tables (read from the pinned maps now), those
/// `filter` wants, at most `filter.limit`, by node in table order.
pub fn flows(
    view: &DaemonView,
    filter: &FlowFilter,
    pins_of: impl Fn(&str) -> std::path::PathBuf,
) -> Result<Vec<FlowView>> {
    let now = monotonic_ns();
    let mut out = Vec::new();
    for (name, state) in &view.states {
        if out.len() >= filter.limit {
            break;
        }
        if filter.node.as_deref().is_some_and(|n| n != name) || !view.agents.contains_key(name) {
            continue;
        }
        let Some(headend) = &state.headend else { continue };
        if headend.services.is_empty() {
            continue;
        }
        dump_node(&pins_of(name), state, filter, now, &mut out)?;
    }
    Ok(out)
}

fn dump_node(
    pins: &Path,
    state: &NodeState,
    filter: &FlowFilter,
    now_ns: u64,
    out: &mut Vec<FlowView>,
) -> Result<()> {
    let Some(headend) = &state.headend else { return Ok(()) };
    let path = pins.join("maps").join(MAP_AFFINITY);
    let data = match MapData::from_pin(&path) {
        Ok(d) => d,
        // The agent has not pinned it yet: no flows.
        Err(_) if !path.exists() => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let table: HashMap<MapData, FlowKey, FlowEntry> = HashMap::try_from(Map::from_map_data(data)?)?;
    for entry in table.iter() {
        if out.len() >= filter.limit {
            break;
        }
        // A key the LRU evicted while we walk: skip it.
        let Ok((key, value)) = entry else { continue };
        let service = headend.services.iter().find(|s| s.slot == key.service_slot);
        let instance = headend.instances.iter().find(|i| i.slot == value.instance_slot);
        let (service_name, timeout_ms) = match service {
            Some(s) => (s.name.clone(), s.affinity_timeout_ms),
            None => (format!("#{}", key.service_slot), u64::MAX),
        };
        let instance_name =
            instance.map_or_else(|| format!("#{}", value.instance_slot), |i| i.name.clone());
        if !filter.wants(&state.node, &service_name, &instance_name) {
            continue;
        }
        let idle_ms = now_ns.saturating_sub(value.last_seen_ns) / 1_000_000;
        out.push(FlowView {
            node: state.node.clone(),
            service: service_name,
            instance: instance_name,
            protocol: protocol_name(key.proto),
            source: endpoint(key.src, key.sport),
            destination: endpoint(key.dst, key.dport),
            idle_ms,
            expired: idle_ms > timeout_ms,
        });
    }
    Ok(())
}

fn protocol_name(proto: u8) -> String {
    match proto {
        0 => "any".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        1 => "icmp".into(),
        p => p.to_string(),
    }
}

/// `[v6]:port`, `v4:port`, or the bare address when the flow definition leaves ports out.
fn endpoint(addr: [u8; 16], port: u16) -> String {
    let v6 = Ipv6Addr::from(addr);
    let ip: IpAddr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    match (ip, port) {
        (ip, 0) => ip.to_string(),
        (IpAddr::V6(a), p) => format!("[{a}]:{p}"),
        (IpAddr::V4(a), p) => format!("{a}:{p}"),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn topology(view: &DaemonView, service: Option<&str>) -> TopologyView {
    let links = view
        .intent
        .topology
        .links
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let m = view.metrics.links.iter().find(|r| r.link == k);
            LinkView {
                a: l.a.clone(),
                b: l.b.clone(),
                declared_ms: l.latency_ms,
                measured_ms: m.filter(|m| !m.stale).and_then(|m| m.one_way_ms),
                down: m.is_some_and(|m| m.down),
            }
        })
        .collect();
    let utilization = |name: &str, declared: f64| {
        let measured = view.metrics.instances.iter().find(|r| r.instance == name && !r.stale);
        measured.map_or(declared, |r| r.metric.utilization.max(declared))
    };
    let sites = view
        .intent
        .topology
        .nodes
        .iter()
        .filter(|n| n.has_role(Role::Egress))
        .map(|n| {
            let instances: Vec<SiteInstance> = view
                .intent
                .services
                .iter()
                .flat_map(|s| s.instances.iter().map(move |i| (s, i)))
                .filter(|(_, i)| i.node == n.name)
                .map(|(s, i)| SiteInstance {
                    name: i.name.clone(),
                    service: s.name.clone(),
                    tops: i.tops,
                    utilization: utilization(&i.name, i.utilization),
                })
                .collect();
            let tops: f64 = instances.iter().map(|i| i.tops).sum();
            let busy: f64 = instances.iter().map(|i| i.tops * i.utilization).sum();
            SiteView {
                node: n.name.clone(),
                load: if tops > 0.0 { busy / tops } else { 0.0 },
                instances,
            }
        })
        .collect();
    let paths =
        paths(view, service).into_iter().filter(|p| p.kind == "primary" && p.weight > 0).collect();
    TopologyView {
        name: view.intent.topology.name.clone(),
        nodes: nodes(view),
        links,
        sites,
        paths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Intent {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smart-traffic/intent");
        crate::intent::load_dir(&dir).unwrap()
    }

    #[test]
    fn sids_decode_to_nodes_behaviours_and_compute_targets() {
        let intent = intent();
        let topo = &intent.topology;
        let sid = |s: &str| decode_sid(&intent, s.parse().unwrap());
        // core is node 2; its own links in topology order: gw, edge1, edge2, cloud.
        let end = sid("fc00:0:2:1::");
        assert_eq!((end.node.as_str(), end.behavior.as_str(), end.target), ("core", "End", None));
        let x = sid("fc00:0:2:102::");
        assert_eq!((x.node.as_str(), x.behavior.as_str()), ("core", "End.X"));
        assert_eq!(x.target.as_deref(), Some("→ edge2"));
        let svc = &intent.services[0];
        let inst = &svc.instances[0];
        let index = intent.node(&inst.node).unwrap().index;
        let dx6 = crate::compile::addressing::compute_sid(topo, index, false, svc.cs_id, inst.id);
        let d = decode_sid(&intent, dx6);
        assert_eq!((d.node.as_str(), d.behavior.as_str()), (inst.node.as_str(), "End.DX6"));
        assert_eq!(d.target, Some(format!("{}/{}", svc.name, inst.name)));
        let dx4 = crate::compile::addressing::compute_sid(topo, index, true, svc.cs_id, inst.id);
        assert_eq!(decode_sid(&intent, dx4).behavior, "End.DX4");
        assert_eq!(sid("fc00:0:3:6::").behavior, "End.DT6");
        // Outside the block, an unknown node, an unknown function.
        assert_eq!(sid("2001:db8::1").behavior, "not a SID");
        assert_eq!(sid("fc00:0:99:1::").node, "?");
        assert_eq!(sid("fc00:0:2:2::").behavior, "unknown");
    }

    #[test]
    fn flow_filters_combine() {
        let all = FlowFilter { limit: 10, ..Default::default() };
        assert!(all.wants("gw", "s", "a"));
        let f = FlowFilter {
            node: Some("gw".into()),
            service: Some("s".into()),
            instance: None,
            limit: 10,
        };
        assert!(f.wants("gw", "s", "a"));
        assert!(!f.wants("gw2", "s", "a"));
        assert!(!f.wants("gw", "t", "a"));
        let i = FlowFilter { instance: Some("b".into()), ..all };
        assert!(!i.wants("gw", "s", "a"));
        assert!(i.wants("gw", "s", "b"));
    }

    #[test]
    fn flow_endpoints_show_ipv4_as_ipv4() {
        let v4: Ipv6Addr = "::ffff:198.18.10.2".parse().unwrap();
        assert_eq!(endpoint(v4.octets(), 4000), "198.18.10.2:4000");
        let v6: Ipv6Addr = "fd00:10::2".parse().unwrap();
        assert_eq!(endpoint(v6.octets(), 4000), "[fd00:10::2]:4000");
        assert_eq!(endpoint(v6.octets(), 0), "fd00:10::2");
    }
}
