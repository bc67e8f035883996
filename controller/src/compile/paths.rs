//! Latency-shortest paths over the topology (Dijkstra), with deterministic tie-breaking so
//! every controller computes the same routes from the same input.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap},
};

use crate::intent::Topology;

/// One step out of a node: the link used and the neighbour reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Hop {
    pub link: usize,
    pub neighbour: String,
    pub latency_ms: f64,
}

/// Shortest paths from one source node.
#[derive(Clone, Debug)]
pub struct ShortestPaths {
    pub source: String,
    /// One-way latency to each reachable node.
    pub distance: BTreeMap<String, f64>,
    /// The first hop from the source towards each reachable node (absent for the source).
    pub first_hop: BTreeMap<String, Hop>,
    /// Predecessor of each node on its shortest path.
    previous: BTreeMap<String, String>,
}

impl ShortestPaths {
    /// Nodes from the source to `target`, both included; `None` if unreachable.
    pub fn path_to(&self, target: &str) -> Option<Vec<String>> {
        self.distance.get(target)?;
        let mut path = vec![target.to_string()];
        let mut at = target;
        while let Some(prev) = self.previous.get(at) {
            path.push(prev.clone());
            at = prev;
        }
        path.reverse();
        Some(path)
    }
}

#[derive(PartialEq)]
struct Candidate {
    distance: f64,
    node: String,
}
impl Eq for Candidate {}
impl Ord for Candidate {
    // Min-heap on distance, then node name, for determinism.
    fn cmp(&self, other: &Self) -> Ordering {
        other.distance.total_cmp(&self.distance).then_with(|| other.node.cmp(&self.node))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Adjacency: for each node, its hops, in link order. `latency` gives each link's one-way
/// latency (declared, or measured when the controller has a measurement).
pub fn adjacency(
    topology: &Topology,
    latency: impl Fn(usize) -> f64,
) -> BTreeMap<String, Vec<Hop>> {
    let mut adj: BTreeMap<String, Vec<Hop>> =
        topology.nodes.iter().map(|n| (n.name.clone(), Vec::new())).collect();
    for (i, link) in topology.links.iter().enumerate() {
        let ms = latency(i);
        adj.entry(link.a.clone()).or_default().push(Hop {
            link: i,
            neighbour: link.b.clone(),
            latency_ms: ms,
        });
        adj.entry(link.b.clone()).or_default().push(Hop {
            link: i,
            neighbour: link.a.clone(),
            latency_ms: ms,
        });
    }
    adj
}

pub fn shortest_paths(adj: &BTreeMap<String, Vec<Hop>>, source: &str) -> ShortestPaths {
    let mut sp = ShortestPaths {
        source: source.to_string(),
        distance: BTreeMap::new(),
        first_hop: BTreeMap::new(),
        previous: BTreeMap::new(),
    };
    let mut heap = BinaryHeap::new();
    sp.distance.insert(source.to_string(), 0.0);
    heap.push(Candidate { distance: 0.0, node: source.to_string() });
    while let Some(Candidate { distance, node }) = heap.pop() {
        if distance > sp.distance[&node] {
            continue;
        }
        for hop in adj.get(&node).into_iter().flatten() {
            let next = distance + hop.latency_ms;
            let better = match sp.distance.get(&hop.neighbour) {
                None => true,
                Some(d) => next < *d,
            };
            if better {
                sp.distance.insert(hop.neighbour.clone(), next);
                sp.previous.insert(hop.neighbour.clone(), node.clone());
                let first = if node == source { hop.clone() } else { sp.first_hop[&node].clone() };
                sp.first_hop.insert(hop.neighbour.clone(), first);
                heap.push(Candidate { distance: next, node: hop.neighbour.clone() });
            }
        }
    }
    sp
}
