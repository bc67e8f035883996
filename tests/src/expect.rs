//! The expected bytes of an H.Encaps packet, written straight from RFC 8754 section 2 and
//! RFC 8986 section 5.1, independently of the dataplane's own encoder.

use std::net::Ipv6Addr;

pub struct Encap<'a> {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub flow_label: u32,
    pub hop_limit: u8,
    pub source: Ipv6Addr,
    /// In visiting order; the outer destination is the first.
    pub segments: &'a [Ipv6Addr],
    /// 41 (IPv6) or 4 (IPv4).
    pub next_header: u8,
    pub tag: u16,
}

impl Encap<'_> {
    /// Ethernet + outer IPv6 + SRH + `inner` (an IP packet whose hop limit the caller already
    /// decremented).
    pub fn frame(&self, inner: &[u8]) -> Vec<u8> {
        let n = self.segments.len();
        let srh_len = 8 + 16 * n;
        let mut f = Vec::new();
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        f.extend_from_slice(&[0x86, 0xdd]);
        // Version 6, traffic class 0, flow label.
        f.extend_from_slice(&(0x6000_0000u32 | (self.flow_label & 0xfffff)).to_be_bytes());
        f.extend_from_slice(&((srh_len + inner.len()) as u16).to_be_bytes());
        f.push(43); // Routing header
        f.push(self.hop_limit);
        f.extend_from_slice(&self.source.octets());
        f.extend_from_slice(&self.segments[0].octets());
        // SRH: next header, Hdr Ext Len (8-octet units after the first 8), type 4,
        // Segments Left, Last Entry, flags, tag.
        f.push(self.next_header);
        f.push((2 * n) as u8);
        f.push(4);
        f.push((n - 1) as u8);
        f.push((n - 1) as u8);
        f.push(0);
        f.extend_from_slice(&self.tag.to_be_bytes());
        // Segment List[0] is the last segment to visit.
        for sid in self.segments.iter().rev() {
            f.extend_from_slice(&sid.octets());
        }
        f.extend_from_slice(inner);
        f
    }
}

/// `inner` with its IPv6 hop limit decremented.
pub fn ipv6_decremented(inner: &[u8]) -> Vec<u8> {
    let mut v = inner.to_vec();
    v[7] -= 1;
    v
}

/// `inner` with its IPv4 TTL decremented and the header checksum recomputed from scratch.
pub fn ipv4_decremented(inner: &[u8]) -> Vec<u8> {
    let mut v = inner.to_vec();
    v[8] -= 1;
    v[10] = 0;
    v[11] = 0;
    let ihl = usize::from(v[0] & 0x0f) * 4;
    let mut sum = 0u32;
    for pair in v[..ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !(sum as u16);
    v[10..12].copy_from_slice(&check.to_be_bytes());
    v
}
