//! Pods in the lab, attached by real CNI chains (`ptp` + `host-local`, then cats-cni) to lab
//! nodes: a client pod on the ingress `gw` is steered over SRv6, and a pod on the egress
//! `edge1` that a service's `podSelector` picks becomes an instance and answers steered
//! requests. DEL takes both out of the daemon's state again.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cats_common::counters::Event;
use cats_controller::{netns, paths, registry, state::NodeState};
use cats_lab::{
    control::lab_registry,
    instance::{InstanceConfig, run_instance},
    netns::{Namespace, unique_name},
};
use cats_tests::{
    cni_runtime::{Attachment, CniRuntime, cats_conf, conflist, ptp},
    lab_env::{LabEnv, LabOptions, ask},
};
use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_cats-cni-under-test");

/// A service whose instances are pods only.
const POD_SERVICE: &str = "
---
apiVersion: cats.dev/v1alpha1
kind: ComputeService
metadata:
  name: pod-echo
spec:
  csId: 2
  addresses: [198.51.100.7]
  ports:
    - protocol: udp
      port: 7000
  requestCost: 0.02
  podSelector:
    namespace: shop
    namePrefix: echo-
    tops: 10
";

const POD_ECHO: &str = "198.51.100.7:7000";
const PLATES: &str = "198.51.100.1:7000";
const POD_INSTANCE: &str = "shop.echo-0";

/// Stops a lab instance running in a pod when dropped (also when the test panics).
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the lab's instance program in `pod`, answering as `name` on the service address.
fn serve(pod: &Namespace, name: &str) -> Stop {
    pod.ip(&["addr", "add", "198.51.100.7/32", "dev", "lo"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let config = InstanceConfig {
        name: name.into(),
        listen: vec![POD_ECHO.parse().unwrap()],
        tops: 10.0,
        request_cost: 0.02,
        workers: 1,
        metrics_file: None,
    };
    let flag = stop.clone();
    netns::spawn_in(&pod.path(), move || run_instance(config, flag)).unwrap();
    Stop(stop)
}

fn node_state(env: &LabEnv, node: &str) -> NodeState {
    let file = paths::running_node_file(&env.run_dir.join("state"), node);
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

/// The weight gw gives `instance` of `service` in the daemon's status (0 when not listed).
fn weight_at_gw(status: &Value, service: &str, instance: &str) -> u64 {
    status["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["service"] == service && d["ingress"] == "gw")
        .flat_map(|d| d["decisions"].as_array().cloned().unwrap_or_default())
        .find(|d| d["instance"] == instance)
        .and_then(|d| d["weight"].as_u64())
        .unwrap_or(0)
}

/// Waits until the daemon's status satisfies `done`, then until every node applied it.
fn wait_for(env: &LabEnv, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = env.daemon().status()
            && done(&status)
        {
            return env.daemon().wait_applied(Duration::from_secs(30)).unwrap();
        }
        assert!(Instant::now() < deadline, "the daemon never got to: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A UDP socket inside `pod`, connected to `target`.
fn socket_in(pod: &Namespace, target: &str) -> std::net::UdpSocket {
    let target: SocketAddr = target.parse().unwrap();
    netns::run_in(&pod.path(), move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(target)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(sock)
    })
    .unwrap()
}

/// The bpf_link descriptors this process holds (the daemon runs in it): links live in their
/// pins, so an agent holding any after applying leaks them.
fn bpf_link_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("anon_inode:bpf-link"))
        })
        .count()
}

#[test]
fn pods_are_steered_and_registered_as_instances() {
    let env = LabEnv::start_with(
        |dir| {
            let services = std::fs::read_to_string(dir.join("services.yaml"))?;
            std::fs::write(dir.join("services.yaml"), services + POD_SERVICE)?;
            Ok(())
        },
        LabOptions { delays: false, instances: true, ..LabOptions::default() },
    )
    .unwrap();
    let registry = lab_registry(&env.run_dir);
    let prefix = env.lab().prefix().to_owned();
    let chain = |node: &str, subnet: &str, gateway: &str| {
        let dir: PathBuf = env.run_dir.join(format!("cni-{node}"));
        let list = conflist(
            "1.0.0",
            "pods",
            vec![ptp(&[(subnet, gateway)], &dir), cats_conf(node, &registry, &env.bpffs, &prefix)],
        );
        let runtime =
            CniRuntime::new(Path::new(PLUGIN), &dir, Some(env.lab().node(node).path())).unwrap();
        (list, runtime)
    };
    // Pod addresses inside the nodes' prefixes: the egress delivers to them, replies route back.
    let (client_list, at_gw) = chain("gw", "198.18.10.64/26", "198.18.10.65");
    let (echo_list, at_edge1) = chain("edge1", "198.18.21.64/26", "198.18.21.65");

    let client_pod = Namespace::create(&unique_name("cam")).unwrap();
    let client = Attachment::kubernetes(&client_pod, "default", "camera-0");
    let client_result = at_gw.add(&client_list, &client).unwrap().unwrap();
    let echo_pod = Namespace::create(&unique_name("echo")).unwrap();
    let echo = Attachment::kubernetes(&echo_pod, "shop", "echo-0");
    let echo_result = at_edge1.add(&echo_list, &echo).unwrap().unwrap();
    let _serving = serve(&echo_pod, POD_INSTANCE);
    let client_veth = registry::read(&registry, &client.container_id, "eth0").unwrap().unwrap();
    let echo_veth = registry::read(&registry, &echo.container_id, "eth0").unwrap().unwrap();

    let status = wait_for(&env, "the pod is an instance of pod-echo", |s| {
        weight_at_gw(s, "pod-echo", POD_INSTANCE) > 0
    });
    assert_eq!(status["registry_problems"], serde_json::json!([]));
    let gw = node_state(&env, "gw");
    let headend = gw.headend.as_ref().unwrap();
    assert!(headend.interfaces.contains(&client_veth.host_interface), "{:?}", headend.interfaces);
    let slot_of = |name: &str| headend.instances.iter().find(|i| i.name == name).unwrap().slot;
    let service_slot = |name: &str| headend.services.iter().find(|s| s.name == name).unwrap().slot;
    let gw_counters = env.counters("gw").unwrap();
    let edge1_counters = env.counters("edge1").unwrap();

    // The pod instance answers requests the client pod sends to the service address: steered
    // at gw (the headend on the client pod's veth), decapsulated at edge1.
    let to_pod = gw_counters.instance_counter(slot_of(POD_INSTANCE)).unwrap().packets;
    let decapsulated = edge1_counters.events(Event::Decapsulated).unwrap();
    let sock = socket_in(&client_pod, POD_ECHO);
    for seq in 0..3 {
        let (instance, _) = ask(&sock, 1, seq).unwrap();
        assert_eq!(instance, POD_INSTANCE);
    }
    assert!(gw_counters.instance_counter(slot_of(POD_INSTANCE)).unwrap().packets >= to_pod + 3);
    let all = |c: &cats_controller::dataplane::stats::PinnedCounters| -> Vec<(String, u64)> {
        Event::ALL.iter().map(|e| (e.label().to_string(), c.events(*e).unwrap())).collect()
    };
    eprintln!("edge1: {:?}", all(&edge1_counters));
    eprintln!("neigh: {}", env.lab().node("edge1").ip(&["neigh"]).unwrap());
    eprintln!("route: {}", env.lab().node("edge1").ip(&["route"]).unwrap());
    eprintln!("route: {}", env.lab().node("edge1").ip(&["-6", "route"]).unwrap());
    eprintln!("links: {}", env.lab().node("edge1").ip(&["link"]).unwrap());
    // In XDP: the pod's neighbour entry lets edge1's endpoint redirect into the pod's veth.
    assert!(edge1_counters.events(Event::Decapsulated).unwrap() >= decapsulated + 3);

    // The client pod reaches the lab's own service the same way.
    let plates = gw_counters.service_counter(service_slot("plate-recognition")).unwrap().packets;
    let (instance, _) = ask(&socket_in(&client_pod, PLATES), 2, 0).unwrap();
    assert!(["edge1-a", "edge2-a", "cloud-a"].contains(&instance.as_str()), "{instance}");
    assert!(
        gw_counters.service_counter(service_slot("plate-recognition")).unwrap().packets > plates
    );

    at_gw.check(&client_list, &client, &client_result).unwrap().unwrap();
    at_edge1.check(&echo_list, &echo, &echo_result).unwrap().unwrap();

    // DEL: the pod leaves the service, the client's veth the headend; nothing stays.
    at_edge1.del(&echo_list, &echo, Some(&echo_result)).unwrap().unwrap();
    at_gw.del(&client_list, &client, Some(&client_result)).unwrap().unwrap();
    let client_if = client_veth.host_interface.clone();
    // The two registrations may go in two recompiles: wait for both.
    wait_for(&env, "the pods are gone from the compiled state", |s| {
        !serde_json::to_string(&s["decisions"]).unwrap().contains(POD_INSTANCE)
            && !node_state(&env, "gw").headend.unwrap().interfaces.contains(&client_if)
    });
    assert!(registry::list(&registry).registrations.is_empty());
    for (node, veth) in [("gw", &client_veth), ("edge1", &echo_veth)] {
        let pins = paths::node_pins(&env.bpffs, &prefix, node);
        assert!(!pins.join("links").join(&veth.host_interface).exists(), "{node}: pin left");
        let links = env.lab().node(node).ip(&["-o", "link", "show"]).unwrap();
        assert!(!links.contains(&veth.host_interface), "{node}: {} left", veth.host_interface);
    }
    assert_eq!(env.daemon().status().unwrap()["registry_problems"], serde_json::json!([]));
    assert_eq!(bpf_link_fds(), 0, "the agents hold link descriptors after applying");
}
