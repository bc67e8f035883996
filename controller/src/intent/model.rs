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
    /// Non-empty.
    pub instances: Vec<Instance>,
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
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SteeringPolicy {
    /// `metadata.name` of the SteeringPolicy document.
    pub name: String,
    /// An existing compute service; at most one policy per service.
    pub service: String,
    pub objective: Objective,
    /// Upper bound on the path latency, > 0.
    pub max_latency_ms: Option<f64>,
    /// >= 0; default 0.5.
    pub slack: f64,
    /// Existing nodes with role ingress; empty means every ingress node.
    pub ingress: Vec<String>,
    /// Existing nodes with role transit to pass through, in order, without repeats.
    pub via: Vec<String>,
    pub affinity: Affinity,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Network latency plus expected compute time.
    #[default]
    MinCompletionTime,
    /// Network latency only.
    MinLatency,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    pub flow: FlowDefinition,
    /// 1..=86400; default 30.
    pub timeout_seconds: u64,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity { flow: FlowDefinition::FiveTuple, timeout_seconds: 30 }
    }
}
