//! SRv6 packets as a transit or egress node receives them, written byte by byte from RFC 8754
//! section 2 (independent of the dataplane's encoder), with every field overridable so tests
//! can build inconsistent ones too.

use std::net::Ipv6Addr;

use crate::packets::{CLIENT_MAC, GATEWAY_MAC};

#[derive(Clone)]
pub struct Srv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// In SRH order: `segments[0]` is the last segment to visit.
    pub segments: Vec<Ipv6Addr>,
    pub segments_left: u8,
    /// Defaults to `segments.len() - 1`.
    pub last_entry: Option<u8>,
    /// Defaults to what segments and TLVs need.
    pub hdr_ext_len: Option<u8>,
    /// What follows the SRH: 41 (IPv6) or 4 (IPv4).
    pub next_header: u8,
    pub routing_type: u8,
    /// Raw TLV bytes after the segment list (a multiple of 8 with the list, or set hdr_ext_len).
    pub tlvs: Vec<u8>,
    /// Without an SRH (a reduced encapsulation with one SID): the outer next header is
    /// `next_header` directly.
    pub with_srh: bool,
    /// Extension headers (raw bytes, next-header byte patched) before the SRH, with their types.
    pub before: Vec<(u8, Vec<u8>)>,
    pub tag: u16,
}

impl Srv6 {
    pub fn new(dst: Ipv6Addr, segments: &[Ipv6Addr], segments_left: u8) -> Self {
        Srv6 {
            src: "fc00:0:1::1".parse().unwrap(),
            dst,
            hop_limit: 64,
            segments: segments.to_vec(),
            segments_left,
            last_entry: None,
            hdr_ext_len: None,
            next_header: 41,
            routing_type: 4,
            tlvs: Vec::new(),
            with_srh: true,
            before: Vec::new(),
            tag: 1,
        }
    }

    /// The SRH alone.
    pub fn srh(&self) -> Vec<u8> {
        let n = self.segments.len();
        let mut h = vec![
            self.next_header,
            self.hdr_ext_len.unwrap_or(((n * 16 + self.tlvs.len()) / 8) as u8),
            self.routing_type,
            self.segments_left,
            self.last_entry.unwrap_or(n.saturating_sub(1) as u8),
            0,
        ];
        h.extend_from_slice(&self.tag.to_be_bytes());
        for s in &self.segments {
            h.extend_from_slice(&s.octets());
        }
        h.extend_from_slice(&self.tlvs);
        h
    }

    /// Ethernet + outer IPv6 + extension headers + SRH + `inner`.
    pub fn frame(&self, inner: &[u8]) -> Vec<u8> {
        let mut ext = Vec::new();
        let srh = if self.with_srh { self.srh() } else { Vec::new() };
        let first_after_exts = if self.with_srh { 43 } else { self.next_header };
        let mut first = first_after_exts;
        for (i, (kind, body)) in self.before.iter().enumerate() {
            if i == 0 {
                first = *kind;
            }
            let mut b = body.clone();
            b[0] = self.before.get(i + 1).map(|(k, _)| *k).unwrap_or(first_after_exts);
            ext.extend_from_slice(&b);
        }
        let payload_len = ext.len() + srh.len() + inner.len();
        let mut f = Vec::new();
        f.extend_from_slice(&GATEWAY_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload_len as u16).to_be_bytes());
        f.push(first);
        f.push(self.hop_limit);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&ext);
        f.extend_from_slice(&srh);
        f.extend_from_slice(inner);
        f
    }
}
