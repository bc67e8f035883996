//! Flow keys and the flow hash that picks a lookup-table slot.

/// Which packet fields make two packets the same flow for affinity.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDefinition {
    /// Source, destination, protocol and both ports.
    FiveTuple = 0,
    /// Source address only: every flow of a client lands on one instance.
    SourceAddress = 1,
    /// Source, destination, protocol and the destination port's group
    /// ([`crate::maps::ServiceEntry::port_group`]; a port in no group is its own group): the
    /// flows of one client to the ports of one group (RTP audio and video of a call, say) land
    /// on one instance, whatever their source ports.
    SourcePortGroup = 2,
}

impl FlowDefinition {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => FlowDefinition::SourceAddress,
            2 => FlowDefinition::SourcePortGroup,
            _ => FlowDefinition::FiveTuple,
        }
    }
}

/// Key of the affinity table. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order; zero when the flow definition leaves ports out.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
    /// Service slot: the same 5-tuple to two services is two flows.
    pub service_slot: u32,
}

/// Value of the affinity table: the instance a flow is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub instance_slot: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` of the last packet; the pin expires after the service's timeout.
    pub last_seen_ns: u64,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// One murmur3 round: mixes `k` into `h`.
#[inline(always)]
pub const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

/// murmur3 finaliser: spreads every input bit over the output.
#[inline(always)]
pub const fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
const fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The flow hash: the same function in the kernel and in userspace, so a test or the CLI can
/// tell which lookup-table slot a flow lands on.
#[inline(always)]
pub const fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = 0x5eed_ca75;
    h = mix(h, word(&key.src, 0));
    h = mix(h, word(&key.src, 4));
    h = mix(h, word(&key.src, 8));
    h = mix(h, word(&key.src, 12));
    h = mix(h, word(&key.dst, 0));
    h = mix(h, word(&key.dst, 4));
    h = mix(h, word(&key.dst, 8));
    h = mix(h, word(&key.dst, 12));
    h = mix(h, ((key.sport as u32) << 16) | key.dport as u32);
    h = mix(h, ((key.proto as u32) << 24) ^ key.service_slot);
    finish(h ^ 40)
}
