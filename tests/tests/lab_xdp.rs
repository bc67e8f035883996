//! The whole chain in XDP: cats' headend at the gateway, cats' endpoint at transit and egress
//! (the kernel's seg6local routes stay as the slow path), and interop with the kernel's own
//! SRv6 headend sending 1, 2 and 4 segments through cats' XDP End and End.DX6.

use std::{collections::BTreeSet, net::SocketAddr};

use cats_common::counters::{DropReason, Event};
use cats_tests::lab_env::{
    LabEnv, ask, network_with_dataplane, policy_via_core, without_health_probes,
};

fn service6() -> SocketAddr {
    "[2001:db8:ca75::1]:7000".parse().unwrap()
}

/// The all-XDP lab; these tests count every packet transit and egress handle, so the
/// gateway's health probes (which cross them too) are off.
fn xdp_lab(via_core: bool) -> LabEnv {
    LabEnv::start(|dir| {
        std::fs::write(dir.join("network.yaml"), network_with_dataplane("xdp"))?;
        let policy = if via_core {
            policy_via_core()
        } else {
            std::fs::read_to_string(dir.join("policy.yaml"))?
        };
        std::fs::write(dir.join("policy.yaml"), without_health_probes(&policy))?;
        Ok(())
    })
    .unwrap()
}

/// Every non-zero counter of every node, for failure messages.
fn counters(env: &LabEnv) -> String {
    let mut out = String::new();
    for node in ["gw", "core", "edge1", "edge2", "cloud"] {
        let c = env.counters(node).unwrap();
        let events = Event::ALL.iter().map(|e| (e.label(), c.events(*e).unwrap()));
        let drops = DropReason::ALL.iter().map(|d| (d.label(), c.drops(*d).unwrap()));
        let nonzero: Vec<String> =
            events.chain(drops).filter(|(_, v)| *v > 0).map(|(l, v)| format!("{l}={v}")).collect();
        out.push_str(&format!("{node}: {}\n", nonzero.join(" ")));
    }
    out
}

fn event(env: &LabEnv, node: &str, e: Event) -> u64 {
    env.counters(node).unwrap().events(e).unwrap()
}

/// The first packets towards a next hop wait in the kernel for neighbour resolution (the
/// endpoint hands them over unchanged); these warm every path up before counting.
fn warm_up(env: &LabEnv, target: SocketAddr) {
    for f in 0..16 {
        let _ = ask(&env.flow("gw", target).unwrap(), 900 + f, 0);
    }
}

#[test]
fn requests_cross_an_all_xdp_chain_and_come_back() {
    let env = xdp_lab(false);
    for target in [service6(), "198.51.100.1:7000".parse().unwrap()] {
        warm_up(&env, target);
        let before = (
            event(&env, "core", Event::TransitForwarded),
            event(&env, "edge1", Event::Decapsulated) + event(&env, "edge2", Event::Decapsulated),
        );
        let answered: BTreeSet<String> =
            (0..12).map(|f| ask(&env.flow("gw", target).unwrap(), f, 0).unwrap().0).collect();
        // Which edges share the flows depends on the demand measured from the warm-up (the
        // chain is what is tested here; lab_steering tests the sharing): edges only.
        let edges = BTreeSet::from(["edge1-a".to_string(), "edge2-a".to_string()]);
        assert!(!answered.is_empty() && answered.is_subset(&edges), "{target}: {answered:?}");
        // Every request crossed the core as XDP transit and was decapsulated by an edge's XDP.
        let after = (
            event(&env, "core", Event::TransitForwarded),
            event(&env, "edge1", Event::Decapsulated) + event(&env, "edge2", Event::Decapsulated),
        );
        assert_eq!((after.0 - before.0, after.1 - before.1), (12, 12), "{target}");
    }
}

#[test]
fn the_cores_end_sid_runs_in_xdp_when_the_policy_names_it() {
    let env = xdp_lab(true);
    warm_up(&env, service6());
    let before = event(&env, "core", Event::SegmentAdvanced);
    for f in 0..6 {
        ask(&env.flow("gw", service6()).unwrap(), f, 0).unwrap();
    }
    assert_eq!(event(&env, "core", Event::SegmentAdvanced), before + 6);
}

#[test]
fn the_kernels_headend_is_understood_by_cats_xdp_endpoints() {
    let env = xdp_lab(false);
    let gw = env.lab().node("gw");
    let edge1_dx6 = "fc00:0:3:4001::1";
    // (what, kernel seg6 mode, segments, End runs expected per request at core and at edge2).
    // encap.red leaves the first segment out of the SRH (and with one segment, the SRH out).
    let chains: [(&str, &str, Vec<&str>, u64, u64); 5] = [
        ("one segment", "encap", vec![edge1_dx6], 0, 0),
        ("one segment, reduced", "encap.red", vec![edge1_dx6], 0, 0),
        ("two segments", "encap", vec!["fc00:0:2:1::", edge1_dx6], 1, 0),
        ("two segments, reduced", "encap.red", vec!["fc00:0:2:1::", edge1_dx6], 1, 0),
        (
            "four segments",
            "encap",
            vec!["fc00:0:2:1::", "fc00:0:4:1::", "fc00:0:2:1::", edge1_dx6],
            2,
            1,
        ),
    ];
    // The gateway's own packets leave with a finished UDP checksum, as from a real NIC (a
    // veth would leave it for an offload that XDP-decapsulated packets never get).
    let core_if = "core".to_string();
    cats_controller::netns::run_in(&gw.path(), move || {
        cats_lab::offload::disable_tx_checksum(&core_if)
    })
    .unwrap();
    for (what, mode, segs, core_ends, edge2_ends) in chains {
        // ip -6 route replace 2001:db8:ca75::1/128 encap seg6 mode MODE segs S1,S2,... dev core src fd00:10::1
        gw.ip(&[
            "-6",
            "route",
            "replace",
            "2001:db8:ca75::1/128",
            "encap",
            "seg6",
            "mode",
            mode,
            "segs",
            &segs.join(","),
            "dev",
            "core",
            "src",
            "fd00:10::1",
        ])
        .unwrap();
        // Sent from the gateway itself: the kernel's seg6 route encapsulates, not cats.
        let sock = env.socket_in(gw, "[fd00:10::1]:0".parse().unwrap(), service6()).unwrap();
        let warm = ask(&sock, 1, 0).unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", counters(&env)));
        assert_eq!(warm.0, "edge1-a", "{what} (warm-up)");
        let before = (
            event(&env, "core", Event::SegmentAdvanced),
            event(&env, "edge2", Event::SegmentAdvanced),
            event(&env, "edge1", Event::Decapsulated),
        );
        for seq in 1..=4 {
            assert_eq!(ask(&sock, 1, seq).unwrap().0, "edge1-a", "{what}");
        }
        let after = (
            event(&env, "core", Event::SegmentAdvanced),
            event(&env, "edge2", Event::SegmentAdvanced),
            event(&env, "edge1", Event::Decapsulated),
        );
        assert_eq!(
            (after.0 - before.0, after.1 - before.1, after.2 - before.2),
            (4 * core_ends, 4 * edge2_ends, 4),
            "{what}: End runs at core and edge2, End.DX6 runs at edge1"
        );
    }
}
