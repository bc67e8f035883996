//! The headend XDP program on single packets (BPF_PROG_TEST_RUN), in a namespace whose FIB
//! knows the way to the SIDs, so forwarding decisions are real too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use cats_common::{
    counters::{DropReason, Event},
    flow::{FlowEntry, FlowKey, flow_hash},
    maps::{MAP_AFFINITY, PROG_HEADEND},
    sid,
};
use cats_controller::{
    dataplane::Dataplane,
    netns,
    state::{FlowDefinition, HeadendState, ServiceMatch},
};
use cats_tests::{
    expect::{Encap, ipv4_decremented, ipv6_decremented},
    fixture::{self, PORT, SERVICE4, SERVICE6},
    packets::{self, CLIENT_MAC, GATEWAY_MAC, l3, udp4, udp6},
    router::{NEXT_HOP_MAC, router},
    xdp::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
};
use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder};

const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x21);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 21);

/// Loads a private dataplane with the fixture's headend (weights edge, cloud) and runs `f`
/// inside the router namespace.
fn with_headend<T: Send + 'static>(
    edge: u32,
    cloud: u32,
    f: impl FnOnce(&mut Dataplane, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    with_state(fixture::headend("cams", edge, cloud), f)
}

/// As [`with_headend`], with a headend state of the test's own.
fn with_state<T: Send + 'static>(
    state: HeadendState,
    f: impl FnOnce(&mut Dataplane, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    let r = router().unwrap();
    let mac = r.mac;
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load(None)?;
        dp.apply_headend(&state)?;
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

// ---- Affinity semantics ------------------------------------------------------------------------

const CLIENT6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x22);
const RTP_AUDIO: u16 = 5004;
const RTP_VIDEO: u16 = 5006;
const RTP_OTHER: u16 = 5008;
/// The port group of RTP_AUDIO and RTP_VIDEO.
const RTP_GROUP: u8 = 1;

/// Which instance slot a steered frame went to, by its outer destination: edge1-a (slot 0)
/// is one segment away, cloud-a (slot 1) behind the core's End SID.
fn instance_of(frame: &[u8]) -> u32 {
    let outer_dst = &frame[38..54];
    if outer_dst == fixture::edge_sid().octets() {
        0
    } else if outer_dst == fixture::core_end_sid().octets() {
        1
    } else {
        panic!("outer destination {outer_dst:02x?} is no instance's first segment")
    }
}

/// The keys of the affinity table.
fn pins(dp: &Dataplane) -> Result<Vec<FlowKey>> {
    let map = dp.ebpf().map(MAP_AFFINITY).context("no affinity map")?;
    let pins: HashMap<&MapData, FlowKey, FlowEntry> = HashMap::try_from(map)?;
    Ok(pins.keys().collect::<Result<_, _>>()?)
}

/// The event counters these tests watch, in one line for assertions.
#[derive(Debug, PartialEq, Eq)]
struct Affinity {
    hit: u64,
    miss: u64,
    pinned: u64,
    reset: u64,
    occupancy: u64,
}

fn affinity(dp: &Dataplane) -> Result<Affinity> {
    Ok(Affinity {
        hit: dp.events(Event::AffinityHit)?,
        miss: dp.events(Event::AffinityMiss)?,
        pinned: dp.events(Event::AffinityPinned)?,
        reset: dp.events(Event::AffinityReset)?,
        occupancy: dp.affinity_occupancy()?,
    })
}

fn counts(hit: u64, miss: u64, pinned: u64, reset: u64, occupancy: u64) -> Affinity {
    Affinity { hit, miss, pinned, reset, occupancy }
}

/// The fixture's service with the source-port-group definition: UDP 5004 and 5006 in one
/// group, 5008 and 7000 in none.
fn port_group_state(edge: u32, cloud: u32) -> HeadendState {
    let mut state = fixture::headend("cams", edge, cloud);
    let svc = &mut state.services[0];
    svc.flow = FlowDefinition::SourcePortGroup;
    let address = IpAddr::V6(SERVICE6);
    for (port, port_group) in [(RTP_AUDIO, RTP_GROUP), (RTP_VIDEO, RTP_GROUP), (RTP_OTHER, 0)] {
        svc.matches.push(ServiceMatch { address, protocol: 17, port, port_group });
    }
    state
}

/// The fixture's five-tuple service, also on TCP 7000 (IPv6 and IPv4).
fn tcp_state(edge: u32, cloud: u32) -> HeadendState {
    let mut state = fixture::headend("cams", edge, cloud);
    for address in [IpAddr::V6(SERVICE6), IpAddr::V4(SERVICE4)] {
        state.services[0].matches.push(ServiceMatch {
            address,
            protocol: 6,
            port: PORT,
            port_group: 0,
        });
    }
    state
}

/// Moves all weight of `state`'s service to one instance slot (the instances stay).
fn weights_to(dp: &mut Dataplane, mut state: HeadendState, slot: u32) -> Result<()> {
    for w in &mut state.services[0].weights {
        w.weight = u32::from(w.slot == slot);
    }
    dp.apply_headend(&state)?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Tcp {
    Syn,
    Ack,
    FinAck,
    Rst,
    RstAck,
}

/// Ethernet + IPv6 + TCP with `flags`.
fn tcp6(src: Ipv6Addr, sport: u16, flags: Tcp) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(src.octets(), SERVICE6.octets(), 64)
        .tcp(sport, PORT, 1000, 65535);
    let b = match flags {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(1),
        Tcp::FinAck => b.fin().ack(1),
        Tcp::Rst => b.rst(),
        Tcp::RstAck => b.rst().ack(1),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("writing a TCP/IPv6 frame");
    out
}

/// Ethernet + IPv4 with 4 bytes of options (IHL 6: the TCP header at a computed offset) + TCP.
fn tcp4_with_options(sport: u16, flags: Tcp) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT4.octets(), SERVICE4.octets())
        .expect("an IPv4 header");
    ip.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).expect("NOP NOP NOP EOL");
    let b = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, PORT, 1000, 65535);
    let b = match flags {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(1),
        Tcp::FinAck => b.fin().ack(1),
        Tcp::Rst => b.rst(),
        Tcp::RstAck => b.rst().ack(1),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("writing a TCP/IPv4 frame");
    assert_eq!(out[14] & 0x0f, 6, "IHL 6");
    out
}

#[test]
fn port_group_flows_from_one_source_share_one_pin() {
    with_state(port_group_state(1, 0), |dp, _mac| {
        // RTP audio of a call: a new flow, pinned to the only weighted instance (the edge).
        let audio = udp6(CLIENT6, SERVICE6, 40000, RTP_AUDIO, 64, b"audio");
        let out = xdp::run(dp, PROG_HEADEND, &audio)?;
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(instance_of(&out.frame), 0);
        assert_eq!(affinity(dp)?, counts(0, 1, 1, 0, 1));
        // The key: source, destination, protocol and the group in place of the port, the
        // source port marking a group key (all ones).
        let key = FlowKey {
            src: CLIENT6.octets(),
            dst: SERVICE6.octets(),
            sport: u16::MAX,
            dport: u16::from(RTP_GROUP),
            proto: 17,
            _pad: [0; 3],
            service_slot: 0,
        };
        assert_eq!(pins(dp)?, vec![key]);
        let flow_label = u32::from_be_bytes(out.frame[14..18].try_into()?) & 0xfffff;
        assert_eq!(flow_label, flow_hash(&key) & 0xfffff, "the outer flow label hashes the key");

        // All weight moves to the cloud: a new pick would go there. The video of the same
        // call (another port of the group, another source port) still meets the audio's pin.
        weights_to(dp, port_group_state(1, 0), 1)?;
        let video = udp6(CLIENT6, SERVICE6, 40002, RTP_VIDEO, 64, b"video");
        let out = xdp::run(dp, PROG_HEADEND, &video)?;
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(instance_of(&out.frame), 0, "video with its audio, on the edge");
        assert_eq!(affinity(dp)?, counts(1, 1, 1, 0, 1), "an affinity hit on the one pin");
        assert_eq!(dp.instance_counter(0)?.packets, 2);
        Ok(())
    });
}

#[test]
fn another_source_and_a_port_outside_any_group_are_pins_of_their_own() {
    with_state(port_group_state(1, 0), |dp, _mac| {
        let audio = udp6(CLIENT6, SERVICE6, 40000, RTP_AUDIO, 64, b"audio");
        assert_eq!(instance_of(&xdp::run(dp, PROG_HEADEND, &audio)?.frame), 0);
        weights_to(dp, port_group_state(1, 0), 1)?;

        // Another client's call: its own pin, picked afresh (the cloud).
        let other_source = udp6(CLIENT6_B, SERVICE6, 40000, RTP_VIDEO, 64, b"video");
        let out = xdp::run(dp, PROG_HEADEND, &other_source)?;
        assert_eq!(out.action, XDP_PASS, "to the cloud via the unresolved core");
        assert_eq!(instance_of(&out.frame), 1);
        assert_eq!(affinity(dp)?, counts(0, 2, 2, 0, 2));

        // The first client, to a port in no group: its own pin too.
        let other_port = udp6(CLIENT6, SERVICE6, 40000, RTP_OTHER, 64, b"other");
        assert_eq!(instance_of(&xdp::run(dp, PROG_HEADEND, &other_port)?.frame), 1);
        assert_eq!(affinity(dp)?, counts(0, 3, 3, 0, 3));
        // A port in no group is a group of its own: another source port to it shares the pin,
        // and so does the group's port with yet another source port.
        let same_port = udp6(CLIENT6, SERVICE6, 40004, RTP_OTHER, 64, b"other");
        assert_eq!(instance_of(&xdp::run(dp, PROG_HEADEND, &same_port)?.frame), 1);
        let audio_again = udp6(CLIENT6, SERVICE6, 40006, RTP_AUDIO, 64, b"audio");
        assert_eq!(instance_of(&xdp::run(dp, PROG_HEADEND, &audio_again)?.frame), 0);
        assert_eq!(affinity(dp)?, counts(2, 3, 3, 0, 3));
        let mut dports: Vec<u16> = pins(dp)?.iter().map(|k| k.dport).collect();
        dports.sort();
        assert_eq!(dports, vec![u16::from(RTP_GROUP), u16::from(RTP_GROUP), RTP_OTHER]);
        Ok(())
    });
}

#[test]
fn tcp_rst_is_steered_to_its_pinned_instance_and_removes_the_pin() {
    with_state(tcp_state(1, 0), |dp, mac| {
        assert_eq!(
            xdp::run(dp, PROG_HEADEND, &tcp6(CLIENT6, 43000, Tcp::Syn))?.action,
            XDP_REDIRECT
        );
        assert_eq!(affinity(dp)?, counts(0, 1, 1, 0, 1));
        // New flows now go to the cloud; the connection stays on the edge.
        weights_to(dp, tcp_state(1, 0), 1)?;
        let ack = tcp6(CLIENT6, 43000, Tcp::Ack);
        assert_eq!(instance_of(&xdp::run(dp, PROG_HEADEND, &ack)?.frame), 0);

        // The RST reaches the pinned instance, encapsulated as any packet of the flow.
        let rst = tcp6(CLIENT6, 43000, Tcp::RstAck);
        let out = xdp::run(dp, PROG_HEADEND, &rst)?;
        assert_eq!(out.action, XDP_REDIRECT);
        let key = FlowKey {
            src: CLIENT6.octets(),
            dst: SERVICE6.octets(),
            sport: 43000,
            dport: PORT,
            proto: 6,
            _pad: [0; 3],
            service_slot: 0,
        };
        let expected = Encap {
            eth_dst: NEXT_HOP_MAC,
            eth_src: mac,
            flow_label: flow_hash(&key),
            hop_limit: 64,
            source: fixture::ENCAP_SOURCE,
            segments: &[fixture::edge_sid()],
            next_header: 41,
            tag: fixture::CS_ID,
        }
        .frame(&ipv6_decremented(l3(&rst)));
        assert_eq!(out.frame, expected);
        assert_eq!(affinity(dp)?, counts(2, 1, 1, 1, 0), "a hit, then the pin goes");
        assert_eq!(dp.events(Event::AffinityReset)?, 1);
        assert!(pins(dp)?.is_empty());

        // The next SYN of the same 5-tuple is a new flow, picked afresh: the cloud.
        let syn = tcp6(CLIENT6, 43000, Tcp::Syn);
        let out = xdp::run(dp, PROG_HEADEND, &syn)?;
        assert_eq!(instance_of(&out.frame), 1);
        assert_eq!(affinity(dp)?, counts(2, 2, 2, 1, 1));
        assert_eq!(dp.affinity_evictions()?, 0);
        Ok(())
    });
}

#[test]
fn tcp_rst_behind_ipv4_options_and_rst_of_an_unknown_flow_leave_no_pin() {
    with_state(tcp_state(1, 0), |dp, _mac| {
        // The TCP header sits after 24 bytes of IPv4 header: flags read at a computed offset.
        let syn = tcp4_with_options(44000, Tcp::Syn);
        assert_eq!(xdp::run(dp, PROG_HEADEND, &syn)?.action, XDP_REDIRECT);
        assert_eq!(affinity(dp)?, counts(0, 1, 1, 0, 1));
        let rst = tcp4_with_options(44000, Tcp::Rst);
        assert_eq!(xdp::run(dp, PROG_HEADEND, &rst)?.action, XDP_REDIRECT);
        assert_eq!(affinity(dp)?, counts(1, 1, 1, 1, 0));

        // A RST of a flow with no pin is steered, and no pin stays behind (it was made and
        // deleted: pinned and reset both count it, so the eviction count stays 0).
        let stray = tcp6(CLIENT6, 44001, Tcp::Rst);
        assert_eq!(xdp::run(dp, PROG_HEADEND, &stray)?.action, XDP_REDIRECT);
        assert_eq!(affinity(dp)?, counts(1, 2, 2, 2, 0));
        assert_eq!(dp.affinity_evictions()?, 0);
        Ok(())
    });
}

#[test]
fn tcp_fin_keeps_the_pin() {
    with_state(tcp_state(1, 0), |dp, _mac| {
        xdp::run(dp, PROG_HEADEND, &tcp6(CLIENT6, 45000, Tcp::Syn))?;
        weights_to(dp, tcp_state(1, 0), 1)?;
        // Both FINs, then the last ACK: every one still reaches the edge.
        for flags in [Tcp::FinAck, Tcp::FinAck, Tcp::Ack] {
            let out = xdp::run(dp, PROG_HEADEND, &tcp6(CLIENT6, 45000, flags))?;
            assert_eq!(instance_of(&out.frame), 0);
        }
        assert_eq!(affinity(dp)?, counts(3, 1, 1, 0, 1));
        Ok(())
    });
}

#[test]
fn tcp_header_cut_before_its_flags_is_steered_and_keeps_the_pin() {
    with_state(tcp_state(1, 0), |dp, _mac| {
        xdp::run(dp, PROG_HEADEND, &tcp6(CLIENT6, 46000, Tcp::Syn))?;
        // A RST whose IPv6 payload ends after 12 bytes of TCP header: the flags byte (13) is
        // outside the packet the header declares, so it is not taken for a RST.
        let mut cut = tcp6(CLIENT6, 46000, Tcp::Rst);
        cut.truncate(14 + 40 + 12);
        cut[18..20].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(xdp::run(dp, PROG_HEADEND, &cut)?.action, XDP_REDIRECT);
        assert_eq!(affinity(dp)?, counts(1, 1, 1, 0, 1));
        Ok(())
    });
}

#[test]
fn tcp_rst_leaves_pins_of_other_flow_definitions_alone() {
    let mut state = tcp_state(1, 0);
    state.services[0].flow = FlowDefinition::SourceAddress;
    with_state(state, |dp, _mac| {
        xdp::run(dp, PROG_HEADEND, &tcp6(CLIENT6, 47000, Tcp::Syn))?;
        // One connection of the client resets; its other flows keep their instance.
        xdp::run(dp, PROG_HEADEND, &tcp6(CLIENT6, 47000, Tcp::Rst))?;
        assert_eq!(affinity(dp)?, counts(1, 1, 1, 0, 1));
        Ok(())
    });
}

#[test]
fn affinity_pinned_counts_new_keys_and_not_expired_pins_re_pinned_in_place() {
    let mut state = fixture::headend("cams", 1, 0);
    state.services[0].affinity_timeout_ms = 200;
    with_state(state, |dp, _mac| {
        let flow = udp6(CLIENT6, SERVICE6, 48000, PORT, 64, b"a");
        xdp::run(dp, PROG_HEADEND, &flow)?;
        assert_eq!(affinity(dp)?, counts(0, 1, 1, 0, 1));
        // The pin expires; the flow's next packet re-pins the same key in place.
        std::thread::sleep(std::time::Duration::from_millis(300));
        xdp::run(dp, PROG_HEADEND, &flow)?;
        assert_eq!(affinity(dp)?, counts(0, 2, 1, 0, 1), "a miss, but no new key");
        // Within the timeout: a hit.
        xdp::run(dp, PROG_HEADEND, &flow)?;
        assert_eq!(affinity(dp)?, counts(1, 2, 1, 0, 1));
        // Another flow is a new key.
        xdp::run(dp, PROG_HEADEND, &udp6(CLIENT6, SERVICE6, 48001, PORT, 64, b"b"))?;
        assert_eq!(affinity(dp)?, counts(1, 3, 2, 0, 2));
        assert_eq!(dp.affinity_evictions()?, 0);

        // A pin that leaves the table without a RST counts as evicted.
        let map = dp.ebpf_mut().map_mut(MAP_AFFINITY).context("no affinity map")?;
        let mut table: HashMap<&mut MapData, FlowKey, FlowEntry> = HashMap::try_from(map)?;
        let key = table.keys().next().context("a pin")??;
        table.remove(&key)?;
        assert_eq!(dp.affinity_evictions()?, 1);
        Ok(())
    });
}
