//! cats over etcd, as a deployment runs it: a real etcd (TLS, client certificates, one role
//! per node), two controllers (`catsd run --etcd`), and one `catsd agent` process per lab
//! node. Under a continuous request stream:
//!
//! - the leading controller is killed: the standby takes over, and a later intent change
//!   still reaches every node;
//! - etcd restarts: no node applies anything new, and no request is lost;
//! - one agent is cut off from etcd: it keeps forwarding with its last state, the leader
//!   sees it gone, and once back it converges to the state published meanwhile.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use cats_tests::{
    binaries::{self, Running},
    etcd::EtcdServer,
    lab_env::{LabEnv, LabOptions},
    stream::RequestStream,
    tcp_cut::TcpCut,
};
use serde_json::Value;

fn service() -> SocketAddr {
    "[2001:db8:ca75::1]:7000".parse().unwrap()
}

/// A catsd process (killed when dropped).
fn catsd(args: &[String], log: PathBuf) -> Running {
    Running::start(&binaries::catsd(), args, "info", log).expect("starting catsd")
}

fn controller(env: &LabEnv, etcd: &EtcdServer, name: &str) -> (Running, PathBuf) {
    let status = env.run_dir.join(format!("{name}.json"));
    let mut args: Vec<String> = vec!["run".into(), "--name".into(), name.into()];
    args.extend(etcd.cli_args(&etcd.endpoint(), "controller"));
    for (flag, value) in [
        ("--intent", env.intent_dir.clone()),
        ("--status-file", status.clone()),
        ("--state-dir", env.run_dir.join(format!("{name}-state"))),
        ("--registry", env.run_dir.join("pods")),
        ("--api-socket", env.run_dir.join(format!("{name}.sock"))),
    ] {
        args.push(flag.into());
        args.push(value.display().to_string());
    }
    args.extend(["--poll-ms".into(), "200".into()]);
    (catsd(&args, env.run_dir.join(format!("{name}.log"))), status)
}

fn agent(env: &LabEnv, etcd: &EtcdServer, endpoint: &str, node: &str) -> Running {
    let mut args: Vec<String> = vec!["agent".into(), "--node".into(), node.into()];
    args.extend(etcd.cli_args(endpoint, &format!("node-{node}")));
    args.extend(["--netns-prefix".into(), env.lab().prefix().to_string()]);
    for (flag, value) in [
        ("--bpffs", env.bpffs.clone()),
        ("--metrics-dir", env.run_dir.join("metrics")),
        ("--registry", env.run_dir.join("pods")),
    ] {
        args.push(flag.into());
        args.push(value.display().to_string());
    }
    catsd(&args, env.run_dir.join(format!("agent-{node}.log")))
}

fn status(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Waits until `pred` holds for the status at `path`; fails showing it and `log`'s tail.
fn wait_for(path: &Path, log: &Running, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(path);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never came. nodes: {}\nlog:\n{}",
            summary(&s),
            log.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Per node: alive, applied/desired generation, last error.
fn summary(s: &Value) -> String {
    let Some(nodes) = s["nodes"].as_object() else { return format!("role {}", s["role"]) };
    nodes
        .iter()
        .map(|(n, v)| {
            format!(
                "{n}: alive {} applied {} desired {} error {}",
                v["alive"], v["applied_generation"], v["desired_generation"], v["last_error"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn node<'s>(s: &'s Value, name: &str) -> &'s Value {
    &s["nodes"][name]
}

fn applied(s: &Value, name: &str) -> bool {
    let n = node(s, name);
    n["alive"] == true
        && n["applied_generation"].is_u64()
        && n["applied_generation"] == n["desired_generation"]
        && n["last_error"].is_null()
}

fn weight(s: &Value, instance: &str) -> Option<u64> {
    let decisions = s["decisions"][0]["decisions"].as_array()?;
    decisions.iter().find(|d| d["instance"] == instance)?["weight"].as_u64()
}

#[test]
fn controllers_fail_over_and_cut_off_agents_keep_forwarding_then_converge() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = LabEnv::start_with(|_| Ok(()), LabOptions { daemon: false, ..LabOptions::default() })
        .unwrap();
    let nodes: Vec<String> = env.intent.topology.nodes.iter().map(|n| n.name.clone()).collect();
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let mut etcd = rt.block_on(EtcdServer::new(&node_refs)).unwrap();

    let (mut ctl_a, status_a) = controller(&env, &etcd, "ctl-a");
    wait_for(&status_a, &ctl_a, "ctl-a leading", |s| s["role"] == "leader");
    let (ctl_b, status_b) = controller(&env, &etcd, "ctl-b");
    wait_for(&status_b, &ctl_b, "ctl-b standing by", |s| s["role"] == "standby");

    // edge1's agent reaches etcd through a cut-able relay.
    let upstream: SocketAddr = etcd.endpoint().trim_start_matches("https://").parse().unwrap();
    let relay = TcpCut::start(upstream).unwrap();
    let mut agents = Vec::new();
    for n in &nodes {
        let endpoint =
            if n == "edge1" { format!("https://{}", relay.addr()) } else { etcd.endpoint() };
        agents.push(agent(&env, &etcd, &endpoint, n));
    }
    wait_for(&status_a, &ctl_a, "every node applied and alive", |s| {
        nodes.iter().all(|n| applied(s, n))
    });

    let stream =
        RequestStream::start(&env.lab().clients("gw").path(), service(), 8, 100.0).unwrap();
    let settled = stream.settle(Duration::from_millis(500), Duration::from_secs(15)).unwrap();

    // The leader dies: the standby leads within its lease's TTL, and steers on.
    ctl_a.kill();
    let killed = Instant::now();
    wait_for(&status_b, &ctl_b, "ctl-b leading", |s| s["role"] == "leader");
    let takeover = killed.elapsed();
    println!("standby took over {} ms after the leader died", takeover.as_millis());
    let before = wait_for(&status_b, &ctl_b, "every node applied under ctl-b", |s| {
        nodes.iter().all(|n| applied(s, n))
    });
    assert!(weight(&before, "edge2-a").unwrap() > 0, "edge2-a takes flows before the drain");
    // A later intent change still reaches every node.
    let services = std::fs::read_to_string(env.intent_dir.join("services.yaml")).unwrap();
    let anchor = "    - name: edge2-a\n";
    assert!(services.contains(anchor));
    env.write_intent(
        "services.yaml",
        &services.replace(anchor, &format!("{anchor}      drain: true\n")),
    )
    .unwrap();
    let gw_before = node(&before, "gw")["desired_generation"].as_u64().unwrap();
    wait_for(&status_b, &ctl_b, "the drain applied on every node", |s| {
        weight(s, "edge2-a") == Some(0)
            && node(s, "gw")["desired_generation"].as_u64() > Some(gw_before)
            && nodes.iter().all(|n| applied(s, n))
    });

    // Steady state: how often the store is written (reports are dampened).
    let revision = || {
        rt.block_on(async {
            let client = etcd.config("root").connect().await.unwrap();
            let got = client.kv_client().get("/", None).await.unwrap();
            got.header().unwrap().revision()
        })
    };
    let (r0, t0) = (revision(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let writes = revision() - r0;
    println!(
        "steady state under the stream: {writes} writes in {:.1} s for {} nodes ({:.2} per node per second)",
        t0.elapsed().as_secs_f64(),
        nodes.len(),
        writes as f64 / t0.elapsed().as_secs_f64() / nodes.len() as f64
    );

    // etcd restarts: nothing new for any node, nothing lost.
    let generations = |s: &Value| -> Vec<Value> {
        nodes.iter().map(|n| node(s, n)["applied_generation"].clone()).collect()
    };
    let steady = generations(&status(&status_b));
    etcd.stop().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    rt.block_on(etcd.start()).unwrap();
    let after_restart =
        wait_for(&status_b, &ctl_b, "every node back after the etcd restart", |s| {
            s["role"] == "leader" && nodes.iter().all(|n| applied(s, n))
        });
    assert_eq!(generations(&after_restart), steady, "an etcd restart changed what nodes run");

    // edge1 is cut off: the leader sees it gone while it forwards on.
    relay.cut();
    let cut_at = Instant::now();
    wait_for(&status_b, &ctl_b, "edge1 reported dead", |s| node(s, "edge1")["alive"] == false);
    let edge1_applied = node(&status(&status_b), "edge1")["applied_generation"].clone();
    // Meanwhile edge1 gets a new state: the kernel's seg6local instead of XDP.
    let network = std::fs::read_to_string(env.intent_dir.join("network.yaml")).unwrap();
    let edge1_xdp = "    - name: edge1\n      dataplane: xdp\n";
    assert!(network.contains(edge1_xdp));
    env.write_intent(
        "network.yaml",
        &network.replace(edge1_xdp, "    - name: edge1\n      dataplane: kernel\n"),
    )
    .unwrap();
    let published = wait_for(&status_b, &ctl_b, "edge1's new state published", |s| {
        node(s, "edge1")["desired_generation"].as_u64() > edge1_applied.as_u64()
    });
    assert_eq!(node(&published, "edge1")["applied_generation"], edge1_applied);
    std::thread::sleep(Duration::from_secs(2));
    let cut_for = cut_at.elapsed();
    relay.restore();
    let converged = wait_for(&status_b, &ctl_b, "edge1 converged after the cut", |s| {
        nodes.iter().all(|n| applied(s, n))
    });
    let attached = node(&converged, "edge1")["attached"].as_array().cloned().unwrap_or_default();
    assert!(attached.is_empty(), "edge1 runs the kernel's SRv6 now, no XDP: {attached:?}");

    let log = stream.stop();
    let lost = log.lost_after(settled);
    assert!(
        lost.is_empty(),
        "{} requests lost across the controller failover, the etcd restart and a {} s cut",
        lost.len(),
        cut_for.as_secs()
    );
    for (flow, instances) in log.instances_per_flow().iter().enumerate() {
        assert_eq!(instances.len(), 1, "flow {flow} moved: {instances:?}");
    }
    drop(agents);
}
