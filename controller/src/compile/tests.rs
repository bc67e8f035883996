use std::path::Path;

use super::*;
use crate::{
    intent::{self, Link, LinkRef},
    state::SidBehavior,
};

fn example() -> Intent {
    intent::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smart-traffic/intent"),
    )
    .unwrap()
}

fn weight_of(c: &Compiled, instance: &str) -> u32 {
    let he = c.nodes["gw"].headend.as_ref().unwrap();
    let slot = he.instances.iter().find(|i| i.name == instance).unwrap().slot;
    he.services[0].weights.iter().find(|w| w.slot == slot).unwrap().weight
}

#[test]
fn example_steers_to_the_two_edges_and_keeps_the_cloud_idle() {
    let c = compile(&example(), &Metrics::default(), 1).unwrap();
    assert_eq!(weight_of(&c, "edge1-a"), 500);
    assert_eq!(weight_of(&c, "edge2-a"), 500);
    assert_eq!(weight_of(&c, "cloud-a"), 0);
    let he = c.nodes["gw"].headend.as_ref().unwrap();
    assert_eq!(he.encap_source.to_string(), "fc00:0:1::1");
    assert_eq!(he.interfaces, ["cams"]);
    let edge1 = he.instances.iter().find(|i| i.name == "edge1-a").unwrap();
    // One segment: the compute SID of service 1, instance 1 on node 3 (End.DX6 function 0x4001).
    assert_eq!(edge1.segments, ["fc00:0:3:4001::1".parse::<std::net::Ipv6Addr>().unwrap()]);
    let svc = &he.services[0];
    assert_eq!(svc.matches.len(), 2);
    assert!(svc.matches.iter().all(|m| m.protocol == 17 && m.port == 7000));
    assert_eq!(svc.affinity_timeout_ms, 30_000);
}

#[test]
fn egress_nodes_get_dx_sids_and_every_node_end() {
    let c = compile(&example(), &Metrics::default(), 1).unwrap();
    let edge1 = &c.nodes["edge1"];
    let text: Vec<String> =
        edge1.sids.iter().map(|s| format!("{} {:?}", s.sid, s.behavior)).collect();
    assert!(text.contains(&"fc00:0:3:1:: End".to_string()), "{text:?}");
    assert!(
        text.contains(&"fc00:0:3:4001::1 EndDx6 { nexthop: fd00:21::10 }".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(&"fc00:0:3:8001::1 EndDx4 { nexthop: 198.18.21.10 }".to_string()),
        "{text:?}"
    );
    assert!(c.nodes["core"].headend.is_none());
}

#[test]
fn underlay_routes_follow_the_shortest_path() {
    let c = compile(&example(), &Metrics::default(), 1).unwrap();
    let gw = &c.nodes["gw"];
    // gw reaches everything through core over link 1 (gw is side a, core side b).
    for r in &gw.routes {
        assert_eq!(r.interface, "core", "{r:?}");
    }
    let to_cloud = gw.routes.iter().find(|r| r.destination.to_string() == "fd00:30::/64").unwrap();
    assert_eq!(to_cloud.via.to_string(), "fdff:ca75:0:1::2");
    let to_cloud4 =
        gw.routes.iter().find(|r| r.destination.to_string() == "198.18.30.0/24").unwrap();
    assert_eq!(to_cloud4.via.to_string(), "198.19.0.6");
    // core reaches the client prefix back through gw.
    let core_back = c.nodes["core"]
        .routes
        .iter()
        .find(|r| r.destination.to_string() == "fd00:10::/64")
        .unwrap();
    assert_eq!(
        (core_back.interface.as_str(), core_back.via.to_string()),
        ("gw", "fdff:ca75:0:1::1".into())
    );
}

#[test]
fn declared_or_measured_load_moves_weight() {
    let mut intent = example();
    intent.services[0].instances[0].utilization = 0.85;
    let c = compile(&intent, &Metrics::default(), 2).unwrap();
    assert_eq!(weight_of(&c, "edge1-a"), 0);
    assert_eq!(weight_of(&c, "edge2-a"), 1000);

    let mut metrics = Metrics::default();
    for name in ["edge1-a", "edge2-a"] {
        metrics
            .instances
            .insert(name.into(), InstanceMetric { utilization: 0.8, ..Default::default() });
    }
    let c = compile(&example(), &metrics, 3).unwrap();
    assert!(weight_of(&c, "cloud-a") > 900);
}

/// The example plus a second core (core2) in parallel with core: gw - core2 - edge1/cloud.
fn with_second_core() -> Intent {
    let mut intent = example();
    let mut core2 = intent.node("core").unwrap().clone();
    core2.name = "core2".into();
    core2.index = 6;
    intent.topology.nodes.push(core2);
    for (a, b, ms) in [("gw", "core2", 4.0), ("core2", "cloud", 15.0)] {
        intent.topology.links.push(Link {
            a: a.into(),
            b: b.into(),
            latency_ms: ms,
            a_interface: b.into(),
            b_interface: a.into(),
        });
    }
    intent
}

fn segments_of(c: &Compiled, instance: &str) -> Vec<String> {
    let he = c.nodes["gw"].headend.as_ref().unwrap();
    let inst = he.instances.iter().find(|i| i.name == instance).unwrap();
    inst.segments.iter().map(ToString::to_string).collect()
}

fn decision<'c>(c: &'c Compiled, instance: &str) -> &'c Decision {
    c.decisions[0].decisions.iter().find(|d| d.instance == instance).unwrap()
}

#[test]
fn a_waypoint_is_always_a_segment_but_the_underlay_path_needs_none() {
    let c = compile(&example(), &Metrics::default(), 1).unwrap();
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:5:4001::3"], "gw-core-cloud is the IGP's");
    let mut intent = example();
    intent.policies[0].constraints.waypoints = vec!["core".into()];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:2:1::", "fc00:0:5:4001::3"]);
}

#[test]
fn a_waypoint_off_the_underlay_path_gets_its_end_sid() {
    let mut intent = with_second_core();
    intent.policies[0].constraints.waypoints = vec!["core2".into()];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:6:1::", "fc00:0:5:4001::3"]);
    assert_eq!(decision(&c, "cloud-a").path, ["gw", "core2", "cloud"]);
}

#[test]
fn a_measured_detour_is_forced_with_the_fewest_segments() {
    // Declared, gw-core-cloud (16 ms) beats gw-core2-cloud (19 ms): the underlay goes via core.
    // Measured, core-cloud takes 40 ms: the TE path moves to core2 and needs core2's End SID.
    let intent = with_second_core();
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:5:4001::3"]);
    let mut metrics = Metrics::default();
    let core_cloud = intent.topology.link_index(&LinkRef { a: "core".into(), b: "cloud".into() });
    metrics
        .links
        .insert(core_cloud.unwrap(), LinkMetric { one_way_ms: 40.0, ..Default::default() });
    let c = compile(&intent, &metrics, 2).unwrap();
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:6:1::", "fc00:0:5:4001::3"]);
    let d = decision(&c, "cloud-a");
    assert_eq!(d.path, ["gw", "core2", "cloud"]);
    assert!((d.network_ms - 38.0).abs() < 1e-9, "round trip over the measured path: {d:?}");
}

#[test]
fn used_instances_get_a_disjoint_backup_where_one_exists() {
    let mut intent = with_second_core();
    intent.policies[0].constraints.sites = vec!["cloud".into()];
    intent.policies[0].locality.clear();
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    let d = decision(&c, "cloud-a");
    assert_eq!(d.weight, 1000);
    assert_eq!(d.path, ["gw", "core", "cloud"]);
    assert_eq!(d.backup_path.as_deref(), Some(&["gw", "core2", "cloud"].map(String::from)[..]));
    // edge1 hangs off core only: no disjoint path, and it is not used anyway.
    assert_eq!(decision(&c, "edge1-a").backup_path, None);
    assert!(decision(&c, "edge1-a").excluded.as_ref().unwrap().contains("constraints.sites"));
    // The headend gets the backup as cloud-a's alternate segment list: core2's End SID
    // forces the way round core.
    let he = c.nodes["gw"].headend.as_ref().unwrap();
    let cloud = he.instances.iter().find(|i| i.name == "cloud-a").unwrap();
    let alternate: Vec<String> = cloud.alternate_segments.iter().map(ToString::to_string).collect();
    assert_eq!(alternate, ["fc00:0:6:1::", "fc00:0:5:4001::3"]);
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:5:4001::3"]);
}

fn backup_of(c: &Compiled, instance: &str) -> Option<String> {
    let he = c.nodes["gw"].headend.as_ref().unwrap();
    let slot = he.instances.iter().find(|i| i.name == instance).unwrap().backup_slot?;
    Some(he.instances.iter().find(|i| i.slot == slot).unwrap().name.clone())
}

#[test]
fn each_instance_has_a_backup_on_another_site_preferring_used_ones() {
    let c = compile(&example(), &Metrics::default(), 1).unwrap();
    // The edges back each other up; the idle cloud is backed by the nearer used edge.
    assert_eq!(backup_of(&c, "edge1-a").as_deref(), Some("edge2-a"));
    assert_eq!(backup_of(&c, "edge2-a").as_deref(), Some("edge1-a"));
    assert_eq!(backup_of(&c, "cloud-a").as_deref(), Some("edge1-a"));
}

#[test]
fn drained_and_unreachable_instances_get_no_flows_and_back_nobody_up() {
    let mut intent = example();
    intent.services[0].instances[1].drain = true; // edge2-a
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert_eq!(weight_of(&c, "edge2-a"), 0);
    assert_eq!(decision(&c, "edge2-a").excluded.as_deref(), Some("draining"));
    assert_eq!(backup_of(&c, "edge1-a").as_deref(), Some("cloud-a"));
    // A drained instance keeps its slot and its path: its established flows still get there.
    assert_eq!(segments_of(&c, "edge2-a"), ["fc00:0:4:4001::2"]);

    let mut metrics = Metrics::default();
    metrics.unreachable.insert("gw".into(), ["edge1-a".to_string()].into());
    let c = compile(&example(), &metrics, 1).unwrap();
    assert_eq!(weight_of(&c, "edge1-a"), 0);
    let why = decision(&c, "edge1-a").excluded.clone().unwrap();
    assert_eq!(why, "not answering health probes from gw");
    assert!(weight_of(&c, "edge2-a") > 0);
    assert_eq!(backup_of(&c, "edge2-a").as_deref(), Some("cloud-a"));
    assert_eq!(backup_of(&c, "edge1-a").as_deref(), Some("edge2-a"));

    // Every instance unreachable says as much about the probes as about the instances: the
    // choice stays as if they all answered.
    let all: std::collections::BTreeSet<String> =
        ["edge1-a", "edge2-a", "cloud-a"].map(String::from).into();
    metrics.unreachable.insert("gw".into(), all);
    let c = compile(&example(), &metrics, 1).unwrap();
    assert!(weight_of(&c, "edge1-a") > 0 && weight_of(&c, "edge2-a") > 0);
}

#[test]
fn a_link_measured_down_is_left_out_of_every_path() {
    let intent = with_second_core();
    let core_cloud = intent.topology.link_index(&LinkRef { a: "core".into(), b: "cloud".into() });
    let mut metrics = Metrics::default();
    let down = LinkMetric { one_way_ms: f64::INFINITY, jitter_ms: 0.0, loss: 1.0 };
    metrics.links.insert(core_cloud.unwrap(), down);
    let c = compile(&intent, &metrics, 1).unwrap();
    assert_eq!(decision(&c, "cloud-a").path, ["gw", "core2", "cloud"]);
    assert_eq!(segments_of(&c, "cloud-a"), ["fc00:0:6:1::", "fc00:0:5:4001::3"]);
}

#[test]
fn avoided_nodes_and_links_shape_the_path() {
    let mut intent = with_second_core();
    intent.policies[0].constraints.avoid_links =
        vec![LinkRef { a: "cloud".into(), b: "core".into() }];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert_eq!(decision(&c, "cloud-a").path, ["gw", "core2", "cloud"]);
    intent.policies[0].constraints.avoid_links.clear();
    intent.policies[0].constraints.avoid_nodes = vec!["core".into()];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert!(
        decision(&c, "edge1-a").excluded.as_ref().unwrap().contains("no path"),
        "{:?}",
        c.decisions
    );
}

#[test]
fn an_instance_metric_change_recompiles_only_the_headends_it_affects() {
    let mut compiler = Compiler::new(example(), 1).unwrap();
    assert_eq!(compiler.update(&Metrics::default(), 1, 0).unwrap(), ["gw"]);
    // Nothing changed: nothing to publish.
    assert!(compiler.update(&Metrics::default(), 2, 10_000).unwrap().is_empty());
    let mut metrics = Metrics::default();
    metrics
        .instances
        .insert("edge1-a".into(), InstanceMetric { utilization: 0.9, ..Default::default() });
    assert_eq!(compiler.update(&metrics, 3, 20_000).unwrap(), ["gw"]);
    assert_eq!(compiler.nodes()["gw"].generation, 3);
    assert_eq!(compiler.nodes()["edge1"].generation, 1, "egress state untouched");
    // The incremental result equals a compile from scratch with the same metrics, but for
    // the backups, which keep what they were while still usable (a fresh compile has no
    // history): edge2-a keeps edge1-a, busy now but alive.
    let fresh = compile(&example(), &metrics, 3).unwrap();
    let without_backups = |h: &crate::state::HeadendState| {
        let mut h = h.clone();
        h.instances.iter_mut().for_each(|i| i.backup_slot = None);
        h
    };
    let incremental = compiler.nodes()["gw"].headend.clone().unwrap();
    assert_eq!(
        without_backups(&incremental),
        without_backups(fresh.nodes["gw"].headend.as_ref().unwrap())
    );
    let edge2 = incremental.instances.iter().find(|i| i.name == "edge2-a").unwrap();
    assert_eq!(edge2.backup_slot, Some(0), "edge2-a keeps edge1-a as its backup");
}

#[test]
fn weight_changes_wait_for_the_hold_down_but_draining_does_not() {
    let mut compiler = Compiler::new(example(), 1).unwrap();
    compiler.update(&Metrics::default(), 1, 0).unwrap();
    let util = |u: f64| {
        let mut m = Metrics::default();
        m.instances
            .insert("edge1-a".into(), InstanceMetric { utilization: u, ..Default::default() });
        m
    };
    let weight = |c: &Compiler| weight_of(&c.compiled(), "edge1-a");
    // 0.5 moves the weights well beyond the hysteresis, but within 2 s of the last change.
    compiler.update(&util(0.5), 2, 1_000).unwrap();
    assert_eq!(weight(&compiler), 500, "held");
    assert!(!compiler.has_held(1_500), "the hold-down runs until 2 s after the first change");
    assert!(compiler.has_held(2_000));
    compiler.update(&util(0.5), 4, 2_500).unwrap();
    assert_eq!(weight(&compiler), 333, "hold-down over: the same metrics now move the weights");
    assert!(!compiler.has_held(10_000));
    // Overloaded right after a change: drained at once.
    compiler.update(&util(0.95), 5, 2_700).unwrap();
    assert_eq!(weight(&compiler), 0);
}

#[test]
fn compile_is_deterministic() {
    let a = compile(&example(), &Metrics::default(), 7).unwrap();
    let b = compile(&example(), &Metrics::default(), 7).unwrap();
    assert_eq!(a, b);
}

#[test]
fn xdp_nodes_get_an_endpoint_on_their_links_and_every_node_end_x_per_adjacency() {
    let mut intent = example();
    for node in &mut intent.topology.nodes {
        node.dataplane = crate::intent::Dataplane::Kernel;
    }
    let core = intent.topology.nodes.iter_mut().find(|n| n.name == "core").unwrap();
    core.dataplane = crate::intent::Dataplane::Xdp;
    core.end_flavors = vec![crate::intent::EndFlavor::Psp];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    let endpoint = c.nodes["core"].endpoint.as_ref().unwrap();
    assert_eq!(endpoint.interfaces, ["gw", "edge1", "edge2", "cloud"]);
    assert_eq!(endpoint.locators[0].to_string(), "fc00:0:2::/48");
    assert!(endpoint.psp && !endpoint.usd);
    assert!(c.nodes["gw"].endpoint.is_none(), "kernel dataplane: no XDP endpoint");
    // End.X towards edge1 over link 2 (index 1): function 0x0101, next hop edge1's side.
    let end_x =
        c.nodes["core"].sids.iter().find(|s| s.sid.to_string() == "fc00:0:2:101::").unwrap();
    assert_eq!(end_x.behavior, SidBehavior::EndX { nexthop: "fdff:ca75:0:2::2".parse().unwrap() });
    assert_eq!(end_x.interface, "edge1");
}

#[test]
fn a_baseline_selector_replaces_the_choice_and_nothing_else() {
    let cats = compile(&example(), &Metrics::default(), 1).unwrap();
    let mut compiler = Compiler::new(example(), 1).unwrap().with_selector(Selector::LeastLoaded);
    let mut metrics = Metrics::default();
    metrics
        .instances
        .insert("edge1-a".into(), InstanceMetric { utilization: 0.2, ..Default::default() });
    metrics
        .instances
        .insert("edge2-a".into(), InstanceMetric { utilization: 0.1, ..Default::default() });
    compiler.update(&metrics, 1, 0).unwrap();
    let baseline = compiler.compiled();
    // The idle cloud is the least loaded, however far: it gets everything.
    assert_eq!(weight_of(&baseline, "cloud-a"), 1000);
    assert_eq!(weight_of(&baseline, "edge1-a"), 0);
    // Same paths, segments and everything else on every node, but the weights and the
    // backups (which prefer instances with weight).
    let mut cats_gw = cats.nodes["gw"].headend.clone().unwrap();
    let mut base_gw = baseline.nodes["gw"].headend.clone().unwrap();
    for gw in [&mut cats_gw, &mut base_gw] {
        gw.services[0].weights.clear();
        gw.instances.iter_mut().for_each(|i| i.backup_slot = None);
    }
    assert_eq!(cats_gw, base_gw);
    assert_eq!(cats.nodes["edge1"], baseline.nodes["edge1"]);
}

#[test]
fn each_ingress_plans_its_own_share_of_the_demand() {
    let mut intent = example();
    let mut gw2 = intent.node("gw").unwrap().clone();
    gw2.name = "gw2".into();
    gw2.index = 7;
    gw2.prefixes = vec!["fd00:11::/64".parse().unwrap()];
    intent.topology.nodes.push(gw2);
    intent.topology.links.push(Link {
        a: "gw2".into(),
        b: "core".into(),
        latency_ms: 1.0,
        a_interface: "core".into(),
        b_interface: "gw2".into(),
    });
    let mut metrics = Metrics::default();
    for name in ["edge1-a", "edge2-a"] {
        let m = InstanceMetric { request_rate: 50.0, ..Default::default() };
        metrics.instances.insert(name.into(), m);
    }
    let planned = |c: &Compiled, ingress: &str| -> f64 {
        let sd = c.decisions.iter().find(|d| d.ingress == ingress).unwrap();
        sd.decisions.iter().map(|d| d.planned_rps).sum()
    };
    // No counters yet: 100 req/s shared evenly, planned with 25 % headroom.
    let even = compile(&intent, &metrics, 1).unwrap();
    assert!((planned(&even, "gw") - 62.5).abs() < 1e-6, "{:?}", even.decisions);
    // The headends counted 90 % of the packets at gw.
    let rates = BTreeMap::from([("gw".to_string(), 900.0), ("gw2".to_string(), 100.0)]);
    metrics.ingress_rates.insert("plate-recognition".into(), rates);
    let counted = compile(&intent, &metrics, 2).unwrap();
    assert!((planned(&counted, "gw") - 112.5).abs() < 1e-6);
    assert!((planned(&counted, "gw2") - 12.5).abs() < 1e-6);
}

fn slot_of(c: &Compiler, instance: &str) -> u32 {
    let he = c.nodes()["gw"].headend.as_ref().unwrap();
    he.instances.iter().find(|i| i.name == instance).unwrap().slot
}

#[test]
fn slots_outlive_intent_changes_so_pinned_flows_keep_their_instance() {
    let mut old = Compiler::new(example(), 1).unwrap();
    old.update(&Metrics::default(), 1, 0).unwrap();
    assert_eq!(
        ["edge1-a", "edge2-a", "cloud-a"].map(|i| slot_of(&old, i)),
        [0, 1, 2],
        "first come, first numbered"
    );
    // edge1-a goes away and edge1-b arrives: the others keep their slots, and the newcomer
    // does not take edge1-a's, which flows may still be pinned to.
    let mut intent = example();
    let mut b = intent.services[0].instances.remove(0);
    b.name = "edge1-b".into();
    b.id = 4;
    intent.services[0].instances.push(b);
    let mut new = Compiler::new(intent, 2).unwrap().with_slots_of(&old);
    new.update(&Metrics::default(), 2, 0).unwrap();
    assert_eq!(["edge2-a", "cloud-a", "edge1-b"].map(|i| slot_of(&new, i)), [1, 2, 3]);
    let he = new.nodes()["gw"].headend.as_ref().unwrap();
    assert_eq!(he.services[0].slot, 0);
}

#[test]
fn an_instance_without_a_path_keeps_its_slot_and_its_compute_sid() {
    let mut intent = with_second_core();
    intent.policies[0].constraints.avoid_nodes = vec!["core".into()];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    assert_eq!(weight_of(&c, "edge1-a"), 0);
    assert_eq!(segments_of(&c, "edge1-a"), ["fc00:0:3:4001::1"], "pinned flows still get there");
}

#[test]
fn port_groups_reach_the_headend_matches() {
    let mut intent = example();
    let affinity = &mut intent.policies[0].affinity;
    affinity.flow = crate::state::FlowDefinition::SourcePortGroup;
    affinity.port_groups = vec![vec![7000]];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    let svc = &c.nodes["gw"].headend.as_ref().unwrap().services[0];
    assert_eq!(svc.flow, crate::state::FlowDefinition::SourcePortGroup);
    assert!(svc.matches.iter().all(|m| m.port == 7000 && m.port_group == 1), "{svc:?}");
    let plain = compile(&example(), &Metrics::default(), 1).unwrap();
    let svc = &plain.nodes["gw"].headend.as_ref().unwrap().services[0];
    assert!(svc.matches.iter().all(|m| m.port_group == 0));
}
