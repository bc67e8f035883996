//! A namespace whose FIB knows the way to the fixture's SIDs, for running the headend with
//! BPF_PROG_TEST_RUN (tests and the benchmark): `bpf_fib_lookup` then answers as it would on a
//! real headend, so forwarding decisions are real too. Never touches the host's interfaces or
//! routes; everything is removed again when the [`Router`] is dropped.

use anyhow::{Context, Result};
use cats_lab::netns::{Namespace, unique_name};

/// MAC of the resolved neighbour behind which the edge's locator (fc00:0:3::/48) lies.
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0xca, 0x75, 0, 0, 0x99];

/// A namespace where the edge's locator is reachable through a resolved neighbour and the
/// core's locator (fc00:0:2::/48) through an unresolved one. The veth peer lives in a second
/// namespace; both are deleted on drop.
pub struct Router {
    pub ns: Namespace,
    _peer: Namespace,
    /// MAC of `up0`, the interface the FIB picks: the outer source MAC of redirected frames.
    pub mac: [u8; 6],
}

/// Creates the router namespaces (names from `unique_name`, prefix `hp`/`hpp`).
pub fn router() -> Result<Router> {
    let ns = Namespace::create(&unique_name("hp"))?;
    let peer = Namespace::create(&unique_name("hpp"))?;
    ns.veth_to("up0", &peer, "down0")?;
    // ip -6 addr add fd00:99::1/64 dev up0 nodad
    ns.ip(&["-6", "addr", "add", "fd00:99::1/64", "dev", "up0", "nodad"])?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    // The edge (node 3) via a neighbour with a known MAC: the FIB can answer fully.
    let lladdr = NEXT_HOP_MAC.map(|b| format!("{b:02x}")).join(":");
    ns.ip(&[
        "-6",
        "neigh",
        "add",
        "fd00:99::2",
        "lladdr",
        &lladdr,
        "nud",
        "permanent",
        "dev",
        "up0",
    ])?;
    ns.ip(&["-6", "route", "add", "fc00:0:3::/48", "via", "fd00:99::2", "dev", "up0"])?;
    // The core (node 2) via a neighbour nobody has resolved yet.
    ns.ip(&["-6", "route", "add", "fc00:0:2::/48", "via", "fd00:99::3", "dev", "up0"])?;
    let mac = mac_of(&ns, "up0")?;
    Ok(Router { ns, _peer: peer, mac })
}

/// The MAC address of `ifname` inside `ns`.
pub fn mac_of(ns: &Namespace, ifname: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-br", "link", "show", ifname])?;
    let text = out.split_whitespace().nth(2).unwrap_or_default();
    let mut mac = [0u8; 6];
    let mut parts = 0;
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)
            .with_context(|| format!("MAC of {ifname} in {}: {text:?}", ns.name()))?;
        parts += 1;
    }
    anyhow::ensure!(parts == 6, "MAC of {ifname} in {}: {text:?}", ns.name());
    Ok(mac)
}
