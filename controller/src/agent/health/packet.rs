//! The probe packet, built whole in user space: what the headend would push (outer IPv6 and
//! a full SRH, H.Encaps), then an inner IPv6/UDP datagram to the service address. Sent on a
//! raw socket, it takes exactly the segment list, compute SID and decapsulation a request
//! takes, so an echo proves the path and the instance.

use std::net::Ipv6Addr;

use cats_common::srh::{IPPROTO_IPV6, IPPROTO_ROUTING, IPPROTO_UDP, IPV6_HLEN, SrhFixed};

/// Hop limit of the outer and the inner header.
const HOP_LIMIT: u8 = 64;
const UDP_HLEN: usize = 8;

/// Where one probe goes: the segments in visiting order (the compute SID last) and the
/// inner datagram's addresses and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRoute {
    pub segments: Vec<Ipv6Addr>,
    pub source: Ipv6Addr,
    pub source_port: u16,
    pub service: Ipv6Addr,
    pub port: u16,
    /// Carried in the SRH tag, as in steered packets.
    pub cs_id: u16,
}

/// The whole IPv6 packet (no Ethernet header); `None` without segments.
pub fn build(route: &ProbeRoute, payload: &[u8]) -> Option<Vec<u8>> {
    let n = route.segments.len();
    let first = *route.segments.first()?;
    let srh_len = 8 + 16 * n;
    let inner_len = IPV6_HLEN + UDP_HLEN + payload.len();
    let mut out = Vec::with_capacity(IPV6_HLEN + srh_len + inner_len);
    ipv6_header(&mut out, srh_len + inner_len, IPPROTO_ROUTING, route.source, first);
    let srh = SrhFixed::for_segments(IPPROTO_IPV6, n as u8, route.cs_id);
    out.extend_from_slice(&[
        srh.next_header,
        srh.hdr_ext_len,
        srh.routing_type,
        srh.segments_left,
        srh.last_entry,
        srh.flags,
        srh.tag[0],
        srh.tag[1],
    ]);
    // SRH order is reversed: the last segment to visit is entry 0.
    for sid in route.segments.iter().rev() {
        out.extend_from_slice(&sid.octets());
    }
    ipv6_header(&mut out, UDP_HLEN + payload.len(), IPPROTO_UDP, route.source, route.service);
    let udp_len = (UDP_HLEN + payload.len()) as u16;
    let mut udp = Vec::with_capacity(udp_len as usize);
    udp.extend_from_slice(&route.source_port.to_be_bytes());
    udp.extend_from_slice(&route.port.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let sum = udp_checksum(route.source, route.service, &udp);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&udp);
    Some(out)
}

fn ipv6_header(out: &mut Vec<u8>, payload_len: usize, next: u8, src: Ipv6Addr, dst: Ipv6Addr) {
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(&[next, HOP_LIMIT]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

/// RFC 8200 8.1: over the pseudo-header and the datagram; 0 is sent as 0xffff.
fn udp_checksum(src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).copied().map_or(0, u32::from);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(udp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_UDP]);
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> ProbeRoute {
        ProbeRoute {
            segments: vec!["fc00:0:2:1::".parse().unwrap(), "fc00:0:3:f001::".parse().unwrap()],
            source: "fc00:0:1:f0::1".parse().unwrap(),
            source_port: 40000,
            service: "2001:db8:ca75::1".parse().unwrap(),
            port: 7000,
            cs_id: 1,
        }
    }

    #[test]
    fn the_probe_is_an_encapsulated_datagram_over_the_segment_list() {
        let payload = b"CATSPROB-payload";
        let bytes = build(&route(), payload).unwrap();
        // Outer: to the first segment, an SRH with both segments, the compute SID as entry 0.
        let outer = etherparse::Ipv6HeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(outer.destination_addr(), route().segments[0]);
        assert_eq!(outer.next_header(), etherparse::IpNumber(IPPROTO_ROUTING));
        assert_eq!(usize::from(outer.payload_length()), bytes.len() - IPV6_HLEN);
        let srh = &bytes[IPV6_HLEN..IPV6_HLEN + 40];
        assert_eq!(srh[..8], [IPPROTO_IPV6, 4, 4, 1, 1, 0, 0, 1]);
        assert_eq!(srh[8..24], route().segments[1].octets());
        assert_eq!(srh[24..40], route().segments[0].octets());
        // Inner: a UDP datagram to the service whose checksum etherparse agrees with.
        let inner = etherparse::SlicedPacket::from_ip(&bytes[IPV6_HLEN + 40..]).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &inner.net else { panic!("inner IPv6") };
        assert_eq!(ip.header().destination_addr(), route().service);
        let Some(etherparse::TransportSlice::Udp(udp)) = &inner.transport else { panic!("UDP") };
        assert_eq!((udp.source_port(), udp.destination_port()), (40000, 7000));
        assert_eq!(udp.payload(), payload);
        let expected = udp
            .to_header()
            .calc_checksum_ipv6_raw(route().source.octets(), route().service.octets(), payload)
            .unwrap();
        assert_eq!(udp.checksum(), expected);
    }

    #[test]
    fn no_segments_no_probe() {
        assert!(build(&ProbeRoute { segments: vec![], ..route() }, b"x").is_none());
    }
}
