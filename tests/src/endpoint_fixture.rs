//! Node 4 of block fc00::/32 as its XDP endpoint sees it, for BPF_PROG_TEST_RUN (the endpoint
//! packet tests and the benchmark): its local SIDs (End, End.X, End.DT6, End.DX6, End.DX4),
//! its endpoint state, and a namespace whose FIB knows real next hops for all of them.
//!
//! The namespace is the headend tests' [`router`](crate::router::router) plus the instance
//! link: node 3's locator (transit) and the client prefix (End.DT6) lie behind the resolved
//! neighbour fd00:99::2 ([`NEXT_HOP_MAC`](crate::router::NEXT_HOP_MAC)), the instance
//! (End.DX6, End.DX4) is on-link with a permanent neighbour entry ([`INSTANCE_MAC`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use cats_common::sid;
use cats_controller::{
    dataplane::Dataplane,
    state::{EndpointState, LocalSid, SidBehavior},
};

use crate::{
    fixture::BLOCK,
    router::{Router, router as headend_router},
};

/// The node under test.
pub const ME: u16 = 4;
/// The compute instance behind End.DX6 and End.DX4, on `up0`'s second subnet.
pub const INSTANCE_MAC: [u8; 6] = [0x02, 0xca, 0x75, 0, 0, 0x10];
pub const INSTANCE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x21, 0, 0, 0, 0, 0, 0x10);
pub const INSTANCE4: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 10);
/// A client in fd00:10::/64, the prefix End.DT6 routes replies to (via fd00:99::2).
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x64);
/// A client IPv4 address (the source of End.DX4's inner packets; not routed here).
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 100);

/// A SID of this node: `function` and `argument` in its locator fc00:0:4::/48.
pub fn my_sid(function: u16, argument: u64) -> Ipv6Addr {
    sid::encode(BLOCK, ME, function, argument).into()
}
pub fn end() -> Ipv6Addr {
    my_sid(sid::FUNC_END, 0)
}
/// End.X towards fd00:99::2.
pub fn end_x() -> Ipv6Addr {
    my_sid(0x0100, 0)
}
/// End.DT6 in the main table.
pub fn dt6() -> Ipv6Addr {
    my_sid(sid::FUNC_END_DT6, 0)
}
/// End.DX6 of compute service 1, instance 1: to [`INSTANCE6`].
pub fn dx6() -> Ipv6Addr {
    sid::compute_sid(BLOCK, ME, false, 1, 1).into()
}
/// End.DX4 of compute service 1, instance 1: to [`INSTANCE4`].
pub fn dx4() -> Ipv6Addr {
    sid::compute_sid(BLOCK, ME, true, 1, 1).into()
}
/// A SID of node 3, reachable through the resolved neighbour.
pub fn far_sid() -> Ipv6Addr {
    sid::compute_sid(BLOCK, 3, false, 1, 7).into()
}

/// Node 4's local SIDs, all on `up0`.
pub fn sids() -> Vec<LocalSid> {
    let at = |sid, behavior| LocalSid { sid, behavior, interface: "up0".into() };
    vec![
        at(end(), SidBehavior::End),
        at(end_x(), SidBehavior::EndX { nexthop: "fd00:99::2".parse().unwrap() }),
        at(dt6(), SidBehavior::EndDt6 { table: 254 }),
        at(dx6(), SidBehavior::EndDx6 { nexthop: INSTANCE6 }),
        at(dx4(), SidBehavior::EndDx4 { nexthop: INSTANCE4 }),
    ]
}

/// Node 4's endpoint state: attached to `up0`, block fc00::/32, locator fc00:0:4::/48, with the
/// given flavours and external interfaces.
pub fn state(psp: bool, usd: bool, external: &[&str]) -> EndpointState {
    EndpointState {
        interfaces: vec!["up0".into()],
        external_interfaces: external.iter().map(|s| s.to_string()).collect(),
        sr_block: "fc00::/32".parse().unwrap(),
        locators: vec!["fc00:0:4::/48".parse().unwrap()],
        psp,
        usd,
    }
}

/// The headend tests' router namespaces, plus what the endpoint's FIB lookups need: the
/// instance subnets fd00:21::/64 and 198.18.21.0/24 on `up0` with the instance's MAC as a
/// permanent neighbour, and the client prefix fd00:10::/64 via fd00:99::2. Everything is
/// removed when the [`Router`] is dropped.
pub fn router() -> Result<Router> {
    let r = headend_router()?;
    let instance_mac = INSTANCE_MAC.map(|b| format!("{b:02x}")).join(":");
    let instance6 = INSTANCE6.to_string();
    let instance4 = INSTANCE4.to_string();
    for args in [
        &["-6", "addr", "add", "fd00:21::1/64", "dev", "up0", "nodad"][..],
        &["addr", "add", "198.18.21.1/24", "dev", "up0"],
        &[
            "-6",
            "neigh",
            "add",
            &instance6,
            "lladdr",
            &instance_mac,
            "nud",
            "permanent",
            "dev",
            "up0",
        ],
        &["neigh", "add", &instance4, "lladdr", &instance_mac, "nud", "permanent", "dev", "up0"],
        &["-6", "route", "add", "fd00:10::/64", "via", "fd00:99::2", "dev", "up0"],
    ] {
        r.ns.ip(args)?;
    }
    Ok(r)
}

/// A private dataplane with `state` and node 4's [`sids`]; must run inside [`router`]'s
/// namespace (interface names are resolved there).
pub fn load(state: &EndpointState) -> Result<Dataplane> {
    let mut dp = Dataplane::load(None)?;
    dp.apply_endpoint(state, &sids(), &[])?;
    Ok(dp)
}

/// Sets the Ethernet destination and source of `frame`.
pub fn rewrite_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
}

/// Ethernet (`dst`, `src`, `ether_type`) + `l3`: what a decapsulating behaviour sends.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + l3.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(l3);
    f
}
