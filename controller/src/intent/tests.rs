//! End-to-end tests: YAML text in, intent or located errors out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::*;
use crate::state::FlowDefinition;

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
      prefixes: [fd00:10::/64]
      headendInterfaces: [cams]
    - name: core
      index: 2
      roles: [transit]
    - name: edge
      index: 3
      roles: [egress]
      prefixes: [fd00:21::/64, 198.18.21.0/24]
  links:
    - a: gw
      b: core
      latencyMs: 1
    - a: core
      b: edge
      latencyMs: 2.5
      bInterface: eth1
";

const SERVICES: &str = "\
apiVersion: cats.dev/v1alpha1
kind: ComputeService
metadata:
  name: web
spec:
  csId: 7
  addresses: [2001:db8::1]
  requestCost: 1
  instances:
    - name: web-1
      id: 1
      node: edge
      address: fd00:21::1
      tops: 10
---
apiVersion: cats.dev/v1alpha1
kind: ComputeService
metadata:
  name: dns
spec:
  csId: 8
  addresses: [198.51.100.53]
  ports: [{protocol: udp, port: 53}, {protocol: tcp, port: 53}]
  requestCost: 0.001
  instances:
    - name: dns-1
      id: 1
      node: edge
      address4: 198.18.21.53
      tops: 1
      utilization: 0.25
";

const POLICY: &str = "\
apiVersion: cats.dev/v1alpha1
kind: SteeringPolicy
metadata:
  name: web
spec:
  service: web
  objective: min-latency
  constraints:
    waypoints: [core]
";

fn sources(network: &str, services: &str, policy: &str) -> Vec<(PathBuf, String)> {
    vec![
        (PathBuf::from("network.yaml"), network.to_owned()),
        (PathBuf::from("services.yaml"), services.to_owned()),
        (PathBuf::from("policy.yaml"), policy.to_owned()),
    ]
}

/// `text` with the only occurrence of `from` replaced.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

fn fail(sources: &[(PathBuf, String)]) -> Vec<IntentError> {
    match parse_documents(sources) {
        Ok(intent) => panic!("expected errors, got {intent:#?}"),
        Err(IntentErrors(errors)) => {
            assert!(!errors.is_empty());
            errors
        }
    }
}

/// Asserts there is exactly one error, at this place, and that its message contains `message`.
fn assert_only(
    errors: &[IntentError],
    file: &str,
    line: usize,
    column: usize,
    field: &str,
    message: &str,
) {
    assert_eq!(errors.len(), 1, "expected one error, got:\n{}", render(errors));
    assert_at(&errors[0], file, line, column, field, message);
}

fn assert_at(
    error: &IntentError,
    file: &str,
    line: usize,
    column: usize,
    field: &str,
    message: &str,
) {
    assert_eq!(
        (error.file.as_path(), error.line, error.column, error.field.as_str()),
        (Path::new(file), line, column, field),
        "{error}"
    );
    assert!(error.message.contains(message), "{error}\ndoes not contain {message:?}");
}

fn render(errors: &[IntentError]) -> String {
    IntentErrors(errors.to_vec()).to_string()
}

#[test]
fn fixture_is_valid_and_defaults_apply() {
    let intent = parse_documents(&sources(NETWORK, SERVICES, POLICY)).unwrap();
    let topology = &intent.topology;
    assert_eq!(topology.name, "lab");
    assert_eq!(topology.sr_block, "fc00::/32".parse().unwrap());
    assert_eq!(topology.underlay, Underlay::Static);
    assert_eq!(topology.nodes.len(), 3);
    assert_eq!(topology.nodes[1].headend_interfaces, Vec::<String>::new());
    assert_eq!(topology.nodes[1].prefixes, Vec::new());
    assert_eq!(
        topology.links[0],
        Link {
            a: "gw".into(),
            b: "core".into(),
            latency_ms: 1.0,
            a_interface: "core".into(),
            b_interface: "gw".into(),
        }
    );
    assert_eq!(topology.links[1].latency_ms, 2.5);
    assert_eq!(topology.links[1].a_interface, "edge");
    assert_eq!(topology.links[1].b_interface, "eth1");

    assert_eq!(intent.services.len(), 2);
    let web = intent.service("web").unwrap();
    assert_eq!(web.ports, Vec::new());
    assert_eq!(web.request_cost, 1.0);
    assert_eq!(web.instances[0].address4, None);
    assert_eq!(web.instances[0].utilization, 0.0);
    let dns = intent.service("dns").unwrap();
    assert_eq!(
        dns.ports,
        vec![
            PortMatch { protocol: Protocol::Udp, port: 53 },
            PortMatch { protocol: Protocol::Tcp, port: 53 },
        ]
    );
    assert_eq!(dns.instances[0].utilization, 0.25);
    assert_eq!(dns.instances[0].address4, Some(Ipv4Addr::new(198, 18, 21, 53)));
    assert_eq!(dns.instances[0].address, None);

    let policy = intent.policy_for("web").unwrap();
    assert_eq!(
        policy,
        &SteeringPolicy {
            name: "web".into(),
            service: "web".into(),
            objective: Objective::MinLatency,
            constraints: Constraints { waypoints: vec!["core".into()], ..Default::default() },
            locality: vec![],
            slack: 0.5,
            ingress: vec![],
            affinity: Affinity {
                flow: FlowDefinition::FiveTuple,
                port_groups: vec![],
                timeout_seconds: 30
            },
            dampening: Dampening { hysteresis: 0.1, hold_down_seconds: 2 },
            scoring: Scoring {
                network: ScoreRange { best_ms: 0.0, worst_ms: 200.0 },
                compute: ScoreRange { best_ms: 0.0, worst_ms: 1000.0 },
                weights: ScoreWeights { network: 0.5, compute: 0.5 },
            },
            health: Health::default(),
        }
    );
    assert!(intent.policy_for("dns").is_none());
    assert_eq!(intent.node("edge").unwrap().index, 3);
    assert!(intent.node("nowhere").is_none());
}

#[test]
fn example_directory_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smart-traffic/intent");
    let intent = match load_dir(&dir) {
        Ok(intent) => intent,
        Err(errors) => panic!("{errors}"),
    };
    let topology = &intent.topology;
    assert_eq!(topology.name, "smart-traffic");
    assert_eq!(topology.sr_block, "fc00::/32".parse().unwrap());
    assert_eq!(topology.underlay, Underlay::Static);
    let nodes: Vec<_> =
        topology.nodes.iter().map(|n| (n.name.as_str(), n.index, n.roles.clone())).collect();
    assert_eq!(
        nodes,
        vec![
            ("gw", 1, vec![Role::Ingress]),
            ("core", 2, vec![Role::Transit]),
            ("edge1", 3, vec![Role::Egress]),
            ("edge2", 4, vec![Role::Egress]),
            ("cloud", 5, vec![Role::Egress]),
        ]
    );
    let gw = intent.node("gw").unwrap();
    assert_eq!(
        gw.prefixes,
        vec!["fd00:10::/64".parse().unwrap(), "198.18.10.0/24".parse().unwrap()]
    );
    assert_eq!(gw.headend_interfaces, vec!["cams".to_owned()]);
    assert_eq!(
        intent.node("cloud").unwrap().prefixes,
        vec!["fd00:30::/64".parse().unwrap(), "198.18.30.0/24".parse().unwrap()]
    );
    let links: Vec<_> =
        topology.links.iter().map(|l| (l.a.as_str(), l.b.as_str(), l.latency_ms)).collect();
    assert_eq!(
        links,
        vec![
            ("gw", "core", 1.0),
            ("core", "edge1", 2.0),
            ("core", "edge2", 2.0),
            ("core", "cloud", 15.0),
        ]
    );

    assert_eq!(intent.services.len(), 1);
    let service = intent.service("plate-recognition").unwrap();
    assert_eq!(service.cs_id, 1);
    assert_eq!(
        service.addresses,
        vec![
            IpAddr::V6("2001:db8:ca75::1".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        ]
    );
    assert_eq!(service.ports, vec![PortMatch { protocol: Protocol::Udp, port: 7000 }]);
    assert_eq!(service.request_cost, 0.02);
    let instances: Vec<_> = service
        .instances
        .iter()
        .map(|i| {
            (i.name.as_str(), i.id, i.node.as_str(), i.address, i.address4, i.tops, i.utilization)
        })
        .collect();
    let v6 = |s: &str| Some(s.parse::<Ipv6Addr>().unwrap());
    let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        instances,
        vec![
            ("edge1-a", 1, "edge1", v6("fd00:21::10"), v4("198.18.21.10"), 4.0, 0.0),
            ("edge2-a", 2, "edge2", v6("fd00:22::10"), v4("198.18.22.10"), 4.0, 0.0),
            ("cloud-a", 3, "cloud", v6("fd00:30::10"), v4("198.18.30.10"), 100.0, 0.0),
        ]
    );

    assert_eq!(
        intent.policy_for("plate-recognition"),
        Some(&SteeringPolicy {
            name: "plates".into(),
            service: "plate-recognition".into(),
            objective: Objective::MinCompletionTime,
            constraints: Constraints {
                max_latency_ms: Some(100.0),
                min_free_tops: Some(1.0),
                ..Default::default()
            },
            locality: vec![
                LocalityGroup {
                    name: "street".into(),
                    sites: vec!["edge1".into(), "edge2".into()]
                },
                LocalityGroup { name: "regional".into(), sites: vec!["cloud".into()] },
            ],
            slack: 0.5,
            ingress: vec![],
            affinity: Affinity {
                flow: FlowDefinition::FiveTuple,
                port_groups: vec![],
                timeout_seconds: 30
            },
            dampening: Dampening { hysteresis: 0.1, hold_down_seconds: 2 },
            scoring: Scoring::default(),
            health: Health::default(),
        })
    );
}

#[test]
fn example_event_overlays_load() {
    // A lab event copies its files over the running intent: edge2-busy replaces services.yaml.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smart-traffic");
    let intent = examples.join("intent");
    let busy = examples.join("events/edge2-busy/services.yaml");
    let files = [intent.join("network.yaml"), busy, intent.join("policy.yaml")];
    for file in &files {
        assert!(file.exists(), "{} is missing", file.display());
    }
    let intent = match load_files(&files) {
        Ok(intent) => intent,
        Err(errors) => panic!("{errors}"),
    };
    let service = intent.service("plate-recognition").unwrap();
    let edge2 = service.instances.iter().find(|i| i.name == "edge2-a").unwrap();
    assert_eq!(edge2.utilization, 0.9);
}

#[test]
fn documents_in_one_file_and_explicit_values() {
    let all = format!(
        "---\n{}---\n{}---\n{}",
        edit(NETWORK, "  srBlock: fc00::/32\n", "  srBlock: fc00::/32\n  underlay: external\n"),
        SERVICES,
        edit(
            POLICY,
            "    waypoints: [core]\n",
            "    waypoints: [core]\n    maxLatencyMs: 20\n  ingress: [gw]\n  slack: 0\n  \
             affinity:\n    flow: source-address\n    timeoutSeconds: 600\n",
        )
    );
    let intent = parse_documents(&[(PathBuf::from("all.yaml"), all)]).unwrap();
    assert_eq!(intent.topology.underlay, Underlay::External);
    assert_eq!(intent.services.len(), 2);
    let policy = &intent.policies[0];
    assert_eq!(policy.ingress, vec!["gw".to_owned()]);
    assert_eq!(policy.constraints.max_latency_ms, Some(20.0));
    assert_eq!(policy.slack, 0.0);
    assert_eq!(
        policy.affinity,
        Affinity { flow: FlowDefinition::SourceAddress, port_groups: vec![], timeout_seconds: 600 }
    );
}

#[test]
fn display_matches_the_documented_format() {
    let network = edit(NETWORK, "      latencyMs: 2.5\n", "      latencyMs: 0\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_eq!(
        render(&errors),
        "network.yaml:26:7: spec.links[1].latencyMs: must be greater than 0"
    );
}

// One test per class of error: exact file, line, column and field.

#[test]
fn unknown_field() {
    let network = edit(NETWORK, "      index: 3\n", "      index: 3\n      zone: north\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        18,
        7,
        "spec.nodes[2].zone",
        "unknown field `zone`, expected one of `name`, `index`",
    );
}

#[test]
fn unknown_top_level_and_metadata_fields() {
    let policy = edit(POLICY, "  name: web\n", "  name: web\n  labels: {}\nstatus: {}\n");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    assert_eq!(errors.len(), 2, "{}", render(&errors));
    assert_at(&errors[0], "policy.yaml", 5, 3, "metadata.labels", "unknown field");
    assert_at(&errors[1], "policy.yaml", 6, 1, "status", "unknown field");
}

#[test]
fn wrong_type() {
    let network = edit(NETWORK, "      latencyMs: 2.5\n", "      latencyMs: fast\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        26,
        7,
        "spec.links[1].latencyMs",
        "expected a number, found the string \"fast\"",
    );

    // Quoted numbers are strings.
    let network = edit(NETWORK, "      index: 3\n", "      index: \"3\"\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        17,
        7,
        "spec.nodes[2].index",
        "expected an integer, found the string \"3\"",
    );

    let services = edit(SERVICES, "  addresses: [2001:db8::1]\n", "  addresses: 2001:db8::1\n");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    assert_only(
        &errors,
        "services.yaml",
        7,
        3,
        "spec.addresses",
        "expected a sequence, found the string \"2001:db8::1\"",
    );
}

#[test]
fn missing_required_field() {
    let services = edit(SERVICES, "      tops: 10\n", "");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    // Points at the instance the field is missing from.
    assert_only(
        &errors,
        "services.yaml",
        10,
        7,
        "spec.instances[0].tops",
        "missing required field",
    );

    let services = edit(SERVICES, "      tops: 10\n", "      tops:\n");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    assert_only(
        &errors,
        "services.yaml",
        14,
        7,
        "spec.instances[0].tops",
        "required field has no value",
    );

    let policy = edit(POLICY, "metadata:\n  name: web\n", "metadata: {}\n");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    assert_only(&errors, "policy.yaml", 3, 1, "metadata.name", "missing required field");
}

#[test]
fn dangling_node_in_link() {
    let network = edit(NETWORK, "      b: edge\n", "      b: edge9\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        25,
        7,
        "spec.links[1].b",
        "unknown node \"edge9\" (nodes: gw, core, edge)",
    );
}

#[test]
fn instance_on_non_egress_node() {
    let services =
        edit(SERVICES, "      node: edge\n      address: ", "      node: core\n      address: ");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    assert_only(
        &errors,
        "services.yaml",
        12,
        7,
        "spec.instances[0].node",
        "node \"core\" does not have role egress (its roles: transit, at network.yaml:15:7)",
    );
}

#[test]
fn duplicate_cs_id() {
    let services = edit(SERVICES, "  csId: 8\n", "  csId: 7\n");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    assert_only(
        &errors,
        "services.yaml",
        21,
        3,
        "spec.csId",
        "csId 7 is already used by another ComputeService (services.yaml:6:3)",
    );
}

#[test]
fn instance_address_outside_node_prefixes() {
    let services = edit(SERVICES, "      address: fd00:21::1\n", "      address: fd00:99::1\n");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    assert_only(
        &errors,
        "services.yaml",
        13,
        7,
        "spec.instances[0].address",
        "fd00:99::1 is not inside any prefix of node \"edge\" (fd00:21::/64, 198.18.21.0/24)",
    );
}

#[test]
fn bad_sr_block_length() {
    let network = edit(NETWORK, "  srBlock: fc00::/32\n", "  srBlock: fc00::/48\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(&errors, "network.yaml", 6, 3, "spec.srBlock", "must be a /32 prefix, found /48");

    let network = edit(NETWORK, "  srBlock: fc00::/32\n", "  srBlock: fc00::1/32\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        6,
        3,
        "spec.srBlock",
        "host bits set; did you mean fc00::/32?",
    );
}

// More rules.

#[test]
fn all_errors_are_collected_in_order() {
    let network = edit(NETWORK, "      index: 2\n", "      index: 0\n");
    let network = edit(&network, "      latencyMs: 1\n", "      latencyMs: 10001\n");
    let services = edit(SERVICES, "  csId: 8\n", "  csId: 7\n");
    let services = edit(&services, "      utilization: 0.25\n", "      utilization: 1\n");
    let policy = edit(POLICY, "  objective: min-latency\n", "  objective: fastest\n");
    let errors = fail(&sources(&network, &services, &policy));
    assert_eq!(
        render(&errors),
        "network.yaml:14:7: spec.nodes[1].index: must be between 1 and 65535\n\
         network.yaml:23:7: spec.links[0].latencyMs: must be at most 10000\n\
         services.yaml:21:3: spec.csId: csId 7 is already used by another ComputeService \
         (services.yaml:6:3)\n\
         services.yaml:31:7: spec.instances[0].utilization: must be at least 0 and less than 1\n\
         policy.yaml:7:3: spec.objective: unknown objective \"fastest\", expected one of \
         min-completion-time, min-latency, balanced"
    );
}

#[test]
fn yaml_syntax_error_is_located_without_follow_on_errors() {
    let network = edit(NETWORK, "  name: lab\n", "  name: lab\n bad: [\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    // Only the syntax error: the Topology it hides is not reported missing.
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(errors[0].file, Path::new("network.yaml"));
    assert_eq!(errors[0].field, "");
    assert!(errors[0].line >= 5, "{}", errors[0]);
    assert!(errors[0].message.starts_with("invalid YAML: "), "{}", errors[0]);
}

#[test]
fn duplicate_key() {
    let network = edit(NETWORK, "      index: 3\n", "      index: 3\n      index: 4\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(&errors, "network.yaml", 18, 7, "spec.nodes[2].index", "duplicate field `index`");
}

#[test]
fn api_version_and_kind() {
    let policy = edit(POLICY, "apiVersion: cats.dev/v1alpha1\n", "apiVersion: cats.dev/v1\n");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    assert_only(
        &errors,
        "policy.yaml",
        1,
        1,
        "apiVersion",
        "unsupported apiVersion \"cats.dev/v1\", expected \"cats.dev/v1alpha1\"",
    );

    let policy = edit(POLICY, "kind: SteeringPolicy\n", "kind: Steering\n");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    assert_only(
        &errors,
        "policy.yaml",
        2,
        1,
        "kind",
        "unknown kind \"Steering\", expected one of Topology, ComputeService, SteeringPolicy",
    );
}

#[test]
fn topology_count() {
    let errors = fail(&sources("", SERVICES, POLICY));
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(
        errors[0].to_string(),
        "network.yaml: no Topology document: an intent needs exactly one"
    );

    let network = format!("{NETWORK}---\n{NETWORK}");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_eq!(errors.len(), 2, "{}", render(&errors));
    assert_at(
        &errors[0],
        "network.yaml",
        30,
        1,
        "kind",
        "there must be exactly one Topology, the first is at network.yaml:2:1",
    );
    assert_at(
        &errors[1],
        "network.yaml",
        32,
        3,
        "metadata.name",
        "another Topology is already named \"lab\" (network.yaml:4:3)",
    );
}

#[test]
fn topology_rules() {
    let network = edit(
        NETWORK,
        "      roles: [transit]\n",
        "      roles: [transit]\n    - name: core\n      index: 1\n      roles: [transit]\n",
    );
    let network =
        edit(&network, "      prefixes: [fd00:10::/64]\n", "      prefixes: [fd00:21::/80]\n");
    let network = edit(&network, "    - a: gw\n      b: core\n", "    - a: gw\n      b: gw\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    let rendered = render(&errors);
    assert_eq!(errors.len(), 4, "{rendered}");
    assert_at(
        &errors[0],
        "network.yaml",
        16,
        7,
        "spec.nodes[2].name",
        "duplicate node name \"core\" (first at network.yaml:13:7)",
    );
    assert_at(
        &errors[1],
        "network.yaml",
        17,
        7,
        "spec.nodes[2].index",
        "index 1 is already used by spec.nodes[0] (network.yaml:9:7)",
    );
    assert_at(
        &errors[2],
        "network.yaml",
        22,
        18,
        "spec.nodes[3].prefixes[0]",
        "fd00:21::/64 overlaps fd00:21::/80 of node \"gw\" (network.yaml:11:18)",
    );
    assert_at(
        &errors[3],
        "network.yaml",
        25,
        7,
        "spec.links[0].b",
        "a link joins two different nodes, but a and b are both \"gw\"",
    );
}

#[test]
fn node_field_rules() {
    let network = edit(NETWORK, "      headendInterfaces: [cams]\n", "");
    let network = edit(
        &network,
        "      roles: [transit]\n",
        "      roles: [transit, transit]\n      headendInterfaces: [a-very-long-interface]\n",
    );
    let network = edit(&network, "    - name: edge\n", "    - name: Edge_Site\n");
    let errors = fail(&sources(&network, SERVICES, POLICY));
    let rendered = render(&errors);
    assert_at(
        &errors[0],
        "network.yaml",
        8,
        7,
        "spec.nodes[0].headendInterfaces",
        "required for a node with role ingress",
    );
    assert_at(
        &errors[1],
        "network.yaml",
        14,
        24,
        "spec.nodes[1].roles[1]",
        "role transit is already listed at spec.nodes[1].roles[0]",
    );
    assert_at(
        &errors[2],
        "network.yaml",
        15,
        27,
        "spec.nodes[1].headendInterfaces[0]",
        "not a valid interface name",
    );
    assert_at(
        &errors[3],
        "network.yaml",
        16,
        7,
        "spec.nodes[2].name",
        "\"Edge_Site\" is not a valid node name",
    );
    // The bad name still resolves: links and instances that use it report nothing more,
    // only the references spelled "edge" are now dangling.
    assert_eq!(errors.len(), 7, "{rendered}");
    assert_at(&errors[4], "network.yaml", 25, 7, "spec.links[1].b", "unknown node \"edge\"");
}

#[test]
fn interface_names_unique_per_node() {
    let network = edit(
        NETWORK,
        "      bInterface: eth1\n",
        "      bInterface: eth1\n    - a: gw\n      b: edge\n      latencyMs: 3\n      aInterface: cams\n    - a: edge\n      b: gw\n      latencyMs: 3\n",
    );
    let errors = fail(&sources(&network, SERVICES, POLICY));
    let rendered = render(&errors);
    assert_eq!(errors.len(), 3, "{rendered}");
    assert_at(
        &errors[0],
        "network.yaml",
        31,
        7,
        "spec.links[2].aInterface",
        "interface \"cams\" is already used on node \"gw\" (network.yaml:12:27)",
    );
    // The second gw-edge link: a duplicate pair, and its defaulted interface names clash.
    assert_at(
        &errors[1],
        "network.yaml",
        32,
        7,
        "spec.links[3]",
        "duplicate link between edge and gw (first at network.yaml:28:7)",
    );
    assert_at(
        &errors[2],
        "network.yaml",
        32,
        7,
        "spec.links[3]",
        "interface \"gw\" (the default: the peer's name; set it explicitly) is already used on node \"edge\"",
    );
}

#[test]
fn service_rules() {
    // web loses its IPv6 instance address; dns gets an IPv6 service address too.
    let services = edit(SERVICES, "      address: fd00:21::1\n", "");
    let services = edit(
        &services,
        "  addresses: [198.51.100.53]\n",
        "  addresses: [198.51.100.53, 2001:db8::53, 198.51.100.53, fc00::53]\n",
    );
    let services =
        edit(&services, "    - name: dns-1\n      id: 1\n", "    - name: web-1\n      id: 0\n");
    let errors = fail(&sources(NETWORK, &services, POLICY));
    let rendered = render(&errors);
    assert_eq!(errors.len(), 6, "{rendered}");
    assert_at(
        &errors[0],
        "services.yaml",
        10,
        7,
        "spec.instances[0].address",
        "missing required field: the service has the IPv6 address 2001:db8::1",
    );
    assert_at(
        &errors[1],
        "services.yaml",
        21,
        44,
        "spec.addresses[2]",
        "address 198.51.100.53 is already listed at spec.addresses[0]",
    );
    assert_at(
        &errors[2],
        "services.yaml",
        21,
        59,
        "spec.addresses[3]",
        "fc00::53 is inside the SR block fc00::/32",
    );
    assert_at(
        &errors[3],
        "services.yaml",
        25,
        7,
        "spec.instances[0].name",
        "instance name \"web-1\" is already used (services.yaml:10:7)",
    );
    assert_at(
        &errors[4],
        "services.yaml",
        25,
        7,
        "spec.instances[0].address",
        "missing required field: the service has the IPv6 address 2001:db8::53",
    );
    assert_at(
        &errors[5],
        "services.yaml",
        26,
        7,
        "spec.instances[0].id",
        "must be between 1 and 4294967295",
    );
}

#[test]
fn shared_service_addresses() {
    let third = |ports: &str| {
        format!(
            "apiVersion: cats.dev/v1alpha1\nkind: ComputeService\nmetadata:\n  name: dns2\nspec:\n  \
             csId: 9\n  addresses: [198.51.100.53]\n{ports}  requestCost: 1\n  instances:\n    \
             - {{name: dns2-1, id: 1, node: edge, address4: 198.18.21.54, tops: 1}}\n"
        )
    };
    let with = |ports: &str| {
        let mut all = sources(NETWORK, SERVICES, POLICY);
        all.push((PathBuf::from("more.yaml"), third(ports)));
        all
    };
    // Disjoint port lists: fine.
    parse_documents(&with(
        "  ports: [{protocol: udp, port: 5353}, {protocol: tcp, port: 53000}]\n",
    ))
    .unwrap();
    // Same protocol and port in both: ambiguous.
    let errors = fail(&with("  ports: [{protocol: tcp, port: 53}]\n"));
    assert_only(
        &errors,
        "more.yaml",
        7,
        15,
        "spec.addresses[0]",
        "198.51.100.53 is also an address of ComputeService \"dns\" (services.yaml:22:15)",
    );
    // No port list: matches every port, so it cannot share.
    let errors = fail(&with(""));
    assert_only(
        &errors,
        "more.yaml",
        7,
        15,
        "spec.addresses[0]",
        "two services share an address only when both list ports",
    );
}

#[test]
fn policy_rules() {
    let policy = format!(
        "{}---\n{}",
        edit(
            POLICY,
            "    waypoints: [core]\n",
            "    waypoints: [edge, core, core]\n  ingress: [core, nowhere]\n"
        ),
        edit(POLICY, "  name: web\n", "  name: other\n")
    );
    let policy = format!(
        "{policy}---\n{}",
        edit(
            &edit(POLICY, "  name: web\n", "  name: ghost\n"),
            "  service: web\n",
            "  service: mail\n"
        )
    );
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    let rendered = render(&errors);
    assert_eq!(errors.len(), 6, "{rendered}");
    assert_at(
        &errors[0],
        "policy.yaml",
        9,
        17,
        "spec.constraints.waypoints[0]",
        "node \"edge\" does not have role transit",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        9,
        29,
        "spec.constraints.waypoints[2]",
        "node core is already listed at spec.constraints.waypoints[1]",
    );
    assert_at(
        &errors[2],
        "policy.yaml",
        10,
        13,
        "spec.ingress[0]",
        "node \"core\" does not have role ingress",
    );
    assert_at(&errors[3], "policy.yaml", 10, 19, "spec.ingress[1]", "unknown node \"nowhere\"");
    assert_at(
        &errors[4],
        "policy.yaml",
        17,
        3,
        "spec.service",
        "ComputeService \"web\" already has a SteeringPolicy (policy.yaml:6:3)",
    );
    assert_at(
        &errors[5],
        "policy.yaml",
        27,
        3,
        "spec.service",
        "unknown ComputeService \"mail\" (services: dns, web)",
    );
}

#[test]
fn anchors_and_aliases_are_followed() {
    let network = edit(
        NETWORK,
        "      prefixes: [fd00:21::/64, 198.18.21.0/24]\n",
        "      prefixes: &edge [fd00:21::/64, 198.18.21.0/24]\n",
    );
    let network = format!(
        "{network}    - {{a: gw, b: edge, latencyMs: 9, aInterface: x, bInterface: *edge}}\n"
    );
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        28,
        53,
        "spec.links[2].bInterface",
        "expected a string, found a sequence",
    );
}

#[test]
fn load_dir_reads_yaml_files_in_name_order() {
    let dir = std::env::temp_dir().join(format!("cats-intent-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("nested.yaml")).unwrap();
    std::fs::write(dir.join("b-services.yml"), SERVICES).unwrap();
    std::fs::write(dir.join("a-network.yaml"), NETWORK).unwrap();
    std::fs::write(dir.join("c-policy.yaml"), edit(POLICY, "[core]", "[gw]")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not: [yaml").unwrap();
    let result = load_dir(&dir);
    let missing = load_files(&[dir.join("a-network.yaml"), dir.join("missing.yaml")]);
    std::fs::remove_dir_all(&dir).unwrap();

    let errors = result.unwrap_err().0;
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_at(
        &errors[0],
        dir.join("c-policy.yaml").to_str().unwrap(),
        9,
        17,
        "spec.constraints.waypoints[0]",
        "node \"gw\" does not have role transit",
    );

    let errors = missing.unwrap_err().0;
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(errors[0].file, dir.join("missing.yaml"));
    assert_eq!(errors[0].line, 0);
    assert!(errors[0].message.starts_with("cannot read the file"), "{}", errors[0]);

    let errors = load_dir(&dir).unwrap_err().0;
    assert_eq!(errors[0].file, dir);
    assert_eq!(errors[0].line, 0);
}

#[test]
fn xdp_dataplane_external_interfaces_and_flavors() {
    let network = edit(
        NETWORK,
        "      roles: [transit]\n",
        "      roles: [transit]\n      dataplane: xdp\n      externalInterfaces: [peer0]\n      endFlavors: [psp, usd]\n",
    );
    let intent = parse_documents(&sources(&network, SERVICES, POLICY)).unwrap();
    let core = intent.node("core").unwrap();
    assert_eq!(core.dataplane, Dataplane::Xdp);
    assert_eq!(core.external_interfaces, ["peer0"]);
    assert_eq!(core.end_flavors, [EndFlavor::Psp, EndFlavor::Usd]);
    assert_eq!(intent.node("gw").unwrap().dataplane, Dataplane::Kernel, "kernel by default");
}

#[test]
fn external_interfaces_need_the_xdp_dataplane_and_dataplanes_are_checked() {
    let network = edit(
        NETWORK,
        "      roles: [transit]\n",
        "      roles: [transit]\n      externalInterfaces: [peer0]\n",
    );
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        16,
        7,
        "spec.nodes[1].externalInterfaces",
        "needs `dataplane: xdp`",
    );
    let network = edit(
        NETWORK,
        "      roles: [transit]\n",
        "      roles: [transit]\n      dataplane: dpdk\n",
    );
    let errors = fail(&sources(&network, SERVICES, POLICY));
    assert_only(
        &errors,
        "network.yaml",
        16,
        7,
        "spec.nodes[1].dataplane",
        "unknown dataplane \"dpdk\"",
    );
}

// SteeringPolicy constraints, locality, dampening and scoring, on a larger topology: two
// ingress nodes, two transit nodes and four egress sites (edge3 hosts no instance).

const CITY: &str = "\
apiVersion: cats.dev/v1alpha1
kind: Topology
metadata:
  name: city
spec:
  srBlock: fc00::/32
  nodes:
    - {name: gw, index: 1, roles: [ingress], headendInterfaces: [cams]}
    - {name: gw2, index: 2, roles: [ingress], headendInterfaces: [cams]}
    - {name: core, index: 3, roles: [transit]}
    - {name: core2, index: 4, roles: [transit]}
    - {name: edge1, index: 5, roles: [egress], prefixes: [fd00:21::/64]}
    - {name: edge2, index: 6, roles: [egress], prefixes: [fd00:22::/64]}
    - {name: edge3, index: 7, roles: [egress], prefixes: [fd00:23::/64]}
    - {name: cloud, index: 8, roles: [egress], prefixes: [fd00:30::/64]}
  links:
    - {a: gw, b: core, latencyMs: 1}
    - {a: gw2, b: core, latencyMs: 1}
    - {a: gw, b: core2, latencyMs: 2}
    - {a: core, b: core2, latencyMs: 1}
    - {a: core, b: edge1, latencyMs: 2}
    - {a: core, b: edge2, latencyMs: 2}
    - {a: core, b: edge3, latencyMs: 2}
    - {a: core, b: cloud, latencyMs: 15}
    - {a: core2, b: cloud, latencyMs: 10}
";

const PLATES: &str = "\
apiVersion: cats.dev/v1alpha1
kind: ComputeService
metadata:
  name: plates
spec:
  csId: 1
  addresses: [2001:db8::1]
  requestCost: 0.02
  instances:
    - {name: edge1-a, id: 1, node: edge1, address: fd00:21::10, tops: 4}
    - {name: edge2-a, id: 2, node: edge2, address: fd00:22::10, tops: 4}
    - {name: cloud-a, id: 3, node: cloud, address: fd00:30::10, tops: 100}
";

/// The policy's first six lines; tests append the rest of its spec from line 7 on.
const PLATES_POLICY: &str = "\
apiVersion: cats.dev/v1alpha1
kind: SteeringPolicy
metadata:
  name: plates
spec:
  service: plates
";

const FULL_POLICY: &str = "  objective: balanced
  constraints:
    maxLatencyMs: 100
    minFreeTops: 1.5
    sites: [edge1, edge2, cloud]
    excludeSites: [edge3]
    avoidNodes: [core2]
    avoidLinks: [{a: edge2, b: core}]
    waypoints: [core]
  locality:
    - name: street
      sites: [edge1, edge2]
    - name: regional
      sites: [cloud]
  slack: 0.25
  ingress: [gw, gw2]
  affinity: {flow: source-address, timeoutSeconds: 60}
  dampening:
    hysteresis: 0.2
    holdDownSeconds: 5
  scoring:
    network: {bestMs: 2, worstMs: 150}
    compute: {worstMs: 500}
    weights: {network: 0.7, compute: 0.3}
  health: {enabled: false, intervalMs: 30, multiplier: 4, port: 7001}
";

/// The city intent with `spec` appended to the plates policy.
fn city(spec: &str) -> Vec<(PathBuf, String)> {
    sources(CITY, PLATES, &format!("{PLATES_POLICY}{spec}"))
}

/// The errors of the city intent with `spec` appended to the plates policy.
fn city_fail(spec: &str) -> Vec<IntentError> {
    fail(&city(spec))
}

#[test]
fn full_policy_decodes_to_the_model() {
    let intent = match parse_documents(&city(FULL_POLICY)) {
        Ok(intent) => intent,
        Err(errors) => panic!("{errors}"),
    };
    let policy = intent.policy_for("plates").unwrap();
    let strings = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
    assert_eq!(
        policy,
        &SteeringPolicy {
            name: "plates".into(),
            service: "plates".into(),
            objective: Objective::Balanced,
            constraints: Constraints {
                max_latency_ms: Some(100.0),
                min_free_tops: Some(1.5),
                sites: strings(&["edge1", "edge2", "cloud"]),
                exclude_sites: strings(&["edge3"]),
                avoid_nodes: strings(&["core2"]),
                avoid_links: vec![LinkRef { a: "edge2".into(), b: "core".into() }],
                waypoints: strings(&["core"]),
            },
            locality: vec![
                LocalityGroup { name: "street".into(), sites: strings(&["edge1", "edge2"]) },
                LocalityGroup { name: "regional".into(), sites: strings(&["cloud"]) },
            ],
            slack: 0.25,
            ingress: strings(&["gw", "gw2"]),
            affinity: Affinity {
                flow: FlowDefinition::SourceAddress,
                port_groups: vec![],
                timeout_seconds: 60
            },
            dampening: Dampening { hysteresis: 0.2, hold_down_seconds: 5 },
            scoring: Scoring {
                network: ScoreRange { best_ms: 2.0, worst_ms: 150.0 },
                compute: ScoreRange { best_ms: 0.0, worst_ms: 500.0 },
                weights: ScoreWeights { network: 0.7, compute: 0.3 },
            },
            health: Health { enabled: false, interval_ms: 30, multiplier: 4, port: Some(7001) },
        }
    );
    assert_eq!(policy.group_of("edge2"), 0);
    assert_eq!(policy.group_of("cloud"), 1);
    assert_eq!(policy.group_of("edge3"), 2, "unlisted sites form an implicit last group");
    let link = |a: &str, b: &str| LinkRef { a: a.into(), b: b.into() };
    assert_eq!(intent.topology.link_index(&policy.constraints.avoid_links[0]), Some(5));
    assert_eq!(intent.topology.link_index(&link("core", "edge2")), Some(5));
    assert_eq!(intent.topology.link_index(&link("gw", "edge1")), None);

    // Everything optional: the documented defaults.
    let intent = parse_documents(&city("")).unwrap();
    let policy = intent.policy_for("plates").unwrap();
    assert_eq!(
        policy,
        &SteeringPolicy { name: "plates".into(), service: "plates".into(), ..Default::default() }
    );
    assert_eq!(policy.objective, Objective::MinCompletionTime);
    assert_eq!(policy.constraints, Constraints::default());
    assert_eq!(policy.slack, 0.5);
    assert_eq!(policy.dampening, Dampening { hysteresis: 0.1, hold_down_seconds: 2 });
    assert_eq!(
        policy.scoring,
        Scoring {
            network: ScoreRange { best_ms: 0.0, worst_ms: 200.0 },
            compute: ScoreRange { best_ms: 0.0, worst_ms: 1000.0 },
            weights: ScoreWeights { network: 0.5, compute: 0.5 },
        }
    );
    assert_eq!(policy.group_of("edge1"), 0);
    assert_eq!(policy.scoring.score(0.0, 0.0), 10.0);
    assert_eq!(policy.scoring.score(100.0, 1000.0), 2.5);
    assert_eq!(policy.scoring.network.score(400.0), 0.0);
}

#[test]
fn fields_that_moved_say_where() {
    let errors = city_fail("  via: [core]\n  maxLatencyMs: 100\n");
    assert_eq!(errors.len(), 2, "{}", render(&errors));
    assert_at(
        &errors[0],
        "policy.yaml",
        7,
        3,
        "spec.via",
        "unknown field `via`: it moved to `spec.constraints.waypoints`",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        8,
        3,
        "spec.maxLatencyMs",
        "unknown field `maxLatencyMs`: it moved to `spec.constraints.maxLatencyMs`",
    );
    let errors = city_fail("  constraints: {maxLatency: 5}\n");
    assert_only(
        &errors,
        "policy.yaml",
        7,
        17,
        "spec.constraints.maxLatency",
        "unknown field `maxLatency`, expected one of `maxLatencyMs`, `minFreeTops`",
    );
}

#[test]
fn constraint_values() {
    let errors = city_fail(
        "  constraints:\n    maxLatencyMs: 0\n    minFreeTops: -1\n    sites: [edge2, edge2]\n    \
         avoidLinks: [{a: core, b: edge1}, {a: gw, b: core}, {a: edge1, b: core}]\n",
    );
    assert_eq!(errors.len(), 4, "{}", render(&errors));
    assert_at(
        &errors[0],
        "policy.yaml",
        8,
        5,
        "spec.constraints.maxLatencyMs",
        "must be greater than 0",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        9,
        5,
        "spec.constraints.minFreeTops",
        "must be at least 0",
    );
    assert_at(
        &errors[2],
        "policy.yaml",
        10,
        20,
        "spec.constraints.sites[1]",
        "site edge2 is already listed at spec.constraints.sites[0]",
    );
    assert_at(
        &errors[3],
        "policy.yaml",
        11,
        57,
        "spec.constraints.avoidLinks[2]",
        "link edge1-core is already listed at spec.constraints.avoidLinks[0]",
    );
    let errors = city_fail("  constraints:\n    avoidLinks: [{a: core, b: core}]\n");
    assert_only(
        &errors,
        "policy.yaml",
        8,
        28,
        "spec.constraints.avoidLinks[0].b",
        "a link joins two different nodes, but a and b are both \"core\"",
    );
}

#[test]
fn sites_must_be_egress_nodes_allowed_or_excluded_not_both() {
    let errors = city_fail(
        "  constraints:\n    sites: [edge1, core, cloud]\n    excludeSites: [nowhere, cloud]\n",
    );
    assert_eq!(errors.len(), 3, "{}", render(&errors));
    assert_at(
        &errors[0],
        "policy.yaml",
        8,
        20,
        "spec.constraints.sites[1]",
        "node \"core\" does not have role egress (its roles: transit, at network.yaml:10:30); \
         sites are egress nodes",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        9,
        20,
        "spec.constraints.excludeSites[0]",
        "unknown node \"nowhere\" (nodes: gw, gw2, core, core2, edge1, edge2, edge3, cloud)",
    );
    assert_at(
        &errors[2],
        "policy.yaml",
        9,
        29,
        "spec.constraints.excludeSites[1]",
        "site \"cloud\" is also allowed by spec.constraints.sites[2] (policy.yaml:8:26); a site \
         is either allowed or excluded",
    );
}

#[test]
fn locality_groups() {
    let errors = city_fail(
        "  constraints:\n    sites: [edge1, edge2, edge3]\n    excludeSites: [cloud]\n  \
         locality:\n    - {name: street, sites: [edge1, gw]}\n    - {name: street, sites: [edge2, \
         edge1]}\n    - {name: Far_Away, sites: [cloud]}\n",
    );
    let rendered = render(&errors);
    assert_eq!(errors.len(), 7, "{rendered}");
    assert_at(
        &errors[0],
        "policy.yaml",
        11,
        37,
        "spec.locality[0].sites[1]",
        "site \"gw\" is not allowed by spec.constraints.sites (policy.yaml:8:5: edge1, edge2, edge3)",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        11,
        37,
        "spec.locality[0].sites[1]",
        "node \"gw\" does not have role egress",
    );
    assert_at(
        &errors[2],
        "policy.yaml",
        12,
        8,
        "spec.locality[1].name",
        "group name \"street\" is already used by spec.locality[0] (policy.yaml:11:8)",
    );
    assert_at(
        &errors[3],
        "policy.yaml",
        12,
        37,
        "spec.locality[1].sites[1]",
        "site \"edge1\" is already in group \"street\" (spec.locality[0].sites[0] at \
         policy.yaml:11:30); a site belongs to one group only",
    );
    assert_at(
        &errors[4],
        "policy.yaml",
        13,
        8,
        "spec.locality[2].name",
        "\"Far_Away\" is not a valid group name",
    );
    assert_at(
        &errors[5],
        "policy.yaml",
        13,
        32,
        "spec.locality[2].sites[0]",
        "site \"cloud\" is not allowed by spec.constraints.sites",
    );
    assert_at(
        &errors[6],
        "policy.yaml",
        13,
        32,
        "spec.locality[2].sites[0]",
        "site \"cloud\" is excluded by spec.constraints.excludeSites[0] (policy.yaml:9:20)",
    );
    let errors = city_fail("  locality:\n    - {name: empty, sites: []}\n");
    assert_only(&errors, "policy.yaml", 8, 21, "spec.locality[0].sites", "must not be empty");

    let errors = city_fail(
        "  constraints:\n    excludeSites: [edge3, edge2]\n  locality:\n    - name: street\n      \
         sites: [edge1, edge2]\n",
    );
    assert_only(
        &errors,
        "policy.yaml",
        11,
        22,
        "spec.locality[0].sites[1]",
        "site \"edge2\" is excluded by spec.constraints.excludeSites[1] (policy.yaml:8:27)",
    );
}

#[test]
fn waypoints_and_avoided_nodes_and_links() {
    let errors = city_fail(
        "  ingress: [gw2]\n  constraints:\n    waypoints: [core, edge1, core2]\n    avoidNodes: \
         [core2, gw2, nowhere]\n    avoidLinks: [{a: gw, b: cloud}, {a: nowhere, b: core}]\n",
    );
    let rendered = render(&errors);
    assert_eq!(errors.len(), 6, "{rendered}");
    assert_at(
        &errors[0],
        "policy.yaml",
        9,
        23,
        "spec.constraints.waypoints[1]",
        "node \"edge1\" does not have role transit",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        9,
        30,
        "spec.constraints.waypoints[2]",
        "waypoint \"core2\" is also avoided by spec.constraints.avoidNodes[0] (policy.yaml:10:18); \
         a path cannot both pass and avoid it",
    );
    assert_at(
        &errors[2],
        "policy.yaml",
        10,
        25,
        "spec.constraints.avoidNodes[1]",
        "node \"gw2\" is an ingress of this policy (listed at policy.yaml:7:13); its traffic \
         enters there, so no path can avoid it",
    );
    assert_at(
        &errors[3],
        "policy.yaml",
        10,
        30,
        "spec.constraints.avoidNodes[2]",
        "unknown node \"nowhere\"",
    );
    assert_at(
        &errors[4],
        "policy.yaml",
        11,
        18,
        "spec.constraints.avoidLinks[0]",
        "no link joins \"gw\" and \"cloud\" (links: gw-core, gw2-core, gw-core2, core-core2, \
         core-edge1, core-edge2, core-edge3, core-cloud, core2-cloud)",
    );
    assert_at(
        &errors[5],
        "policy.yaml",
        11,
        37,
        "spec.constraints.avoidLinks[1]",
        "no link joins \"nowhere\" and \"core\"",
    );

    // Without an ingress list the policy applies to every ingress node.
    let errors = city_fail("  constraints:\n    avoidNodes: [gw]\n");
    assert_only(
        &errors,
        "policy.yaml",
        8,
        18,
        "spec.constraints.avoidNodes[0]",
        "node \"gw\" is an ingress of this policy (spec.ingress is empty, so the policy applies \
         to every ingress node",
    );
    // With one, other ingress nodes may be avoided.
    parse_documents(&city("  ingress: [gw]\n  constraints:\n    avoidNodes: [gw2]\n")).unwrap();
}

#[test]
fn constraints_that_leave_no_instance() {
    let errors = city_fail("  constraints:\n    sites: [edge3]\n");
    assert_only(
        &errors,
        "policy.yaml",
        8,
        5,
        "spec.constraints.sites",
        "no instance of ComputeService \"plates\" is left: it runs on none of these sites (its \
         instances: edge1-a on edge1, edge2-a on edge2, cloud-a on cloud; services.yaml:9:3)",
    );
    let errors = city_fail("  constraints:\n    excludeSites: [edge1, edge2, cloud]\n");
    assert_only(
        &errors,
        "policy.yaml",
        8,
        5,
        "spec.constraints.excludeSites",
        "it would use only excluded sites",
    );
    let errors =
        city_fail("  constraints:\n    sites: [edge1, edge2]\n    avoidNodes: [edge2, edge1]\n");
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.constraints.avoidNodes",
        "it would run only on avoided nodes (still allowed: edge1-a on edge1, edge2-a on edge2; \
         services.yaml:9:3)",
    );
    let errors = city_fail("  constraints:\n    excludeSites: [cloud]\n    minFreeTops: 4.5\n");
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.constraints.minFreeTops",
        "more than the declared capacity of every allowed instance: the largest is edge1-a with \
         4 tops (services.yaml:10:65)",
    );
    // Enough capacity somewhere: fine, even if load may leave none free later.
    parse_documents(&city("  constraints:\n    minFreeTops: 100\n")).unwrap();
}

#[test]
fn constraints_that_leave_no_path() {
    let errors = city_fail(
        "  ingress: [gw]\n  constraints:\n    avoidLinks: [{a: gw, b: core}, {a: core2, b: gw}]\n",
    );
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.constraints.avoidLinks",
        "no path avoiding these links leads from ingress gw to an allowed instance (edge1-a on \
         edge1, edge2-a on edge2, cloud-a on cloud)",
    );
    let errors = city_fail("  constraints:\n    sites: [edge1, edge2]\n    avoidNodes: [core]\n");
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.constraints.avoidNodes",
        "no path avoiding these nodes leads from ingress gw, gw2 to an allowed instance",
    );
    let errors = city_fail(
        "  ingress: [gw2]\n  constraints:\n    waypoints: [core2]\n    avoidLinks: [{a: gw, b: \
         core2}, {a: core, b: core2}, {a: core2, b: cloud}]\n",
    );
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.constraints.waypoints",
        "no path through the waypoints in order leads from ingress gw2",
    );
    // Another path to the cloud remains: fine.
    parse_documents(&city(
        "  constraints:\n    sites: [cloud]\n    avoidLinks: [{a: core2, b: cloud}]\n",
    ))
    .unwrap();
}

#[test]
fn latency_bound_below_the_best_round_trip() {
    // Best round trips: gw and gw2 to edge1 or edge2, 2 * (1 + 2) = 6 ms.
    parse_documents(&city("  constraints:\n    maxLatencyMs: 6\n")).unwrap();
    let errors = city_fail("  constraints:\n    maxLatencyMs: 5.5\n");
    assert_only(
        &errors,
        "policy.yaml",
        8,
        5,
        "spec.constraints.maxLatencyMs",
        "below the best declared round trip to an allowed instance (from gw, 6 ms to edge1-a; \
         from gw2, 6 ms to edge1-a)",
    );
    // Through core2 to the cloud: gw -> core2 (2) -> core (1) -> core2 (1) -> cloud (10).
    let errors = city_fail(
        "  ingress: [gw]\n  constraints:\n    maxLatencyMs: 27\n    sites: [cloud]\n    \
         waypoints: [core2, core]\n    avoidLinks: [{a: core, b: cloud}]\n",
    );
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.constraints.maxLatencyMs",
        "(from gw, 28 ms to cloud-a)",
    );
}

#[test]
fn dampening_and_scoring_values() {
    let errors = city_fail(
        "  objective: fastest\n  dampening: {hysteresis: 1.5, holdDownSeconds: 3601}\n  scoring:\n    \
         network: {bestMs: 50, worstMs: 50}\n    compute: {bestMs: 1500}\n    weights: {network: \
         -1}\n    extra: 1\n",
    );
    let rendered = render(&errors);
    assert_eq!(errors.len(), 7, "{rendered}");
    assert_at(
        &errors[0],
        "policy.yaml",
        7,
        3,
        "spec.objective",
        "unknown objective \"fastest\", expected one of min-completion-time, min-latency, balanced",
    );
    assert_at(
        &errors[1],
        "policy.yaml",
        8,
        15,
        "spec.dampening.hysteresis",
        "must be between 0 and 1",
    );
    assert_at(
        &errors[2],
        "policy.yaml",
        8,
        32,
        "spec.dampening.holdDownSeconds",
        "must be between 0 and 3600",
    );
    assert_at(
        &errors[3],
        "policy.yaml",
        10,
        27,
        "spec.scoring.network.worstMs",
        "must be greater than bestMs 50 (policy.yaml:10:15)",
    );
    assert_at(
        &errors[4],
        "policy.yaml",
        11,
        15,
        "spec.scoring.compute.bestMs",
        "must be less than worstMs (default 1000)",
    );
    assert_at(
        &errors[5],
        "policy.yaml",
        12,
        15,
        "spec.scoring.weights.network",
        "must be at least 0",
    );
    assert_at(&errors[6], "policy.yaml", 13, 5, "spec.scoring.extra", "unknown field `extra`");

    let errors = city_fail("  scoring:\n    weights: {network: 0, compute: 0}\n");
    assert_only(
        &errors,
        "policy.yaml",
        8,
        5,
        "spec.scoring.weights",
        "the weights must not all be 0",
    );
}

const DNS_POLICY: &str = "\
apiVersion: cats.dev/v1alpha1
kind: SteeringPolicy
metadata:
  name: dns
spec:
  service: dns
  affinity:
    flow: source-port-group
    portGroups: [[53]]
";

/// 1-based column of the `nth` occurrence of `what` on line `line` of `text`.
fn column_of(text: &str, line: usize, what: &str, nth: usize) -> usize {
    let l = text.lines().nth(line - 1).unwrap();
    l.match_indices(what).nth(nth).unwrap().0 + 1
}

#[test]
fn port_groups_decode_and_number_their_ports() {
    let intent = parse_documents(&sources(NETWORK, SERVICES, DNS_POLICY)).unwrap();
    let affinity = &intent.policy_for("dns").unwrap().affinity;
    assert_eq!(affinity.flow, FlowDefinition::SourcePortGroup);
    assert_eq!(affinity.port_groups, vec![vec![53]]);
    assert_eq!((affinity.port_group(53), affinity.port_group(54)), (1, 0));
}

#[test]
fn port_group_rules() {
    // A port the service does not match.
    let policy = edit(DNS_POLICY, "[[53]]", "[[53, 54]]");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    let col = column_of(&policy, 9, "54", 0);
    assert_only(
        &errors,
        "policy.yaml",
        9,
        col,
        "spec.affinity.portGroups[0][1]",
        "port 54 is not a port of ComputeService \"dns\" (its ports: 53, 53)",
    );
    // One port in two groups.
    let policy = edit(DNS_POLICY, "[[53]]", "[[53], [53]]");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    let col = column_of(&policy, 9, "53", 1);
    assert_only(
        &errors,
        "policy.yaml",
        9,
        col,
        "spec.affinity.portGroups[1][0]",
        "port 53 is already in spec.affinity.portGroups[0][0]",
    );
    // The flow needs groups, and groups need the flow.
    let policy = edit(DNS_POLICY, "    portGroups: [[53]]\n", "");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    // An absent field is located at its parent, as everywhere.
    assert_only(&errors, "policy.yaml", 7, 3, "spec.affinity.portGroups", "needs portGroups");
    let policy = edit(DNS_POLICY, "source-port-group", "five-tuple");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    assert_only(
        &errors,
        "policy.yaml",
        9,
        5,
        "spec.affinity.portGroups",
        "only apply with flow: source-port-group",
    );
    // A group without ports.
    let policy = edit(DNS_POLICY, "[[53]]", "[[]]");
    let errors = fail(&sources(NETWORK, SERVICES, &policy));
    assert_only(
        &errors,
        "policy.yaml",
        9,
        column_of(&policy, 9, "[]", 0),
        "spec.affinity.portGroups[0]",
        "at least one port",
    );
}

#[test]
fn health_settings_and_drain_are_checked_where_they_are_written() {
    let errors = city_fail("  health: {intervalMs: 5, multiplier: 0, port: 70000, every: 1}\n");
    let text = render(&errors);
    for expected in [
        "spec.health.intervalMs: must be between 10 and 10000",
        "spec.health.multiplier: must be between 1 and 50",
        "spec.health.port: must be between 1 and 65535",
        "spec.health.every",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let edge1 = "address: fd00:21::10, tops: 4}";
    let drained = PLATES.replace(edge1, "address: fd00:21::10, tops: 4, drain: yes}");
    assert_ne!(drained, PLATES, "the fixture has edge1-a");
    let text = render(&fail(&sources(CITY, &drained, PLATES_POLICY)));
    assert!(text.contains("drain: expected true or false, found the string \"yes\""), "{text}");
    let drained = PLATES.replace(edge1, "address: fd00:21::10, tops: 4, drain: true}");
    let intent = parse_documents(&sources(CITY, &drained, PLATES_POLICY)).unwrap();
    assert!(intent.services[0].instances.iter().any(|i| i.drain));
}

#[test]
fn an_affinity_table_size_belongs_to_an_ingress_and_has_bounds() {
    let sized = CITY
        .replace("headendInterfaces: [cams]}\n    - {name: gw2", "headendInterfaces: [cams], affinityTableSize: 1048576}\n    - {name: gw2")
        .replace("roles: [transit]}\n    - {name: core2", "roles: [transit], affinityTableSize: 4096}\n    - {name: core2")
        .replace("{name: gw2, index: 2, roles: [ingress], headendInterfaces: [cams]}", "{name: gw2, index: 2, roles: [ingress], headendInterfaces: [cams], affinityTableSize: 100}");
    let text = render(&fail(&sources(&sized, PLATES, PLATES_POLICY)));
    assert!(
        text.contains("spec.nodes[2].affinityTableSize: only nodes with role ingress"),
        "{text}"
    );
    assert!(text.contains("spec.nodes[1].affinityTableSize: must be between 1024 and 16777216"));
    assert!(!text.contains("spec.nodes[0]"), "gw's size is fine: {text}");
}
