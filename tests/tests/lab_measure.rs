//! Link measurement (C-NMA) and compute reports (C-SMA) in the emulated lab: the daemon's
//! probers find each link's real delay, including a link whose real delay differs from the
//! declared one, and a link that goes dead turns down (and stale) with its loss rising.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cats_controller::{dataplane::program::ensure_bpffs, intent};
use cats_lab::{
    control::start_instances, netns::unique_name, network::LabNetwork, scenario::LinkDelay,
};
use cats_tests::lab_env::{LabEnv, example_intent_dir};
use serde_json::Value;

/// The example intent (links gw-core 1 ms, core-edge1 2 ms, core-edge2 2 ms, core-cloud 15 ms
/// declared), built with `overrides` as the relays' real delays, instances and daemon running.
fn start(overrides: &[LinkDelay]) -> Result<LabEnv> {
    let prefix = unique_name("meas");
    let run_dir = std::env::temp_dir().join(format!("cats-test-{prefix}"));
    let intent_dir = run_dir.join("intent");
    std::fs::create_dir_all(&intent_dir)?;
    for entry in std::fs::read_dir(example_intent_dir())? {
        let entry = entry?;
        std::fs::copy(entry.path(), intent_dir.join(entry.file_name()))?;
    }
    let intent = intent::load_dir(&intent_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bpffs = run_dir.join("bpffs");
    let mut env = LabEnv::empty(intent, intent_dir, run_dir, bpffs);
    ensure_bpffs(&env.bpffs)?;
    let mut lab = LabNetwork::build_with(&env.intent, &prefix, true, overrides)?;
    start_instances(&mut lab, &env.intent, &env.run_dir)?;
    env.lab = Some(lab);
    env.start_daemon()?;
    Ok(env)
}

/// Polls the status until `done` holds for it.
fn wait_status(env: &LabEnv, timeout: Duration, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = env.daemon().status()?;
        if done(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("status never got there within {timeout:?}: {:#}", status["metrics"]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn links(status: &Value) -> &Vec<Value> {
    status["metrics"]["links"].as_array().expect("metrics.links")
}

fn link<'a>(status: &'a Value, a: &str, b: &str) -> &'a Value {
    links(status).iter().find(|l| l["a"] == a && l["b"] == b).expect("link in status")
}

/// The network round trip the controller predicts for cloud-a from gw.
fn cloud_network_ms(status: &Value) -> Option<f64> {
    status["decisions"].as_array()?.iter().find_map(|sd| {
        sd["decisions"].as_array()?.iter().find(|d| d["instance"] == "cloud-a")?["networkMs"]
            .as_f64()
    })
}

#[test]
fn probes_measure_the_real_delays_and_a_dead_link_goes_down() -> Result<()> {
    let real_cloud_ms = 30.0;
    let env = start(&[
        LinkDelay { a: "core".into(), b: "cloud".into(), one_way_ms: real_cloud_ms },
        // Measured 10 ms, declared 2: when it goes stale below, the controller's figure
        // must fall back visibly.
        LinkDelay { a: "core".into(), b: "edge2".into(), one_way_ms: 10.0 },
    ])?;
    assert_eq!(env.lab().link_delay(3), Some(Duration::from_millis(30)));

    // 100 ms probes from both ends: wait for 50 echoes a link end (the EWMA has long forgotten
    // the first, slow probes that waited for neighbour discovery).
    let status = wait_status(&env, Duration::from_secs(40), |s| {
        let ls = s["metrics"]["links"].as_array();
        ls.is_some_and(|ls| {
            ls.len() == 4
                && ls.iter().all(|l| l["stale"] == false && l["samples"].as_u64() >= Some(100))
        })
    })?;
    println!("link          declared  real   measured one-way  jitter(rtt)  loss");
    for (k, l) in links(&status).iter().enumerate() {
        let real = env.lab().link_delay(k).context("relay delay")?.as_secs_f64() * 1e3;
        let measured = l["oneWayMs"].as_f64().context("oneWayMs")?;
        println!(
            "{:>5}-{:<6} {:>6.1} ms {:>5.1} ms {:>9.2} ms {:>9.3} ms {:>8.2}",
            l["a"].as_str().unwrap_or("?"),
            l["b"].as_str().unwrap_or("?"),
            l["latencyMs"].as_f64().unwrap_or(0.0),
            real,
            measured,
            l["jitterMs"].as_f64().unwrap_or(0.0),
            l["loss"].as_f64().unwrap_or(0.0),
        );
        let tolerance = 1.5 + 0.1 * real;
        assert!(
            (measured - real).abs() <= tolerance,
            "link {k}: measured {measured} ms, real {real} ms"
        );
        assert!(l["loss"].as_f64().context("loss")? < 0.2, "{l}");
        assert!(l["ageMs"].as_u64().context("ageMs")? < 1000, "{l}");
    }
    // The controller sees the real delay of core-cloud, not the declared one.
    let cloud = link(&status, "core", "cloud");
    assert_eq!(cloud["latencyMs"], 15.0);
    let measured = cloud["oneWayMs"].as_f64().unwrap();
    assert!(
        measured > 25.0,
        "core-cloud measured {measured} ms: the declared 15, not the real 30?"
    );
    // Links becoming measured is a change worth a recompile, and the compile step takes the
    // measured latency: cloud-a is a 2 x (1 + 30) ms round trip away, not 2 x (1 + 15) (give or
    // take the 10 % dampening band). The generation need not move: it counts changed node
    // states, and cloud-a gets no flows either way.
    let status = wait_status(&env, Duration::from_secs(10), |s| {
        cloud_network_ms(s).is_some_and(|ms| (50.0..76.0).contains(&ms))
    })?;
    println!(
        "cloud-a network round trip in the decisions: {:.1} ms (declared latencies would give 32)",
        cloud_network_ms(&status).unwrap()
    );

    // The instances' reports: fresh, with their capacity and request rate.
    let instances = status["metrics"]["instances"].as_array().context("metrics.instances")?;
    let names: Vec<&str> = instances.iter().filter_map(|i| i["instance"].as_str()).collect();
    assert_eq!(names, ["cloud-a", "edge1-a", "edge2-a"]);
    for i in instances {
        assert_eq!(i["stale"], false, "{i}");
        assert!(i["ageMs"].as_u64() < Some(5000), "{i}");
        assert!(i["requestRate"].is_f64() && i["serviceTimeMs"].is_f64(), "{i}");
    }
    assert_eq!(instances[0]["capacityTops"], 100.0);
    assert_eq!(instances[1]["capacityTops"], 4.0);

    // core-edge2 dies: edge2's end of the veth goes down (inside the lab's namespace).
    env.lab().node("edge2").ip(&["link", "set", "core", "down"])?;
    let down = Instant::now();
    let status = wait_status(&env, Duration::from_secs(15), |s| {
        let l = link(s, "core", "edge2");
        l["stale"] == true && l["loss"].as_f64() >= Some(0.5)
    })?;
    let dead = link(&status, "core", "edge2");
    println!(
        "core-edge2 down: stale after {:.1} s, loss {}, last echo {} ms ago",
        down.elapsed().as_secs_f64(),
        dead["loss"],
        dead["ageMs"]
    );
    assert!(dead["ageMs"].as_u64() >= Some(3000), "{dead}");
    for other in [("gw", "core"), ("core", "edge1"), ("core", "cloud")] {
        assert_eq!(link(&status, other.0, other.1)["stale"], false, "{other:?} stays fresh");
    }
    // Probed and silent, it is down, not merely stale: the controller's paths leave it out,
    // so edge2-a, behind it, has none (a link nobody probes would go back to its declared
    // latency instead: measure::stats' tests).
    assert_eq!(dead["down"], true, "{dead}");
    let edge2_excluded = |s: &Value| -> bool {
        s["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["decisions"].as_array())
            .flatten()
            .any(|d| d["instance"] == "edge2-a" && d["excluded"] == "no path meets the constraints")
    };
    wait_status(&env, Duration::from_secs(5), edge2_excluded)?;
    Ok(())
}

#[test]
fn link_delays_must_name_a_link() {
    let intent = intent::load_dir(Path::new(&example_intent_dir())).unwrap();
    let prefix = unique_name("meas");
    let err = LabNetwork::build_with(
        &intent,
        &prefix,
        true,
        &[LinkDelay { a: "gw".into(), b: "cloud".into(), one_way_ms: 5.0 }],
    )
    .err()
    .expect("no gw-cloud link");
    assert!(format!("{err:#}").contains("no link gw-cloud"), "{err:#}");
}
