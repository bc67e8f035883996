use std::path::Path;

use super::*;
use crate::intent;

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

#[test]
fn waypoints_prepend_end_sids() {
    let mut intent = example();
    intent.policies[0].constraints.waypoints = vec!["core".into()];
    let c = compile(&intent, &Metrics::default(), 1).unwrap();
    let he = c.nodes["gw"].headend.as_ref().unwrap();
    let cloud = he.instances.iter().find(|i| i.name == "cloud-a").unwrap();
    let segs: Vec<String> = cloud.segments.iter().map(ToString::to_string).collect();
    assert_eq!(segs, ["fc00:0:2:1::", "fc00:0:5:4001::3"]);
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
