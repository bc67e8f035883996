//! Map names, sizes and value layouts of the headend program.
//!
//! Who writes and who reads each map:
//! - `CATS_CONFIG`    agent writes once per node; XDP reads per packet.
//! - `CATS_SERVICES`  agent writes (service match -> service entry); XDP reads per packet.
//! - `CATS_LOOKUP`    agent writes (Maglev table per service slot); XDP reads on a flow miss.
//! - `CATS_TARGETS`   agent writes (instance slot -> segment list); XDP reads per packet.
//! - `CATS_AFFINITY`  XDP writes (flow -> instance pin, LRU); agent reads for dumps.
//! - `CATS_FAILOVER`  agent writes with the targets (slot -> backup slot, alternate path);
//!   XDP reads when a slot is down.
//! - `CATS_HEALTH`    agent's prober writes (slot -> `HEALTH_*` bits); XDP reads per packet.
//! - `CATS_SIDS`      agent writes (local SIDs and locators, LPM); endpoint XDP reads.
//! - `CATS_INTERFACES` agent writes (external interfaces); endpoint XDP reads.
//! - `CATS_*_STATS`, `CATS_DROPS`, `CATS_EVENTS` XDP writes (per CPU); agent sums on read.

pub const MAP_CONFIG: &str = "CATS_CONFIG";
pub const MAP_SERVICES: &str = "CATS_SERVICES";
pub const MAP_LOOKUP: &str = "CATS_LOOKUP";
pub const MAP_TARGETS: &str = "CATS_TARGETS";
pub const MAP_AFFINITY: &str = "CATS_AFFINITY";
pub const MAP_SERVICE_STATS: &str = "CATS_SERVICE_STATS";
pub const MAP_INSTANCE_STATS: &str = "CATS_INSTANCE_STATS";
pub const MAP_DROPS: &str = "CATS_DROPS";
pub const MAP_EVENTS: &str = "CATS_EVENTS";
pub const MAP_SIDS: &str = "CATS_SIDS";
pub const MAP_INTERFACES: &str = "CATS_INTERFACES";
pub const MAP_FAILOVER: &str = "CATS_FAILOVER";
pub const MAP_HEALTH: &str = "CATS_HEALTH";

/// Name of the headend XDP program in the object file.
pub const PROG_HEADEND: &str = "cats_headend";
/// Name of the endpoint XDP program: local SIDs, SRv6 transit, SR-domain protection.
pub const PROG_ENDPOINT: &str = "cats_endpoint";
/// A program that passes everything: the benchmark baseline, and the receive hook that lets a
/// veth accept XDP-redirected frames.
pub const PROG_PASS: &str = "cats_pass";

/// Most SIDs in one segment list.
pub const MAX_SEGMENTS: usize = 6;
/// Services one headend can steer.
pub const MAX_SERVICES: u32 = 256;
/// Instance slots one headend can target.
pub const MAX_INSTANCES: u32 = 1024;
/// Service match entries (address, protocol, port) one headend holds.
pub const MAX_SERVICE_MATCHES: u32 = 1024;
/// Slots of one service's lookup table: a prime, so Maglev permutations cover every slot.
pub const LOOKUP_TABLE_SIZE: u32 = 4099;
/// Flows the affinity table holds before LRU eviction.
pub const AFFINITY_TABLE_SIZE: u32 = 65536;
/// Lookup-table value meaning "no instance".
pub const NO_INSTANCE: u32 = u32::MAX;

/// Matches packets to a service. Every service address has an `(address, 0, 0)` entry, so
/// telling service traffic from the rest costs one lookup; when that entry says [`BY_PORT`],
/// a second lookup with the packet's protocol and destination port picks the service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceKey {
    /// IPv6, or IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// `ServiceEntry::slot` of the `(address, 0, 0)` entry of an address whose services are all
/// matched by port: the address is a service address, but protocol and port decide which.
pub const BY_PORT: u32 = u32::MAX;

/// What the headend needs to know about a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Index of the service's lookup table and counters.
    pub slot: u32,
    /// Service number, carried in the SRH tag.
    pub cs_id: u16,
    /// A [`crate::flow::FlowDefinition`] as u8.
    pub flow_definition: u8,
    /// The destination port's group under [`crate::flow::FlowDefinition::SourcePortGroup`]:
    /// it stands in for the port in the flow key. 0: the port is in no group (the real port
    /// is used), and always 0 in an address's `(address, 0, 0)` entry.
    pub port_group: u8,
    /// A flow pin idle for longer than this is chosen afresh.
    pub affinity_timeout_ns: u64,
}

// The kernel and the agent share this layout byte for byte.
const _: () = assert!(core::mem::size_of::<ServiceEntry>() == 16);

/// One instance as seen from this headend: the segment list that reaches it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceTarget {
    /// CSCI-ID number, for counters and dumps.
    pub instance_id: u32,
    pub cs_id: u16,
    /// Number of valid entries in `segments`, 1..=MAX_SEGMENTS.
    pub segment_count: u8,
    pub _pad: u8,
    /// In SRH order: `segments[0]` is the last SID (the compute SID), the first SID to visit
    /// is `segments[segment_count - 1]`.
    pub segments: [[u8; 16]; MAX_SEGMENTS],
}

/// `CATS_HEALTH` bit: the instance does not answer over its primary path (`CATS_TARGETS`).
/// A slot's word is 0 (healthy) until the agent's prober says otherwise.
pub const HEALTH_PRIMARY_DOWN: u32 = 1;
/// `CATS_HEALTH` bit: the instance does not answer over its alternate path either.
pub const HEALTH_ALTERNATE_DOWN: u32 = 2;

/// What the headend does with an instance slot whose primary path is down.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failover {
    /// Another instance of the same service that takes this slot's flows while the instance
    /// is unreachable (flows move to it once and stay); [`NO_INSTANCE`]: none.
    pub backup_slot: u32,
    pub _pad: u32,
    /// The same instance over a path disjoint from the primary one (`segment_count` 0: none):
    /// tried before the backup instance, so a cut link does not move flows.
    pub alternate: InstanceTarget,
}

impl InstanceTarget {
    /// No segment list: an unused slot, or no alternate path.
    pub const EMPTY: InstanceTarget = InstanceTarget {
        instance_id: 0,
        cs_id: 0,
        segment_count: 0,
        _pad: 0,
        segments: [[0; 16]; MAX_SEGMENTS],
    };
}

/// Per-node settings of the headend and endpoint programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadendConfig {
    /// Outer IPv6 source address.
    pub encap_source: [u8; 16],
    /// Outer hop limit.
    pub hop_limit: u8,
    /// Prefix length of `sr_block` (0: no SR domain configured).
    pub sr_block_len: u8,
    pub _pad: [u8; 6],
    /// The SR domain's SID block: transit forwarding and domain protection use it.
    pub sr_block: [u8; 16],
}

/// Local SIDs (and whole locators) in an LPM trie: the longest match decides.
pub const MAX_LOCAL_SIDS: u32 = 4096;
/// Interfaces one node marks (external ones).
pub const MAX_INTERFACES: u32 = 256;

/// SRv6 endpoint behaviours the XDP endpoint runs (RFC 8986).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// A locator of this node, no SID at this function: left to the kernel.
    Locator = 0,
    End = 1,
    EndX = 2,
    EndDx6 = 3,
    EndDx4 = 4,
    EndDt6 = 5,
}

impl Behavior {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Locator),
            1 => Some(Self::End),
            2 => Some(Self::EndX),
            3 => Some(Self::EndDx6),
            4 => Some(Self::EndDx4),
            5 => Some(Self::EndDt6),
            _ => None,
        }
    }
}

/// Penultimate Segment Pop: remove the SRH when Segments Left becomes 0.
pub const FLAVOR_PSP: u8 = 1;
/// Ultimate Segment Decapsulation: at Segments Left 0, decapsulate like End.DT6/DT4.
pub const FLAVOR_USD: u8 = 2;

/// Key of the SID trie: prefix length in bits, then the address (the kernel's LPM layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// What a local SID does.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidEntry {
    /// A [`Behavior`] as u8.
    pub behavior: u8,
    /// `FLAVOR_*` bits.
    pub flavors: u8,
    pub _pad: [u8; 2],
    /// End.DT6: routing table id (254 = main).
    pub table: u32,
    /// End.X: the adjacent node's address; End.DX6: the instance's address; End.DX4: the
    /// instance's IPv4 address, IPv4-mapped.
    pub nexthop: [u8; 16],
}

/// Per-interface flags of the endpoint program, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceFlags {
    /// Outside the SR domain: packets to the SID block are dropped (RFC 8754 5.1).
    pub external: u8,
    /// XDP cannot redirect into this device (a bridge): packets the endpoint would send
    /// there go to the kernel unchanged instead.
    pub slow_path: u8,
    pub _pad: [u8; 2],
}
