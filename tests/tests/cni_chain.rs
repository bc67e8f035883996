//! cats-cni in real chains: Debian's `ptp` or `bridge` with `host-local` create the pod's
//! interface (standing in for Calico's), cats-cni chains after them. Each test runs on a node
//! of its own (a network namespace with a private bpffs), without a daemon: the plugin must
//! work, and clean up, on its own.

use std::{collections::BTreeSet, path::Path, time::Instant};

use cats_controller::{offload::gro_enabled, registry};
use cats_tests::cni_runtime::{Attachment, TestNode, bridge, conflist, ptp};
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_cats-cni-under-test");

fn pod_subnet() -> [(&'static str, &'static str); 1] {
    [("198.18.10.0/24", "198.18.10.1")]
}

fn ptp_list(node: &TestNode, version: &str) -> Value {
    conflist(version, "pods", vec![ptp(&pod_subnet(), &node.dir), node.cats_conf()])
}

/// The node's interfaces that run an XDP program.
fn xdp_interfaces(node: &TestNode) -> BTreeSet<String> {
    let links = node.ns.ip(&["-o", "link", "show"]).unwrap();
    links
        .lines()
        .filter(|l| l.contains(" xdp"))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap()
                .trim_end_matches(':')
                .split('@')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// [`xdp_interfaces`] once it is `expected`, or what it is after 2 s: the kernel detaches a
/// program whose last link reference went (a removed pin) a moment later, not at once.
fn xdp_interfaces_become(node: &TestNode, expected: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let now = xdp_interfaces(node);
        if &now == expected || std::time::Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn registration(node: &TestNode, attachment: &Attachment) -> registry::Registration {
    registry::read(&node.registry(), &attachment.container_id, &attachment.ifname)
        .unwrap()
        .unwrap_or_else(|| panic!("{} is not registered", attachment.container_id))
}

fn pod_gro(attachment: &Attachment) -> bool {
    cats_controller::netns::run_in(&attachment.netns, || gro_enabled("eth0")).unwrap()
}

#[test]
fn ptp_chain_add_check_del_leaves_nothing_behind() {
    let node = TestNode::new("gw").unwrap();
    let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
    let list = ptp_list(&node, "1.0.0");
    let pod = node.pod().unwrap();
    let attachment = Attachment::kubernetes(&pod, "shop", "web-0");

    let result = runtime.add(&list, &attachment).unwrap().unwrap();
    // cats passes ptp's result on: the pod's interface and its address.
    assert_eq!(result["cniVersion"], "1.0.0");
    let eth0 = result["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "eth0");
    assert_eq!(eth0.unwrap()["sandbox"], json!(pod.path()));
    let address =
        result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();

    let registered = registration(&node, &attachment);
    assert_eq!((registered.namespace.as_str(), registered.pod.as_str()), ("shop", "web-0"));
    assert_eq!((registered.node.as_str(), registered.network.as_str()), ("gw", "pods"));
    assert_eq!(registered.addresses, [address.parse::<std::net::IpAddr>().unwrap()]);
    // The node's end of the pair, and only it, runs the headend; its link is pinned where the
    // agent keeps links.
    assert_eq!(xdp_interfaces(&node), BTreeSet::from([registered.host_interface.clone()]));
    assert!(node.pins().join("links").join(&registered.host_interface).exists());
    assert!(pod_gro(&attachment), "GRO must be on in the pod for redirects into it");
    // The pod's address is resolved on the node's end for good: XDP forwards to it.
    let neighbours = node.ns.ip(&["neigh", "show", "dev", &registered.host_interface]).unwrap();
    assert!(neighbours.contains(&format!("{address} lladdr")), "{neighbours}");
    assert!(neighbours.contains("PERMANENT"), "{neighbours}");

    runtime.check(&list, &attachment, &result).unwrap().unwrap();
    // A missing pin is what CHECK is for.
    std::fs::remove_file(node.pins().join("links").join(&registered.host_interface)).unwrap();
    let failure = runtime.check(&list, &attachment, &result).unwrap().unwrap_err();
    assert_eq!(
        (failure.plugin.as_str(), failure.exec.code()),
        ("cats-cni", Some(102)),
        "{failure}"
    );

    runtime.del(&list, &attachment, Some(&result)).unwrap().unwrap();
    assert_eq!(node.leftovers().unwrap(), Vec::<String>::new());
    assert!(xdp_interfaces_become(&node, &BTreeSet::new()).is_empty());
    // DEL again: idempotent.
    runtime.del(&list, &attachment, Some(&result)).unwrap().unwrap();
}

#[test]
fn bridge_chain_attaches_to_the_veth_not_the_bridge() {
    let node = TestNode::new("gw").unwrap();
    let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
    let list = conflist(
        "1.0.0",
        "pods",
        vec![bridge("cnibr0", &pod_subnet(), &node.dir), node.cats_conf()],
    );
    let pod = node.pod().unwrap();
    let attachment = Attachment::kubernetes(&pod, "shop", "web-1");
    let result = runtime.add(&list, &attachment).unwrap().unwrap();
    // bridge lists two host interfaces, the bridge and the veth.
    let host_side: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_none())
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(host_side.len(), 2, "{result}");
    let registered = registration(&node, &attachment);
    assert_ne!(registered.host_interface, "cnibr0");
    assert!(host_side.contains(&registered.host_interface.as_str()));
    assert_eq!(xdp_interfaces(&node), BTreeSet::from([registered.host_interface]));
    runtime.check(&list, &attachment, &result).unwrap().unwrap();

    runtime.del(&list, &attachment, Some(&result)).unwrap().unwrap();
    // The bridge plugin keeps its bridge; nothing else stays.
    let left: Vec<String> =
        node.leftovers().unwrap().into_iter().filter(|l| l != "interface cnibr0:").collect();
    assert_eq!(left, Vec::<String>::new());
}

/// Calico hands on a thin 0.3.1 result: the host-side interface name and /32 addresses
/// without an interface index. cats takes the addresses as the pod's and passes the result on
/// byte for byte (as JSON).
#[test]
fn calico_style_thin_result_is_accepted_and_passed_on() {
    let node = TestNode::new("gw").unwrap();
    let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
    let interface_only = conflist("0.3.1", "k8s-pod-network", vec![ptp(&pod_subnet(), &node.dir)]);
    let pod = node.pod().unwrap();
    let attachment = Attachment::kubernetes(&pod, "shop", "web-2");
    let full = runtime.add(&interface_only, &attachment).unwrap().unwrap();
    let host = full["interfaces"][0]["name"].as_str().unwrap();
    let address = full["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap();
    let thin = json!({
        "cniVersion": "0.3.1",
        "interfaces": [{"name": host}],
        "ips": [{"version": "4", "address": format!("{address}/32")}],
        "dns": {}
    });

    let mut conf = node.cats_conf();
    conf["cniVersion"] = json!("0.3.1");
    conf["name"] = json!("k8s-pod-network");
    conf["prevResult"] = thin.clone();
    let netns = pod.path();
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", attachment.container_id.as_str()),
        ("CNI_NETNS", netns.to_str().unwrap()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", attachment.args.as_str()),
    ];
    let add = runtime.exec("cats-cni", &vars, conf.to_string().as_bytes()).unwrap();
    assert!(add.success, "{add:?}");
    assert_eq!(add.json(), thin);
    let registered = registration(&node, &attachment);
    assert_eq!(registered.host_interface, host);
    assert_eq!(registered.addresses, [address.parse::<std::net::IpAddr>().unwrap()]);

    let mut del_vars = vars;
    del_vars[0] = ("CNI_COMMAND", "DEL");
    let del = runtime.exec("cats-cni", &del_vars, conf.to_string().as_bytes()).unwrap();
    assert!(del.success, "{del:?}");
    runtime.del(&interface_only, &attachment, Some(&full)).unwrap().unwrap();
    assert_eq!(node.leftovers().unwrap(), Vec::<String>::new());
}

#[test]
fn del_after_the_pod_namespace_is_gone() {
    let node = TestNode::new("gw").unwrap();
    let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
    let list = ptp_list(&node, "1.0.0");
    let pod = node.pod().unwrap();
    let attachment = Attachment::kubernetes(&pod, "shop", "web-3");
    let result = runtime.add(&list, &attachment).unwrap().unwrap();
    // The runtime lost the sandbox: its veth pair goes with it, once the kernel has cleaned
    // the namespace up (asynchronously).
    let host_interface = registration(&node, &attachment).host_interface;
    drop(pod);
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !node.ns.ip(&["-o", "link", "show"]).unwrap().contains(&host_interface)
    });
    assert!(gone, "{host_interface} outlived its pod's namespace");
    runtime.del(&list, &attachment, Some(&result)).unwrap().unwrap();
    assert_eq!(node.leftovers().unwrap(), Vec::<String>::new());
}

/// GC (spec 1.1.0) releases this network's attachments the runtime does not list, and
/// nothing else.
#[test]
fn gc_releases_attachments_not_in_the_valid_list() {
    let node = TestNode::new("gw").unwrap();
    let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
    let list = ptp_list(&node, "1.0.0");
    let (kept_pod, gone_pod) = (node.pod().unwrap(), node.pod().unwrap());
    let kept = Attachment::kubernetes(&kept_pod, "shop", "kept");
    let gone = Attachment::kubernetes(&gone_pod, "shop", "gone");
    let kept_result = runtime.add(&list, &kept).unwrap().unwrap();
    let gone_result = runtime.add(&list, &gone).unwrap().unwrap();
    let (kept_if, gone_if) =
        (registration(&node, &kept).host_interface, registration(&node, &gone).host_interface);
    // Another network's attachment is not this GC's business.
    let mut other = registration(&node, &kept);
    other.network = "other".into();
    other.container_id = "other-sandbox".into();
    registry::write(&node.registry(), &other).unwrap();

    let mut gc = node.cats_conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["name"] = json!("pods");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": kept.container_id, "ifname": "eth0"}]);
    let exec =
        runtime.exec("cats-cni", &[("CNI_COMMAND", "GC")], gc.to_string().as_bytes()).unwrap();
    assert!(exec.success && exec.stdout.trim().is_empty(), "{exec:?}");

    assert!(registry::read(&node.registry(), &gone.container_id, "eth0").unwrap().is_none());
    assert!(registry::read(&node.registry(), "other-sandbox", "eth0").unwrap().is_some());
    let kept_only = BTreeSet::from([kept_if]);
    assert_eq!(xdp_interfaces_become(&node, &kept_only), kept_only);
    assert!(!node.pins().join("links").join(&gone_if).exists());

    registry::remove(&node.registry(), "other-sandbox", "eth0").unwrap();
    runtime.del(&list, &gone, Some(&gone_result)).unwrap().unwrap();
    runtime.del(&list, &kept, Some(&kept_result)).unwrap().unwrap();
    assert_eq!(node.leftovers().unwrap(), Vec::<String>::new());
}

/// 50 pods added at once, then deleted at once: each gets its own veth, address, registration
/// and pinned headend, and nothing is left afterwards. The first ADDs create the node's maps
/// (serialised), the rest share them. Prints the wall time of each half.
#[test]
fn fifty_pods_added_and_deleted_concurrently() {
    const PODS: usize = 50;
    let node = TestNode::new("gw").unwrap();
    let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
    let list = ptp_list(&node, "1.0.0");
    let pods: Vec<_> = (0..PODS).map(|_| node.pod().unwrap()).collect();
    let attachments: Vec<Attachment> = pods
        .iter()
        .enumerate()
        .map(|(k, pod)| Attachment::kubernetes(pod, "shop", &format!("web-{k}")))
        .collect();

    let started = Instant::now();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = attachments
            .iter()
            .map(|a| s.spawn(|| runtime.add(&list, a).unwrap().unwrap_or_else(|f| panic!("{f}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let add_time = started.elapsed();

    let registered: Vec<_> = attachments.iter().map(|a| registration(&node, a)).collect();
    let interfaces: BTreeSet<String> =
        registered.iter().map(|r| r.host_interface.clone()).collect();
    let addresses: BTreeSet<_> = registered.iter().map(|r| r.addresses.clone()).collect();
    assert_eq!((interfaces.len(), addresses.len()), (PODS, PODS));
    assert_eq!(xdp_interfaces(&node), interfaces);
    let pins: BTreeSet<String> = std::fs::read_dir(node.pins().join("links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pins, interfaces);

    let started = Instant::now();
    std::thread::scope(|s| {
        for (a, result) in attachments.iter().zip(&results) {
            let (runtime, list) = (&runtime, &list);
            s.spawn(move || runtime.del(list, a, Some(result)).unwrap().unwrap());
        }
    });
    let del_time = started.elapsed();
    eprintln!(
        "{PODS} concurrent ADDs (ptp + host-local + cats-cni): {:.2} s; {PODS} DELs: {:.2} s",
        add_time.as_secs_f64(),
        del_time.as_secs_f64()
    );
    assert_eq!(node.leftovers().unwrap(), Vec::<String>::new());
}
