//! cats end to end in the emulated lab: real XDP headend, the kernel's seg6local at the
//! egress, delay relays on every link, emulated instances, the daemon in control.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use cats_common::counters::Event;
use cats_tests::lab_env::{LabEnv, ask};

fn service6() -> SocketAddr {
    "[2001:db8:ca75::1]:7000".parse().unwrap()
}
fn service4() -> SocketAddr {
    "198.51.100.1:7000".parse().unwrap()
}

/// Which instances answered `flows` new flows, one request each.
fn instances_of_new_flows(env: &LabEnv, target: SocketAddr, flows: u64) -> BTreeSet<String> {
    (0..flows)
        .map(|f| {
            let sock = env.flow("gw", target).unwrap();
            ask(&sock, 1000 + f, 0).unwrap().0
        })
        .collect()
}

#[test]
fn requests_reach_edge_instances_over_srv6_and_replies_come_back() {
    let env = LabEnv::start(|_| Ok(())).unwrap();
    for target in [service6(), service4()] {
        let answered = instances_of_new_flows(&env, target, 16);
        // The cloud is too far for the 50 % slack: only the two edges answer, both of them.
        assert_eq!(
            answered,
            BTreeSet::from(["edge1-a".to_string(), "edge2-a".to_string()]),
            "{target}"
        );
    }
    // Round trip crosses the relays: gw-core 1 ms + core-edge 2 ms, each way, plus 5 ms compute.
    let sock = env.flow("gw", service6()).unwrap();
    let (_, rtt) = ask(&sock, 1, 0).unwrap();
    assert!(rtt >= Duration::from_millis(11), "rtt {rtt:?}");

    let gw = env.counters("gw").unwrap();
    let steered = gw.service_counter(0).unwrap().packets;
    assert!(steered >= 33, "steered {steered}");
    assert_eq!(gw.instance_counter(2).unwrap().packets, 0, "cloud-a (slot 2) got nothing");
    assert!(gw.events(Event::Redirected).unwrap() > 0, "XDP forwarded packets itself");
}
