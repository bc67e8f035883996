//! The headend XDP program on single packets (BPF_PROG_TEST_RUN), in a namespace whose FIB
//! knows the way to the SIDs, so forwarding decisions are real too.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use cats_common::{
    counters::{DropReason, Event},
    flow::{FlowKey, flow_hash},
    maps::PROG_HEADEND,
    sid,
};
use cats_controller::{dataplane::Dataplane, netns};
use cats_tests::{
    expect::{Encap, ipv4_decremented, ipv6_decremented},
    fixture::{self, PORT, SERVICE4, SERVICE6},
    packets::{self, CLIENT_MAC, GATEWAY_MAC, l3, udp4, udp6},
    router::{NEXT_HOP_MAC, router},
    xdp::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
};

const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x21);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 21);

/// Loads a private dataplane with the fixture's headend (weights edge, cloud) and runs `f`
/// inside the router namespace.
fn with_headend<T: Send + 'static>(
    edge: u32,
    cloud: u32,
    f: impl FnOnce(&mut Dataplane, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    let r = router().unwrap();
    let mac = r.mac;
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load(None)?;
        dp.apply_headend(&fixture::headend("cams", edge, cloud))?;
        f(&mut dp, mac)
    })
    .unwrap()
}

fn five_tuple6(sport: u16) -> FlowKey {
    FlowKey {
        src: CLIENT6.octets(),
        dst: SERVICE6.octets(),
        sport,
        dport: PORT,
        proto: 17,
        _pad: [0; 3],
        service_slot: 0,
    }
}

#[test]
fn ipv6_request_is_encapsulated_to_the_edge_instance_byte_for_byte() {
    with_headend(1, 0, |dp, mac| {
        let frame = udp6(CLIENT6, SERVICE6, 40000, PORT, 64, b"plate please");
        let out = xdp::run(dp, PROG_HEADEND, &frame)?;
        assert_eq!(out.action, XDP_REDIRECT);
        let expected = Encap {
            eth_dst: NEXT_HOP_MAC,
            eth_src: mac,
            flow_label: flow_hash(&five_tuple6(40000)),
            hop_limit: 64,
            source: fixture::ENCAP_SOURCE,
            segments: &[fixture::edge_sid()],
            next_header: 41,
            tag: fixture::CS_ID,
        }
        .frame(&ipv6_decremented(l3(&frame)));
        assert_eq!(out.frame, expected);
        assert_eq!(dp.events(Event::Redirected)?, 1);
        assert_eq!(dp.events(Event::AffinityMiss)?, 1);
        let inner_len = l3(&frame).len() as u64;
        assert_eq!(dp.service_counter(0)?.packets, 1);
        assert_eq!(dp.service_counter(0)?.bytes, inner_len);
        assert_eq!(dp.instance_counter(0)?.packets, 1);
        assert_eq!(dp.instance_counter(1)?.packets, 0);
        Ok(())
    });
}

#[test]
fn ipv4_request_rides_ipv6_with_an_end_dx4_sid_and_a_fixed_checksum() {
    with_headend(1, 0, |dp, mac| {
        // Ethernet pads this short frame to 60 bytes; the padding must not be carried.
        let mut frame = udp4(CLIENT4, SERVICE4, 40001, PORT, 17, b"hi");
        let ip_len = frame.len() - 14;
        frame.resize(60, 0);
        let out = xdp::run(dp, PROG_HEADEND, &frame)?;
        assert_eq!(out.action, XDP_REDIRECT);
        let key = FlowKey {
            src: CLIENT4.to_ipv6_mapped().octets(),
            dst: SERVICE4.to_ipv6_mapped().octets(),
            sport: 40001,
            dport: PORT,
            proto: 17,
            _pad: [0; 3],
            service_slot: 0,
        };
        let dx4_sid: Ipv6Addr = sid::compute_sid(fixture::BLOCK, 3, true, fixture::CS_ID, 1).into();
        assert_eq!(
            sid::decode(&dx4_sid.octets()),
            sid::SidFunction::ComputeV4 { cs_id: fixture::CS_ID, instance: 1 }
        );
        let expected = Encap {
            eth_dst: NEXT_HOP_MAC,
            eth_src: mac,
            flow_label: flow_hash(&key),
            hop_limit: 64,
            source: fixture::ENCAP_SOURCE,
            segments: &[dx4_sid],
            next_header: 4,
            tag: fixture::CS_ID,
        }
        .frame(&ipv4_decremented(&frame[14..14 + ip_len]));
        assert_eq!(out.frame, expected);
        Ok(())
    });
}

#[test]
fn two_segment_path_with_unresolved_next_hop_goes_to_the_stack_encapsulated() {
    with_headend(0, 1, |dp, _mac| {
        let frame = udp6(CLIENT6, SERVICE6, 40002, PORT, 64, b"to the cloud");
        let out = xdp::run(dp, PROG_HEADEND, &frame)?;
        assert_eq!(out.action, XDP_PASS);
        // Received MACs kept, so the stack takes the frame as addressed to this node.
        let expected = Encap {
            eth_dst: GATEWAY_MAC,
            eth_src: CLIENT_MAC,
            flow_label: flow_hash(&five_tuple6(40002)),
            hop_limit: 64,
            source: fixture::ENCAP_SOURCE,
            segments: &[fixture::core_end_sid(), fixture::cloud_sid()],
            next_header: 41,
            tag: fixture::CS_ID,
        }
        .frame(&ipv6_decremented(l3(&frame)));
        assert_eq!(out.frame, expected);
        assert_eq!(dp.events(Event::EncapToStack)?, 1);
        Ok(())
    });
}

#[test]
fn established_flows_keep_their_instance_when_weights_change_and_new_flows_move() {
    with_headend(1, 0, |dp, _mac| {
        let old_flow = udp6(CLIENT6, SERVICE6, 41000, PORT, 64, b"a");
        assert_eq!(xdp::run(dp, PROG_HEADEND, &old_flow)?.action, XDP_REDIRECT);
        assert_eq!(xdp::run(dp, PROG_HEADEND, &old_flow)?.action, XDP_REDIRECT);
        assert_eq!(dp.events(Event::AffinityMiss)?, 1);
        assert_eq!(dp.events(Event::AffinityHit)?, 1);

        // The controller moves all weight to the cloud.
        dp.apply_headend(&fixture::headend("cams", 0, 1))?;
        let out = xdp::run(dp, PROG_HEADEND, &old_flow)?;
        assert_eq!(out.action, XDP_REDIRECT, "old flow still to the edge (resolved neighbour)");
        assert_eq!(&out.frame[38..54], &fixture::edge_sid().octets()[..], "outer destination");
        assert_eq!(dp.events(Event::AffinityHit)?, 2);

        let new_flow = udp6(CLIENT6, SERVICE6, 41001, PORT, 64, b"b");
        let out = xdp::run(dp, PROG_HEADEND, &new_flow)?;
        assert_eq!(out.action, XDP_PASS, "new flow to the cloud via the unresolved core");
        assert_eq!(&out.frame[38..54], &fixture::core_end_sid().octets()[..]);
        assert_eq!(dp.instance_counter(0)?.packets, 3);
        assert_eq!(dp.instance_counter(1)?.packets, 1);
        Ok(())
    });
}

#[test]
fn removed_instance_releases_its_flows() {
    with_headend(1, 1, |dp, _mac| {
        let mut state = fixture::headend("cams", 1, 0);
        let flow = udp6(CLIENT6, SERVICE6, 42000, PORT, 64, b"a");
        dp.apply_headend(&state)?;
        xdp::run(dp, PROG_HEADEND, &flow)?;
        // edge1-a disappears from the intent: its target is cleared, the flow re-picks.
        state.instances.remove(0);
        state.services[0].weights =
            vec![cats_controller::state::InstanceWeight { slot: 1, weight: 1 }];
        dp.apply_headend(&state)?;
        let out = xdp::run(dp, PROG_HEADEND, &flow)?;
        assert_eq!(&out.frame[38..54], &fixture::core_end_sid().octets()[..]);
        assert_eq!(dp.events(Event::AffinityMiss)?, 2);
        Ok(())
    });
}

#[test]
fn traffic_that_is_not_for_a_service_passes_untouched() {
    with_headend(1, 0, |dp, _mac| {
        let other_address = udp6(CLIENT6, "2001:db8::99".parse()?, 40000, PORT, 64, b"x");
        let other_port = udp6(CLIENT6, SERVICE6, 40000, 53, 64, b"x");
        let tcp_same_port = packets::tcp6(CLIENT6, SERVICE6, 40000, PORT);
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&CLIENT_MAC);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        for frame in [other_address, other_port, tcp_same_port, arp] {
            let out = xdp::run(dp, PROG_HEADEND, &frame)?;
            assert_eq!(out.action, XDP_PASS);
            assert_eq!(out.frame, frame);
        }
        assert_eq!(dp.events(Event::NotService)?, 4);
        Ok(())
    });
}

#[test]
fn expiring_hop_limit_is_left_to_the_stack() {
    with_headend(1, 0, |dp, _mac| {
        let frame = udp6(CLIENT6, SERVICE6, 40000, PORT, 1, b"x");
        let out = xdp::run(dp, PROG_HEADEND, &frame)?;
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(out.frame, frame);
        assert_eq!(dp.events(Event::HopLimitToStack)?, 1);
        Ok(())
    });
}

#[test]
fn truncated_packets_are_dropped_and_counted() {
    with_headend(1, 0, |dp, _mac| {
        let full = udp6(CLIENT6, SERVICE6, 40000, PORT, 64, b"0123456789");
        // Cut right after Ethernet, inside the IPv6 header, inside the UDP ports, and inside
        // the payload (the IPv6 header promises more than the frame holds). Shorter than
        // Ethernet cannot be tested: the kernel never hands XDP such a frame (test runs
        // refuse it with EINVAL).
        let cuts = [14, 14 + 20, 14 + 40 + 2, full.len() - 4];
        for cut in cuts {
            let out = xdp::run(dp, PROG_HEADEND, &full[..cut])?;
            assert_eq!(out.action, XDP_DROP, "cut at {cut}");
        }
        assert_eq!(dp.drops(DropReason::Truncated)?, cuts.len() as u64);
        Ok(())
    });
}

#[test]
fn service_without_weighted_instances_drops_with_a_reason() {
    with_headend(0, 0, |dp, _mac| {
        let frame = udp6(CLIENT6, SERVICE6, 40000, PORT, 64, b"x");
        assert_eq!(xdp::run(dp, PROG_HEADEND, &frame)?.action, XDP_DROP);
        assert_eq!(dp.drops(DropReason::NoInstance)?, 1);
        Ok(())
    });
}

#[test]
fn packets_into_the_sid_block_are_dropped_at_the_domain_edge() {
    with_headend(1, 0, |dp, _mac| {
        // What the agent writes for a node whose SR domain is fc00::/32.
        dp.update_config(|c| {
            c.sr_block = "fc00::".parse::<Ipv6Addr>().unwrap().octets();
            c.sr_block_len = 32;
        })?;
        let spoofed = udp6(CLIENT6, fixture::edge_sid(), 40000, 9, 64, b"inject");
        assert_eq!(xdp::run(dp, PROG_HEADEND, &spoofed)?.action, XDP_DROP);
        assert_eq!(dp.drops(DropReason::OutsideDomain)?, 1);
        // Service traffic still goes through.
        let request = udp6(CLIENT6, SERVICE6, 40000, PORT, 64, b"ok");
        assert_eq!(xdp::run(dp, PROG_HEADEND, &request)?.action, XDP_REDIRECT);
        Ok(())
    });
}
