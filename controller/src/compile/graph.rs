//! The controller's path engine: latency-shortest paths over the topology, by index.
//!
//! Nodes are `u32` ids in topology order and links keep their position in `topology.links`, so
//! one shortest-path-first (SPF) run over 10,000 nodes and 40,000 links is a few milliseconds:
//! a CSR adjacency, one flat vector of per-node records and a binary heap, with no `String`
//! work in the loops. Names are only looked up at the edges ([`Graph::node_id`],
//! [`Graph::name`]).
//!
//! Everything here is pure and deterministic: the same topology and latencies give the same
//! paths on every controller, bit for bit.
//!
//! # Tie-breaking
//!
//! Two path latencies are *equal* when they differ by at most [`EPSILON`] relative to the larger
//! (sums of the same floats in another order differ in the last bits). Among equal-cost shortest
//! paths to a node, [`Graph::spf`] keeps the predecessor through which the node was first
//! reached at that cost. Nodes are settled in increasing (distance, node id) order and each
//! settled node scans its links in topology order, so the kept predecessor is the first-settled
//! one (the smaller distance, then the smaller node id) and, between parallel links, the one
//! with the lower link index. Only a strictly shorter (by more than the epsilon) path replaces
//! a predecessor. Whether the choice was forced is recorded: [`Spt::is_unique`].

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    iter,
};

use crate::intent::Topology;

/// A node: its position in `topology.nodes`.
pub type NodeId = u32;
/// A link: its position in `topology.links`.
pub type LinkId = u32;

/// Relative tolerance under which two path latencies count as equal.
pub const EPSILON: f64 = 1e-9;

/// Marks "no node" / "no link" in the per-node vectors.
const NONE: u32 = u32::MAX;

/// Whether two finite latencies are equal within [`EPSILON`].
fn same_latency(a: f64, b: f64) -> bool {
    (a - b).abs() <= EPSILON * a.abs().max(b.abs())
}

/// The topology as an index-based graph with one latency per link.
///
/// Links are undirected (the same latency both ways) and may be parallel. A link whose latency
/// is not a finite number >= 0 (NaN, infinite, negative) is never traversed: passing
/// `f64::INFINITY` is how a caller marks a link down.
#[derive(Clone, Debug)]
pub struct Graph {
    names: Vec<String>,
    ids: HashMap<String, NodeId>,
    ends: Vec<(NodeId, NodeId)>,
    latency: Vec<f64>,
    /// Node `n`'s usable links are `adjacency[offsets[n]..offsets[n + 1]]`, in link order.
    offsets: Vec<u32>,
    /// (neighbour, link) pairs.
    adjacency: Vec<(NodeId, LinkId)>,
}

impl Graph {
    /// Builds the graph of `topology`, with `latency_ms(i)` the one-way latency of
    /// `topology.links[i]` (declared, or measured when the caller has a measurement).
    ///
    /// # Panics
    ///
    /// When a link names a node the topology lacks: a validated topology never does.
    pub fn new(topology: &Topology, latency_ms: impl Fn(usize) -> f64) -> Graph {
        assert!(topology.nodes.len() < NONE as usize && topology.links.len() < NONE as usize);
        let names: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
        let ids: HashMap<String, NodeId> =
            names.iter().enumerate().map(|(i, name)| (name.clone(), i as NodeId)).collect();
        let id = |name: &str| -> NodeId {
            *ids.get(name).unwrap_or_else(|| panic!("link end {name:?} is not a topology node"))
        };
        let ends: Vec<(NodeId, NodeId)> =
            topology.links.iter().map(|link| (id(&link.a), id(&link.b))).collect();
        let latency: Vec<f64> = (0..topology.links.len()).map(&latency_ms).collect();
        let usable = |i: usize| {
            let ms = latency[i];
            ms.is_finite() && ms >= 0.0 && ends[i].0 != ends[i].1
        };

        let mut offsets = vec![0u32; names.len() + 1];
        for (i, &(a, b)) in ends.iter().enumerate() {
            if usable(i) {
                offsets[a as usize + 1] += 1;
                offsets[b as usize + 1] += 1;
            }
        }
        for n in 0..names.len() {
            offsets[n + 1] += offsets[n];
        }
        let mut cursor: Vec<u32> = offsets[..names.len()].to_vec();
        let mut adjacency = vec![(NONE, NONE); offsets[names.len()] as usize];
        for (i, &(a, b)) in ends.iter().enumerate() {
            if usable(i) {
                adjacency[cursor[a as usize] as usize] = (b, i as LinkId);
                cursor[a as usize] += 1;
                adjacency[cursor[b as usize] as usize] = (a, i as LinkId);
                cursor[b as usize] += 1;
            }
        }
        Graph { names, ids, ends, latency, offsets, adjacency }
    }

    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    /// The id of the node called `name`.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.ids.get(name).copied()
    }

    /// The name of node `node`. Panics on an id the graph does not have.
    pub fn name(&self, node: NodeId) -> &str {
        &self.names[node as usize]
    }

    pub fn link_count(&self) -> usize {
        self.ends.len()
    }

    /// The nodes `topology.links[link]` joins, as (a, b). Panics on an unknown link.
    pub fn link_ends(&self, link: LinkId) -> (NodeId, NodeId) {
        self.ends[link as usize]
    }

    /// The latency the graph was built with for `link`. Panics on an unknown link.
    pub fn latency(&self, link: LinkId) -> f64 {
        self.latency[link as usize]
    }

    /// The usable links of `node`, as (neighbour, link), in link order.
    pub fn adjacent(&self, node: NodeId) -> &[(NodeId, LinkId)] {
        let n = node as usize;
        &self.adjacency[self.offsets[n] as usize..self.offsets[n + 1] as usize]
    }

    /// Latency of a walk: the left-to-right sum of its links' latencies, starting from 0.
    ///
    /// Every [`Path`] carries exactly this figure, so two paths over the same links of the same
    /// graph have bitwise equal latencies however they were computed.
    pub fn path_latency(&self, links: &[LinkId]) -> f64 {
        links.iter().fold(0.0, |sum, &link| sum + self.latency[link as usize])
    }

    /// Shortest paths from `source` to every node, not traversing what `avoid` lists.
    ///
    /// An avoided (or unknown) source reaches nothing, not even itself. See the module
    /// documentation for the tie-breaking rule.
    pub fn spf(&self, source: NodeId, avoid: &Avoid) -> Spt {
        self.search(source, avoid, None)
    }

    /// Dijkstra from `source`; with `stop`, returns once that node is settled (its distance,
    /// predecessor and equal-cost count are then final; other nodes' may not be).
    fn search(&self, source: NodeId, avoid: &Avoid, stop: Option<NodeId>) -> Spt {
        let mut reach = vec![UNREACHED; self.names.len()];
        if source as usize >= reach.len() || avoid.avoids_node(source) {
            return Spt { source, reach };
        }
        let s = source as usize;
        reach[s] = Reach { distance: 0.0, count: 1, ..UNREACHED };
        let avoids = avoid.avoids_any();
        let mut heap = BinaryHeap::new();
        heap.push(Entry { distance: 0.0, node: source });
        while let Some(Entry { distance, node }) = heap.pop() {
            let u = node as usize;
            if distance > reach[u].distance {
                continue; // a stale entry: `node` was reached shorter since
            }
            if Some(node) == stop {
                break;
            }
            let (count, first) = (reach[u].count, reach[u].first);
            for &(next, link) in self.adjacent(node) {
                let v = next as usize;
                if v == s || avoids && (avoid.avoids_node(next) || avoid.avoids_link(link)) {
                    continue;
                }
                let via = distance + self.latency[link as usize];
                let known = &mut reach[v];
                if known.distance.is_finite() && same_latency(via, known.distance) {
                    // Another equal-cost shortest path: keep the predecessor, count the paths.
                    known.count = known.count.saturating_add(count).min(2);
                } else if via < known.distance {
                    *known = Reach {
                        distance: via,
                        previous: node,
                        link,
                        first: if u == s { link } else { first },
                        count,
                    };
                    heap.push(Entry { distance: via, node: next });
                }
            }
        }
        Spt { source, reach }
    }

    /// The shortest path from `source` through `waypoints`, in order, to `target`: the
    /// concatenated shortest legs, each avoiding `avoid`. The path may revisit a node (a
    /// waypoint on a spur is left the way it was entered). `None` when a leg does not exist,
    /// which includes an avoided source, waypoint or target.
    pub fn constrained_path(
        &self,
        source: NodeId,
        waypoints: &[NodeId],
        target: NodeId,
        avoid: &Avoid,
    ) -> Option<Path> {
        if source as usize >= self.names.len() || avoid.avoids_node(source) {
            return None;
        }
        let mut nodes = vec![source];
        let mut links = Vec::new();
        let mut at = source;
        for &next in waypoints.iter().chain(iter::once(&target)) {
            let leg = self.search(at, avoid, Some(next)).path_to(next)?;
            nodes.extend_from_slice(&leg.nodes[1..]);
            links.extend_from_slice(&leg.links);
            at = next;
        }
        let latency_ms = self.path_latency(&links);
        Some(Path { nodes, links, latency_ms })
    }

    /// A backup for `primary` (a path from `source` through `waypoints` to `target`) that does
    /// not share its failures, for fast failover.
    ///
    /// First the shortest *node-disjoint* backup: it crosses none of the primary's links and
    /// none of its nodes except the source, the target and the waypoints (which it must still
    /// visit; no backup survives their failure). Failing that, the shortest *link-disjoint*
    /// backup: none of the primary's links. `None` when neither exists (a bridge on the way,
    /// e.g. any path in a tree). Both also respect `avoid`.
    ///
    /// The primary is taken as given, so in a "trap" topology, where a disjoint pair exists
    /// but none of its paths is disjoint from this primary, there is no backup (Suurballe's
    /// algorithm would find the pair, at the cost of a longer primary).
    pub fn disjoint_backup(
        &self,
        primary: &Path,
        source: NodeId,
        waypoints: &[NodeId],
        target: NodeId,
        avoid: &Avoid,
    ) -> Option<(Path, Disjointness)> {
        let mut no_links = avoid.clone();
        for &link in &primary.links {
            no_links.avoid_link(link);
        }
        let mut no_nodes = no_links.clone();
        for &node in &primary.nodes {
            if node != source && node != target && !waypoints.contains(&node) {
                no_nodes.avoid_node(node);
            }
        }
        if let Some(path) = self.constrained_path(source, waypoints, target, &no_nodes) {
            return Some((path, Disjointness::Node));
        }
        self.constrained_path(source, waypoints, target, &no_links)
            .map(|path| (path, Disjointness::Link))
    }
}

/// What a backup path shares with its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disjointness {
    /// No link, and no node but the source, the target and the waypoints: survives the
    /// failure of any other node or any link of the primary.
    Node,
    /// No link: survives the failure of any link of the primary, not of its nodes.
    Link,
}

/// Nodes and links a path must not traverse.
///
/// Sized lazily: ids beyond the vectors are not avoided, so [`Avoid::none`] fits every graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Avoid {
    nodes: Vec<bool>,
    links: Vec<bool>,
}

impl Avoid {
    /// Avoids nothing.
    pub fn none() -> Avoid {
        Avoid::default()
    }

    /// Avoids the nodes of `graph` called `nodes` and the links `links`. A name the graph does
    /// not have is ignored: no path could cross that node anyway.
    pub fn new<'a>(
        graph: &Graph,
        nodes: impl IntoIterator<Item = &'a str>,
        links: impl IntoIterator<Item = LinkId>,
    ) -> Avoid {
        let mut avoid = Avoid::none();
        for node in nodes.into_iter().filter_map(|name| graph.node_id(name)) {
            avoid.avoid_node(node);
        }
        for link in links {
            avoid.avoid_link(link);
        }
        avoid
    }

    pub fn avoid_node(&mut self, node: NodeId) {
        set(&mut self.nodes, node);
    }

    pub fn avoid_link(&mut self, link: LinkId) {
        set(&mut self.links, link);
    }

    pub fn avoids_node(&self, node: NodeId) -> bool {
        self.nodes.get(node as usize).copied().unwrap_or(false)
    }

    pub fn avoids_link(&self, link: LinkId) -> bool {
        self.links.get(link as usize).copied().unwrap_or(false)
    }

    fn avoids_any(&self) -> bool {
        !self.nodes.is_empty() || !self.links.is_empty()
    }
}

fn set(bits: &mut Vec<bool>, i: u32) {
    let i = i as usize;
    if bits.len() <= i {
        bits.resize(i + 1, false);
    }
    bits[i] = true;
}

/// A walk through the graph: `links[i]` joins `nodes[i]` and `nodes[i + 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// From the source to the target, both included; never empty.
    pub nodes: Vec<NodeId>,
    pub links: Vec<LinkId>,
    /// [`Graph::path_latency`] of `links` in the graph that computed the path.
    pub latency_ms: f64,
}

/// A shortest-path tree: the result of one [`Graph::spf`].
#[derive(Clone, Debug)]
pub struct Spt {
    source: NodeId,
    reach: Vec<Reach>,
}

/// How the shortest paths reach one node (one vector of these keeps each relaxation on one
/// cache line).
#[derive(Clone, Copy, Debug)]
struct Reach {
    /// Infinite when unreachable.
    distance: f64,
    /// The predecessor and the link from it; `NONE` for the source and unreachable nodes.
    previous: NodeId,
    link: LinkId,
    /// The link leaving the source; `NONE` for the source and unreachable nodes.
    first: LinkId,
    /// Equal-cost shortest paths, saturating at 2; 0 when unreachable.
    count: u8,
}

const UNREACHED: Reach =
    Reach { distance: f64::INFINITY, previous: NONE, link: NONE, first: NONE, count: 0 };

impl Spt {
    pub fn source(&self) -> NodeId {
        self.source
    }

    fn get(&self, node: NodeId) -> &Reach {
        self.reach.get(node as usize).unwrap_or(&UNREACHED)
    }

    /// Latency of the shortest path to `node`; `None` when unreachable.
    pub fn distance(&self, node: NodeId) -> Option<f64> {
        Some(self.get(node).distance).filter(|d| d.is_finite())
    }

    /// The link leaving the source on the shortest path to `node`; `None` for the source
    /// itself and unreachable nodes.
    pub fn first_hop(&self, node: NodeId) -> Option<LinkId> {
        Some(self.get(node).first).filter(|&link| link != NONE)
    }

    /// The last hop of the shortest path to `node`: (predecessor, link from it).
    pub fn previous(&self, node: NodeId) -> Option<(NodeId, LinkId)> {
        let reach = self.get(node);
        (reach.previous != NONE).then_some((reach.previous, reach.link))
    }

    /// Whether `node` has exactly one shortest path (equal within [`EPSILON`]); false when
    /// unreachable. Exact when every traversed link's latency is positive; with zero-latency
    /// links, equal-cost paths may go uncounted.
    ///
    /// Hop-by-hop routing over these latencies (the IGP) follows the path [`Spt::path_to`]
    /// returns exactly when it is unique: otherwise it may split traffic over the others.
    pub fn is_unique(&self, node: NodeId) -> bool {
        self.get(node).count == 1
    }

    /// The shortest path to `node` (the tie-break's choice); `None` when unreachable.
    pub fn path_to(&self, node: NodeId) -> Option<Path> {
        let latency_ms = self.distance(node)?;
        let mut nodes = vec![node];
        let mut links = Vec::new();
        let mut at = node;
        while let Some((prev, link)) = self.previous(at) {
            nodes.push(prev);
            links.push(link);
            at = prev;
        }
        nodes.reverse();
        links.reverse();
        // `latency_ms` is the left-to-right sum along exactly these links, as path_latency.
        Some(Path { nodes, links, latency_ms })
    }
}

/// A heap entry: the min-heap is ordered by (distance, node id).
struct Entry {
    distance: f64,
    node: NodeId,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        other.distance.total_cmp(&self.distance).then_with(|| other.node.cmp(&self.node))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use super::*;
    use crate::intent::{Link, Node, Underlay};

    /// A topology with these nodes (ids in this order) and (a, b, latency) links.
    pub(crate) fn topo(nodes: &[&str], links: &[(&str, &str, f64)]) -> Topology {
        Topology {
            name: "test".into(),
            sr_block: "fc00::/32".parse().unwrap(),
            underlay: Underlay::Static,
            nodes: nodes
                .iter()
                .map(|&name| Node { name: name.into(), ..Node::default() })
                .collect(),
            links: links
                .iter()
                .map(|&(a, b, latency_ms)| Link {
                    a: a.into(),
                    b: b.into(),
                    latency_ms,
                    ..Link::default()
                })
                .collect(),
        }
    }

    /// The graph over declared latencies.
    pub(crate) fn declared(topology: &Topology) -> Graph {
        Graph::new(topology, |i| topology.links[i].latency_ms)
    }

    /// xorshift64*: a tiny seeded PRNG, so the random tests are reproducible.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform in 0..n.
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// Uniform in [0, 1).
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A connected random topology: a random spanning tree plus random extra links (parallel
    /// ones only with `parallel`). `latency` draws each link's declared latency.
    pub(crate) fn random_topology(
        rng: &mut Rng,
        nodes: usize,
        links: usize,
        parallel: bool,
        mut latency: impl FnMut(&mut Rng) -> f64,
    ) -> Topology {
        let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
        let mut pairs = std::collections::HashSet::new();
        let mut list = Vec::with_capacity(links);
        for b in 1..nodes {
            let a = rng.below(b);
            pairs.insert((a, b));
            list.push((a, b));
        }
        while list.len() < links {
            let (a, b) = (rng.below(nodes), rng.below(nodes));
            if a == b {
                continue;
            }
            let pair = (a.min(b), a.max(b));
            if pairs.insert(pair) || parallel {
                list.push((a, b));
            }
        }
        Topology {
            name: "random".into(),
            sr_block: "fc00::/32".parse().unwrap(),
            underlay: Underlay::Static,
            nodes: names
                .iter()
                .map(|name| Node { name: name.clone(), ..Node::default() })
                .collect(),
            links: list
                .into_iter()
                .map(|(a, b)| Link {
                    a: names[a].clone(),
                    b: names[b].clone(),
                    latency_ms: latency(rng),
                    ..Link::default()
                })
                .collect(),
        }
    }

    /// Checks that `path` is a walk of `graph` from its first to its last node.
    pub(crate) fn assert_walk(graph: &Graph, path: &Path) {
        assert_eq!(path.nodes.len(), path.links.len() + 1, "{path:?}");
        for (i, &link) in path.links.iter().enumerate() {
            let (a, b) = graph.link_ends(link);
            let (x, y) = (path.nodes[i], path.nodes[i + 1]);
            assert!((a, b) == (x, y) || (a, b) == (y, x), "link {link} does not join {x}-{y}");
        }
        assert_eq!(path.latency_ms.to_bits(), graph.path_latency(&path.links).to_bits());
    }

    fn ids(graph: &Graph, names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|name| graph.node_id(name).unwrap()).collect()
    }

    fn names(graph: &Graph, path: &Path) -> Vec<String> {
        path.nodes.iter().map(|&n| graph.name(n).to_string()).collect()
    }

    /// s-a-t is 2 ms, s-b-t 6 ms.
    fn square() -> Topology {
        topo(
            &["s", "a", "b", "t"],
            &[("s", "a", 1.0), ("a", "t", 1.0), ("s", "b", 1.0), ("b", "t", 5.0)],
        )
    }

    #[test]
    fn square_with_one_slow_link() {
        let g = declared(&square());
        let [s, a, b, t] = ids(&g, &["s", "a", "b", "t"])[..] else { unreachable!() };
        let spt = g.spf(s, &Avoid::none());
        let path = spt.path_to(t).unwrap();
        assert_eq!(path, Path { nodes: vec![s, a, t], links: vec![0, 1], latency_ms: 2.0 });
        assert_eq!(spt.distance(t), Some(2.0));
        assert_eq!(spt.distance(b), Some(1.0));
        assert_eq!(spt.first_hop(t), Some(0));
        assert_eq!(spt.first_hop(b), Some(2));
        assert_eq!(spt.first_hop(s), None);
        assert_eq!(spt.previous(t), Some((a, 1)));
        assert!(spt.is_unique(t) && spt.is_unique(b) && spt.is_unique(s));
        assert_eq!(
            spt.path_to(s).unwrap(),
            Path { nodes: vec![s], links: vec![], latency_ms: 0.0 }
        );
        // From t the other way round.
        let back = g.spf(t, &Avoid::none());
        assert_eq!(names(&g, &back.path_to(b).unwrap()), ["t", "a", "s", "b"]);
        assert_eq!(back.distance(b), Some(3.0));
    }

    #[test]
    fn equal_cost_paths_break_ties_on_the_first_settled_node_and_are_not_unique() {
        // b's links come first in topology order, but a has the lower id: a is settled first.
        let t = topo(
            &["s", "a", "b", "t"],
            &[("s", "b", 1.0), ("b", "t", 1.0), ("s", "a", 1.0), ("a", "t", 1.0)],
        );
        let g = declared(&t);
        let spt = g.spf(0, &Avoid::none());
        assert_eq!(names(&g, &spt.path_to(3).unwrap()), ["s", "a", "t"]);
        assert_eq!(spt.first_hop(3), Some(2));
        assert!(!spt.is_unique(3));
        assert!(spt.is_unique(1) && spt.is_unique(2));
    }

    #[test]
    fn latencies_equal_within_epsilon_tie() {
        // 0.1 + 0.2 != 0.3 in floats, but the two paths cost the same.
        let t = topo(&["s", "x", "t"], &[("s", "x", 0.1), ("x", "t", 0.2), ("s", "t", 0.3)]);
        let g = declared(&t);
        let spt = g.spf(0, &Avoid::none());
        assert!(!spt.is_unique(2));
        assert_eq!(spt.path_to(2).unwrap().links, [2]);
        // A genuinely shorter path is unique.
        let t = topo(&["s", "x", "t"], &[("s", "x", 0.1), ("x", "t", 0.2), ("s", "t", 0.31)]);
        let spt = declared(&t).spf(0, &Avoid::none());
        assert!(spt.is_unique(2));
        assert_eq!(spt.path_to(2).unwrap().links, [0, 1]);
    }

    #[test]
    fn parallel_links() {
        let t = topo(&["a", "b"], &[("a", "b", 2.0), ("a", "b", 1.0)]);
        let spt = declared(&t).spf(0, &Avoid::none());
        assert_eq!(spt.path_to(1).unwrap().links, [1]);
        assert!(spt.is_unique(1));
        // Equal parallel links: the lower index, not unique.
        let t = topo(&["a", "b"], &[("a", "b", 1.0), ("a", "b", 1.0)]);
        let spt = declared(&t).spf(1, &Avoid::none());
        assert_eq!(spt.path_to(0).unwrap().links, [0]);
        assert!(!spt.is_unique(0));
    }

    #[test]
    fn down_links_and_unreachable_nodes() {
        let t =
            topo(&["s", "a", "t", "lone"], &[("s", "a", 1.0), ("a", "t", 1.0), ("s", "t", 1.0)]);
        let g = Graph::new(&t, |i| if i == 2 { f64::INFINITY } else { t.links[i].latency_ms });
        assert_eq!(g.link_count(), 3);
        assert_eq!(g.adjacent(0), [(1, 0)]);
        let spt = g.spf(0, &Avoid::none());
        assert_eq!(spt.path_to(2).unwrap().links, [0, 1]);
        assert_eq!(spt.distance(3), None);
        assert_eq!(spt.path_to(3), None);
        assert_eq!(spt.first_hop(3), None);
        assert!(!spt.is_unique(3));
        let nan = Graph::new(&t, |i| if i == 0 { f64::NAN } else { -1.0 });
        assert_eq!(nan.spf(0, &Avoid::none()).distance(1), None);
        assert_eq!(g.node_id("nope"), None);
        assert_eq!(g.spf(99, &Avoid::none()).distance(0), None);
    }

    #[test]
    fn waypoints_in_order() {
        let g = declared(&square());
        let [s, a, b, t] = ids(&g, &["s", "a", "b", "t"])[..] else { unreachable!() };
        // Each leg is a shortest path on its own: from b, back through s and a (3 ms < 5 ms).
        let path = g.constrained_path(s, &[b], t, &Avoid::none()).unwrap();
        assert_eq!(
            path,
            Path { nodes: vec![s, b, s, a, t], links: vec![2, 2, 0, 1], latency_ms: 4.0 }
        );
        // Two waypoints in order, the second around a slow link avoided.
        let no_sa = Avoid::new(&g, [], [0]);
        let path = g.constrained_path(s, &[b, a], t, &no_sa).unwrap();
        assert_eq!(names(&g, &path), ["s", "b", "t", "a", "t"]);
        assert_eq!(path.latency_ms, 8.0);
        // A waypoint on a spur is left the way it came.
        let t2 = topo(&["s", "a", "t", "w"], &[("s", "a", 1.0), ("a", "t", 1.0), ("a", "w", 1.0)]);
        let g2 = declared(&t2);
        let path = g2.constrained_path(0, &[3], 2, &Avoid::none()).unwrap();
        assert_eq!(names(&g2, &path), ["s", "a", "w", "a", "t"]);
        assert_eq!(path.links, [0, 2, 2, 1]);
        // No waypoints: the shortest path; source = target: the one-node path.
        assert_eq!(g.constrained_path(s, &[], t, &Avoid::none()).unwrap().nodes, [s, a, t]);
        assert_eq!(g.constrained_path(s, &[], s, &Avoid::none()).unwrap().nodes, [s]);
    }

    #[test]
    fn avoided_nodes_and_links() {
        let g = declared(&square());
        let [s, a, b, t] = ids(&g, &["s", "a", "b", "t"])[..] else { unreachable!() };
        let no_a = Avoid::new(&g, ["a", "unknown"], []);
        assert_eq!(names(&g, &g.constrained_path(s, &[], t, &no_a).unwrap()), ["s", "b", "t"]);
        let no_link = Avoid::new(&g, [], [1]);
        assert_eq!(g.constrained_path(s, &[], t, &no_link).unwrap().links, [2, 3]);
        // An avoided source, target or waypoint: no path.
        assert_eq!(g.constrained_path(a, &[], t, &no_a), None);
        assert_eq!(g.constrained_path(s, &[], a, &no_a), None);
        assert_eq!(g.constrained_path(s, &[a], t, &no_a), None);
        assert_eq!(g.spf(a, &no_a).distance(a), None);
        assert_eq!(g.spf(s, &no_a).distance(a), None);
        // Everything around t cut.
        let cut = Avoid::new(&g, [], [1, 3]);
        assert_eq!(g.constrained_path(s, &[], t, &cut), None);
        assert_eq!(g.spf(s, &cut).distance(b), Some(1.0));
    }

    #[test]
    fn node_disjoint_backup() {
        let g = declared(&square());
        let primary = g.constrained_path(0, &[], 3, &Avoid::none()).unwrap();
        let (backup, kind) = g.disjoint_backup(&primary, 0, &[], 3, &Avoid::none()).unwrap();
        assert_eq!(kind, Disjointness::Node);
        assert_eq!(names(&g, &backup), ["s", "b", "t"]);
        assert_eq!(backup.latency_ms, 6.0);
    }

    /// s reaches t only through m, over two link-disjoint halves on each side.
    fn bowtie() -> Topology {
        topo(
            &["s", "a", "b", "m", "c", "d", "t"],
            &[
                ("s", "a", 1.0),
                ("a", "m", 1.0),
                ("s", "b", 2.0),
                ("b", "m", 2.0),
                ("m", "c", 1.0),
                ("c", "t", 1.0),
                ("m", "d", 2.0),
                ("d", "t", 2.0),
            ],
        )
    }

    #[test]
    fn link_disjoint_backup_through_a_cut_node() {
        let g = declared(&bowtie());
        let primary = g.constrained_path(0, &[], 6, &Avoid::none()).unwrap();
        assert_eq!(names(&g, &primary), ["s", "a", "m", "c", "t"]);
        let (backup, kind) = g.disjoint_backup(&primary, 0, &[], 6, &Avoid::none()).unwrap();
        assert_eq!(kind, Disjointness::Link);
        assert_eq!(names(&g, &backup), ["s", "b", "m", "d", "t"]);
        // With m as a waypoint, sharing it is allowed: node-disjoint.
        let m = g.node_id("m").unwrap();
        let primary = g.constrained_path(0, &[m], 6, &Avoid::none()).unwrap();
        let (backup, kind) = g.disjoint_backup(&primary, 0, &[m], 6, &Avoid::none()).unwrap();
        assert_eq!(kind, Disjointness::Node);
        assert_eq!(names(&g, &backup), ["s", "b", "m", "d", "t"]);
    }

    #[test]
    fn node_disjoint_backup_still_avoids_the_primary_links() {
        // Primary s-t direct; no intermediate node to avoid, but the link must go too.
        let t = topo(&["s", "t", "x"], &[("s", "t", 1.0), ("s", "x", 5.0), ("x", "t", 5.0)]);
        let g = declared(&t);
        let primary = g.constrained_path(0, &[], 1, &Avoid::none()).unwrap();
        let (backup, kind) = g.disjoint_backup(&primary, 0, &[], 1, &Avoid::none()).unwrap();
        assert_eq!(
            (names(&g, &backup), kind),
            (vec!["s".into(), "x".into(), "t".into()], Disjointness::Node)
        );
    }

    #[test]
    fn no_backup_on_a_tree() {
        let t = topo(
            &["r", "a", "b", "c", "d"],
            &[("r", "a", 1.0), ("r", "b", 1.0), ("a", "c", 1.0), ("a", "d", 1.0)],
        );
        let g = declared(&t);
        for (s, target) in [(2, 3), (2, 4), (3, 2), (0, 2)] {
            let primary = g.constrained_path(s, &[], target, &Avoid::none()).unwrap();
            assert_eq!(g.disjoint_backup(&primary, s, &[], target, &Avoid::none()), None);
        }
        // The trivial path (source = target) has nothing to share: its backup is itself.
        let primary = g.constrained_path(1, &[], 1, &Avoid::none()).unwrap();
        let (backup, kind) = g.disjoint_backup(&primary, 1, &[], 1, &Avoid::none()).unwrap();
        assert_eq!((backup, kind), (primary, Disjointness::Node));
    }

    /// Every simple path from `source`, by DFS: (target, latency) pairs.
    fn all_simple_paths(graph: &Graph, source: NodeId) -> Vec<(NodeId, f64)> {
        fn walk(
            graph: &Graph,
            at: NodeId,
            on: &mut Vec<bool>,
            links: &mut Vec<LinkId>,
            out: &mut Vec<(NodeId, f64)>,
        ) {
            out.push((at, graph.path_latency(links)));
            for &(next, link) in graph.adjacent(at) {
                if !on[next as usize] {
                    on[next as usize] = true;
                    links.push(link);
                    walk(graph, next, on, links, out);
                    links.pop();
                    on[next as usize] = false;
                }
            }
        }
        let mut on = vec![false; graph.node_count()];
        on[source as usize] = true;
        let mut out = Vec::new();
        walk(graph, source, &mut on, &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn random_spf_matches_brute_force_distances_and_path_counts() {
        let mut rng = Rng::new(7);
        for round in 0..200 {
            // Small latencies from a small set, to make many ties (exact for integers,
            // within the epsilon for tenths).
            let tenths = round % 2 == 1;
            let topology = random_topology(&mut rng, 8, 14, true, |rng| {
                let k = 1 + rng.below(4) as u32;
                if tenths { f64::from(k) / 10.0 } else { f64::from(k) }
            });
            let g = declared(&topology);
            for source in 0..g.node_count() as NodeId {
                let spt = g.spf(source, &Avoid::none());
                let paths = all_simple_paths(&g, source);
                for target in 0..g.node_count() as NodeId {
                    let lengths: Vec<f64> =
                        paths.iter().filter(|p| p.0 == target).map(|p| p.1).collect();
                    let best = lengths.iter().copied().fold(f64::INFINITY, f64::min);
                    let ties = lengths.iter().filter(|&&l| same_latency(l, best)).count();
                    let found = spt.distance(target).unwrap();
                    assert!(same_latency(found, best), "round {round}: {found} vs {best}");
                    assert_eq!(
                        spt.is_unique(target),
                        ties == 1,
                        "round {round} {source}->{target}"
                    );
                    let path = spt.path_to(target).unwrap();
                    assert_walk(&g, &path);
                    assert_eq!(path.latency_ms.to_bits(), found.to_bits());
                    assert_eq!(path.links.first().copied(), spt.first_hop(target));
                }
            }
        }
    }

    #[test]
    fn random_backups_are_disjoint() {
        let mut rng = Rng::new(42);
        let (mut node, mut link, mut none) = (0, 0, 0);
        for _ in 0..40 {
            let n = 20 + rng.below(30);
            let topology =
                random_topology(&mut rng, n, n + n / 2, false, |rng| 1.0 + 9.0 * rng.unit());
            let g = declared(&topology);
            for _ in 0..50 {
                let (s, t) = (rng.below(n) as NodeId, rng.below(n) as NodeId);
                let waypoints: Vec<NodeId> =
                    (0..rng.below(3)).map(|_| rng.below(n) as NodeId).collect();
                let Some(primary) = g.constrained_path(s, &waypoints, t, &Avoid::none()) else {
                    continue;
                };
                assert_walk(&g, &primary);
                let Some((backup, kind)) =
                    g.disjoint_backup(&primary, s, &waypoints, t, &Avoid::none())
                else {
                    none += 1;
                    continue;
                };
                assert_walk(&g, &backup);
                assert_eq!((backup.nodes[0], *backup.nodes.last().unwrap()), (s, t));
                assert!(backup.links.iter().all(|l| !primary.links.contains(l)));
                // The waypoints are visited, in order (a repeated waypoint is one visit).
                let mut at = 0;
                for w in &waypoints {
                    at += backup.nodes[at..].iter().position(|n| n == w).unwrap();
                }
                match kind {
                    Disjointness::Node => {
                        node += 1;
                        let shared = |n: &NodeId| *n == s || *n == t || waypoints.contains(n);
                        assert!(
                            backup.nodes.iter().all(|n| shared(n) || !primary.nodes.contains(n))
                        );
                    }
                    Disjointness::Link => {
                        link += 1;
                        // No node-disjoint path exists, by the same search.
                        let mut avoid = Avoid::none();
                        primary.links.iter().for_each(|&l| avoid.avoid_link(l));
                        for &n in &primary.nodes {
                            if n != s && n != t && !waypoints.contains(&n) {
                                avoid.avoid_node(n);
                            }
                        }
                        assert_eq!(g.constrained_path(s, &waypoints, t, &avoid), None);
                    }
                }
            }
        }
        println!("backups: {node} node-disjoint, {link} link-disjoint, {none} none");
        assert!(node > 0 && link > 0 && none > 0, "{node} {link} {none}");
    }

    /// Prints the cost of one SPF at the controller's scale target (no timed assertion).
    #[test]
    fn spf_time_on_10k_nodes_40k_links() {
        let mut rng = Rng::new(10_000);
        let topology =
            random_topology(&mut rng, 10_000, 40_000, false, |rng| 1.0 + 19.0 * rng.unit());
        let start = Instant::now();
        let g = declared(&topology);
        let built = start.elapsed();
        let runs = 50;
        let mut fastest = std::time::Duration::MAX;
        let start = Instant::now();
        let mut reached = 0;
        for i in 0..runs {
            let one = Instant::now();
            let spt = g.spf(i * 199, &Avoid::none());
            fastest = fastest.min(one.elapsed());
            reached += (0..10_000).filter(|&n| spt.distance(n).is_some()).count();
        }
        let spf = start.elapsed() / runs;
        assert_eq!(reached, 10_000 * runs as usize);
        let start = Instant::now();
        let path = g.constrained_path(0, &[5_000], 9_999, &Avoid::none()).unwrap();
        let leg = start.elapsed();
        println!(
            "10k nodes / 40k links: graph built in {built:?}, one SPF {fastest:?} \
             (mean {spf:?} with the reachability check), \
             a two-leg constrained path ({} hops) {leg:?}",
            path.links.len()
        );
    }
}
