//! cats end to end in the emulated lab: real XDP headend, the kernel's seg6local at transit
//! and egress (`dataplane: kernel`, so the kernel path stays tested), delay relays on every
//! link, emulated instances, the daemon in control.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use cats_common::counters::Event;
use cats_tests::lab_env::{
    LabEnv, ask, network_with_dataplane, services_with_load, without_health_probes,
};

fn kernel_dataplane(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("network.yaml"), network_with_dataplane("kernel"))?;
    Ok(())
}

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
    let env = LabEnv::start(kernel_dataplane).unwrap();
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

#[test]
fn new_flows_move_when_load_changes_and_established_flows_stay() {
    let mut env = LabEnv::start(|dir| {
        kernel_dataplane(dir)?;
        std::fs::write(dir.join("services.yaml"), services_with_load(&[("edge2-a", 0.85)]))?;
        Ok(())
    })
    .unwrap();
    // edge2 is busy: every new flow goes to edge1.
    assert_eq!(
        instances_of_new_flows(&env, service6(), 8),
        BTreeSet::from(["edge1-a".to_string()])
    );
    let established = env.flow("gw", service6()).unwrap();
    assert_eq!(ask(&established, 1, 0).unwrap().0, "edge1-a");

    // Now edge1 is the busy one.
    let before = env.daemon().status().unwrap()["generation"].as_u64().unwrap();
    env.write_intent("services.yaml", &services_with_load(&[("edge1-a", 0.85)])).unwrap();
    let status = wait_for_generation(&mut env, before + 1);
    let weights = &status["decisions"][0]["decisions"];
    assert_eq!(weights[0]["weight"], 0, "{weights}");

    assert_eq!(
        instances_of_new_flows(&env, service6(), 8),
        BTreeSet::from(["edge2-a".to_string()])
    );
    for seq in 1..5 {
        assert_eq!(ask(&established, 1, seq).unwrap().0, "edge1-a", "established flow moved");
    }
}

fn wait_for_generation(env: &mut LabEnv, generation: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = env.daemon().wait_applied(Duration::from_secs(20)).unwrap();
        if status["generation"].as_u64().unwrap() >= generation {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "generation {generation} never came: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn traffic_keeps_flowing_while_the_daemon_restarts_and_flows_keep_their_instance() {
    let mut env = LabEnv::start(kernel_dataplane).unwrap();
    let flows: Vec<_> = (0..6).map(|_| env.flow("gw", service6()).unwrap()).collect();
    let pinned: Vec<String> =
        flows.iter().enumerate().map(|(i, s)| ask(s, i as u64, 0).unwrap().0).collect();

    env.stop_daemon().unwrap();
    // No controller, no agent: the pinned program and maps still steer.
    for (i, s) in flows.iter().enumerate() {
        assert_eq!(ask(s, i as u64, 1).unwrap().0, pinned[i], "flow {i} while the daemon is down");
    }
    let fresh = env.flow("gw", service6()).unwrap();
    assert!(ask(&fresh, 99, 0).is_ok(), "a new flow is steered while the daemon is down");

    env.start_daemon().unwrap();
    for (i, s) in flows.iter().enumerate() {
        assert_eq!(ask(s, i as u64, 2).unwrap().0, pinned[i], "flow {i} after the restart");
    }
    let gw = env.counters("gw").unwrap();
    assert_eq!(
        gw.events(Event::AffinityMiss).unwrap(),
        7,
        "one miss per flow, none after the restart"
    );
}

#[test]
fn a_bad_intent_is_reported_with_file_line_and_field_and_changes_nothing() {
    // Without health probes: a probe verdict moving a weight in the window would be a
    // recompile this test does not mean.
    let env = LabEnv::start(|dir| {
        kernel_dataplane(dir)?;
        let policy = std::fs::read_to_string(dir.join("policy.yaml"))?;
        std::fs::write(dir.join("policy.yaml"), without_health_probes(&policy))?;
        Ok(())
    })
    .unwrap();
    let flow = env.flow("gw", service6()).unwrap();
    let (instance, _) = ask(&flow, 1, 0).unwrap();
    let before = env.daemon().status().unwrap();

    // A typo'd field and an impossible value, as an operator might save them.
    let broken = services_with_load(&[("edge1-a", 0.5)])
        .replace("tops: 100", "tops: -100")
        .replace("requestCost:", "requestCosts:");
    env.write_intent("services.yaml", &broken).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = env.daemon().status().unwrap();
        if !s["intent_error"].is_null() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the bad intent was never reported");
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = status["intent_error"].as_str().unwrap();
    let tops_line = broken.lines().position(|l| l.contains("tops: -100")).unwrap() + 1;
    assert!(error.contains(&format!("services.yaml:{tops_line}:")), "{error}");
    assert!(error.contains("spec.instances[2].tops"), "{error}");
    assert!(error.contains("spec.requestCosts"), "{error}");

    // The running state stays the last good intent's. (The generation may still move: a
    // measurement can recompile the good intent within the window; on a busy machine it
    // did. What the bad intent would change, the weights and the steering, must not.)
    let weights = |s: &serde_json::Value| -> Vec<(String, u64)> {
        let ds = s["decisions"].as_array().unwrap().iter().flat_map(|d| d["decisions"].as_array());
        ds.flatten()
            .map(|d| (d["instance"].as_str().unwrap().to_string(), d["weight"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(weights(&status), weights(&before), "weights unchanged");
    assert_eq!(ask(&flow, 1, 1).unwrap().0, instance, "traffic steered as before");
    let again = env.daemon().wait_applied(Duration::from_secs(5)).unwrap();
    assert_eq!(weights(&again), weights(&before), "weights unchanged once applied");
    assert!(!again["intent_error"].is_null(), "the bad intent is still reported");
}

#[test]
fn the_status_counts_the_flows_pinned_at_the_headend() {
    let env = LabEnv::start(kernel_dataplane).unwrap();
    // 12 new flows, each asked twice: 12 pins, the second request of each a hit.
    let socks: Vec<_> = (0..12).map(|_| env.flow("gw", service6()).unwrap()).collect();
    for (f, sock) in socks.iter().enumerate() {
        ask(sock, 2000 + f as u64, 0).unwrap();
        ask(sock, 2000 + f as u64, 1).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let affinity = loop {
        let status = env.daemon().status().unwrap();
        let a = status["nodes"]["gw"]["affinity"].clone();
        if a["pinned"].as_u64() >= Some(12) {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "never counted: {a}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Retransmissions of a lost first request may add pins of their own flow only: each flow
    // is one socket, one 5-tuple, one pin.
    assert_eq!(affinity["pinned"], 12, "{affinity}");
    assert_eq!(affinity["occupancy"], 12, "{affinity}");
    assert_eq!(affinity["reset"], 0, "{affinity}");
    assert_eq!(affinity["evicted"], 0, "{affinity}");
}
