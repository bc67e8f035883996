//! The XDP endpoint on single packets (BPF_PROG_TEST_RUN): End, End.X, End.DX6, End.DX4,
//! End.DT6, PSP, USD, transit, SR-domain protection, and RFC 8754 malformations. The node
//! under test is node 4 of block fc00::/32; its FIB knows real next hops.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use cats_common::{
    counters::{DropReason, Event},
    maps::PROG_ENDPOINT,
    sid,
};
use cats_controller::{
    dataplane::Dataplane,
    netns,
    state::{EndpointState, LocalSid, SidBehavior},
};
use cats_tests::{
    expect::{ipv4_decremented, ipv6_decremented},
    packets::{l3, udp4, udp6},
    router::{NEXT_HOP_MAC, router},
    srv6::Srv6,
    xdp::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
};

const BLOCK: [u8; 4] = [0xfc, 0, 0, 0];
const ME: u16 = 4;
const INSTANCE_MAC: [u8; 6] = [0x02, 0xca, 0x75, 0, 0, 0x10];
const INSTANCE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x21, 0, 0, 0, 0, 0, 0x10);
const INSTANCE4: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x64);
const SERVICE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xca75, 0, 0, 0, 0, 1);

fn my_sid(function: u16, argument: u64) -> Ipv6Addr {
    sid::encode(BLOCK, ME, function, argument).into()
}
fn end() -> Ipv6Addr {
    my_sid(sid::FUNC_END, 0)
}
fn end_x() -> Ipv6Addr {
    my_sid(0x0100, 0)
}
fn dt6() -> Ipv6Addr {
    my_sid(sid::FUNC_END_DT6, 0)
}
fn dx6() -> Ipv6Addr {
    sid::compute_sid(BLOCK, ME, false, 1, 1).into()
}
fn dx4() -> Ipv6Addr {
    sid::compute_sid(BLOCK, ME, true, 1, 1).into()
}
/// A SID of node 3, reachable through the resolved neighbour.
fn far_sid() -> Ipv6Addr {
    sid::compute_sid(BLOCK, 3, false, 1, 7).into()
}

fn sids() -> Vec<LocalSid> {
    let at = |sid, behavior| LocalSid { sid, behavior, interface: "up0".into() };
    vec![
        at(end(), SidBehavior::End),
        at(end_x(), SidBehavior::EndX { nexthop: "fd00:99::2".parse().unwrap() }),
        at(dt6(), SidBehavior::EndDt6 { table: 254 }),
        at(dx6(), SidBehavior::EndDx6 { nexthop: INSTANCE6 }),
        at(dx4(), SidBehavior::EndDx4 { nexthop: INSTANCE4 }),
    ]
}

fn endpoint(psp: bool, usd: bool, external: &[&str]) -> EndpointState {
    EndpointState {
        interfaces: vec!["up0".into()],
        external_interfaces: external.iter().map(|s| s.to_string()).collect(),
        sr_block: "fc00::/32".parse().unwrap(),
        locators: vec!["fc00:0:4::/48".parse().unwrap()],
        psp,
        usd,
    }
}

/// Loads a private dataplane with node 4's SIDs and runs `f` inside its namespace, whose FIB
/// reaches node 3 and the client prefix via fd00:99::2 and the instance on-link.
fn with_endpoint<T: Send + 'static>(
    state: EndpointState,
    f: impl FnOnce(&mut Dataplane, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    let r = router().unwrap();
    for args in [
        &["-6", "addr", "add", "fd00:21::1/64", "dev", "up0", "nodad"][..],
        &["addr", "add", "198.18.21.1/24", "dev", "up0"],
        &[
            "-6",
            "neigh",
            "add",
            "fd00:21::10",
            "lladdr",
            "02:ca:75:00:00:10",
            "nud",
            "permanent",
            "dev",
            "up0",
        ],
        &[
            "neigh",
            "add",
            "198.18.21.10",
            "lladdr",
            "02:ca:75:00:00:10",
            "nud",
            "permanent",
            "dev",
            "up0",
        ],
        &["-6", "route", "add", "fd00:10::/64", "via", "fd00:99::2", "dev", "up0"],
    ] {
        r.ns.ip(args).unwrap();
    }
    let mac = r.mac;
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load(None)?;
        dp.apply_endpoint(&state, &sids())?;
        f(&mut dp, mac)
    })
    .unwrap()
}

fn inner6() -> Vec<u8> {
    l3(&udp6(CLIENT6, SERVICE6, 40000, 7000, 64, b"plate")).to_vec()
}

fn rewrite_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
}

#[test]
fn end_advances_the_segment_list_and_forwards_by_the_fib() {
    with_endpoint(endpoint(false, false, &[]), |dp, mac| {
        let pkt = Srv6::new(end(), &[far_sid(), end()], 1);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner6()))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected =
            Srv6 { dst: far_sid(), segments_left: 0, hop_limit: 63, ..pkt }.frame(&inner6());
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        assert_eq!(out.frame, expected);
        assert_eq!(dp.events(Event::SegmentAdvanced)?, 1);
        Ok(())
    });
}

#[test]
fn psp_pops_the_srh_at_the_penultimate_segment() {
    with_endpoint(endpoint(true, false, &[]), |dp, mac| {
        let pkt = Srv6::new(end(), &[far_sid(), end()], 1);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner6()))?;
        assert_eq!(out.action, XDP_REDIRECT);
        // What is left: the outer IPv6 header straight before the inner packet.
        let mut expected =
            Srv6 { dst: far_sid(), hop_limit: 63, with_srh: false, ..pkt }.frame(&inner6());
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        assert_eq!(out.frame, expected);
        assert_eq!(dp.events(Event::SrhPopped)?, 1);
        Ok(())
    });
}

#[test]
fn end_x_sends_to_its_adjacency_and_end_at_zero_goes_to_the_kernel() {
    with_endpoint(endpoint(false, false, &[]), |dp, mac| {
        // The next SID is unroutable here; End.X does not care, it uses its adjacency.
        let unroutable: Ipv6Addr = "fc00:0:9:1::".parse()?;
        let pkt = Srv6::new(end_x(), &[unroutable, end_x()], 1);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner6()))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected =
            Srv6 { dst: unroutable, segments_left: 0, hop_limit: 63, ..pkt }.frame(&inner6());
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        assert_eq!(out.frame, expected);

        let at_zero = Srv6::new(end(), &[end()], 0).frame(&inner6());
        let out = xdp::run(dp, PROG_ENDPOINT, &at_zero)?;
        assert_eq!((out.action, &out.frame), (XDP_PASS, &at_zero));
        assert_eq!(dp.events(Event::EndpointToStack)?, 1);
        Ok(())
    });
}

#[test]
fn usd_decapsulates_at_the_last_end() {
    with_endpoint(endpoint(false, true, &[]), |dp, mac| {
        // Decapsulated and routed like End.DT6: towards the client prefix.
        let reply = l3(&udp6(SERVICE6, CLIENT6, 7000, 40000, 64, b"y")).to_vec();
        let pkt = Srv6::new(end(), &[end()], 0).frame(&reply);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt)?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected = vec![0u8; 12];
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        expected.extend_from_slice(&[0x86, 0xdd]);
        expected.extend_from_slice(&ipv6_decremented(&reply));
        assert_eq!(out.frame, expected);
        Ok(())
    });
}

#[test]
fn end_dx6_delivers_the_inner_packet_to_its_instance_with_or_without_an_srh() {
    with_endpoint(endpoint(false, false, &[]), |dp, mac| {
        let mut expected = vec![0u8; 12];
        rewrite_macs(&mut expected, INSTANCE_MAC, mac);
        expected.extend_from_slice(&[0x86, 0xdd]);
        expected.extend_from_slice(&ipv6_decremented(&inner6()));
        let full = Srv6::new(dx6(), &[dx6(), end()], 0);
        let reduced = Srv6 { with_srh: false, ..Srv6::new(dx6(), &[dx6()], 0) };
        for pkt in [full, reduced] {
            let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner6()))?;
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(out.frame, expected);
        }
        assert_eq!(dp.events(Event::Decapsulated)?, 2);
        Ok(())
    });
}

#[test]
fn end_dx4_delivers_ipv4_and_end_dt6_routes_the_inner_destination() {
    with_endpoint(endpoint(false, false, &[]), |dp, mac| {
        let inner4 =
            l3(&udp4("198.18.10.100".parse()?, "198.51.100.1".parse()?, 40000, 7000, 64, b"x"))
                .to_vec();
        let pkt = Srv6 { next_header: 4, ..Srv6::new(dx4(), &[dx4()], 0) };
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner4))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected = vec![0u8; 12];
        rewrite_macs(&mut expected, INSTANCE_MAC, mac);
        expected.extend_from_slice(&[0x08, 0x00]);
        expected.extend_from_slice(&ipv4_decremented(&inner4));
        assert_eq!(out.frame, expected);

        // End.DT6: the inner packet goes back towards the client prefix, fd00:10::/64.
        let reply = l3(&udp6(SERVICE6, CLIENT6, 7000, 40000, 64, b"y")).to_vec();
        let out = xdp::run(dp, PROG_ENDPOINT, &Srv6::new(dt6(), &[dt6()], 0).frame(&reply))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected = vec![0u8; 12];
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        expected.extend_from_slice(&[0x86, 0xdd]);
        expected.extend_from_slice(&ipv6_decremented(&reply));
        assert_eq!(out.frame, expected);
        Ok(())
    });
}

#[test]
fn transit_forwards_other_nodes_sids_and_leaves_other_traffic_alone() {
    with_endpoint(endpoint(false, false, &[]), |dp, mac| {
        let pkt = Srv6::new(far_sid(), &[far_sid()], 0);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner6()))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected = Srv6 { hop_limit: 63, ..pkt }.frame(&inner6());
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        assert_eq!(out.frame, expected);
        assert_eq!(dp.events(Event::TransitForwarded)?, 1);

        let plain = udp6(CLIENT6, SERVICE6, 1, 2, 64, b"z");
        let v4 = udp4("198.18.10.100".parse()?, "198.51.100.1".parse()?, 1, 2, 64, b"z");
        let unknown_function =
            Srv6::new(my_sid(0x0777, 0), &[my_sid(0x0777, 0)], 0).frame(&inner6());
        for frame in [plain, v4, unknown_function] {
            let out = xdp::run(dp, PROG_ENDPOINT, &frame)?;
            assert_eq!((out.action, out.frame), (XDP_PASS, frame));
        }
        assert_eq!(dp.events(Event::NotForUs)?, 2);
        assert_eq!(dp.events(Event::EndpointToStack)?, 1);
        Ok(())
    });
}

#[test]
fn packets_from_outside_the_domain_to_the_sid_block_are_dropped() {
    // BPF_PROG_TEST_RUN delivers on `lo`: mark it external.
    with_endpoint(endpoint(false, false, &["lo"]), |dp, _mac| {
        for dst in [end(), far_sid()] {
            let out = xdp::run(dp, PROG_ENDPOINT, &Srv6::new(dst, &[dst], 0).frame(&inner6()))?;
            assert_eq!(out.action, XDP_DROP);
        }
        assert_eq!(dp.drops(DropReason::OutsideDomain)?, 2);
        let plain = udp6(CLIENT6, SERVICE6, 1, 2, 64, b"z");
        assert_eq!(xdp::run(dp, PROG_ENDPOINT, &plain)?.action, XDP_PASS);
        Ok(())
    });
}

#[test]
fn malformed_srhs_get_named_drops_and_foreign_routing_goes_to_the_kernel() {
    with_endpoint(endpoint(false, false, &[]), |dp, _mac| {
        let base = Srv6::new(end(), &[far_sid(), end()], 1);
        let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
            (
                "segments left > last entry + 1",
                Srv6 { segments_left: 3, ..base.clone() }.frame(&inner6()),
                DropReason::SrhInvalid,
            ),
            (
                "hdr ext len too short for last entry",
                Srv6 { last_entry: Some(5), ..base.clone() }.frame(&inner6()),
                DropReason::SrhInvalid,
            ),
            (
                "TLV overruns the SRH",
                Srv6 { tlvs: vec![4, 30, 0, 0, 0, 0, 0, 0], ..base.clone() }.frame(&inner6()),
                DropReason::TlvInvalid,
            ),
            (
                "SRH cut short",
                {
                    let f = base.frame(&inner6());
                    f[..14 + 40 + 20].to_vec()
                },
                DropReason::Truncated,
            ),
            (
                "DX6 with segments left",
                Srv6::new(dx6(), &[dx6(), end()], 1).frame(&inner6()),
                DropReason::NotLastSegment,
            ),
            (
                "DX6 carrying IPv4",
                Srv6 { next_header: 4, ..Srv6::new(dx6(), &[dx6()], 0) }.frame(&inner6()),
                DropReason::WrongPayload,
            ),
            (
                "fragment header first",
                Srv6 { before: vec![(44, vec![0; 8])], ..base.clone() }.frame(&inner6()),
                DropReason::Fragment,
            ),
        ];
        for (what, frame, reason) in &cases {
            let before = dp.drops(*reason)?;
            let out = xdp::run(dp, PROG_ENDPOINT, frame)?;
            assert_eq!(out.action, XDP_DROP, "{what}");
            assert_eq!(dp.drops(*reason)?, before + 1, "{what}");
        }
        // Two SRHs: the second routing header after the first.
        let mut inner_srh = Srv6::new(end(), &[end()], 0).srh();
        inner_srh[0] = 41;
        let mut outer = Srv6 { next_header: 43, ..base.clone() }.frame(&inner_srh);
        outer.extend_from_slice(&inner6());
        let len = (outer.len() - 54) as u16;
        outer[18..20].copy_from_slice(&len.to_be_bytes());
        assert_eq!(xdp::run(dp, PROG_ENDPOINT, &outer)?.action, XDP_DROP);
        assert_eq!(dp.drops(DropReason::RoutingHeaderRepeated)?, 1);

        // A type-2 routing header with segments left: the kernel answers with ICMP.
        let type2 = Srv6 { routing_type: 2, ..base.clone() }.frame(&inner6());
        let out = xdp::run(dp, PROG_ENDPOINT, &type2)?;
        assert_eq!((out.action, &out.frame), (XDP_PASS, &type2));
        // Hop limit 1 at End: the kernel sends Time Exceeded.
        let expiring = Srv6 { hop_limit: 1, ..base.clone() }.frame(&inner6());
        assert_eq!(xdp::run(dp, PROG_ENDPOINT, &expiring)?.action, XDP_PASS);
        assert_eq!(dp.events(Event::HopLimitToStack)?, 1);
        // A hop-by-hop header before the SRH is walked, and End still works.
        let hbh = Srv6 { before: vec![(0, vec![0, 0, 1, 4, 0, 0, 0, 0])], ..base.clone() }
            .frame(&inner6());
        assert_eq!(xdp::run(dp, PROG_ENDPOINT, &hbh)?.action, XDP_REDIRECT);
        Ok(())
    });
}
