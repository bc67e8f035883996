//! A headend state like the controller compiles for the smart-traffic example: one service
//! with an IPv6 and an IPv4 address on UDP 7000, an edge instance (one segment) and a cloud
//! instance reached through the core's End SID (two segments).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cats_common::sid;
use cats_controller::state::{
    FlowDefinition, HeadendState, InstanceState, InstanceWeight, ServiceMatch, ServiceState,
};

pub const BLOCK: [u8; 4] = [0xfc, 0x00, 0x00, 0x00];
pub const SERVICE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xca75, 0, 0, 0, 0, 1);
pub const SERVICE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PORT: u16 = 7000;
pub const CS_ID: u16 = 1;
pub const ENCAP_SOURCE: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 1, 0, 0, 0, 0, 1);

pub fn edge_sid() -> Ipv6Addr {
    sid::compute_sid(BLOCK, 3, false, CS_ID, 1).into()
}
pub fn core_end_sid() -> Ipv6Addr {
    sid::encode(BLOCK, 2, sid::FUNC_END, 0).into()
}
pub fn cloud_sid() -> Ipv6Addr {
    sid::compute_sid(BLOCK, 5, false, CS_ID, 3).into()
}

/// Slot 0: edge1-a (weight `edge`), slot 1: cloud-a via core (weight `cloud`).
pub fn headend(interface: &str, edge: u32, cloud: u32) -> HeadendState {
    HeadendState {
        interfaces: vec![interface.to_string()],
        encap_source: ENCAP_SOURCE,
        affinity_table_size: cats_common::maps::AFFINITY_TABLE_SIZE,
        services: vec![ServiceState {
            name: "plate-recognition".into(),
            slot: 0,
            cs_id: CS_ID,
            matches: vec![
                ServiceMatch {
                    address: IpAddr::V6(SERVICE6),
                    protocol: 17,
                    port: PORT,
                    port_group: 0,
                },
                ServiceMatch {
                    address: IpAddr::V4(SERVICE4),
                    protocol: 17,
                    port: PORT,
                    port_group: 0,
                },
            ],
            flow: FlowDefinition::FiveTuple,
            affinity_timeout_ms: 30_000,
            weights: vec![
                InstanceWeight { slot: 0, weight: edge },
                InstanceWeight { slot: 1, weight: cloud },
            ],
            health: Default::default(),
        }],
        instances: vec![
            InstanceState {
                name: "edge1-a".into(),
                slot: 0,
                service: "plate-recognition".into(),
                cs_id: CS_ID,
                instance_id: 1,
                segments: vec![edge_sid()],
                alternate_segments: Vec::new(),
                backup_slot: None,
            },
            InstanceState {
                name: "cloud-a".into(),
                slot: 1,
                service: "plate-recognition".into(),
                cs_id: CS_ID,
                instance_id: 3,
                segments: vec![core_end_sid(), cloud_sid()],
                alternate_segments: Vec::new(),
                backup_slot: None,
            },
        ],
    }
}

/// The second instance on the edge node (instance 2): reached like edge1-a, one segment.
pub fn edge_b_sid() -> Ipv6Addr {
    sid::compute_sid(BLOCK, 3, false, CS_ID, 2).into()
}

/// [`headend`] (edge weight 1, cloud 0) with failover: edge1-a (slot 0) has an alternate path
/// through the core (core End SID, then its compute SID) and edge1-b (slot 2, weight 0) as its
/// backup; edge1-b has an alternate through the core too and no backup; cloud-a has neither.
pub fn headend_with_failover(interface: &str) -> HeadendState {
    let mut state = headend(interface, 1, 0);
    state.services[0].weights.push(InstanceWeight { slot: 2, weight: 0 });
    let edge = &mut state.instances[0];
    edge.alternate_segments = vec![core_end_sid(), edge_sid()];
    edge.backup_slot = Some(2);
    state.instances.push(InstanceState {
        name: "edge1-b".into(),
        slot: 2,
        service: "plate-recognition".into(),
        cs_id: CS_ID,
        instance_id: 2,
        segments: vec![edge_b_sid()],
        alternate_segments: vec![core_end_sid(), edge_b_sid()],
        backup_slot: None,
    });
    state
}
