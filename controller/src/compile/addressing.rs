//! Addresses cats derives from the intent, so operators never type a SID or link address.
//!
//! - Node locator: `<srBlock /32>:<node index>::/48`; router address: locator `::1` (function
//!   0, argument 1): the encap source and the node's loopback.
//! - SIDs: see `cats_common::sid` (End `<locator>:1::`, End.DT6 `<locator>:6::`, compute SIDs
//!   `<locator>:<4000|csId>::<instance>`).
//! - Link k (1-based position in `spec.links`, static underlay only): `fdff:ca75:0:k::1/64` on
//!   side a, `::2/64` on side b; IPv4 `198.19.0.0/16` carved into /30s: `.4k+1` and `.4k+2`.

use std::net::{Ipv4Addr, Ipv6Addr};

use cats_common::sid;
use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::intent::Topology;

/// The first 32 bits of the SR block.
pub fn block(topology: &Topology) -> [u8; 4] {
    let o = topology.sr_block.network().octets();
    [o[0], o[1], o[2], o[3]]
}

pub fn locator(topology: &Topology, index: u16) -> Ipv6Network {
    let addr: Ipv6Addr = sid::encode(block(topology), index, 0, 0).into();
    Ipv6Network::new(addr, 48).expect("48 is a valid prefix length")
}

pub fn router_address(topology: &Topology, index: u16) -> Ipv6Addr {
    sid::encode(block(topology), index, sid::FUNC_NODE_ADDRESS, 1).into()
}

pub fn end_sid(topology: &Topology, index: u16) -> Ipv6Addr {
    sid::encode(block(topology), index, sid::FUNC_END, 0).into()
}

pub fn end_dt6_sid(topology: &Topology, index: u16) -> Ipv6Addr {
    sid::encode(block(topology), index, sid::FUNC_END_DT6, 0).into()
}

/// End.X SID of `index` towards the peer of link number `link` (0-based position).
pub fn end_x_sid(topology: &Topology, index: u16, link: usize) -> Ipv6Addr {
    sid::encode(block(topology), index, sid::FUNC_END_X_BASE + link as u16, 0).into()
}

pub fn compute_sid(
    topology: &Topology,
    index: u16,
    ipv4: bool,
    cs_id: u16,
    instance: u32,
) -> Ipv6Addr {
    sid::compute_sid(block(topology), index, ipv4, cs_id, instance).into()
}

/// IPv6 address of side `a` (or b) of link number `k` (1-based).
pub fn link_v6(k: usize, side_b: bool) -> Ipv6Network {
    let addr = Ipv6Addr::new(0xfdff, 0xca75, 0, k as u16, 0, 0, 0, if side_b { 2 } else { 1 });
    Ipv6Network::new(addr, 64).expect("64 is a valid prefix length")
}

/// IPv4 address of side `a` (or b) of link number `k` (1-based); `None` past the /16.
pub fn link_v4(k: usize, side_b: bool) -> Option<Ipv4Network> {
    let offset = u32::try_from(k).ok()?.checked_mul(4)?.checked_add(if side_b { 2 } else { 1 })?;
    if offset >= 1 << 16 {
        return None;
    }
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + offset);
    Some(Ipv4Network::new(addr, 30).expect("30 is a valid prefix length"))
}
