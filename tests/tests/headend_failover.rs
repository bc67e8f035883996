//! Local fast failover in the headend (BPF_PROG_TEST_RUN on single packets, in a namespace
//! whose FIB knows the way to the SIDs): the `CATS_HEALTH` bits the prober writes decide
//! between an instance's primary path, its alternate path, its backup instance, or the primary
//! path anyway.
//!
//! The fixture (`fixture::headend_with_failover`): new flows pick edge1-a (slot 0). Its primary
//! path is the edge's compute SID (a resolved neighbour: redirected), its alternate goes through
//! the core's End SID (an unresolved neighbour: encapsulated to the stack), its backup is
//! edge1-b (slot 2). cloud-a (slot 1) has neither alternate nor backup.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use cats_common::{
    counters::{DropReason, Event},
    flow::{FlowEntry, FlowKey, flow_hash},
    maps::{
        Failover, HEALTH_ALTERNATE_DOWN, HEALTH_PRIMARY_DOWN, InstanceTarget, MAP_AFFINITY,
        MAP_FAILOVER, MAP_HEALTH, MAP_TARGETS, MAX_SEGMENTS, NO_INSTANCE, PROG_HEADEND,
    },
    sid,
};
use cats_controller::{
    dataplane::{Dataplane, health::HealthMap, program::remove_pins},
    netns,
    state::{HeadendState, InstanceWeight},
};
use cats_lab::netns::unique_name;
use cats_tests::{
    expect::{Encap, ipv4_decremented, ipv6_decremented},
    fixture::{self, PORT, SERVICE4, SERVICE6},
    packets::{CLIENT_MAC, GATEWAY_MAC, l3, udp4, udp6},
    router::{NEXT_HOP_MAC, router},
    xdp::{self, XDP_PASS, XDP_REDIRECT},
};

const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x31);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 31);
const DOWN: u32 = HEALTH_PRIMARY_DOWN | HEALTH_ALTERNATE_DOWN;

/// Loads a private dataplane with `state`, takes its health map as the prober does, and runs
/// `f` inside the router namespace.
fn with_state<T: Send + 'static>(
    state: HeadendState,
    f: impl FnOnce(&mut Dataplane, &mut HealthMap, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    let r = router().unwrap();
    let mac = r.mac;
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load(None)?;
        dp.apply_headend(&state)?;
        let mut health = HealthMap::take(&mut dp)?;
        f(&mut dp, &mut health, mac)
    })
    .unwrap()
}

fn with_failover<T: Send + 'static>(
    f: impl FnOnce(&mut Dataplane, &mut HealthMap, [u8; 6]) -> Result<T> + Send + 'static,
) -> T {
    with_state(fixture::headend_with_failover("cams"), f)
}

fn key6(sport: u16) -> FlowKey {
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

fn request(sport: u16) -> Vec<u8> {
    udp6(CLIENT6, SERVICE6, sport, PORT, 64, b"plate please")
}

/// Sends one request of flow `sport` and checks it left byte for byte as H.Encaps over
/// `segments` (visiting order): redirected with the FIB's MACs when the first segment is on
/// the edge, handed to the stack with the received MACs when it is the core's (unresolved).
fn assert_steered(dp: &mut Dataplane, mac: [u8; 6], sport: u16, segments: &[Ipv6Addr]) {
    let frame = request(sport);
    let out = xdp::run(dp, PROG_HEADEND, &frame).unwrap();
    let via_core = segments[0] == fixture::core_end_sid();
    let (action, eth_dst, eth_src) = if via_core {
        (XDP_PASS, GATEWAY_MAC, CLIENT_MAC)
    } else {
        (XDP_REDIRECT, NEXT_HOP_MAC, mac)
    };
    assert_eq!(srh_segments(&out.frame), segments, "segment list of flow {sport}");
    assert_eq!(out.action, action, "verdict of flow {sport}");
    let expected = Encap {
        eth_dst,
        eth_src,
        flow_label: flow_hash(&key6(sport)),
        hop_limit: 64,
        source: fixture::ENCAP_SOURCE,
        segments,
        next_header: 41,
        tag: fixture::CS_ID,
    }
    .frame(&ipv6_decremented(l3(&frame)));
    assert_eq!(out.frame, expected, "frame of flow {sport}");
}

/// The SRH's segment list of an encapsulated frame, in visiting order.
fn srh_segments(frame: &[u8]) -> Vec<Ipv6Addr> {
    const SRH: usize = 14 + 40;
    assert_eq!(frame[14 + 6], 43, "outer next header is the routing header");
    let last_entry = usize::from(frame[SRH + 4]);
    let list = &frame[SRH + 8..SRH + 8 + 16 * (last_entry + 1)];
    list.chunks(16).rev().map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap())).collect()
}

/// The instance slot flow `key` is pinned to, if it has a pin.
fn pin_of(dp: &Dataplane, key: &FlowKey) -> Option<u32> {
    let map = dp.ebpf().map(MAP_AFFINITY).expect("affinity map");
    let pins: HashMap<&MapData, FlowKey, FlowEntry> = HashMap::try_from(map).unwrap();
    pins.get(key, 0).ok().map(|e| e.instance_slot)
}

/// The failover events, in one line for assertions.
#[derive(Debug, PartialEq, Eq)]
struct Failovers {
    alternate: u64,
    repinned: u64,
    unavailable: u64,
}

fn failovers(dp: &Dataplane) -> Failovers {
    Failovers {
        alternate: dp.events(Event::FailoverAlternate).unwrap(),
        repinned: dp.events(Event::FailoverRepinned).unwrap(),
        unavailable: dp.events(Event::FailoverUnavailable).unwrap(),
    }
}

fn events(alternate: u64, repinned: u64, unavailable: u64) -> Failovers {
    Failovers { alternate, repinned, unavailable }
}

/// Packets steered to each of the three instance slots.
fn per_instance(dp: &Dataplane) -> [u64; 3] {
    [0, 1, 2].map(|slot| dp.instance_counter(slot).unwrap().packets)
}

fn no_drops(dp: &Dataplane) -> bool {
    DropReason::ALL.iter().all(|r| dp.drops(*r).unwrap() == 0)
}

#[test]
fn a_healthy_slot_takes_its_primary_path_whatever_other_slots_report() {
    with_failover(|dp, health, mac| {
        // The backup and the cloud being down is no concern of edge1-a's flows.
        health.set(1, DOWN)?;
        health.set(2, DOWN)?;
        assert_steered(dp, mac, 50000, &[fixture::edge_sid()]);
        assert_steered(dp, mac, 50000, &[fixture::edge_sid()]);
        assert_eq!(pin_of(dp, &key6(50000)), Some(0));
        assert_eq!(failovers(dp), events(0, 0, 0));
        assert_eq!(per_instance(dp), [2, 0, 0]);
        assert_eq!(health.get(0)?, 0, "healthy until the prober says otherwise");
        Ok(())
    });
}

#[test]
fn primary_down_and_alternate_up_takes_the_alternate_and_keeps_the_pin() {
    with_failover(|dp, health, mac| {
        assert_steered(dp, mac, 50010, &[fixture::edge_sid()]);
        health.set(0, HEALTH_PRIMARY_DOWN)?;

        // The pinned flow: same instance, through the core.
        let alternate = [fixture::core_end_sid(), fixture::edge_sid()];
        assert_steered(dp, mac, 50010, &alternate);
        assert_eq!(pin_of(dp, &key6(50010)), Some(0));
        assert_eq!(failovers(dp), events(1, 0, 0));
        assert_eq!(dp.events(Event::AffinityHit)?, 1);
        // A new flow picks edge1-a and keeps it too.
        assert_steered(dp, mac, 50011, &alternate);
        assert_eq!(pin_of(dp, &key6(50011)), Some(0));
        assert_eq!(failovers(dp), events(2, 0, 0));

        // IPv4 over the alternate: its last SID says End.DX4, as on the primary path.
        let mut frame = udp4(CLIENT4, SERVICE4, 50012, PORT, 17, b"v4");
        let ip_len = frame.len() - 14;
        frame.resize(60, 0);
        let out = xdp::run(dp, PROG_HEADEND, &frame)?;
        assert_eq!(out.action, XDP_PASS);
        let dx4: Ipv6Addr = sid::compute_sid(fixture::BLOCK, 3, true, fixture::CS_ID, 1).into();
        let key = FlowKey {
            src: CLIENT4.to_ipv6_mapped().octets(),
            dst: SERVICE4.to_ipv6_mapped().octets(),
            sport: 50012,
            dport: PORT,
            proto: 17,
            _pad: [0; 3],
            service_slot: 0,
        };
        let expected = Encap {
            eth_dst: GATEWAY_MAC,
            eth_src: CLIENT_MAC,
            flow_label: flow_hash(&key),
            hop_limit: 64,
            source: fixture::ENCAP_SOURCE,
            segments: &[fixture::core_end_sid(), dx4],
            next_header: 4,
            tag: fixture::CS_ID,
        }
        .frame(&ipv4_decremented(&frame[14..14 + ip_len]));
        assert_eq!(out.frame, expected);
        assert_eq!(failovers(dp), events(3, 0, 0));
        assert_eq!(per_instance(dp), [4, 0, 0]);

        // The primary path is back: so is the flow.
        health.set(0, 0)?;
        assert_steered(dp, mac, 50010, &[fixture::edge_sid()]);
        assert_eq!(failovers(dp), events(3, 0, 0));
        assert!(no_drops(dp));
        Ok(())
    });
}

#[test]
fn an_unreachable_instance_hands_its_flow_to_the_backup_for_good() {
    with_failover(|dp, health, mac| {
        let flow = key6(50020);
        assert_steered(dp, mac, 50020, &[fixture::edge_sid()]);
        assert_eq!(pin_of(dp, &flow), Some(0));

        // Neither path answers: the flow moves to edge1-b, its pin with it.
        health.set(0, DOWN)?;
        assert_steered(dp, mac, 50020, &[fixture::edge_b_sid()]);
        assert_eq!(pin_of(dp, &flow), Some(2));
        assert_eq!(failovers(dp), events(0, 1, 0));
        assert_eq!(per_instance(dp), [1, 0, 1]);
        // The next packet finds the new pin: a hit, no failover.
        assert_steered(dp, mac, 50020, &[fixture::edge_b_sid()]);
        assert_eq!(failovers(dp), events(0, 1, 0));

        // edge1-a is back; the flow stays where its connection now lives.
        health.set(0, 0)?;
        assert_steered(dp, mac, 50020, &[fixture::edge_b_sid()]);
        assert_eq!(pin_of(dp, &flow), Some(2));
        assert_eq!(failovers(dp), events(0, 1, 0));
        assert_eq!(per_instance(dp), [1, 0, 3]);
        // One pick, then hits: the re-pin happened in the entry the flow already had.
        assert_eq!(dp.events(Event::AffinityMiss)?, 1);
        assert_eq!(dp.events(Event::AffinityHit)?, 3);
        assert_eq!(dp.events(Event::AffinityPinned)?, 1);
        // New flows pick edge1-a again.
        assert_steered(dp, mac, 50021, &[fixture::edge_sid()]);
        assert_eq!(pin_of(dp, &key6(50021)), Some(0));
        assert!(no_drops(dp));
        Ok(())
    });
}

#[test]
fn a_new_flow_that_picks_a_dead_slot_is_pinned_straight_to_the_backup() {
    with_failover(|dp, health, mac| {
        health.set(0, DOWN)?;
        assert_steered(dp, mac, 50030, &[fixture::edge_b_sid()]);
        assert_eq!(pin_of(dp, &key6(50030)), Some(2));
        assert_eq!(failovers(dp), events(0, 1, 0));
        assert_eq!(dp.events(Event::AffinityMiss)?, 1);
        assert_eq!(dp.events(Event::AffinityPinned)?, 1, "one key, pinned once");
        assert_eq!(dp.affinity_occupancy()?, 1);

        assert_steered(dp, mac, 50030, &[fixture::edge_b_sid()]);
        assert_eq!(dp.events(Event::AffinityHit)?, 1);
        assert_eq!(failovers(dp), events(0, 1, 0));
        assert_eq!(per_instance(dp), [0, 0, 2]);
        assert_eq!(dp.service_counter(0)?.packets, 2);
        Ok(())
    });
}

#[test]
fn a_backup_whose_primary_is_down_is_reached_over_its_alternate() {
    with_failover(|dp, health, mac| {
        health.set(0, DOWN)?;
        health.set(2, HEALTH_PRIMARY_DOWN)?;
        let backup_alternate = [fixture::core_end_sid(), fixture::edge_b_sid()];
        assert_steered(dp, mac, 50040, &backup_alternate);
        assert_eq!(pin_of(dp, &key6(50040)), Some(2));
        // One event per packet: this one was re-pinned...
        assert_eq!(failovers(dp), events(0, 1, 0));
        // ...and the next is a packet of edge1-b's on its alternate path.
        assert_steered(dp, mac, 50040, &backup_alternate);
        assert_eq!(failovers(dp), events(1, 1, 0));
        assert_eq!(per_instance(dp), [0, 0, 2]);
        Ok(())
    });
}

#[test]
fn with_a_dead_backup_the_primary_path_is_used_anyway() {
    with_failover(|dp, health, mac| {
        assert_steered(dp, mac, 50050, &[fixture::edge_sid()]);
        health.set(0, DOWN)?;
        health.set(2, DOWN)?;
        // The same frame and verdict as a healthy packet's, counted as unavailable.
        assert_steered(dp, mac, 50050, &[fixture::edge_sid()]);
        assert_eq!(pin_of(dp, &key6(50050)), Some(0));
        assert_eq!(failovers(dp), events(0, 0, 1));
        // A new flow too, pinned where the lookup put it.
        assert_steered(dp, mac, 50051, &[fixture::edge_sid()]);
        assert_eq!(pin_of(dp, &key6(50051)), Some(0));
        assert_eq!(failovers(dp), events(0, 0, 2));
        assert_eq!(per_instance(dp), [3, 0, 0]);
        assert!(no_drops(dp));
        Ok(())
    });
}

#[test]
fn without_a_backup_or_an_alternate_the_primary_path_is_used_anyway() {
    // All weight on cloud-a, which has neither.
    let mut state = fixture::headend_with_failover("cams");
    for w in &mut state.services[0].weights {
        w.weight = u32::from(w.slot == 1);
    }
    with_state(state, |dp, health, mac| {
        let cloud = [fixture::core_end_sid(), fixture::cloud_sid()];
        assert_steered(dp, mac, 50060, &cloud);
        // Only the primary bit: with no alternate there is nothing else to try.
        health.set(1, HEALTH_PRIMARY_DOWN)?;
        assert_steered(dp, mac, 50060, &cloud);
        assert_eq!(pin_of(dp, &key6(50060)), Some(1));
        assert_eq!(failovers(dp), events(0, 0, 1));
        assert_eq!(per_instance(dp), [0, 2, 0]);
        assert!(no_drops(dp));
        Ok(())
    });
}

// ---- The agent's side ----------------------------------------------------------------------

fn failover_entry(dp: &Dataplane, slot: u32) -> Failover {
    let map = dp.ebpf().map(MAP_FAILOVER).expect("failover map");
    let entries: Array<&MapData, Failover> = Array::try_from(map).unwrap();
    entries.get(&slot, 0).unwrap()
}

fn target_entry(dp: &Dataplane, slot: u32) -> InstanceTarget {
    let map = dp.ebpf().map(MAP_TARGETS).expect("targets map");
    let entries: Array<&MapData, InstanceTarget> = Array::try_from(map).unwrap();
    entries.get(&slot, 0).unwrap()
}

/// A map target of `segments` (visiting order) for instance `instance_id`.
fn segment_list(instance_id: u32, segments: &[Ipv6Addr]) -> InstanceTarget {
    let mut list = [[0u8; 16]; MAX_SEGMENTS];
    for (i, s) in segments.iter().rev().enumerate() {
        list[i] = s.octets();
    }
    InstanceTarget {
        instance_id,
        cs_id: fixture::CS_ID,
        segment_count: segments.len() as u8,
        _pad: 0,
        segments: list,
    }
}

#[test]
fn apply_headend_writes_and_clears_failover_entries() {
    with_state(fixture::headend("cams", 1, 0), |dp, _health, _mac| {
        let none = Failover { backup_slot: NO_INSTANCE, _pad: 0, alternate: InstanceTarget::EMPTY };
        assert_eq!(failover_entry(dp, 0), none);
        assert_eq!(failover_entry(dp, 1), none);

        let changes = dp.apply_headend(&fixture::headend_with_failover("cams"))?;
        assert_eq!((changes.failovers_written, changes.failovers_cleared), (2, 0));
        let edge_alternate = [fixture::core_end_sid(), fixture::edge_sid()];
        assert_eq!(
            failover_entry(dp, 0),
            Failover { backup_slot: 2, _pad: 0, alternate: segment_list(1, &edge_alternate) }
        );
        assert_eq!(failover_entry(dp, 1), none);
        let edge_b_alternate = [fixture::core_end_sid(), fixture::edge_b_sid()];
        assert_eq!(
            failover_entry(dp, 2),
            Failover {
                backup_slot: NO_INSTANCE,
                _pad: 0,
                alternate: segment_list(2, &edge_b_alternate)
            }
        );
        // Applied again: nothing differs, nothing is written.
        let changes = dp.apply_headend(&fixture::headend_with_failover("cams"))?;
        assert_eq!((changes.failovers_written, changes.failovers_cleared), (0, 0));

        // edge1-b leaves: its entry is cleared with its target, and edge1-a loses its backup.
        let mut state = fixture::headend_with_failover("cams");
        state.instances.retain(|i| i.slot != 2);
        state.instances[0].backup_slot = None;
        state.services[0].weights.retain(|w| w.slot != 2);
        let changes = dp.apply_headend(&state)?;
        assert_eq!((changes.failovers_written, changes.failovers_cleared), (1, 1));
        assert_eq!(changes.targets_cleared, 1);
        assert_eq!(failover_entry(dp, 0).backup_slot, NO_INSTANCE);
        assert_eq!(failover_entry(dp, 0).alternate, segment_list(1, &edge_alternate));
        assert_eq!(
            failover_entry(dp, 2),
            Failover { backup_slot: 0, _pad: 0, alternate: InstanceTarget::EMPTY }
        );
        Ok(())
    });
}

#[test]
fn apply_headend_rejects_a_backup_that_is_no_instance_and_writes_nothing() {
    with_failover(|dp, _health, _mac| {
        let before: Vec<(Failover, InstanceTarget)> =
            (0..4).map(|s| (failover_entry(dp, s), target_entry(dp, s))).collect();
        for (backup, says) in [
            (7, "backup slot 7, which is no instance of this headend"),
            (5000, "backup slot 5000 but the headend holds 1024"),
        ] {
            // Everything else changes too, so a partial write would show.
            let mut state = fixture::headend_with_failover("cams");
            state.instances[0].backup_slot = Some(backup);
            state.instances[1].segments = vec![fixture::cloud_sid()];
            state.instances[1].alternate_segments = vec![fixture::core_end_sid()];
            state.instances[2].backup_slot = Some(0);
            state.services[0].weights.push(InstanceWeight { slot: 3, weight: 1 });
            let error = format!("{:#}", dp.apply_headend(&state).unwrap_err());
            assert!(error.contains("edge1-a") && error.contains(says), "{error}");
            let after: Vec<(Failover, InstanceTarget)> =
                (0..4).map(|s| (failover_entry(dp, s), target_entry(dp, s))).collect();
            assert_eq!(after, before);
        }
        Ok(())
    });
}

/// A pin directory on the host's bpffs, removed on drop.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        remove_pins(&self.0).ok();
    }
}

#[test]
fn failover_and_health_maps_are_pinned_and_outlive_a_restart() {
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(unique_name("fo")));
    let dir = pins.0.clone();
    let r = router().unwrap();
    let mac = r.mac;
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load(Some(&dir))?;
        dp.apply_headend(&fixture::headend_with_failover("cams"))?;
        for name in [MAP_FAILOVER, MAP_HEALTH] {
            assert!(dir.join("maps").join(name).exists(), "{name} pinned");
        }
        // Another process (the prober, a tool) marks the primary path down.
        HealthMap::open_pinned(&dir)?.set(0, HEALTH_PRIMARY_DOWN)?;
        assert_steered(&mut dp, mac, 50070, &[fixture::core_end_sid(), fixture::edge_sid()]);
        drop(dp);

        // A restarted agent reopens both: the flow still takes the alternate.
        let mut dp = Dataplane::load(Some(&dir))?;
        assert_eq!(HealthMap::open_pinned(&dir)?.get(0)?, HEALTH_PRIMARY_DOWN);
        assert_eq!(failover_entry(&dp, 0).backup_slot, 2);
        assert_steered(&mut dp, mac, 50070, &[fixture::core_end_sid(), fixture::edge_sid()]);
        assert_eq!(dp.events(Event::FailoverAlternate)?, 2);
        Ok(())
    })
    .context("pinned failover maps")
    .unwrap();
    drop(pins);
}
