//! Steering for one ingress and one service: how to reach each instance (the path over
//! measured latencies, the fewest segments that force it, a disjoint backup) and the
//! selector's inputs. This is the part of the compile that measurements change.

use std::{collections::HashMap, net::Ipv6Addr};

use cats_common::maps::MAX_SEGMENTS;

use super::{
    addressing as addr,
    graph::{Avoid, Disjointness, Graph, NodeId, Path, Spt},
    metrics::Metrics,
    node::adjacency_number,
    segments::{Igp, Segment, minimise},
    select::Candidate,
};
use crate::intent::{ComputeService, Instance, Intent, SteeringPolicy, Underlay};

/// The traffic-engineering view of one compile: the topology over measured latencies
/// (declared where nothing was measured), with shortest-path trees cached per source and
/// avoid set.
pub(super) struct TeView {
    pub graph: Graph,
    trees: HashMap<(NodeId, usize), Spt>,
    /// Nothing measured: the TE latencies are the IGP's, so are unconstrained trees.
    same_as_igp: bool,
}

impl TeView {
    pub fn new(intent: &Intent, metrics: &Metrics) -> TeView {
        let links = &intent.topology.links;
        let graph = Graph::new(&intent.topology, |i| {
            metrics.links.get(&i).map_or(links[i].latency_ms, |m| m.one_way_ms)
        });
        TeView { graph, trees: HashMap::new(), same_as_igp: metrics.links.is_empty() }
    }

    fn tree(&mut self, source: NodeId, avoid: &AvoidSet, igp: &mut Igp) -> &Spt {
        let graph = &self.graph;
        let shared = self.same_as_igp && avoid.key == 0;
        self.trees.entry((source, avoid.key)).or_insert_with(|| {
            if shared { igp.spt(source).clone() } else { graph.spf(source, &avoid.avoid) }
        })
    }
}

/// A policy's avoided nodes and links, with a key that names it in tree caches.
pub(super) struct AvoidSet {
    pub key: usize,
    pub avoid: Avoid,
}

impl AvoidSet {
    /// `key` must be distinct per distinct set (the policy's position + 1; 0 for none).
    pub fn of(graph: &Graph, intent: &Intent, policy: &SteeringPolicy, key: usize) -> AvoidSet {
        let c = &policy.constraints;
        let links = c.avoid_links.iter().filter_map(|l| intent.topology.link_index(l));
        let avoid =
            Avoid::new(graph, c.avoid_nodes.iter().map(String::as_str), links.map(|l| l as u32));
        AvoidSet { key: if avoid == Avoid::none() { 0 } else { key }, avoid }
    }
}

/// How one ingress reaches one instance.
#[derive(Clone, Debug)]
pub(super) struct Route {
    pub path: Path,
    pub segments: Vec<Segment>,
    /// The segment list as SIDs, the instance's compute SID last.
    pub sids: Vec<Ipv6Addr>,
    /// Computed for instances that receive flows only: `None` until asked for.
    pub backup: Option<Option<(Path, Disjointness)>>,
    /// The backup path as a segment list (the compute SID last), once the backup is known
    /// and fits in a segment list: the headend's alternate path to the same instance.
    pub alternate_sids: Option<Vec<Ipv6Addr>>,
}

/// Everything the compile needs to know about the underlay to turn segments into SIDs.
pub(super) struct Underlays<'a> {
    pub intent: &'a Intent,
    pub igp: &'a mut Igp,
    /// Each node's links in topology order, by node id.
    pub links_by_node: &'a [Vec<usize>],
}

/// The path to `target` through the policy's waypoints over the TE view, and its minimal
/// segment list; `None` when no path meets the constraints.
pub(super) fn route(
    te: &mut TeView,
    underlays: &mut Underlays<'_>,
    source: NodeId,
    waypoints: &[NodeId],
    target: NodeId,
    avoid: &AvoidSet,
) -> Option<Route> {
    let mut nodes = vec![source];
    let mut links = Vec::new();
    let mut segments = Vec::new();
    let mut at = source;
    for &next in waypoints.iter().chain([&target]) {
        let leg = te.tree(at, avoid, underlays.igp).path_to(next)?;
        // Each leg needs only what forces it; a waypoint itself is always a segment, so the
        // packet is processed there (its End SID), not merely routed past it.
        segments.extend(minimise(&leg, underlays.igp));
        if next != target {
            segments.push(Segment::Node(next));
        }
        nodes.extend_from_slice(&leg.nodes[1..]);
        links.extend_from_slice(&leg.links);
        at = next;
    }
    let latency_ms = te.graph.path_latency(&links);
    let path = Path { nodes, links, latency_ms };
    Some(Route { path, segments, sids: Vec::new(), backup: None, alternate_sids: None })
}

/// The segments that make the underlay follow `path`: each leg between the waypoints (which
/// the path visits in order) minimised on its own, the waypoints themselves as node segments,
/// as [`route`] builds them for a primary path.
pub(super) fn segments_along(path: &Path, waypoints: &[NodeId], igp: &mut Igp) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut stops: Vec<usize> = Vec::new();
    for w in waypoints {
        if let Some(k) = path.nodes[start..].iter().position(|n| n == w) {
            stops.push(start + k);
            start += k;
        }
    }
    stops.push(path.nodes.len() - 1);
    let mut from = 0;
    for (i, &to) in stops.iter().enumerate() {
        let leg = Path {
            nodes: path.nodes[from..=to].to_vec(),
            links: path.links[from..to].to_vec(),
            latency_ms: 0.0,
        };
        segments.extend(minimise(&leg, igp));
        if i + 1 < stops.len() {
            segments.push(Segment::Node(path.nodes[to]));
        }
        from = to;
    }
    segments
}

impl Route {
    /// The disjoint backup, computed once.
    pub fn backup(
        &mut self,
        te: &TeView,
        waypoints: &[NodeId],
        avoid: &AvoidSet,
    ) -> Option<&(Path, Disjointness)> {
        let (source, target) = (self.path.nodes[0], *self.path.nodes.last().expect("non-empty"));
        self.backup
            .get_or_insert_with(|| {
                te.graph.disjoint_backup(&self.path, source, waypoints, target, &avoid.avoid)
            })
            .as_ref()
    }
}

/// The SIDs of `segments`, then the compute SID of the instance on its egress. With an
/// external underlay cats installs no End.X SIDs, so an adjacency becomes the far node's End
/// SID: the IGP then picks the way to it.
pub(super) fn segment_list(
    underlays: &Underlays<'_>,
    segments: &[Segment],
    service: &ComputeService,
    instance: &Instance,
) -> Vec<Ipv6Addr> {
    let topo = &underlays.intent.topology;
    let graph = underlays.igp.graph();
    let index = |n: NodeId| topo.nodes[n as usize].index;
    let mut sids: Vec<Ipv6Addr> = segments
        .iter()
        .map(|s| match *s {
            Segment::Node(n) => addr::end_sid(topo, index(n)),
            Segment::Adjacency { node, link } if topo.underlay == Underlay::Static => {
                let own = &underlays.links_by_node[node as usize];
                let k = adjacency_number(own, link as usize).expect("the link leaves the node");
                addr::end_x_sid(topo, index(node), k)
            }
            Segment::Adjacency { node, link } => {
                let (a, b) = graph.link_ends(link);
                addr::end_sid(topo, index(if a == node { b } else { a }))
            }
        })
        .collect();
    let egress = underlays.intent.node(&instance.node).expect("validated: instance node exists");
    sids.push(addr::compute_sid(topo, egress.index, false, service.cs_id, instance.id));
    sids
}

/// Whether a segment list fits the headend's SRH.
pub(super) fn fits(segments: &[Segment]) -> bool {
    segments.len() < MAX_SEGMENTS
}

/// Segments as an operator reads them: `core`, `edge1 → cloud (End.X)`.
pub(super) fn describe(graph: &Graph, segments: &[Segment], target: &str) -> Vec<String> {
    let mut out: Vec<String> = segments
        .iter()
        .map(|s| match *s {
            Segment::Node(n) => format!("{} (End)", graph.name(n)),
            Segment::Adjacency { node, link } => {
                let (a, b) = graph.link_ends(link);
                let far = if a == node { b } else { a };
                format!("{} → {} (End.X)", graph.name(node), graph.name(far))
            }
        })
        .collect();
    out.push(format!("{target} (compute SID)"));
    out
}

/// Node names of a path.
pub(super) fn names(graph: &Graph, path: &Path) -> Vec<String> {
    path.nodes.iter().map(|&n| graph.name(n).to_string()).collect()
}

/// The selector's view of one instance reached over `route`.
pub(super) fn candidate(
    policy: &SteeringPolicy,
    service: &ComputeService,
    instance: &Instance,
    route: &Route,
    metrics: &Metrics,
) -> Candidate {
    let measured = metrics.instances.get(&instance.name).copied().unwrap_or_default();
    let (jitter_ms, delivered) = route
        .path
        .links
        .iter()
        .filter_map(|l| metrics.links.get(&(*l as usize)))
        .fold((0.0, 1.0), |(j, d), m| (j + m.jitter_ms, d * (1.0 - m.loss.clamp(0.0, 1.0))));
    Candidate {
        instance: instance.name.clone(),
        site: instance.node.clone(),
        group: policy.group_of(&instance.node),
        path_one_way_ms: route.path.latency_ms,
        jitter_ms,
        loss: 1.0 - delivered,
        request_cost: service.request_cost,
        tops: measured.capacity_tops.unwrap_or(instance.tops),
        utilization: instance.utilization.max(measured.utilization),
        queue_depth: measured.queue_depth,
        service_time_ms: measured.service_time_ms,
        request_rate: measured.request_rate,
        planned_elsewhere_rps: 0.0,
    }
}

/// Why an instance is not a candidate at all, before any metric: its site is not allowed.
pub(super) fn site_excluded(policy: &SteeringPolicy, instance: &Instance) -> Option<String> {
    let c = &policy.constraints;
    if !c.sites.is_empty() && !c.sites.contains(&instance.node) {
        return Some(format!("site {} is not in constraints.sites", instance.node));
    }
    if c.exclude_sites.contains(&instance.node) {
        return Some(format!("site {} is in constraints.excludeSites", instance.node));
    }
    None
}
