//! The validated intent: plain data, free of source positions.
//!
//! Values of these types only come out of [`super::load_dir`], [`super::load_files`] and
//! [`super::parse_documents`], which guarantee every rule documented on the fields. Field names
//! serialise in camelCase, as operators write them in YAML.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv6Network};
use serde::Serialize;

use crate::state::FlowDefinition;

/// Everything operators declared: one topology, the compute services and how to steer to them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    pub topology: Topology,
    pub services: Vec<ComputeService>,
    pub policies: Vec<SteeringPolicy>,
}

impl Intent {
    /// The topology node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.topology.nodes.iter().find(|node| node.name == name)
    }

    /// The compute service called `name`.
    pub fn service(&self, name: &str) -> Option<&ComputeService> {
        self.services.iter().find(|service| service.name == name)
    }

    /// The steering policy of the service called `service` (there is at most one).
    pub fn policy_for(&self, service: &str) -> Option<&SteeringPolicy> {
        self.policies.iter().find(|policy| policy.service == service)
    }
}

/// The SRv6 domain: its nodes and the links between them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// `metadata.name` of the Topology document.
    pub name: String,
    /// The /32 every SID of the domain is carved from.
    pub sr_block: Ipv6Network,
    pub underlay: Underlay,
    /// Non-empty; names and indexes are unique.
    pub nodes: Vec<Node>,
    /// Between existing, distinct nodes; at most one link per pair.
    pub links: Vec<Link>,
}

/// Who provides plain IPv6 reachability between the nodes' SIDs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Underlay {
    /// cats installs the underlay routes itself, from the links.
    #[default]
    Static,
    /// An IGP (or someone else) already routes the SR block.
    External,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Lowercase `[a-z0-9-]`, 1 to 12 characters.
    pub name: String,
    /// 1..=65535; the node's locator inside the SR block.
    pub index: u16,
    /// Non-empty, without repeats.
    pub roles: Vec<Role>,
    /// Networks behind the node; no overlap with another node's.
    pub prefixes: Vec<IpNetwork>,
    /// Where service traffic enters; non-empty exactly when the node has role ingress.
    pub headend_interfaces: Vec<String>,
    /// Interfaces facing outside the SR domain: packets to the SID block are dropped there
    /// (RFC 8754 5.1). With `dataplane: xdp` only.
    pub external_interfaces: Vec<String>,
    /// Who runs the node's SRv6 endpoint behaviours.
    pub dataplane: Dataplane,
    /// Flavours of the node's End and End.X SIDs (XDP dataplane).
    pub end_flavors: Vec<EndFlavor>,
    /// Flows the headend's affinity table holds before it evicts the least recently used
    /// (ingress nodes; 1024..=16777216, default 65536).
    pub affinity_table_size: Option<u32>,
}

/// Who runs a node's SRv6 endpoint behaviours and transit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataplane {
    /// The kernel's seg6local routes, installed by cats.
    #[default]
    Kernel,
    /// cats' XDP endpoint program, with the kernel routes kept as the slow path.
    Xdp,
}

/// RFC 8986 section 4.16 flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndFlavor {
    /// Penultimate Segment Pop.
    Psp,
    /// Ultimate Segment Decapsulation.
    Usd,
}

impl Node {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Classifies service traffic and encapsulates it (runs the headend).
    Ingress,
    /// Forwards SRv6 traffic and may be named as a waypoint.
    Transit,
    /// Hosts service instances and decapsulates towards them.
    Egress,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub a: String,
    pub b: String,
    /// One-way latency, in (0, 10000].
    pub latency_ms: f64,
    /// Interface on `a`; defaults to `b`'s name.
    pub a_interface: String,
    /// Interface on `b`; defaults to `a`'s name.
    pub b_interface: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeService {
    /// `metadata.name` of the ComputeService document.
    pub name: String,
    /// 1..=16383, unique.
    pub cs_id: u16,
    /// Non-empty, without repeats.
    pub addresses: Vec<IpAddr>,
    /// Empty matches every protocol and port.
    pub ports: Vec<PortMatch>,
    /// Tera-operations one request costs, > 0.
    pub request_cost: f64,
    /// Non-empty, unless `pod_selector` is set.
    pub instances: Vec<Instance>,
    /// Pods registered by the CNI plugin that become instances too (see [`super::pods`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<super::pods::PodSelector>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMatch {
    pub protocol: Protocol,
    /// 1..=65535.
    pub port: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Unique across all services.
    pub name: String,
    /// 1..=u32::MAX, unique within the service.
    pub id: u32,
    /// An existing node with role egress.
    pub node: String,
    /// Present when the service has an IPv6 address; inside one of the node's prefixes.
    pub address: Option<Ipv6Addr>,
    /// Present when the service has an IPv4 address; inside one of the node's prefixes.
    pub address4: Option<Ipv4Addr>,
    /// Capacity in tera-operations per second, in (0, 1e6].
    pub tops: f64,
    /// Share of the capacity already in use, in [0, 1).
    pub utilization: f64,
    /// Draining: no new flows (weight 0); established flows keep the instance until they end
    /// or their pins expire. Default false.
    pub drain: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SteeringPolicy {
    /// `metadata.name` of the SteeringPolicy document.
    pub name: String,
    /// An existing compute service; at most one policy per service.
    pub service: String,
    pub objective: Objective,
    /// Which instances and paths may be used at all.
    pub constraints: Constraints,
    /// Ordered failover groups of egress sites: new flows go to the first group that has a
    /// usable instance. Sites not listed form an implicit last group (see
    /// [`SteeringPolicy::group_of`]). Names are unique; each site is in at most one group.
    pub locality: Vec<LocalityGroup>,
    /// >= 0; default 0.5.
    pub slack: f64,
    /// Existing nodes with role ingress; empty means every ingress node.
    pub ingress: Vec<String>,
    pub affinity: Affinity,
    pub dampening: Dampening,
    pub scoring: Scoring,
    pub health: Health,
}

impl Default for SteeringPolicy {
    fn default() -> Self {
        SteeringPolicy {
            name: String::new(),
            service: String::new(),
            objective: Objective::default(),
            constraints: Constraints::default(),
            locality: Vec::new(),
            slack: 0.5,
            ingress: Vec::new(),
            affinity: Affinity::default(),
            dampening: Dampening::default(),
            scoring: Scoring::default(),
            health: Health::default(),
        }
    }
}

impl SteeringPolicy {
    /// The position in `locality` of the group listing `site`; `locality.len()` for a site no
    /// group lists: unlisted sites form an implicit last group, used only when no listed
    /// group has a usable instance.
    pub fn group_of(&self, site: &str) -> usize {
        self.locality
            .iter()
            .position(|group| group.sites.iter().any(|s| s == site))
            .unwrap_or(self.locality.len())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Network latency plus expected compute time.
    #[default]
    MinCompletionTime,
    /// Network latency only.
    MinLatency,
    /// Spread new flows over every instance that meets the constraints, ranked by the L2
    /// score.
    Balanced,
}

/// Hard limits on instances and paths; every field is optional and absent means no limit.
/// The validated intent always leaves at least one usable instance for every ingress.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    /// Upper bound on the network round trip, > 0; at least the best declared round trip from
    /// each ingress to some allowed instance.
    pub max_latency_ms: Option<f64>,
    /// An instance needs at least this much free capacity, `tops * (1 - utilization)`, >= 0;
    /// at most the declared `tops` of some allowed instance.
    pub min_free_tops: Option<f64>,
    /// Allowed egress sites (nodes with role egress), without repeats; empty allows all.
    pub sites: Vec<String>,
    /// Egress sites never used, without repeats, none of them in `sites`.
    pub exclude_sites: Vec<String>,
    /// Existing nodes a path must not traverse, without repeats; no ingress of the policy.
    pub avoid_nodes: Vec<String>,
    /// Existing links a path must not use, without repeats.
    pub avoid_links: Vec<LinkRef>,
    /// Nodes with role transit to pass through, in order, without repeats, none avoided.
    pub waypoints: Vec<String>,
}

/// A link named by its two ends; either orientation names the same link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkRef {
    pub a: String,
    pub b: String,
}

impl LinkRef {
    /// Whether `link` joins the same two nodes, in either orientation.
    pub fn matches(&self, link: &Link) -> bool {
        (link.a == self.a && link.b == self.b) || (link.a == self.b && link.b == self.a)
    }
}

impl Topology {
    /// The position in `links` of the link `link` names (in either orientation).
    pub fn link_index(&self, link: &LinkRef) -> Option<usize> {
        self.links.iter().position(|l| link.matches(l))
    }
}

/// One failover group of [`SteeringPolicy::locality`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityGroup {
    /// Lowercase `[a-z0-9-]`, unique within the policy.
    pub name: String,
    /// Non-empty; egress nodes allowed by the constraints, each in one group only.
    pub sites: Vec<String>,
}

/// BFD-like probing of the service's instances from each headend, over the same segment
/// lists the requests take: a path is down after `multiplier` probes in a row go unanswered,
/// so detection takes `interval_ms x multiplier` (300 ms by default).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Whether to probe at all (instances that cannot echo probes need `false`: they would
    /// all look dead); default true.
    pub enabled: bool,
    /// Milliseconds between probes on each path, 10..=10000; default 100.
    pub interval_ms: u32,
    /// Unanswered probes in a row that mark a path down, 1..=50; default 3.
    pub multiplier: u32,
    /// Port the instances echo probes on; default the service's first port (7000 when the
    /// service matches every port).
    pub port: Option<u16>,
}

impl Default for Health {
    fn default() -> Self {
        Health { enabled: true, interval_ms: 100, multiplier: 3, port: None }
    }
}

/// Keeps steering from flapping between instances whose scores are close.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dampening {
    /// A new best must beat the current one by this fraction, in [0, 1]; default 0.1.
    pub hysteresis: f64,
    /// Seconds a decision is held before it may change again, 0..=3600; default 2.
    pub hold_down_seconds: u64,
}

impl Default for Dampening {
    fn default() -> Self {
        Dampening { hysteresis: 0.1, hold_down_seconds: 2 }
    }
}

/// L0 -> L1 -> L2 metric normalisation (draft-ietf-cats-metric-definition): each raw (L0)
/// metric maps to an L1 score in [0, 10], and the L2 score is their weighted mean.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scoring {
    /// L1 network score from the round trip; default 0 .. 200 ms.
    pub network: ScoreRange,
    /// L1 compute score from the predicted service time; default 0 .. 1000 ms.
    pub compute: ScoreRange,
    /// Default 0.5 / 0.5.
    pub weights: ScoreWeights,
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring {
            network: ScoreRange { best_ms: 0.0, worst_ms: 200.0 },
            compute: ScoreRange { best_ms: 0.0, worst_ms: 1000.0 },
            weights: ScoreWeights::default(),
        }
    }
}

/// Maps a time linearly to an L1 score: 10 at or below `best_ms`, 0 at or above `worst_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreRange {
    /// >= 0.
    pub best_ms: f64,
    /// Greater than `best_ms`.
    pub worst_ms: f64,
}

impl ScoreRange {
    /// The L1 score of `ms`, in [0, 10].
    pub fn score(&self, ms: f64) -> f64 {
        (10.0 * (self.worst_ms - ms) / (self.worst_ms - self.best_ms)).clamp(0.0, 10.0)
    }
}

/// Weights of the L1 scores in the L2 score: each >= 0, their sum > 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreWeights {
    pub network: f64,
    pub compute: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights { network: 0.5, compute: 0.5 }
    }
}

impl Scoring {
    /// The L2 score, in [0, 10], of a round trip and a predicted service time.
    pub fn score(&self, network_ms: f64, compute_ms: f64) -> f64 {
        let ScoreWeights { network, compute } = self.weights;
        (network * self.network.score(network_ms) + compute * self.compute.score(compute_ms))
            / (network + compute)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    pub flow: FlowDefinition,
    /// With `flow: source-port-group` (and only then, non-empty): groups of destination
    /// ports whose flows from one source share an instance, e.g. the RTP audio and video of
    /// one call. At most 255 groups; each port is one of the service's ports and in one
    /// group at most. A service port in no group is a group of its own.
    pub port_groups: Vec<Vec<u16>>,
    /// 1..=86400; default 30.
    pub timeout_seconds: u64,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity { flow: FlowDefinition::FiveTuple, port_groups: Vec::new(), timeout_seconds: 30 }
    }
}

impl Affinity {
    /// The group number (1-based) the dataplane keys pins on for `port`; 0 when the flow
    /// definition has no groups or the port is in none.
    pub fn port_group(&self, port: u16) -> u8 {
        if self.flow != FlowDefinition::SourcePortGroup {
            return 0;
        }
        self.port_groups
            .iter()
            .position(|group| group.contains(&port))
            .map_or(0, |k| u8::try_from(k + 1).unwrap_or(0))
    }
}
