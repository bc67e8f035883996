//! `podSelector` in YAML (located errors) and the merge of registered pods into an intent.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::registry::Registration;

// Line numbers in the tests below count lines of these fixtures; keep them in sync.
const NETWORK: &str = "\
apiVersion: cats.dev/v1alpha1
kind: Topology
metadata:
  name: lab
spec:
  srBlock: fc00::/32
  nodes:
    - name: gw
      index: 1
      roles: [ingress]
      prefixes: [198.18.10.0/24]
      headendInterfaces: [cams]
    - name: edge
      index: 2
      roles: [egress]
      prefixes: [fd00:21::/64, 198.18.21.0/24]
  links:
    - a: gw
      b: edge
      latencyMs: 1
";

const SERVICES: &str = "\
apiVersion: cats.dev/v1alpha1
kind: ComputeService
metadata:
  name: echo
spec:
  csId: 7
  addresses: [198.51.100.7]
  requestCost: 0.1
  podSelector:
    namespace: shop
    namePrefix: echo-
    tops: 2
---
apiVersion: cats.dev/v1alpha1
kind: ComputeService
metadata:
  name: web
spec:
  csId: 8
  addresses: [2001:db8::1, 198.51.100.8]
  requestCost: 1
  instances:
    - name: web-1
      id: 1
      node: edge
      address: fd00:21::1
      address4: 198.18.21.1
      tops: 10
  podSelector:
    namespace: web
    tops: 1
";

fn sources(services: &str) -> Vec<(PathBuf, String)> {
    vec![
        (PathBuf::from("network.yaml"), NETWORK.to_owned()),
        (PathBuf::from("services.yaml"), services.to_owned()),
    ]
}

fn errors_of(services: &str) -> Vec<IntentError> {
    match parse_documents(&sources(services)) {
        Ok(intent) => panic!("expected errors, got {intent:#?}"),
        Err(IntentErrors(errors)) => errors,
    }
}

fn assert_only(errors: &[IntentError], line: usize, column: usize, field: &str, message: &str) {
    assert_eq!(errors.len(), 1, "expected one error, got:\n{}", IntentErrors(errors.to_vec()));
    let error = &errors[0];
    assert_eq!(
        (error.file.as_path(), error.line, error.column, error.field.as_str()),
        (Path::new("services.yaml"), line, column, field),
        "{error}"
    );
    assert!(error.message.contains(message), "{error}\ndoes not contain {message:?}");
}

fn intent() -> Intent {
    parse_documents(&sources(SERVICES)).unwrap()
}

fn pod(
    file: &str,
    node: &str,
    namespace: &str,
    name: &str,
    addresses: &[&str],
) -> (String, Registration) {
    let registration = Registration {
        network: "k8s-pod-network".into(),
        container_id: file.into(),
        ifname: "eth0".into(),
        node: node.into(),
        host_interface: format!("veth{file}"),
        netns: PathBuf::from("/run/netns/x"),
        namespace: namespace.into(),
        pod: name.into(),
        addresses: addresses.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
    };
    (format!("{file}@eth0.json"), registration)
}

#[test]
fn a_service_of_pods_alone_needs_no_declared_instance() {
    let intent = intent();
    let echo = intent.service("echo").unwrap();
    assert!(echo.instances.is_empty());
    let selector = echo.pod_selector.as_ref().unwrap();
    assert_eq!(selector.namespace.as_deref(), Some("shop"));
    assert_eq!(selector.name_prefix.as_deref(), Some("echo-"));
    assert_eq!(selector.tops, 2.0);
    // Without a selector, instances stay required.
    let services = SERVICES
        .replace("  podSelector:\n    namespace: shop\n    namePrefix: echo-\n    tops: 2\n", "");
    assert_only(&errors_of(&services), 5, 1, "spec.instances", "missing required field");
}

#[test]
fn selector_errors_are_located() {
    let bad_namespace = SERVICES.replace("namespace: shop", "namespace: Shop_1");
    assert_only(
        &errors_of(&bad_namespace),
        10,
        5,
        "spec.podSelector.namespace",
        "\"Shop_1\" is not a Kubernetes namespace",
    );
    let no_tops =
        SERVICES.replace("    namePrefix: echo-\n    tops: 2\n", "    namePrefix: echo-\n");
    assert_only(&errors_of(&no_tops), 9, 3, "spec.podSelector.tops", "missing required field");
    let everything = SERVICES.replace("    namespace: shop\n    namePrefix: echo-\n", "");
    assert_only(
        &errors_of(&everything),
        9,
        3,
        "spec.podSelector",
        "set namespace or namePrefix (or both)",
    );
    let unknown = SERVICES.replace("    tops: 2\n", "    tops: 2\n    labels: {}\n");
    assert_only(&errors_of(&unknown), 13, 5, "spec.podSelector.labels", "unknown field `labels`");
    let zero = SERVICES.replace("    tops: 2\n", "    tops: 0\n");
    assert_only(&errors_of(&zero), 12, 5, "spec.podSelector.tops", "must be greater than 0");
}

#[test]
fn selected_pods_become_instances_with_stable_ids() {
    let intent = intent();
    let registrations = [
        pod("a1", "edge", "shop", "echo-0", &["198.18.21.70", "fd00:21::70"]),
        pod("a2", "edge", "shop", "web-0", &["198.18.21.71"]),
        pod("a3", "edge", "web", "front", &["198.18.21.72", "fd00:21::72"]),
    ];
    let (merged, problems) = with_pods(&intent, &registrations);
    assert!(problems.is_empty(), "{problems:?}");
    let echo = &merged.service("echo").unwrap().instances;
    assert_eq!(echo.len(), 1);
    assert_eq!(echo[0].name, "shop.echo-0");
    assert_eq!(echo[0].node, "edge");
    assert_eq!(echo[0].address4, Some("198.18.21.70".parse().unwrap()));
    // The service has no IPv6 address: the instance needs none.
    assert_eq!(echo[0].address, None);
    assert_eq!(echo[0].tops, 2.0);
    let web = &merged.service("web").unwrap().instances;
    assert_eq!(web.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["web-1", "web.front"]);
    assert_eq!(web[1].address, Some("fd00:21::72".parse().unwrap()));

    // Same pods, other order and an extra one: the same ids.
    let mut more = registrations.to_vec();
    more.insert(0, pod("a0", "edge", "shop", "echo-1", &["198.18.21.69"]));
    let (again, _) = with_pods(&intent, &more);
    let id_of = |intent: &Intent, name: &str| {
        intent.services.iter().flat_map(|s| &s.instances).find(|i| i.name == name).unwrap().id
    };
    assert_eq!(id_of(&again, "shop.echo-0"), id_of(&merged, "shop.echo-0"));
    assert_eq!(id_of(&again, "web.front"), id_of(&merged, "web.front"));
    assert_ne!(id_of(&again, "shop.echo-1"), id_of(&again, "shop.echo-0"));
}

#[test]
fn pods_on_an_ingress_node_add_headend_interfaces() {
    let (merged, problems) =
        with_pods(&intent(), &[pod("c1", "gw", "shop", "client", &["198.18.10.70"])]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(merged.node("gw").unwrap().headend_interfaces, ["cams", "vethc1"]);
    // An egress node runs no headend: its pods' interfaces are not headend interfaces.
    let (merged, _) = with_pods(&intent(), &[pod("e1", "edge", "x", "y", &[])]);
    assert!(merged.node("edge").unwrap().headend_interfaces.is_empty());
}

#[test]
fn a_bad_registration_is_reported_and_the_rest_merged() {
    let mut taken = pod("c2", "gw", "shop", "client", &[]);
    taken.1.host_interface = "cams".into();
    let registrations = [
        pod("b1", "nowhere", "shop", "echo-0", &["198.18.21.70"]),
        pod("b2", "edge", "shop", "echo-2", &["10.0.0.1"]),
        taken,
        pod("b4", "edge", "shop", "echo-4", &["198.18.21.74"]),
        pod("b5", "edge", "web", "echo-5", &["198.18.21.75", "fd00:21::75"]),
        pod("b6", "gw", "web", "on-gw", &["198.18.10.76"]),
    ];
    let (merged, problems) = with_pods(&intent(), &registrations);
    let expected = [
        "b1@eth0.json: node \"nowhere\" is not in the topology",
        "c2@eth0.json: interface \"cams\" on node gw is already used by the intent",
        "b2@eth0.json: pod shop.echo-2 cannot be an instance of echo: the service has an IPv4 \
         address, but none of the pod's addresses (10.0.0.1) is an IPv4 address inside the \
         prefixes of node edge (fd00:21::/64, 198.18.21.0/24)",
        "b6@eth0.json: pod web.on-gw cannot be an instance of web: node gw does not have role \
         egress",
    ];
    assert_eq!(problems, expected);
    let names: Vec<&str> =
        merged.services.iter().flat_map(|s| &s.instances).map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["shop.echo-4", "web-1", "web.echo-5"]);
}

#[test]
fn a_pod_serves_one_service() {
    let services = SERVICES.replace("    namespace: web\n", "    namespace: shop\n");
    let intent = parse_documents(&sources(&services)).unwrap();
    let (merged, problems) =
        with_pods(&intent, &[pod("d1", "edge", "shop", "echo-9", &["198.18.21.9", "fd00:21::9"])]);
    assert_eq!(
        problems,
        ["d1@eth0.json: pod shop.echo-9 is already an instance of echo; a pod serves one service"]
    );
    assert_eq!(merged.service("web").unwrap().instances.len(), 1);
}

#[test]
fn merged_pods_compile_to_sids_and_weights() {
    let intent = intent();
    // Before any pod registers, the service compiles with nothing to steer to.
    crate::compile::compile(&intent, &Default::default(), 1).unwrap();
    let (merged, _) = with_pods(&intent, &[pod("f1", "edge", "shop", "echo-0", &["198.18.21.70"])]);
    let compiled = crate::compile::compile(&merged, &Default::default(), 1).unwrap();
    let id = merged.service("echo").unwrap().instances[0].id;
    let sid = crate::compile::addressing::compute_sid(&merged.topology, 2, true, 7, id);
    assert!(compiled.nodes["edge"].sids.iter().any(|s| s.sid == sid), "no End.DX4 {sid}");
    let headend = compiled.nodes["gw"].headend.as_ref().unwrap();
    let echo = headend.services.iter().find(|s| s.cs_id == 7).unwrap();
    assert_eq!(echo.weights.len(), 1);
    assert!(echo.weights[0].weight > 0);
}

#[test]
fn example_pod_service_loads_with_the_example_intent() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples.join("smart-traffic/intent"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.push(examples.join("cni/pod-service.yaml"));
    let intent = load_files(&files).unwrap();
    let selector = intent.service("plate-pods").unwrap().pod_selector.clone().unwrap();
    assert!(selector.selects("shop", "plate-7f9c"));
}
