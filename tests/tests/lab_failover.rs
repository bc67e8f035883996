//! Health detection and local failover in the lab, under a continuous request stream: the
//! gateway's prober notices a dead instance, node or link, the XDP headend moves the affected
//! flows to their backup by itself, and nothing else moves. Timings are printed, never
//! asserted (they belong to `cats-bench --failover`).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use cats_common::counters::Event;
use cats_lab::control::{Daemon, daemon_config};
use cats_tests::{
    lab_env::LabEnv,
    stream::{RequestStream, StreamLog},
};

/// The example's policy with a 1 s detection time: restarting five agents verifies fifteen
/// programs at once, and the relays' delay while the CPUs are busy is no failure.
fn patient_health(dir: &std::path::Path) -> anyhow::Result<()> {
    let policy = std::fs::read_to_string(dir.join("policy.yaml"))?;
    let patient = policy.replace("    multiplier: 3\n", "    multiplier: 10\n");
    anyhow::ensure!(patient != policy, "the example policy sets multiplier: 3");
    std::fs::write(dir.join("policy.yaml"), patient)?;
    Ok(())
}

fn service() -> SocketAddr {
    "[2001:db8:ca75::1]:7000".parse().unwrap()
}

/// 16 flows at 100 requests/s in all: well within one edge's 200 requests/s, so losing an
/// edge overloads nothing. Returns once every flow answers steadily, and when that was.
fn stream(env: &LabEnv) -> (RequestStream, Instant) {
    let s = RequestStream::start(&env.lab().clients("gw").path(), service(), 16, 100.0).unwrap();
    let settled = s.settle(Duration::from_millis(500), Duration::from_secs(10)).unwrap();
    (s, settled)
}

/// Waits until every probed path is up and both edges take new flows: a fresh lab may hold
/// its first echoes for a second (a neighbour entry waiting for its retransmit), and a
/// weight coming back waits out the hold-down.
fn settled(env: &LabEnv) {
    wait_status(env, "every path up and both edges in use", |s| {
        all_paths_up(s) && weight(s, "edge1-a") > 0 && weight(s, "edge2-a") > 0
    });
}

fn all_paths_up(status: &serde_json::Value) -> bool {
    let paths = status["nodes"]["gw"]["health"]["paths"].as_array().cloned().unwrap_or_default();
    !paths.is_empty() && paths.iter().all(|p| p["up"] == true && p["rtt_ms"].is_number())
}

/// Waits until `pred` holds for the daemon's status, or fails showing the gateway's part.
fn wait_status(
    env: &LabEnv,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = env.daemon().status().unwrap();
        if pred(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} never came: {:#}", status["nodes"]["gw"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unreachable(status: &serde_json::Value) -> Vec<String> {
    let list = &status["nodes"]["gw"]["health"]["unreachable"];
    list.as_array().map_or(Vec::new(), |l| {
        l.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    })
}

fn weight(status: &serde_json::Value, instance: &str) -> u64 {
    let decisions = status["decisions"][0]["decisions"].as_array().unwrap();
    let d = decisions.iter().find(|d| d["instance"] == instance).unwrap();
    d["weight"].as_u64().unwrap()
}

/// What a failure must do to the stream: the flows on `dead` moved once, to `backup`, and
/// stayed; every other flow kept its instance; nothing sent a second after the failure was
/// lost.
fn assert_failed_over(log: &StreamLog, dead: &str, backup: &str, failed_at: Instant) {
    let paths = log.instances_per_flow();
    let affected = log.flows_first_on(dead);
    assert!(!affected.is_empty(), "no flow was on {dead}: {paths:?}");
    for (flow, path) in paths.iter().enumerate() {
        if affected.contains(&flow) {
            assert_eq!(path, &[dead, backup], "flow {flow} did not move once to {backup}");
        } else {
            assert_eq!(path.len(), 1, "flow {flow} was not on {dead} and still moved: {path:?}");
        }
    }
    let failover = log.failover(dead);
    assert!(failover.stranded().is_empty(), "flows left on {dead}: {:?}", failover.stranded());
    let late = log.lost_after(failed_at + Duration::from_secs(1));
    assert!(late.is_empty(), "{} requests lost well after the failover: {late:?}", late.len());
    println!(
        "{dead} -> {backup}: {} flows moved, failover median {:?}, worst {:?}, {} requests lost",
        affected.len(),
        failover.median(),
        failover.worst(),
        failover.lost()
    );
}

#[test]
fn the_gateway_probes_every_instance_over_its_path() {
    let env = LabEnv::start(|_| Ok(())).unwrap();
    let status = wait_status(&env, "three probed paths with round trips", |s| {
        let paths = s["nodes"]["gw"]["health"]["paths"].as_array().cloned().unwrap_or_default();
        paths.len() == 3 && paths.iter().all(|p| p["rtt_ms"].is_number() && p["up"] == true)
    });
    let paths = status["nodes"]["gw"]["health"]["paths"].as_array().unwrap();
    let rtt = |name: &str| {
        let p = paths.iter().find(|p| p["instance"] == name).unwrap();
        p["rtt_ms"].as_f64().unwrap()
    };
    // The probes take the requests' paths: 6 ms round trip to an edge, 32 ms to the cloud.
    assert!(rtt("edge1-a") >= 6.0 && rtt("cloud-a") >= 32.0, "{paths:?}");
    assert!(rtt("cloud-a") > rtt("edge1-a"));
    for node in ["gw", "core", "edge1", "edge2", "cloud"] {
        assert_eq!(status["nodes"][node]["alive"], true, "agent of {node}");
    }
}

#[test]
fn a_dead_instance_hands_its_flows_to_its_backup_and_comes_back_for_new_flows() {
    let mut env = LabEnv::start(|_| Ok(())).unwrap();
    settled(&env);
    let (running, _) = stream(&env);
    let failed_at = Instant::now();
    env.lab_mut().stop_instance("edge1-a").unwrap();
    wait_status(&env, "edge1-a unreachable", |s| unreachable(s) == ["edge1-a"]);
    std::thread::sleep(Duration::from_secs(2));
    let log = running.stop();
    assert_failed_over(&log, "edge1-a", "edge2-a", failed_at);

    // The headend re-pinned the flows itself; the controller then stopped choosing edge1-a.
    let gw = env.counters("gw").unwrap();
    assert!(gw.events(Event::FailoverRepinned).unwrap() > 0);
    let status = wait_status(&env, "edge1-a without weight", |s| weight(s, "edge1-a") == 0);
    let d = &status["decisions"][0]["decisions"][0];
    assert_eq!(d["excluded"], "not answering health probes from gw", "{d}");
    drop(status);

    // Back again: reachable, chosen again, and new flows reach it.
    env.lab_mut().start_instance("edge1-a").unwrap();
    wait_status(&env, "edge1-a reachable with weight", |s| {
        unreachable(s).is_empty() && weight(s, "edge1-a") > 0
    });
    let (again, settled) = stream(&env);
    std::thread::sleep(Duration::from_millis(500));
    let log = again.stop();
    let reached: BTreeSet<&str> = log.records.iter().filter_map(|r| r.instance()).collect();
    assert!(reached.contains("edge1-a"), "new flows after the restart: {reached:?}");
    assert!(log.lost_after(settled).is_empty(), "lost after recovery");
}

#[test]
fn a_cut_link_moves_the_flows_behind_it_and_only_those() {
    let mut env = LabEnv::start(|_| Ok(())).unwrap();
    settled(&env);
    let (running, _) = stream(&env);
    let failed_at = Instant::now();
    env.lab_mut().cut_link("core", "edge2").unwrap();
    wait_status(&env, "edge2-a unreachable", |s| unreachable(s) == ["edge2-a"]);
    // The link probes see it too, a little later: paths leave it out.
    let status = wait_status(&env, "core-edge2 down", |s| s["metrics"]["links"][2]["down"] == true);
    let edge2 = &status["decisions"][0]["decisions"][1];
    assert_eq!(edge2["excluded"], "no path meets the constraints", "{edge2}");
    std::thread::sleep(Duration::from_secs(1));
    let log = running.stop();
    assert_failed_over(&log, "edge2-a", "edge1-a", failed_at);

    env.lab_mut().restore_link("core", "edge2").unwrap();
    wait_status(&env, "edge2-a reachable over core-edge2 again", |s| {
        unreachable(s).is_empty()
            && s["metrics"]["links"][2]["down"] == false
            && weight(s, "edge2-a") > 0
    });
}

#[test]
fn a_dead_node_is_detected_and_its_flows_move() {
    let mut env = LabEnv::start(|_| Ok(())).unwrap();
    settled(&env);
    let (running, _) = stream(&env);
    let failed_at = Instant::now();
    env.lab_mut().kill_node("edge1").unwrap();
    wait_status(&env, "edge1-a unreachable", |s| unreachable(s) == ["edge1-a"]);
    std::thread::sleep(Duration::from_secs(2));
    let log = running.stop();
    assert_failed_over(&log, "edge1-a", "edge2-a", failed_at);
}

#[test]
fn a_drained_instance_keeps_its_flows_and_gets_no_new_ones() {
    let env = LabEnv::start(|_| Ok(())).unwrap();
    settled(&env);
    let (running, settled) = stream(&env);
    let services = std::fs::read_to_string(env.intent_dir.join("services.yaml")).unwrap();
    let anchor = "    - name: edge1-a\n";
    assert!(services.contains(anchor));
    let drained = services.replace(anchor, &format!("{anchor}      drain: true\n"));
    env.write_intent("services.yaml", &drained).unwrap();
    wait_status(&env, "edge1-a drained", |s| weight(s, "edge1-a") == 0);
    // New flows while the old ones go on.
    let (fresh, fresh_settled) = stream(&env);
    std::thread::sleep(Duration::from_secs(1));
    let (old, new) = (running.stop(), fresh.stop());

    let paths = old.instances_per_flow();
    assert!(!old.flows_first_on("edge1-a").is_empty(), "no flow was on edge1-a: {paths:?}");
    for (flow, path) in paths.iter().enumerate() {
        assert_eq!(path.len(), 1, "established flow {flow} moved: {path:?}");
    }
    let reached: BTreeSet<&str> = new.records.iter().filter_map(|r| r.instance()).collect();
    assert!(!reached.contains("edge1-a"), "a new flow reached the drained edge1-a");
    for (log, from) in [(&old, settled), (&new, fresh_settled)] {
        assert!(log.lost_after(from).is_empty(), "requests lost while draining");
    }
}

#[test]
fn restarting_the_daemon_loses_no_request_and_moves_no_flow() {
    let mut env = LabEnv::start(patient_health).unwrap();
    settled(&env);
    let (running, settled) = stream(&env);
    env.stop_daemon().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    env.start_daemon().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let log = running.stop();
    for (flow, path) in log.instances_per_flow().iter().enumerate() {
        assert_eq!(path.len(), 1, "flow {flow} moved across the restart: {path:?}");
    }
    let lost = log.lost_after(settled);
    assert!(lost.is_empty(), "{} requests lost across the restart", lost.len());
}

#[test]
fn restarting_the_gateway_agent_alone_loses_no_request() {
    let mut env = LabEnv::start(patient_health).unwrap();
    env.stop_daemon().unwrap();
    // Two processes' worth of daemons: one serves the gateway's agent, one the other nodes.
    let config = |nodes: &[&str], status: &str| {
        let mut c = daemon_config(env.lab(), &env.intent_dir, &env.bpffs, &env.run_dir);
        c.nodes = nodes.iter().map(|n| n.to_string()).collect();
        c.status_file = Some(env.run_dir.join(status));
        // Each daemon its own API socket (one per daemon, as on real nodes).
        c.api_socket = Some(env.run_dir.join(format!("{status}.sock")));
        c
    };
    let rest = Daemon::start(config(&["core", "edge1", "edge2", "cloud"], "rest.json")).unwrap();
    let gw = Daemon::start(config(&["gw"], "gw.json")).unwrap();
    for d in [&rest, &gw] {
        d.wait_applied(Duration::from_secs(30)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let in_use = |s: &serde_json::Value| {
        all_paths_up(s) && weight(s, "edge1-a") > 0 && weight(s, "edge2-a") > 0
    };
    while !gw.status().is_ok_and(|s| in_use(&s)) {
        assert!(Instant::now() < deadline, "the gateway's paths never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (running, settled) = stream(&env);
    gw.stop().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let gw = Daemon::start(config(&["gw"], "gw.json")).unwrap();
    gw.wait_applied(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let log = running.stop();
    let gw_counters = env.counters("gw").unwrap();
    let failovers = [Event::FailoverAlternate, Event::FailoverRepinned, Event::FailoverUnavailable]
        .map(|e| (e.label(), gw_counters.events(e).unwrap()));
    let health = gw.status().unwrap()["nodes"]["gw"]["health"].clone();
    for (flow, path) in log.instances_per_flow().iter().enumerate() {
        assert_eq!(
            path.len(),
            1,
            "flow {flow} moved across the agent restart: {path:?}; {failovers:?}; {health}"
        );
    }
    let lost = log.lost_after(settled);
    assert!(lost.is_empty(), "{} requests lost across the agent restart", lost.len());
    drop((gw, rest));
}
