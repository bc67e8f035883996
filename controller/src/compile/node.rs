//! The part of a node's state that follows from the intent alone: addresses, underlay
//! routes, local SIDs and the XDP endpoint settings. Metrics never change it, so the compiler
//! derives it once per intent.

use ipnetwork::{IpNetwork, Ipv6Network};

use super::{
    CompileError, addressing as addr,
    graph::{Graph, Spt},
};
use crate::{
    intent::{
        Affinity, ComputeService, Dataplane, EndFlavor, Intent, Link, Node, Topology, Underlay,
    },
    state::{
        EndpointState, InterfaceAddress, LocalSid, NodeState, ServiceMatch, SidBehavior,
        UnderlayRoute,
    },
};

/// Everything of `node`'s state but the headend. `own` lists the node's links in topology
/// order, `hosted` the (service, instance) positions of the instances it hosts; `igp` is the underlay's shortest-path tree from the node (static underlay only).
pub(super) fn base_state(
    intent: &Intent,
    node: &Node,
    own: &[usize],
    hosted: &[(usize, usize)],
    igp: Option<(&Spt, &Graph)>,
    generation: u64,
) -> Result<NodeState, CompileError> {
    let topo = &intent.topology;
    let mut state = NodeState { node: node.name.clone(), generation, ..Default::default() };
    state.addresses.push(InterfaceAddress {
        interface: "lo".into(),
        address: IpNetwork::V6(
            Ipv6Network::new(addr::router_address(topo, node.index), 128)
                .expect("128 is a valid prefix length"),
        ),
    });
    if let Some((spt, graph)) = igp {
        underlay(intent, node, own, spt, graph, &mut state)?;
    }
    local_sids(intent, node, own, hosted, &mut state);
    if node.dataplane == Dataplane::Xdp {
        state.endpoint = Some(endpoint(intent, node, own));
    }
    sort(&mut state);
    Ok(state)
}

/// The End.X number of one of a node's links (`own`: the node's links in topology order): its
/// position among them.
pub(super) fn adjacency_number(own: &[usize], link: usize) -> Option<usize> {
    own.iter().position(|&k| k == link)
}

/// Link addresses and hop-by-hop routes to every other node's locator and prefixes.
fn underlay(
    intent: &Intent,
    node: &Node,
    own: &[usize],
    igp: &Spt,
    graph: &Graph,
    state: &mut NodeState,
) -> Result<(), CompileError> {
    let topo = &intent.topology;
    for &i in own {
        let link = &topo.links[i];
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
        let id = graph.node_id(&other.name).expect("graph built from the topology");
        let Some(hop) = igp.first_hop(id) else { continue };
        let hop = hop as usize;
        let link = &topo.links[hop];
        let (out_iface, peer_is_b) =
            end_on(link, &node.name).expect("first hops are the node's links");
        let via6 = addr::link_v6(hop + 1, peer_is_b).ip();
        let via4 = addr::link_v4(hop + 1, peer_is_b)
            .ok_or(CompileError::OutOfLinkAddresses { link: hop + 1 })?
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
fn sid_device(intent: &Intent, node: &Node, own: &[usize]) -> String {
    links_of(&intent.topology, &node.name, own)
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

/// The links of `node` (`own`: their indexes, in topology order): link index, this node's
/// interface, peer is side b.
fn links_of<'a>(
    topology: &'a Topology,
    node: &'a str,
    own: &'a [usize],
) -> impl Iterator<Item = (usize, &'a String, bool)> + 'a {
    own.iter().filter_map(move |&k| end_on(&topology.links[k], node).map(|(i, b)| (k, i, b)))
}

/// The XDP endpoint of a node: on every link of the SR domain and every external interface.
fn endpoint(intent: &Intent, node: &Node, own: &[usize]) -> EndpointState {
    let topo = &intent.topology;
    let mut interfaces: Vec<String> =
        links_of(topo, &node.name, own).map(|(_, iface, _)| iface.clone()).collect();
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
fn local_sids(
    intent: &Intent,
    node: &Node,
    own: &[usize],
    hosted: &[(usize, usize)],
    state: &mut NodeState,
) {
    let topo = &intent.topology;
    let device = sid_device(intent, node, own);
    let sid_route = |sid, behavior| LocalSid { sid, behavior, interface: device.clone() };
    state.sids.push(sid_route(addr::end_sid(topo, node.index), SidBehavior::End));
    state
        .sids
        .push(sid_route(addr::end_dt6_sid(topo, node.index), SidBehavior::EndDt6 { table: 254 }));
    if topo.underlay == Underlay::Static {
        for (adjacency, (k, iface, peer_is_b)) in links_of(topo, &node.name, own).enumerate() {
            let nexthop = addr::link_v6(k + 1, peer_is_b).ip();
            state.sids.push(LocalSid {
                sid: addr::end_x_sid(topo, node.index, adjacency),
                behavior: SidBehavior::EndX { nexthop },
                interface: iface.clone(),
            });
        }
    }
    for &(svc, inst) in hosted {
        let (svc, inst) = (&intent.services[svc], &intent.services[svc].instances[inst]);
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

/// What the headend matches for `svc`, each port with its affinity port group.
pub(super) fn matches(svc: &ComputeService, affinity: &Affinity) -> Vec<ServiceMatch> {
    let mut out = Vec::new();
    for &address in &svc.addresses {
        if svc.ports.is_empty() {
            out.push(ServiceMatch { address, protocol: 0, port: 0, port_group: 0 });
        }
        for p in &svc.ports {
            out.push(ServiceMatch {
                address,
                protocol: p.protocol.number(),
                port: p.port,
                port_group: affinity.port_group(p.port),
            });
        }
    }
    out
}

/// Canonical order, so equal states compare equal and diffs are stable.
pub(super) fn sort(state: &mut NodeState) {
    state.addresses.sort();
    state.addresses.dedup();
    state.routes.sort();
    state.sids.sort();
}
