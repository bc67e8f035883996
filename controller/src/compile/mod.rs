//! The compile step: intent + topology + metrics → the desired state of every node.
//!
//! A pure, deterministic function: the same input gives the same output on every controller,
//! so it can be tested without a kernel and shown to an operator as a dry run.

pub mod addressing;
pub mod graph;
pub mod metrics;
pub mod paths;
pub mod segments;
pub mod select;

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::Serialize;
use thiserror::Error;

use self::{
    addressing as addr,
    paths::{ShortestPaths, adjacency, shortest_paths},
    select::{Candidate, Decision, Policy},
};
use crate::{
    intent::{
        ComputeService, Dataplane, EndFlavor, Intent, Link, Node, Objective, Role, SteeringPolicy,
        Topology, Underlay,
    },
    state::{
        EndpointState, HeadendState, InstanceState, InstanceWeight, InterfaceAddress, LocalSid,
        NodeState, ServiceMatch, ServiceState, SidBehavior, UnderlayRoute,
    },
};
use cats_common::maps::{MAX_INSTANCES, MAX_SEGMENTS, MAX_SERVICES};

pub use self::metrics::{InstanceMetric, LinkMetric, Metrics};

/// Desired state of every node, and the figures behind every weight.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Compiled {
    pub nodes: BTreeMap<String, NodeState>,
    pub decisions: Vec<ServiceDecisions>,
}

/// How one ingress weighs one service's instances.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDecisions {
    pub service: String,
    pub ingress: String,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Error, PartialEq)]
pub enum CompileError {
    /// More services than a headend's maps hold.
    #[error("{count} services, but a headend holds at most {MAX_SERVICES}")]
    TooManyServices { count: usize },
    /// More instances reachable from one headend than its maps hold.
    #[error("node {node}: {count} instances, but a headend holds at most {MAX_INSTANCES}")]
    TooManyInstances { node: String, count: usize },
    /// Waypoints plus the compute SID do not fit a segment list.
    #[error("policy {policy}: {count} segments, but a segment list holds at most {MAX_SEGMENTS}")]
    TooManySegments { policy: String, count: usize },
    /// The derived IPv4 link addresses ran out.
    #[error("link {link}: no IPv4 link address left in 198.19.0.0/16")]
    OutOfLinkAddresses { link: usize },
}

/// Compiles `intent` with `metrics` into the desired state of every node.
pub fn compile(
    intent: &Intent,
    metrics: &Metrics,
    generation: u64,
) -> Result<Compiled, CompileError> {
    let topo = &intent.topology;
    if intent.services.len() > MAX_SERVICES as usize {
        return Err(CompileError::TooManyServices { count: intent.services.len() });
    }
    let adj = adjacency(topo, |i| topo.links[i].latency_ms);
    let spf: BTreeMap<String, ShortestPaths> =
        topo.nodes.iter().map(|n| (n.name.clone(), shortest_paths(&adj, &n.name))).collect();
    let mut services: Vec<&ComputeService> = intent.services.iter().collect();
    services.sort_by_key(|s| s.cs_id);

    let mut nodes = BTreeMap::new();
    let mut decisions = Vec::new();
    for node in &topo.nodes {
        let mut state = NodeState { node: node.name.clone(), generation, ..Default::default() };
        state.addresses.push(InterfaceAddress {
            interface: "lo".into(),
            address: IpNetwork::V6(
                ipnetwork::Ipv6Network::new(addr::router_address(topo, node.index), 128)
                    .expect("128 is a valid prefix length"),
            ),
        });
        if topo.underlay == Underlay::Static {
            underlay(intent, node, &spf[&node.name], &mut state)?;
        }
        local_sids(intent, node, &mut state);
        if node.dataplane == Dataplane::Xdp {
            state.endpoint = Some(endpoint(intent, node));
        }
        if node.has_role(Role::Ingress) {
            let (headend, mut ds) = headend(intent, node, &services, &spf, metrics)?;
            state.headend = Some(headend);
            decisions.append(&mut ds);
        }
        sort(&mut state);
        nodes.insert(node.name.clone(), state);
    }
    Ok(Compiled { nodes, decisions })
}

/// Link addresses and hop-by-hop routes to every other node's locator and prefixes.
fn underlay(
    intent: &Intent,
    node: &Node,
    sp: &ShortestPaths,
    state: &mut NodeState,
) -> Result<(), CompileError> {
    let topo = &intent.topology;
    for (i, link) in topo.links.iter().enumerate() {
        for (is_b, name, iface) in
            [(false, &link.a, &link.a_interface), (true, &link.b, &link.b_interface)]
        {
            if name == &node.name {
                let v4 = addr::link_v4(i + 1, is_b)
                    .ok_or(CompileError::OutOfLinkAddresses { link: i + 1 })?;
                state.addresses.push(InterfaceAddress {
                    interface: iface.clone(),
                    address: addr::link_v6(i + 1, is_b).into(),
                });
                state
                    .addresses
                    .push(InterfaceAddress { interface: iface.clone(), address: v4.into() });
            }
        }
    }
    for other in topo.nodes.iter().filter(|n| n.name != node.name) {
        let Some(hop) = sp.first_hop.get(&other.name) else { continue };
        let link = &topo.links[hop.link];
        let (out_iface, peer_is_b) =
            end_on(link, &node.name).expect("first hops are the node's links");
        let via6 = addr::link_v6(hop.link + 1, peer_is_b).ip();
        let via4 = addr::link_v4(hop.link + 1, peer_is_b)
            .ok_or(CompileError::OutOfLinkAddresses { link: hop.link + 1 })?
            .ip();
        let mut push = |destination: IpNetwork| {
            let via = match destination {
                IpNetwork::V6(_) => via6.into(),
                IpNetwork::V4(_) => via4.into(),
            };
            state.routes.push(UnderlayRoute { destination, via, interface: out_iface.clone() });
        };
        push(addr::locator(topo, other.index).into());
        for prefix in &other.prefixes {
            push(*prefix);
        }
    }
    Ok(())
}

/// The device SID routes hang off. The kernel turns a non-local route through `lo` into a
/// reject route, so SIDs need a real device; which one does not matter to seg6local (the
/// behaviour decides where the packet goes), so take the node's first link interface.
fn sid_device(intent: &Intent, node: &Node) -> String {
    links_of(&intent.topology, &node.name)
        .map(|(_, iface, _)| iface.clone())
        .next()
        .or_else(|| node.headend_interfaces.first().cloned())
        .unwrap_or_else(|| "lo".into())
}

/// This node's end of `link`: its interface there, and whether the peer is side b. `None`
/// when the link does not touch the node.
fn end_on<'a>(link: &'a Link, node: &str) -> Option<(&'a String, bool)> {
    if link.a == node {
        Some((&link.a_interface, true))
    } else if link.b == node {
        Some((&link.b_interface, false))
    } else {
        None
    }
}

/// The links of `node`, in topology order: link index, this node's interface, peer is side b.
fn links_of<'a>(
    topology: &'a Topology,
    node: &'a str,
) -> impl Iterator<Item = (usize, &'a String, bool)> + 'a {
    topology
        .links
        .iter()
        .enumerate()
        .filter_map(move |(k, l)| end_on(l, node).map(|(i, b)| (k, i, b)))
}

/// The XDP endpoint of a node: on every link of the SR domain and every external interface.
fn endpoint(intent: &Intent, node: &Node) -> EndpointState {
    let topo = &intent.topology;
    let mut interfaces: Vec<String> =
        links_of(topo, &node.name).map(|(_, iface, _)| iface.clone()).collect();
    interfaces.extend(node.external_interfaces.iter().cloned());
    EndpointState {
        interfaces,
        external_interfaces: node.external_interfaces.clone(),
        sr_block: topo.sr_block,
        locators: vec![addr::locator(topo, node.index)],
        psp: node.end_flavors.contains(&EndFlavor::Psp),
        usd: node.end_flavors.contains(&EndFlavor::Usd),
    }
}

/// End and End.DT6 on every node; End.X per adjacency with a static underlay; a compute SID
/// per instance on egress nodes.
fn local_sids(intent: &Intent, node: &Node, state: &mut NodeState) {
    let topo = &intent.topology;
    let device = sid_device(intent, node);
    let sid_route = |sid, behavior| LocalSid { sid, behavior, interface: device.clone() };
    state.sids.push(sid_route(addr::end_sid(topo, node.index), SidBehavior::End));
    state
        .sids
        .push(sid_route(addr::end_dt6_sid(topo, node.index), SidBehavior::EndDt6 { table: 254 }));
    if topo.underlay == Underlay::Static {
        for (k, iface, peer_is_b) in links_of(topo, &node.name) {
            let nexthop = addr::link_v6(k + 1, peer_is_b).ip();
            state.sids.push(LocalSid {
                sid: addr::end_x_sid(topo, node.index, k),
                behavior: SidBehavior::EndX { nexthop },
                interface: iface.clone(),
            });
        }
    }
    for svc in &intent.services {
        for inst in svc.instances.iter().filter(|i| i.node == node.name) {
            if let Some(nexthop) = inst.address {
                let sid = addr::compute_sid(topo, node.index, false, svc.cs_id, inst.id);
                state.sids.push(sid_route(sid, SidBehavior::EndDx6 { nexthop }));
            }
            if let Some(nexthop) = inst.address4 {
                let sid = addr::compute_sid(topo, node.index, true, svc.cs_id, inst.id);
                state.sids.push(sid_route(sid, SidBehavior::EndDx4 { nexthop }));
            }
        }
    }
}

fn headend(
    intent: &Intent,
    node: &Node,
    services: &[&ComputeService],
    spf: &BTreeMap<String, ShortestPaths>,
    metrics: &Metrics,
) -> Result<(HeadendState, Vec<ServiceDecisions>), CompileError> {
    let topo = &intent.topology;
    let mut state = HeadendState {
        interfaces: node.headend_interfaces.clone(),
        encap_source: addr::router_address(topo, node.index),
        services: Vec::new(),
        instances: Vec::new(),
    };
    let mut all_decisions = Vec::new();
    let default_policy = SteeringPolicy { slack: 0.5, ..Default::default() };
    for (slot, svc) in services.iter().enumerate() {
        let policy = intent.policy_for(&svc.name).unwrap_or(&default_policy);
        if !policy.ingress.is_empty() && !policy.ingress.contains(&node.name) {
            continue;
        }
        if policy.constraints.waypoints.len() + 1 > MAX_SEGMENTS {
            return Err(CompileError::TooManySegments {
                policy: policy.name.clone(),
                count: policy.constraints.waypoints.len() + 1,
            });
        }
        let mut candidates = Vec::new();
        let mut instances = Vec::new();
        for inst in &svc.instances {
            let egress = intent.node(&inst.node).expect("validated: instance node exists");
            let waypoints = &policy.constraints.waypoints;
            let Some(one_way) = path_latency(spf, &node.name, waypoints, &inst.node) else {
                continue;
            };
            let mut segments: Vec<_> = policy
                .constraints
                .waypoints
                .iter()
                .map(|v| {
                    addr::end_sid(topo, intent.node(v).expect("validated: waypoint exists").index)
                })
                .collect();
            segments.push(addr::compute_sid(topo, egress.index, false, svc.cs_id, inst.id));
            let declared = inst.utilization;
            let measured = metrics.utilization(&inst.name).unwrap_or(0.0);
            candidates.push(Candidate {
                instance: inst.name.clone(),
                path_one_way_ms: one_way,
                request_cost: svc.request_cost,
                tops: inst.tops,
                utilization: declared.max(measured),
            });
            instances.push(InstanceState {
                name: inst.name.clone(),
                slot: 0,
                service: svc.name.clone(),
                cs_id: svc.cs_id,
                instance_id: inst.id,
                segments,
            });
        }
        let decisions = select::decide(
            &candidates,
            Policy {
                latency_only: policy.objective == Objective::MinLatency,
                max_network_ms: policy.constraints.max_latency_ms,
                slack: policy.slack,
            },
        );
        let mut weights = Vec::new();
        for (mut inst, decision) in instances.into_iter().zip(&decisions) {
            inst.slot = state.instances.len() as u32;
            weights.push(InstanceWeight { slot: inst.slot, weight: decision.weight });
            state.instances.push(inst);
        }
        if state.instances.len() > MAX_INSTANCES as usize {
            return Err(CompileError::TooManyInstances {
                node: node.name.clone(),
                count: state.instances.len(),
            });
        }
        state.services.push(ServiceState {
            name: svc.name.clone(),
            slot: slot as u32,
            cs_id: svc.cs_id,
            matches: matches(svc),
            flow: policy.affinity.flow,
            affinity_timeout_ms: policy.affinity.timeout_seconds * 1000,
            weights,
        });
        all_decisions.push(ServiceDecisions {
            service: svc.name.clone(),
            ingress: node.name.clone(),
            decisions,
        });
    }
    Ok((state, all_decisions))
}

/// One-way latency from `from` through the waypoints to `to`; `None` if any leg is unreachable.
fn path_latency(
    spf: &BTreeMap<String, ShortestPaths>,
    from: &str,
    via: &[String],
    to: &str,
) -> Option<f64> {
    let mut total = 0.0;
    let mut at = from;
    for next in via.iter().map(String::as_str).chain([to]) {
        total += spf.get(at)?.distance.get(next)?;
        at = next;
    }
    Some(total)
}

fn matches(svc: &ComputeService) -> Vec<ServiceMatch> {
    let mut out = Vec::new();
    for &address in &svc.addresses {
        if svc.ports.is_empty() {
            out.push(ServiceMatch { address, protocol: 0, port: 0 });
        }
        for p in &svc.ports {
            out.push(ServiceMatch { address, protocol: p.protocol.number(), port: p.port });
        }
    }
    out
}

/// Canonical order, so equal states compare equal and diffs are stable.
fn sort(state: &mut NodeState) {
    state.addresses.sort();
    state.addresses.dedup();
    state.routes.sort();
    state.sids.sort();
}

#[cfg(test)]
mod tests;
