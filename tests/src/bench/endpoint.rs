//! The endpoint's measured frames: one per behaviour, each with the frame one run must leave
//! and the event every packet must count. Node 4 of `cats_tests::endpoint_fixture`, whose FIB
//! knows the next hops, so every frame is forwarded (XDP_REDIRECT), none goes to the stack.

use std::net::Ipv6Addr;

use cats_common::{counters::Event, sid};
use cats_tests::{
    endpoint_fixture::{self as node4, CLIENT4, INSTANCE_MAC, ethernet, rewrite_macs},
    expect::{ipv4_decremented, ipv6_decremented},
    fixture::{BLOCK, PORT, SERVICE4, SERVICE6, edge_sid},
    packets::{l3, udp4, udp6},
    router::NEXT_HOP_MAC,
    srv6::Srv6,
};

use crate::cases::{CLIENT6, PAYLOAD, SPORT};

/// One endpoint row.
pub struct Behaviour {
    pub name: &'static str,
    /// What arrives: Ethernet + outer IPv6 + SRH + inner packet.
    pub frame: Vec<u8>,
    /// What one run leaves (checked byte for byte before timing).
    pub expected: Vec<u8>,
    /// The one event each packet counts.
    pub events: &'static [Event],
    /// For the report: segment list and where the packet goes.
    pub detail: String,
}

/// A SID of node 9, which this node has no route for: only End.X's adjacency gets it there.
fn unroutable_sid() -> Ipv6Addr {
    sid::encode(BLOCK, 9, sid::FUNC_END, 0).into()
}

/// End, End.X, End.DX6, End.DX4, End.DT6 and transit, as the headend's encapsulation (full
/// SRH, outer source fc00:0:1::1, hop limit 64) would bring them to node 4. `router_mac` is the
/// source MAC of everything forwarded.
pub fn behaviours(router_mac: [u8; 6]) -> Vec<Behaviour> {
    let payload = [0x5a; PAYLOAD];
    // The bench's service packet, its IPv4 twin, and the service's reply.
    let inner6 = l3(&udp6(CLIENT6, SERVICE6, SPORT, PORT, 64, &payload)).to_vec();
    let inner4 = l3(&udp4(CLIENT4, SERVICE4, SPORT, PORT, 64, &payload)).to_vec();
    let reply6 = l3(&udp6(SERVICE6, CLIENT6, PORT, SPORT, 64, &payload)).to_vec();

    // End and End.X: SL 1 -> 0, the next segment becomes the destination, hop limit 63.
    let advanced = |pkt: &Srv6| {
        let next = pkt.segments[usize::from(pkt.segments_left) - 1];
        let mut f = Srv6 {
            dst: next,
            segments_left: pkt.segments_left - 1,
            hop_limit: pkt.hop_limit - 1,
            ..pkt.clone()
        }
        .frame(&inner6);
        rewrite_macs(&mut f, NEXT_HOP_MAC, router_mac);
        f
    };
    let end = Srv6::new(node4::end(), &[node4::far_sid(), node4::end()], 1);
    let end_x = Srv6::new(node4::end_x(), &[unroutable_sid(), node4::end_x()], 1);
    let dx6 = Srv6::new(node4::dx6(), &[node4::dx6()], 0);
    let dx4 = Srv6 { next_header: 4, ..Srv6::new(node4::dx4(), &[node4::dx4()], 0) };
    let dt6 = Srv6::new(node4::dt6(), &[node4::dt6()], 0);
    // The headend's own output for the edge instance, passing through node 4.
    let transit = Srv6::new(edge_sid(), &[edge_sid()], 0);
    let mut transited = Srv6 { hop_limit: 63, ..transit.clone() }.frame(&inner6);
    rewrite_macs(&mut transited, NEXT_HOP_MAC, router_mac);

    let fib = "FIB: via fd00:99::2";
    vec![
        Behaviour {
            name: "endpoint, End",
            frame: end.frame(&inner6),
            expected: advanced(&end),
            events: &[Event::SegmentAdvanced],
            detail: format!("to {}, SL 1; next {} (node 3), {fib}", end.dst, end.segments[0]),
        },
        Behaviour {
            name: "endpoint, End.X",
            frame: end_x.frame(&inner6),
            expected: advanced(&end_x),
            events: &[Event::SegmentAdvanced],
            detail: format!(
                "to {}, SL 1; next {} (node 9, unrouted), adjacency fd00:99::2",
                end_x.dst, end_x.segments[0]
            ),
        },
        Behaviour {
            name: "endpoint, End.DX6",
            frame: dx6.frame(&inner6),
            expected: ethernet(INSTANCE_MAC, router_mac, 0x86dd, &ipv6_decremented(&inner6)),
            events: &[Event::Decapsulated],
            detail: format!("to {}, SL 0; inner IPv6 to instance {}", dx6.dst, node4::INSTANCE6),
        },
        Behaviour {
            name: "endpoint, End.DX4",
            frame: dx4.frame(&inner4),
            expected: ethernet(INSTANCE_MAC, router_mac, 0x0800, &ipv4_decremented(&inner4)),
            events: &[Event::Decapsulated],
            detail: format!("to {}, SL 0; inner IPv4 to instance {}", dx4.dst, node4::INSTANCE4),
        },
        Behaviour {
            name: "endpoint, End.DT6",
            frame: dt6.frame(&reply6),
            expected: ethernet(NEXT_HOP_MAC, router_mac, 0x86dd, &ipv6_decremented(&reply6)),
            events: &[Event::Decapsulated],
            detail: format!("to {}, SL 0; inner reply to {CLIENT6}, {fib}", dt6.dst),
        },
        Behaviour {
            name: "endpoint, transit",
            frame: transit.frame(&inner6),
            expected: transited,
            events: &[Event::TransitForwarded],
            detail: format!("to {} (node 3's End.DX6), SL 0; {fib}", transit.dst),
        },
    ]
}
