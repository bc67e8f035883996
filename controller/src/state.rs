//! Desired state of one node: plain, serialisable data.
//!
//! The controller computes one [`NodeState`] per node from intent, topology and metrics; the
//! node agent reconciles its kernel to it. Nothing here refers to kernel objects by handle, so
//! the same value can travel through an in-process store or etcd.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv6Network};
use serde::{Deserialize, Serialize};

/// Everything one node must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: String,
    /// Increases with every compile; lets an agent tell a new state from a replay.
    pub generation: u64,
    /// Addresses cats owns on this node (the router address on `lo`, link addresses).
    pub addresses: Vec<InterfaceAddress>,
    /// Underlay routes (empty when the topology says the underlay is external).
    pub routes: Vec<UnderlayRoute>,
    /// Local SIDs and the SRv6 behaviour each one runs.
    pub sids: Vec<LocalSid>,
    /// Headend state, for nodes that steer service traffic.
    pub headend: Option<HeadendState>,
    /// XDP endpoint state, for nodes whose dataplane is `xdp` (the kernel's seg6local routes
    /// above stay installed as the slow path).
    #[serde(default)]
    pub endpoint: Option<EndpointState>,
}

/// What the XDP endpoint program of a node needs besides the SIDs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Interfaces the endpoint program is attached to (the node's SR-domain links, and its
    /// external interfaces so that protection applies there).
    pub interfaces: Vec<String>,
    /// Interfaces outside the SR domain: packets to the SID block are dropped there.
    pub external_interfaces: Vec<String>,
    /// The domain's SID block: transit forwarding and protection use it.
    pub sr_block: Ipv6Network,
    /// This node's locators: a destination inside one without a SID goes to the kernel.
    pub locators: Vec<Ipv6Network>,
    /// Penultimate Segment Pop on this node's End and End.X SIDs.
    pub psp: bool,
    /// Ultimate Segment Decapsulation on this node's End SIDs.
    pub usd: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpNetwork,
}

/// A plain route: `ip route add DESTINATION via VIA dev INTERFACE proto cats`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnderlayRoute {
    pub destination: IpNetwork,
    pub via: IpAddr,
    pub interface: String,
}

/// A local SID: `ip -6 route add SID/128 encap seg6local action BEHAVIOUR ... dev INTERFACE`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalSid {
    pub sid: Ipv6Addr,
    pub behavior: SidBehavior,
    /// The device the route is attached to (`lo` for End/End.DT6, the instance link for DX).
    pub interface: String,
}

/// SRv6 endpoint behaviours (RFC 8986) cats installs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "action")]
pub enum SidBehavior {
    /// Advance to the next segment.
    End,
    /// Advance to the next segment and send it to this adjacent node.
    EndX { nexthop: Ipv6Addr },
    /// Decapsulate, forward the IPv6 payload to `nexthop`.
    EndDx6 { nexthop: Ipv6Addr },
    /// Decapsulate, forward the IPv4 payload to `nexthop`.
    EndDx4 { nexthop: Ipv4Addr },
    /// Decapsulate, look the IPv6 payload up in routing table `table`.
    EndDt6 { table: u32 },
}

/// What the XDP headend of a node needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadendState {
    /// Interfaces the headend program is attached to (where service traffic enters).
    pub interfaces: Vec<String>,
    /// Outer IPv6 source address of encapsulated packets.
    pub encap_source: Ipv6Addr,
    pub services: Vec<ServiceState>,
    /// Instance slots referenced by the services' weights.
    pub instances: Vec<InstanceState>,
    /// Entries of the affinity table (set when the agent loads the dataplane).
    #[serde(default = "default_affinity_table_size")]
    pub affinity_table_size: u32,
}

fn default_affinity_table_size() -> u32 {
    cats_common::maps::AFFINITY_TABLE_SIZE
}

/// One service as this headend steers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    /// Index of this service's lookup table and counters in the maps.
    pub slot: u32,
    pub cs_id: u16,
    /// Which packets belong to the service.
    pub matches: Vec<ServiceMatch>,
    pub flow: FlowDefinition,
    pub affinity_timeout_ms: u64,
    /// Weight per instance slot; the agent turns these into a Maglev lookup table.
    pub weights: Vec<InstanceWeight>,
    /// How the headend's agent probes this service's instances.
    #[serde(default)]
    pub health: HealthCheck,
}

/// BFD-like probing of one service's instances from a headend: every `interval_ms` a probe
/// goes over each instance's primary and alternate segment lists to `port` of the service
/// address, and the instance echoes it; `multiplier` probes unanswered in a row mark that
/// path down (detection time = interval x multiplier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// false: no probes; every slot stays healthy.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub interval_ms: u32,
    pub multiplier: u32,
    /// Destination port of the probes (the service's first port unless set).
    pub port: u16,
}

impl Default for HealthCheck {
    /// 100 ms x 3: a dead path is noticed within 300 ms.
    fn default() -> Self {
        HealthCheck { enabled: true, interval_ms: 100, multiplier: 3, port: 7000 }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceMatch {
    pub address: IpAddr,
    /// 0 matches every protocol (and then `port` must be 0).
    pub protocol: u8,
    /// 0 matches every port.
    pub port: u16,
    /// The port's group under [`FlowDefinition::SourcePortGroup`]: ports of one group share a
    /// flow pin. 0: the port is in no group (it is its own group).
    #[serde(default)]
    pub port_group: u8,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowDefinition {
    /// Source, destination, protocol and both ports.
    #[default]
    FiveTuple,
    /// Source address only: every flow of a client lands on one instance.
    SourceAddress,
    /// Source, destination, protocol and the destination port's group
    /// ([`ServiceMatch::port_group`]): a client's flows to the ports of one group land on one
    /// instance.
    SourcePortGroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceWeight {
    pub slot: u32,
    pub weight: u32,
}

/// One instance reachable from this headend, and the segment list that reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    pub name: String,
    pub slot: u32,
    pub service: String,
    pub cs_id: u16,
    pub instance_id: u32,
    /// In visiting order: first the SIDs to pass through, last the compute SID.
    pub segments: Vec<Ipv6Addr>,
    /// The same instance over a path disjoint from `segments` (empty: none), used while the
    /// primary path is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternate_segments: Vec<Ipv6Addr>,
    /// Slot of another instance of the same service that takes this one's flows while it is
    /// unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_slot: Option<u32>,
}
