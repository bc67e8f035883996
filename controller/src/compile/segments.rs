//! Segment-list minimisation: the fewest SIDs that force packets along a chosen path.
//!
//! Between segments, packets follow the underlay's own routing: the IGP (or cats' static
//! underlay), i.e. shortest paths over the *declared* latencies without constraints. A path the
//! controller wants (over measured latencies, through waypoints, around failures) needs a
//! segment wherever it leaves what the IGP would do on its own, and wherever the IGP has
//! several equal-cost paths and could split traffic over the wrong one. This is what SR-TE
//! controllers and TI-LFA do; fewer segments mean smaller headers and fit
//! `MAX_SEGMENTS`.

use std::{collections::HashMap, iter};

use super::graph::{Avoid, Graph, LinkId, NodeId, Path, Spt};

/// One SID of a segment list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `node`'s End SID: reach it by IGP shortest path.
    Node(NodeId),
    /// `node`'s End.X SID over `link`: reach `node` by IGP shortest path, then cross `link`
    /// whatever the IGP thinks of it.
    Adjacency { node: NodeId, link: LinkId },
}

/// The underlay's routing: shortest paths over declared latencies, one cached tree per
/// segment start.
///
/// The cache grows by one [`Spt`] (about 21 bytes per node) per distinct node a segment starts
/// from; keep one `Igp` per compile, not forever.
#[derive(Clone, Debug)]
pub struct Igp {
    graph: Graph,
    cache: HashMap<NodeId, Spt>,
}

impl Igp {
    /// `graph` must be built over the latencies the underlay routes on (declared ones).
    pub fn new(graph: Graph) -> Igp {
        Igp { graph, cache: HashMap::new() }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The underlay's shortest-path tree from `node`.
    pub fn spt(&mut self, node: NodeId) -> &Spt {
        let graph = &self.graph;
        self.cache.entry(node).or_insert_with(|| graph.spf(node, &Avoid::none()))
    }
}

/// The fewest segments (greedily) that force packets from `path`'s first node along exactly
/// `path`, given the underlay's routing `igp` (built from the same topology).
///
/// From the current node c = p_i, take the furthest p_j such that p_i..p_j is the *unique* IGP
/// shortest path from c to p_j, emit `Node(p_j)` and continue from p_j. When even the single
/// link to p_{i+1} is not (a longer or parallel link, or an equal-cost tie), emit
/// `Adjacency { node: c, link }` and continue from p_{i+1}; an `Adjacency` right after
/// `Node(c)` replaces it, since the End.X SID is routed to c as its End SID is. Unique
/// shortest paths are closed under sub-paths, so the furthest reach is found by one scan.
///
/// A final `Node(egress)` is left out: the caller always appends the egress's compute SID,
/// which the underlay routes to the egress the same way. So a path the IGP would take anyway
/// gives an empty list. An `Adjacency` at the path's first node is that node's own End.X SID
/// (the headend processes it locally).
pub fn minimise(path: &Path, igp: &mut Igp) -> Vec<Segment> {
    let mut segments = Vec::new();
    let nodes = &path.nodes;
    debug_assert_eq!(nodes.len(), path.links.len() + 1);
    let Some(&target) = nodes.last() else { return segments };
    let mut i = 0;
    while i + 1 < nodes.len() {
        let at = nodes[i];
        let spt = igp.spt(at);
        // p_i..p_{j+1} is the unique IGP path iff p_i..p_j is, p_{j+1} has one shortest path,
        // and its last hop is the path's: exact, without comparing latencies.
        let mut j = i;
        while j + 1 < nodes.len()
            && spt.is_unique(nodes[j + 1])
            && spt.previous(nodes[j + 1]) == Some((nodes[j], path.links[j]))
        {
            j += 1;
        }
        if j > i {
            segments.push(Segment::Node(nodes[j]));
            i = j;
        } else {
            let adjacency = Segment::Adjacency { node: at, link: path.links[i] };
            match segments.last_mut() {
                Some(last) if *last == Segment::Node(at) => *last = adjacency,
                _ => segments.push(adjacency),
            }
            i += 1;
        }
    }
    if segments.last() == Some(&Segment::Node(target)) {
        segments.pop();
    }
    segments
}

/// Where packets go with `segments` from `source`, the egress `target` last (as its compute
/// SID would take them): the inverse of [`minimise`], for checks.
///
/// `None` when a leg between segments is unreachable or has several equal-cost IGP paths (the
/// list would not pin one path), or an adjacency's link does not leave its node. The path's
/// latency is over the IGP graph's latencies.
pub fn expand(segments: &[Segment], source: NodeId, target: NodeId, igp: &mut Igp) -> Option<Path> {
    let mut nodes = vec![source];
    let mut links = Vec::new();
    let mut at = source;
    for segment in segments.iter().chain(iter::once(&Segment::Node(target))) {
        let node = match *segment {
            Segment::Node(node) | Segment::Adjacency { node, .. } => node,
        };
        let spt = igp.spt(at);
        if !spt.is_unique(node) {
            return None;
        }
        let leg = spt.path_to(node)?;
        nodes.extend_from_slice(&leg.nodes[1..]);
        links.extend_from_slice(&leg.links);
        at = node;
        if let Segment::Adjacency { link, .. } = *segment {
            if link as usize >= igp.graph().link_count() {
                return None;
            }
            let (a, b) = igp.graph().link_ends(link);
            at = match node {
                _ if node == a => b,
                _ if node == b => a,
                _ => return None,
            };
            nodes.push(at);
            links.push(link);
        }
    }
    let latency_ms = igp.graph().path_latency(&links);
    Some(Path { nodes, links, latency_ms })
}

#[cfg(test)]
mod tests {
    use super::{Segment::*, *};
    use crate::compile::graph::tests::{Rng, assert_walk, declared, random_topology, topo};

    fn igp_of(topology: &crate::intent::Topology) -> Igp {
        Igp::new(declared(topology))
    }

    /// The path through these node names, over the lowest-index link between each pair.
    fn path(igp: &Igp, names: &[&str]) -> Path {
        let g = igp.graph();
        let nodes: Vec<NodeId> = names.iter().map(|n| g.node_id(n).unwrap()).collect();
        let links: Vec<LinkId> = nodes
            .windows(2)
            .map(|w| g.adjacent(w[0]).iter().find(|(n, _)| *n == w[1]).unwrap().1)
            .collect();
        let latency_ms = g.path_latency(&links);
        Path { nodes, links, latency_ms }
    }

    fn round_trip_names(igp: &mut Igp, names: &[&str]) -> Vec<Segment> {
        let p = path(igp, names);
        round_trip(igp, &p)
    }

    fn round_trip(igp: &mut Igp, p: &Path) -> Vec<Segment> {
        let segments = minimise(p, igp);
        let back = expand(&segments, p.nodes[0], *p.nodes.last().unwrap(), igp);
        assert_eq!(back.as_ref(), Some(p), "{segments:?}");
        segments
    }

    /// s-a-t is 2 ms, s-b-t 6 ms.
    fn square() -> crate::intent::Topology {
        topo(
            &["s", "a", "b", "t"],
            &[("s", "a", 1.0), ("a", "t", 1.0), ("s", "b", 1.0), ("b", "t", 5.0)],
        )
    }

    #[test]
    fn the_igp_path_needs_no_segment() {
        let mut igp = igp_of(&square());
        assert_eq!(round_trip_names(&mut igp, &["s", "a", "t"]), []);
        assert_eq!(round_trip_names(&mut igp, &["s", "a"]), []);
        assert_eq!(round_trip_names(&mut igp, &["s"]), []);
    }

    #[test]
    fn the_slow_side_of_the_square_needs_its_corner() {
        let mut igp = igp_of(&square());
        // s-b is the IGP path to b; b-t is not (b-s-a-t is 3 ms), but it is b's only link to t.
        assert_eq!(round_trip_names(&mut igp, &["s", "b", "t"]), [Adjacency { node: 2, link: 3 }]);
        // Back the other way: t-a-s-b is the IGP path to b.
        assert_eq!(round_trip_names(&mut igp, &["t", "b", "s"]), [Adjacency { node: 3, link: 3 }]);
    }

    #[test]
    fn waypoints_become_node_segments() {
        // A line s-a-w-b-t with a shortcut s-t: the IGP goes straight.
        let t = topo(
            &["s", "a", "w", "b", "t"],
            &[("s", "a", 1.0), ("a", "w", 1.0), ("w", "b", 1.0), ("b", "t", 1.0), ("s", "t", 1.0)],
        );
        let mut igp = igp_of(&t);
        // s..w is the unique IGP path to w; w..t is the unique IGP path from w.
        assert_eq!(round_trip_names(&mut igp, &["s", "a", "w", "b", "t"]), [Node(2)]);
        // A spur waypoint, left the way it was entered.
        let t = topo(&["s", "a", "t", "w"], &[("s", "a", 1.0), ("a", "t", 1.0), ("a", "w", 1.0)]);
        let mut igp = igp_of(&t);
        assert_eq!(round_trip_names(&mut igp, &["s", "a", "w", "a", "t"]), [Node(3)]);
    }

    #[test]
    fn an_ecmp_tie_needs_an_extra_segment() {
        // Two equal ways from s to t: the IGP could split; naming a pins the path.
        let t = topo(
            &["s", "a", "b", "t"],
            &[("s", "a", 1.0), ("a", "t", 1.0), ("s", "b", 1.0), ("b", "t", 1.0)],
        );
        let mut igp = igp_of(&t);
        assert_eq!(round_trip_names(&mut igp, &["s", "a", "t"]), [Node(1)]);
        assert_eq!(round_trip_names(&mut igp, &["s", "b", "t"]), [Node(2)]);
        // Even the tie-break's own choice would not be forced without it.
        assert_eq!(expand(&[], 0, 3, &mut igp), None);
    }

    #[test]
    fn a_longer_or_parallel_link_needs_an_adjacency() {
        // The direct s-t link is longer than s-a-t.
        let t = topo(&["s", "a", "t"], &[("s", "a", 1.0), ("a", "t", 1.0), ("s", "t", 5.0)]);
        let mut igp = igp_of(&t);
        assert_eq!(round_trip_names(&mut igp, &["s", "t"]), [Adjacency { node: 0, link: 2 }]);
        // After a node segment to a, a's adjacency replaces it: a is reached either way.
        let t = topo(
            &["s", "a", "b", "t"],
            &[("s", "a", 1.0), ("a", "b", 1.0), ("b", "t", 1.0), ("a", "b", 3.0)],
        );
        let mut igp = igp_of(&t);
        let mut slow = path(&igp, &["s", "a", "b", "t"]);
        slow.links[1] = 3;
        slow.latency_ms = igp.graph().path_latency(&slow.links);
        assert_eq!(round_trip(&mut igp, &slow), [Adjacency { node: 1, link: 3 }]);
        // Two equal parallel links: the IGP splits, so even the first needs an adjacency.
        let t = topo(
            &["s", "a", "b", "t"],
            &[("s", "a", 1.0), ("a", "b", 1.0), ("b", "t", 1.0), ("a", "b", 1.0)],
        );
        let mut igp = igp_of(&t);
        let p = path(&igp, &["s", "a", "b", "t"]);
        assert_eq!(round_trip(&mut igp, &p), [Adjacency { node: 1, link: 1 }]);
    }

    #[test]
    fn a_final_adjacency_is_kept() {
        let t = topo(&["s", "t"], &[("s", "t", 1.0), ("s", "t", 2.0)]);
        let mut igp = igp_of(&t);
        let p = Path { nodes: vec![0, 1], links: vec![1], latency_ms: 2.0 };
        assert_eq!(round_trip(&mut igp, &p), [Adjacency { node: 0, link: 1 }]);
    }

    #[test]
    fn expand_rejects_what_does_not_pin_a_path() {
        let t = topo(&["s", "t", "x"], &[("s", "t", 1.0)]);
        let mut igp = igp_of(&t);
        assert_eq!(expand(&[Node(2)], 0, 1, &mut igp), None);
        assert_eq!(expand(&[Adjacency { node: 2, link: 0 }], 0, 1, &mut igp), None);
        assert_eq!(expand(&[Adjacency { node: 0, link: 9 }], 0, 1, &mut igp), None);
    }

    /// Paths the controller would want (over measured latencies, through waypoints, around
    /// avoided nodes, as backups) are reproduced exactly by their minimised segment lists.
    #[test]
    fn random_paths_round_trip_through_their_segments() {
        let mut rng = Rng::new(2024);
        let (mut checked, mut segments_total, mut links_total) = (0, 0, 0);
        for round in 0..60 {
            let n = 10 + rng.below(40);
            let integer = round % 3 == 0; // integer latencies: many ECMP ties
            let topology = random_topology(&mut rng, n, 2 * n, round % 4 == 1, |rng| {
                if integer { 1.0 + rng.below(3) as f64 } else { 1.0 + 9.0 * rng.unit() }
            });
            let factors: Vec<f64> = (0..topology.links.len()).map(|_| 0.5 + rng.unit()).collect();
            let measured = Graph::new(&topology, |i| topology.links[i].latency_ms * factors[i]);
            let mut igp = igp_of(&topology);
            for _ in 0..40 {
                let (s, t) = (rng.below(n) as NodeId, rng.below(n) as NodeId);
                let waypoints: Vec<NodeId> =
                    (0..rng.below(3)).map(|_| rng.below(n) as NodeId).collect();
                let mut avoid = Avoid::none();
                if rng.below(2) == 0 {
                    avoid.avoid_node(rng.below(n) as NodeId);
                }
                let Some(primary) = measured.constrained_path(s, &waypoints, t, &avoid) else {
                    continue;
                };
                let backup = measured.disjoint_backup(&primary, s, &waypoints, t, &avoid);
                for p in iter::once(primary).chain(backup.map(|b| b.0)) {
                    assert_walk(&measured, &p);
                    let segments = minimise(&p, &mut igp);
                    let back = expand(&segments, s, t, &mut igp)
                        .unwrap_or_else(|| panic!("{p:?} -> {segments:?} pins no path"));
                    assert_eq!((&back.nodes, &back.links), (&p.nodes, &p.links), "{segments:?}");
                    assert!(segments.len() <= p.links.len());
                    // The IGP's own path, when unique, needs nothing.
                    if waypoints.is_empty() && igp.spt(s).is_unique(t) {
                        let own = igp.spt(s).path_to(t).unwrap();
                        assert_eq!(minimise(&own, &mut igp), []);
                    }
                    checked += 1;
                    segments_total += segments.len();
                    links_total += p.links.len();
                }
            }
        }
        println!("{checked} paths, {links_total} links, {segments_total} segments");
        assert!(checked > 1000 && segments_total > 0);
    }
}
