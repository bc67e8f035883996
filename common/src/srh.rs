//! Wire layout of the IPv6 Segment Routing Header (RFC 8754 section 2).

/// IPv6 next-header value for a Routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// Next-header value for an encapsulated IPv6 packet.
pub const IPPROTO_IPV6: u8 = 41;
/// Next-header value for an encapsulated IPv4 packet.
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// Routing type of the Segment Routing Header.
pub const ROUTING_TYPE_SRH: u8 = 4;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_HLEN: usize = 14;
pub const IPV6_HLEN: usize = 40;
pub const IPV4_MIN_HLEN: usize = 20;
pub const SRH_FIXED_LEN: usize = 8;
pub const SEGMENT_LEN: usize = 16;

/// The fixed 8 bytes of an SRH; the segment list follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrhFixed {
    pub next_header: u8,
    /// Length in 8-octet units, not counting the first 8 octets.
    pub hdr_ext_len: u8,
    pub routing_type: u8,
    pub segments_left: u8,
    pub last_entry: u8,
    pub flags: u8,
    /// Network byte order. cats puts the service number (CS-ID) here.
    pub tag: [u8; 2],
}

impl SrhFixed {
    /// A full SRH (H.Encaps) for `segments` entries, all of them still to visit.
    pub const fn for_segments(next_header: u8, segments: u8, tag: u16) -> Self {
        Self {
            next_header,
            hdr_ext_len: segments * 2,
            routing_type: ROUTING_TYPE_SRH,
            segments_left: segments - 1,
            last_entry: segments - 1,
            flags: 0,
            tag: tag.to_be_bytes(),
        }
    }
}

/// Bytes added in front of the inner packet by H.Encaps with `segments` SIDs.
pub const fn encap_len(segments: usize) -> usize {
    IPV6_HLEN + SRH_FIXED_LEN + segments * SEGMENT_LEN
}
