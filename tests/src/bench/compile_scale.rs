//! How long the controller's compile takes as the network grows: 100, 1,000 and 10,000 nodes
//! (four links per node on average, one service per ten nodes), from scratch and after one
//! metric change (the incremental path the daemon takes every poll).
//!
//! The generated intents are built as values, not YAML, so parsing is not timed. The
//! underlay is `external` (an IGP routes the SR block): with cats' static underlay every node
//! would get a route to every other node, 10^8 routes at 10,000 nodes, which nobody runs.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use cats_controller::{
    compile::{Compiler, InstanceMetric, LinkMetric, Metrics},
    intent::{
        ComputeService, Instance, Intent, Link, Node, PortMatch, Protocol, Role, SteeringPolicy,
        Topology, Underlay,
    },
};
use ipnetwork::{IpNetwork, Ipv6Network};

/// A small deterministic PRNG (xorshift64*), so every run compiles the same networks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shape of one generated network.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub nodes: usize,
    pub links: usize,
    pub services: usize,
    /// One node in this many is an ingress, one in ten an egress site.
    pub ingress_every: usize,
    pub instances_per_service: usize,
    /// Ingress nodes each service is steered at.
    pub ingress_per_service: usize,
}

impl Shape {
    pub fn of(nodes: usize) -> Shape {
        Shape {
            nodes,
            links: nodes * 4,
            services: (nodes / 10).max(1),
            ingress_every: 100,
            instances_per_service: 4,
            ingress_per_service: 10,
        }
    }
}

/// A connected random network: a random tree, then random extra links up to `links`; 1 to
/// 20 ms per link. Egress sites host the instances, each service is steered at a few ingress
/// nodes with a latency bound and a locality preference.
pub fn generate(shape: Shape, seed: u64) -> Intent {
    let mut rng = Rng(seed | 1);
    let name = |i: usize| format!("n{i}");
    let ingress: Vec<usize> = (0..shape.nodes).step_by(shape.ingress_every).collect();
    let is_egress = |i: usize| i % 10 == 5;
    let egress: Vec<usize> = (0..shape.nodes).filter(|&i| is_egress(i)).collect();
    let nodes: Vec<Node> = (0..shape.nodes)
        .map(|i| {
            let mut roles = vec![Role::Transit];
            let mut prefixes = Vec::new();
            let mut headend_interfaces = Vec::new();
            if ingress.contains(&i) {
                roles = vec![Role::Ingress];
                headend_interfaces.push("clients".to_string());
            } else if is_egress(i) {
                roles = vec![Role::Egress];
                let net = Ipv6Addr::new(0xfd00, i as u16, 0, 0, 0, 0, 0, 0);
                prefixes.push(IpNetwork::V6(Ipv6Network::new(net, 64).expect("valid")));
            }
            Node {
                name: name(i),
                index: i as u16 + 1,
                roles,
                prefixes,
                headend_interfaces,
                ..Default::default()
            }
        })
        .collect();
    let mut pairs = std::collections::HashSet::new();
    let mut links = Vec::with_capacity(shape.links);
    let mut link = |a: usize, b: usize, rng: &mut Rng, links: &mut Vec<Link>| {
        if a != b && pairs.insert((a.min(b), a.max(b))) {
            links.push(Link {
                a: name(a),
                b: name(b),
                latency_ms: rng.uniform(1.0, 20.0),
                a_interface: format!("to{b}"),
                b_interface: format!("to{a}"),
            });
        }
    };
    for i in 1..shape.nodes {
        let j = rng.below(i);
        link(i, j, &mut rng, &mut links);
    }
    let wanted = shape.links.min(shape.nodes * (shape.nodes - 1) / 2);
    while links.len() < wanted {
        let (a, b) = (rng.below(shape.nodes), rng.below(shape.nodes));
        link(a, b, &mut rng, &mut links);
    }
    let mut services = Vec::new();
    let mut policies = Vec::new();
    for s in 0..shape.services {
        let cs_id = s as u16 + 1;
        let service = format!("svc{cs_id}");
        let instances = (0..shape.instances_per_service)
            .map(|k| {
                let site = egress[rng.below(egress.len())];
                Instance {
                    name: format!("{service}-{k}"),
                    id: k as u32 + 1,
                    node: name(site),
                    address: Some(Ipv6Addr::new(
                        0xfd00,
                        site as u16,
                        0,
                        0,
                        0,
                        0,
                        cs_id,
                        k as u16 + 1,
                    )),
                    address4: None,
                    tops: rng.uniform(1.0, 100.0),
                    utilization: 0.0,
                    drain: false,
                }
            })
            .collect::<Vec<_>>();
        let at: Vec<String> = (0..shape.ingress_per_service.min(ingress.len()))
            .map(|k| name(ingress[(s + k * 7) % ingress.len()]))
            .collect();
        let mut policy = SteeringPolicy {
            name: format!("{service}-policy"),
            service: service.clone(),
            ingress: at,
            ..Default::default()
        };
        policy.constraints.max_latency_ms = Some(400.0);
        services.push(ComputeService {
            name: service,
            cs_id,
            addresses: vec![IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, cs_id, 0, 0, 0, 0, 1))],
            ports: vec![PortMatch { protocol: Protocol::Udp, port: 7000 }],
            request_cost: 0.05,
            instances,
            pod_selector: None,
        });
        policies.push(policy);
    }
    Intent {
        topology: Topology {
            name: "generated".into(),
            sr_block: "fc00::/32".parse().expect("valid"),
            underlay: Underlay::External,
            nodes,
            links,
        },
        services,
        policies,
    }
}

/// One row of the table.
pub struct Row {
    pub shape: Shape,
    pub full: Duration,
    pub instance_change: Duration,
    pub instance_changed_nodes: usize,
    pub link_change: Duration,
    /// All disjoint backups of the used instances, once (the daemon spreads them over polls).
    pub backups: Duration,
    /// Used instances with a backup, of all used instances.
    pub with_backup: (usize, usize),
}

/// Median of `rounds` runs of each: a full compile, one instance's utilisation changing, one
/// link's latency changing.
pub fn measure(shape: Shape, rounds: usize) -> Result<Row> {
    let intent = generate(shape, 0xca75);
    let (mut full, mut inst, mut link) = (Vec::new(), Vec::new(), Vec::new());
    let mut changed_nodes = 0;
    let mut backups = Duration::ZERO;
    let mut with_backup = (0, 0);
    for round in 0..rounds {
        let start = Instant::now();
        let mut compiler = Compiler::new(intent.clone(), 1)?;
        compiler.update(&Metrics::default(), 1, 0)?;
        full.push(start.elapsed());
        if round == 0 {
            let start = Instant::now();
            compiler.fill_backups(Duration::MAX, 2)?;
            backups = start.elapsed();
            with_backup = compiler
                .decisions()
                .iter()
                .flat_map(|s| &s.decisions)
                .filter(|d| d.weight > 0)
                .map(|d| d.backup_path.is_some())
                .fold((0, 0), |(yes, all), b| (yes + usize::from(b), all + 1));
        }

        let mut metrics = Metrics::default();
        // An instance that has flows, so the change must move weights.
        let decisions = compiler.decisions();
        let busy = decisions[round % decisions.len()]
            .decisions
            .iter()
            .find(|d| d.weight > 0)
            .map(|d| d.instance.clone())
            .expect("every service has an instance with flows");
        metrics.instances.insert(busy, InstanceMetric { utilization: 0.9, ..Default::default() });
        let start = Instant::now();
        let changed = compiler.update(&metrics, 2, 1_000_000)?;
        inst.push(start.elapsed());
        changed_nodes = changed.len();
        ensure!(!changed.is_empty(), "a busy instance changed no weight");

        metrics.links.insert(
            round % intent.topology.links.len(),
            LinkMetric { one_way_ms: 50.0, ..Default::default() },
        );
        let start = Instant::now();
        compiler.update(&metrics, 3, 2_000_000)?;
        link.push(start.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    Ok(Row {
        shape,
        full: median(&mut full),
        instance_change: median(&mut inst),
        instance_changed_nodes: changed_nodes,
        link_change: median(&mut link),
        backups,
        with_backup,
    })
}

pub fn run(sizes: &[usize], rounds: usize) -> Result<()> {
    println!("compile time (median of {rounds}, one core, release build; underlay external)");
    println!(
        "{:>7} {:>7} {:>9} {:>7} | {:>10} | {:>16} {:>5} | {:>12} | {:>10} {:>13}",
        "nodes",
        "links",
        "services",
        "ingress",
        "full",
        "instance change",
        "nodes",
        "link change",
        "backups",
        "with backup"
    );
    for &n in sizes {
        let row = measure(Shape::of(n), rounds)?;
        let s = row.shape;
        println!(
            "{:>7} {:>7} {:>9} {:>7} | {:>8.1}ms | {:>14.2}ms {:>5} | {:>10.1}ms | {:>9.2}s {:>6}/{:<6}",
            s.nodes,
            s.links,
            s.services,
            s.nodes.div_ceil(s.ingress_every),
            row.full.as_secs_f64() * 1e3,
            row.instance_change.as_secs_f64() * 1e3,
            row.instance_changed_nodes,
            row.link_change.as_secs_f64() * 1e3,
            row.backups.as_secs_f64(),
            row.with_backup.0,
            row.with_backup.1,
        );
    }
    Ok(())
}
