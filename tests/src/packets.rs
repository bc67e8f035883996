//! Test frames, built with etherparse (not with any cats code).

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xca, 0x75, 0, 0, 0x01];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0xca, 0x75, 0, 0, 0x02];

/// Ethernet + IPv6 + UDP.
pub fn udp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(src.octets(), dst.octets(), hop_limit)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("writing a UDP/IPv6 frame");
    out
}

/// Ethernet + IPv4 + UDP.
pub fn udp4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("writing a UDP/IPv4 frame");
    out
}

/// Ethernet + IPv6 + TCP SYN.
pub fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 65535)
        .syn();
    let mut out = Vec::new();
    builder.write(&mut out, &[]).expect("writing a TCP/IPv6 frame");
    out
}

/// The IP packet inside an Ethernet frame.
pub fn l3(frame: &[u8]) -> &[u8] {
    &frame[14..]
}
