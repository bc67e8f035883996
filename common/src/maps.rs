//! Map names, sizes and value layouts of the headend program.
//!
//! Who writes and who reads each map:
//! - `CATS_CONFIG`    agent writes once per node; XDP reads per packet.
//! - `CATS_SERVICES`  agent writes (service match -> service entry); XDP reads per packet.
//! - `CATS_LOOKUP`    agent writes (Maglev table per service slot); XDP reads on a flow miss.
//! - `CATS_TARGETS`   agent writes (instance slot -> segment list); XDP reads per packet.
//! - `CATS_AFFINITY`  XDP writes (flow -> instance pin, LRU); agent reads for dumps.
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

/// Name of the headend XDP program in the object file.
pub const PROG_HEADEND: &str = "cats_headend";
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
    pub _pad: u8,
    /// A flow pin idle for longer than this is chosen afresh.
    pub affinity_timeout_ns: u64,
}

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

/// Per-node settings of the headend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadendConfig {
    /// Outer IPv6 source address.
    pub encap_source: [u8; 16],
    /// Outer hop limit.
    pub hop_limit: u8,
    pub _pad: [u8; 7],
}
