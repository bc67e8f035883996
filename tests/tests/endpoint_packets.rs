//! The XDP endpoint on single packets (BPF_PROG_TEST_RUN): End, End.X, End.DX6, End.DX4,
//! End.DT6, PSP, USD, transit, SR-domain protection, and RFC 8754 malformations. The node
//! under test is node 4 of block fc00::/32; its FIB knows real next hops.

use std::net::Ipv6Addr;

use anyhow::Result;
use cats_common::{
    counters::{DropReason, Event},
    maps::PROG_ENDPOINT,
};
use cats_controller::{dataplane::Dataplane, netns, state::EndpointState};
use cats_tests::{
    endpoint_fixture::{
        self as node4, CLIENT4, CLIENT6, INSTANCE_MAC, dt6, dx4, dx6, end, end_x, ethernet,
        far_sid, my_sid, rewrite_macs,
    },
    expect::{ipv4_decremented, ipv6_decremented},
    fixture::{SERVICE4, SERVICE6},
    packets::{l3, udp4, udp6},
    router::NEXT_HOP_MAC,
    srv6::Srv6,
    xdp::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
};

/// Loads a private dataplane with node 4's SIDs and runs `f` inside its namespace (see
/// `endpoint_fixture`), whose FIB reaches node 3 and the client prefix via fd00:99::2 and the
/// instance on-link.
fn with_endpoint<T: Send + 'static>(
    state: EndpointState,
    f: impl FnOnce(&mut Dataplane, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    let r = node4::router().unwrap();
    let mac = r.mac;
    netns::run_in(&r.ns.path(), move || {
        let mut dp = node4::load(&state)?;
        f(&mut dp, mac)
    })
    .unwrap()
}

fn inner6() -> Vec<u8> {
    l3(&udp6(CLIENT6, SERVICE6, 40000, 7000, 64, b"plate")).to_vec()
}

#[test]
fn end_advances_the_segment_list_and_forwards_by_the_fib() {
    with_endpoint(node4::state(false, false, &[]), |dp, mac| {
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
    with_endpoint(node4::state(true, false, &[]), |dp, mac| {
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
    with_endpoint(node4::state(false, false, &[]), |dp, mac| {
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
    with_endpoint(node4::state(false, true, &[]), |dp, mac| {
        // Decapsulated and routed like End.DT6: towards the client prefix.
        let reply = l3(&udp6(SERVICE6, CLIENT6, 7000, 40000, 64, b"y")).to_vec();
        let pkt = Srv6::new(end(), &[end()], 0).frame(&reply);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt)?;
        assert_eq!(out.action, XDP_REDIRECT);
        let expected = ethernet(NEXT_HOP_MAC, mac, 0x86dd, &ipv6_decremented(&reply));
        assert_eq!(out.frame, expected);
        Ok(())
    });
}

#[test]
fn end_dx6_delivers_the_inner_packet_to_its_instance_with_or_without_an_srh() {
    with_endpoint(node4::state(false, false, &[]), |dp, mac| {
        let expected = ethernet(INSTANCE_MAC, mac, 0x86dd, &ipv6_decremented(&inner6()));
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
    with_endpoint(node4::state(false, false, &[]), |dp, mac| {
        let inner4 = l3(&udp4(CLIENT4, SERVICE4, 40000, 7000, 64, b"x")).to_vec();
        let pkt = Srv6 { next_header: 4, ..Srv6::new(dx4(), &[dx4()], 0) };
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner4))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let expected = ethernet(INSTANCE_MAC, mac, 0x0800, &ipv4_decremented(&inner4));
        assert_eq!(out.frame, expected);

        // End.DT6: the inner packet goes back towards the client prefix, fd00:10::/64.
        let reply = l3(&udp6(SERVICE6, CLIENT6, 7000, 40000, 64, b"y")).to_vec();
        let out = xdp::run(dp, PROG_ENDPOINT, &Srv6::new(dt6(), &[dt6()], 0).frame(&reply))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let expected = ethernet(NEXT_HOP_MAC, mac, 0x86dd, &ipv6_decremented(&reply));
        assert_eq!(out.frame, expected);
        Ok(())
    });
}

#[test]
fn transit_forwards_other_nodes_sids_and_leaves_other_traffic_alone() {
    with_endpoint(node4::state(false, false, &[]), |dp, mac| {
        let pkt = Srv6::new(far_sid(), &[far_sid()], 0);
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt.frame(&inner6()))?;
        assert_eq!(out.action, XDP_REDIRECT);
        let mut expected = Srv6 { hop_limit: 63, ..pkt }.frame(&inner6());
        rewrite_macs(&mut expected, NEXT_HOP_MAC, mac);
        assert_eq!(out.frame, expected);
        assert_eq!(dp.events(Event::TransitForwarded)?, 1);

        let plain = udp6(CLIENT6, SERVICE6, 1, 2, 64, b"z");
        let v4 = udp4(CLIENT4, SERVICE4, 1, 2, 64, b"z");
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
    with_endpoint(node4::state(false, false, &["lo"]), |dp, _mac| {
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
    with_endpoint(node4::state(false, false, &[]), |dp, _mac| {
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
                "fragment header first (a first fragment: M set)",
                Srv6 { before: vec![(44, vec![0, 0, 0, 1, 0, 0, 0, 7])], ..base.clone() }
                    .frame(&inner6()),
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

#[test]
fn next_hops_behind_devices_xdp_cannot_redirect_into_go_to_the_kernel() {
    with_endpoint(node4::state(false, false, &[]), |dp, _mac| {
        // What the agent does for a bridge: the instance's device is marked slow-path.
        let up0 = cats_controller::dataplane::sids::ifindex("up0")?;
        dp.apply_endpoint(&node4::state(false, false, &[]), &node4::sids(), &[up0])?;
        let pkt = Srv6::new(dx6(), &[dx6()], 0).frame(&inner6());
        let out = xdp::run(dp, PROG_ENDPOINT, &pkt)?;
        assert_eq!((out.action, &out.frame), (XDP_PASS, &pkt), "unchanged, for seg6local");
        assert_eq!(dp.events(Event::EndpointToStack)?, 1);
        assert_eq!(dp.events(Event::Decapsulated)?, 0);
        Ok(())
    });
}
