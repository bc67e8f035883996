//! Rules across items and documents: uniqueness, references, address plans.
//!
//! Runs on decoded values and finds positions in each document's side table ([`Doc`]). A
//! check runs only on values whose path is ok (decoded fine), and reference checks run only
//! when the set they look names up in is complete, so one mistake does not cascade.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnetwork::{IpNetwork, Ipv6Network};

use super::decode::{Decoded, Doc, Kind, Object, index, join, role_name};
use super::error::IntentError;
use super::model::{ComputeService, Instance, Intent, Node, Role, SteeringPolicy, Topology};

struct Checker<'a> {
    docs: &'a [Doc],
    errors: &'a mut Vec<IntentError>,
}

impl Checker<'_> {
    fn err(&mut self, doc: usize, path: &str, message: impl Into<String>) {
        self.errors.push(self.docs[doc].error(path, message));
    }

    fn ok(&self, doc: usize, path: &str) -> bool {
        self.docs[doc].ok(path)
    }

    fn locate(&self, doc: usize, path: &str) -> String {
        self.docs[doc].locate(path)
    }
}

/// What the topology says about one node, for reference checks.
struct NodeInfo<'t> {
    node: &'t Node,
    /// `spec.nodes[i]`
    path: String,
    roles_ok: bool,
    prefixes_ok: bool,
}

struct Nodes<'t> {
    doc: usize,
    topology: &'t Topology,
    by_name: HashMap<&'t str, NodeInfo<'t>>,
    /// Every node decoded with a usable name: a name missing from `by_name` is dangling.
    complete: bool,
    /// Every link decoded, with its latency, between two distinct existing nodes: path
    /// computations over `topology` can be trusted.
    links_complete: bool,
    sr_block: Option<Ipv6Network>,
}

impl Nodes<'_> {
    fn names(&self) -> String {
        let mut names: Vec<_> = self.by_name.iter().collect();
        names.sort_by_key(|(_, info)| info.node.index);
        names.iter().map(|(name, _)| **name).collect::<Vec<_>>().join(", ")
    }
}

/// Checks everything that relates documents or items; returns the intent when every
/// document needed is there (the caller still has to look at the errors).
///
/// `complete` is false when some file or document could not be read at all: then rules that
/// need to see everything (one Topology exists, a policy's service exists) are skipped.
/// `context` names the intent in errors that belong to no file (the directory, say).
pub(crate) fn validate(
    docs: &[Doc],
    decoded: &[Decoded],
    complete: bool,
    context: &Path,
    errors: &mut Vec<IntentError>,
) -> Option<Intent> {
    let mut cx = Checker { docs, errors };
    let complete = complete && decoded.iter().all(|d| d.kind.is_some());

    names_unique(&mut cx, decoded);

    let topology_docs: Vec<&Decoded> =
        decoded.iter().filter(|d| d.kind == Some(Kind::Topology)).collect();
    if topology_docs.is_empty() && complete {
        cx.errors.push(IntentError {
            file: context.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "no Topology document: an intent needs exactly one".to_owned(),
        });
    }
    if let Some((first, rest)) = topology_docs.split_first() {
        for extra in rest {
            let message = format!(
                "there must be exactly one Topology, the first is at {}",
                cx.locate(first.doc, "kind")
            );
            cx.err(extra.doc, "kind", message);
        }
    }
    let topology = topology_docs.first().and_then(|d| match &d.object {
        Some(Object::Topology(topology)) => Some((d.doc, topology)),
        _ => None,
    });
    let nodes = topology.map(|(doc, topology)| check_topology(&mut cx, doc, topology));

    let services: Vec<(usize, &ComputeService)> = decoded
        .iter()
        .filter_map(|d| match &d.object {
            Some(Object::Service(service)) => Some((d.doc, service)),
            _ => None,
        })
        .collect();
    check_services(&mut cx, &services, nodes.as_ref());

    let policies: Vec<(usize, &SteeringPolicy)> = decoded
        .iter()
        .filter_map(|d| match &d.object {
            Some(Object::Policy(policy)) => Some((d.doc, &**policy)),
            _ => None,
        })
        .collect();
    let services_complete = complete
        && decoded
            .iter()
            .filter(|d| d.kind == Some(Kind::ComputeService))
            .all(|d| d.object.is_some() && cx.ok(d.doc, "metadata.name"));
    check_policies(&mut cx, &policies, &services, services_complete, nodes.as_ref());

    let (_, topology) = topology?;
    Some(Intent {
        topology: topology.clone(),
        services: services.iter().map(|(_, s)| (*s).clone()).collect(),
        policies: policies.iter().map(|(_, p)| (*p).clone()).collect(),
    })
}

fn names_unique(cx: &mut Checker<'_>, decoded: &[Decoded]) {
    let mut seen: HashMap<(Kind, &str), usize> = HashMap::new();
    for d in decoded {
        let (Some(kind), Some(name)) = (d.kind, &d.name) else {
            continue;
        };
        if !cx.ok(d.doc, "metadata.name") {
            continue;
        }
        if let Some(first) = seen.get(&(kind, name.as_str())) {
            let message = format!(
                "another {} is already named {name:?} ({})",
                kind.as_str(),
                cx.locate(*first, "metadata.name")
            );
            cx.err(d.doc, "metadata.name", message);
        } else {
            seen.insert((kind, name), d.doc);
        }
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(a), IpNetwork::V4(b)) => a.overlaps(b),
        (IpNetwork::V6(a), IpNetwork::V6(b)) => a.overlaps(b),
        _ => false,
    }
}

fn check_topology<'t>(cx: &mut Checker<'_>, doc: usize, topology: &'t Topology) -> Nodes<'t> {
    let sr_block = cx.ok(doc, "spec.srBlock").then_some(topology.sr_block);
    let mut nodes = Nodes {
        doc,
        topology,
        by_name: HashMap::new(),
        complete: cx.ok(doc, "spec.nodes"),
        links_complete: cx.ok(doc, "spec.links"),
        sr_block,
    };

    // Names and indexes.
    let mut indexes: HashMap<u16, String> = HashMap::new();
    for (i, node) in topology.nodes.iter().enumerate() {
        let path = index("spec.nodes", i);
        if !cx.ok(doc, &path) {
            nodes.complete = false;
            continue;
        }
        let name_path = join(&path, "name");
        if cx.ok(doc, &name_path) {
            if let Some(first) = nodes.by_name.get(node.name.as_str()) {
                let message = format!(
                    "duplicate node name {:?} (first at {})",
                    node.name,
                    cx.locate(doc, &join(&first.path, "name"))
                );
                cx.err(doc, &name_path, message);
            } else {
                nodes.by_name.insert(
                    &node.name,
                    NodeInfo {
                        node,
                        path: path.clone(),
                        roles_ok: cx.ok(doc, &join(&path, "roles")),
                        prefixes_ok: cx.ok(doc, &join(&path, "prefixes")),
                    },
                );
            }
        } else {
            nodes.complete = false;
        }
        let index_path = join(&path, "index");
        if cx.ok(doc, &index_path) {
            if let Some(first) = indexes.get(&node.index) {
                let message = format!(
                    "index {} is already used by {first} ({})",
                    node.index,
                    cx.locate(doc, &join(first, "index"))
                );
                cx.err(doc, &index_path, message);
            } else {
                indexes.insert(node.index, path.clone());
            }
        }
    }

    // Prefixes: no overlap between nodes, nor with the SR block.
    let mut prefixes: Vec<(usize, String, IpNetwork)> = Vec::new();
    for (i, node) in topology.nodes.iter().enumerate() {
        let path = join(&index("spec.nodes", i), "prefixes");
        if !cx.ok(doc, &path) {
            continue;
        }
        for (k, prefix) in node.prefixes.iter().enumerate() {
            let prefix_path = index(&path, k);
            if let Some(block) = sr_block
                && overlaps(*prefix, IpNetwork::V6(block))
            {
                let message = format!("{prefix} overlaps the SR block {block}");
                cx.err(doc, &prefix_path, message);
            }
            for (other, other_path, other_prefix) in &prefixes {
                if *other != i && overlaps(*prefix, *other_prefix) {
                    let message = format!(
                        "{prefix} overlaps {other_prefix} of node {:?} ({})",
                        topology.nodes[*other].name,
                        cx.locate(doc, other_path)
                    );
                    cx.err(doc, &prefix_path, message);
                }
            }
            prefixes.push((i, prefix_path, *prefix));
        }
    }

    // Links: existing, distinct endpoints; one link per pair.
    let mut pairs: HashMap<(&str, &str), String> = HashMap::new();
    for (i, link) in topology.links.iter().enumerate() {
        let path = index("spec.links", i);
        if !cx.ok(doc, &path) {
            nodes.links_complete = false;
            continue;
        }
        if !cx.ok(doc, &join(&path, "latencyMs")) {
            nodes.links_complete = false;
        }
        let mut ends_ok = true;
        for (end, name) in [("a", &link.a), ("b", &link.b)] {
            let end_path = join(&path, end);
            if !cx.ok(doc, &end_path) {
                ends_ok = false;
            } else if nodes.complete && !nodes.by_name.contains_key(name.as_str()) {
                let message = format!("unknown node {name:?} (nodes: {})", nodes.names());
                cx.err(doc, &end_path, message);
                ends_ok = false;
            }
        }
        if !ends_ok || link.a == link.b {
            nodes.links_complete = false;
            continue;
        }
        let pair = if link.a < link.b {
            (link.a.as_str(), link.b.as_str())
        } else {
            (link.b.as_str(), link.a.as_str())
        };
        if let Some(first) = pairs.get(&pair) {
            let message = format!(
                "duplicate link between {} and {} (first at {})",
                link.a,
                link.b,
                cx.locate(doc, first)
            );
            cx.err(doc, &path, message);
        } else {
            pairs.insert(pair, path);
        }
    }

    // Interface names: unique per node, headend interfaces and link ends together.
    let mut interfaces: HashMap<(&str, &str), String> = HashMap::new();
    for (i, node) in topology.nodes.iter().enumerate() {
        let path = join(&index("spec.nodes", i), "headendInterfaces");
        if !cx.ok(doc, &join(&index("spec.nodes", i), "name")) || !cx.ok(doc, &path) {
            continue;
        }
        for (k, interface) in node.headend_interfaces.iter().enumerate() {
            let interface_path = index(&path, k);
            claim_interface(cx, doc, &mut interfaces, &node.name, interface, interface_path, "");
        }
        let path = join(&index("spec.nodes", i), "externalInterfaces");
        if !cx.ok(doc, &path) {
            continue;
        }
        for (k, interface) in node.external_interfaces.iter().enumerate() {
            let interface_path = index(&path, k);
            claim_interface(cx, doc, &mut interfaces, &node.name, interface, interface_path, "");
        }
    }
    for (i, link) in topology.links.iter().enumerate() {
        let path = index("spec.links", i);
        if !cx.ok(doc, &path) || link.a == link.b {
            continue;
        }
        let ends = [
            (&link.a, "a", &link.a_interface, "aInterface", "b"),
            (&link.b, "b", &link.b_interface, "bInterface", "a"),
        ];
        for (node, end, interface, field, peer) in ends {
            let node_ok = cx.ok(doc, &join(&path, end))
                && (!nodes.complete || nodes.by_name.contains_key(node.as_str()));
            let field_path = join(&path, field);
            let (interface_ok, at, note) = if cx.docs[doc].has(&field_path) {
                (cx.ok(doc, &field_path), field_path, "")
            } else {
                (
                    cx.ok(doc, &join(&path, peer)),
                    path.clone(),
                    " (the default: the peer's name; set it explicitly)",
                )
            };
            if node_ok && interface_ok {
                claim_interface(cx, doc, &mut interfaces, node, interface, at, note);
            }
        }
    }

    nodes
}

fn claim_interface<'t>(
    cx: &mut Checker<'_>,
    doc: usize,
    interfaces: &mut HashMap<(&'t str, &'t str), String>,
    node: &'t str,
    interface: &'t str,
    path: String,
    note: &str,
) {
    if let Some(first) = interfaces.get(&(node, interface)) {
        let message = format!(
            "interface {interface:?}{note} is already used on node {node:?} ({})",
            cx.locate(doc, first)
        );
        cx.err(doc, &path, message);
    } else {
        interfaces.insert((node, interface), path);
    }
}

/// The node an instance or policy names, checked against the topology: `Some` when it exists
/// and has the role (or its roles are unknown).
fn lookup<'n, 't>(
    cx: &mut Checker<'_>,
    nodes: Option<&'n Nodes<'t>>,
    doc: usize,
    path: &str,
    name: &str,
    role: Role,
    what: &str,
) -> Option<&'n NodeInfo<'t>> {
    let nodes = nodes?;
    let Some(info) = nodes.by_name.get(name) else {
        if nodes.complete {
            let message = format!("unknown node {name:?} (nodes: {})", nodes.names());
            cx.err(doc, path, message);
        }
        return None;
    };
    if info.roles_ok && !info.node.has_role(role) {
        let roles: Vec<_> = info.node.roles.iter().map(|role| role_name(*role)).collect();
        let message = format!(
            "node {name:?} does not have role {} (its roles: {}, at {}); {what}",
            role_name(role),
            roles.join(", "),
            cx.locate(nodes.doc, &join(&info.path, "roles"))
        );
        cx.err(doc, path, message);
        return None;
    }
    Some(info)
}

fn check_services(
    cx: &mut Checker<'_>,
    services: &[(usize, &ComputeService)],
    nodes: Option<&Nodes<'_>>,
) {
    let mut cs_ids: HashMap<u16, usize> = HashMap::new();
    let mut instance_names: HashMap<&str, (usize, String)> = HashMap::new();
    // Addresses seen so far: (address, doc, path, service).
    let mut addresses: Vec<(IpAddr, usize, String, &ComputeService)> = Vec::new();

    for &(doc, service) in services {
        if cx.ok(doc, "spec.csId") {
            if let Some(first) = cs_ids.get(&service.cs_id) {
                let message = format!(
                    "csId {} is already used by another ComputeService ({})",
                    service.cs_id,
                    cx.locate(*first, "spec.csId")
                );
                cx.err(doc, "spec.csId", message);
            } else {
                cs_ids.insert(service.cs_id, doc);
            }
        }

        let addresses_ok = cx.ok(doc, "spec.addresses");
        let ports_ok = cx.ok(doc, "spec.ports");
        if addresses_ok {
            for (j, address) in service.addresses.iter().enumerate() {
                let path = index("spec.addresses", j);
                if let (IpAddr::V6(v6), Some(block)) = (address, nodes.and_then(|n| n.sr_block))
                    && block.contains(*v6)
                {
                    cx.err(doc, &path, format!("{address} is inside the SR block {block}"));
                }
                for (other, other_doc, other_path, other_service) in &addresses {
                    if other != address || *other_doc == doc {
                        continue;
                    }
                    let other_ports_ok = cx.ok(*other_doc, "spec.ports");
                    if !ports_ok || !other_ports_ok {
                        continue;
                    }
                    let shareable = !service.ports.is_empty()
                        && !other_service.ports.is_empty()
                        && service.ports.iter().all(|port| !other_service.ports.contains(port));
                    if !shareable {
                        let message = format!(
                            "{address} is also an address of ComputeService {:?} ({}); two \
                             services share an address only when both list ports and no port \
                             is in both lists",
                            other_service.name,
                            cx.locate(*other_doc, other_path)
                        );
                        cx.err(doc, &path, message);
                    }
                }
                addresses.push((*address, doc, path, service));
            }
        }
        let first_v6 = service.addresses.iter().find(|a| a.is_ipv6());
        let first_v4 = service.addresses.iter().find(|a| a.is_ipv4());

        let mut ids: HashMap<u32, String> = HashMap::new();
        let mut instance_addresses: HashMap<IpAddr, String> = HashMap::new();
        for (i, instance) in service.instances.iter().enumerate() {
            let path = index("spec.instances", i);
            if !cx.ok(doc, &path) {
                continue;
            }
            let name_path = join(&path, "name");
            if cx.ok(doc, &name_path) {
                if let Some((first_doc, first_path)) = instance_names.get(instance.name.as_str()) {
                    let message = format!(
                        "instance name {:?} is already used ({})",
                        instance.name,
                        cx.locate(*first_doc, first_path)
                    );
                    cx.err(doc, &name_path, message);
                } else {
                    instance_names.insert(&instance.name, (doc, name_path));
                }
            }
            let id_path = join(&path, "id");
            if cx.ok(doc, &id_path) {
                if let Some(first) = ids.get(&instance.id) {
                    let message = format!(
                        "id {} is already used by {first} of this service ({})",
                        instance.id,
                        cx.locate(doc, first)
                    );
                    cx.err(doc, &id_path, message);
                } else {
                    ids.insert(instance.id, path.clone());
                }
            }

            let node_path = join(&path, "node");
            let node = if cx.ok(doc, &node_path) {
                lookup(
                    cx,
                    nodes,
                    doc,
                    &node_path,
                    &instance.node,
                    Role::Egress,
                    "instances run on egress nodes",
                )
            } else {
                None
            };

            let ends = [
                ("address", instance.address.map(IpAddr::V6), first_v6, "IPv6"),
                ("address4", instance.address4.map(IpAddr::V4), first_v4, "IPv4"),
            ];
            for (field, address, service_address, family) in ends {
                let field_path = join(&path, field);
                if !cx.ok(doc, &field_path) {
                    continue;
                }
                let Some(address) = address else {
                    if addresses_ok && let Some(service_address) = service_address {
                        let message = format!(
                            "missing required field: the service has the {family} address \
                             {service_address}, so every instance needs an {family} address"
                        );
                        cx.err(doc, &field_path, message);
                    }
                    continue;
                };
                if let Some(first) = instance_addresses.get(&address) {
                    let message = format!(
                        "{address} is already the address of {first} ({})",
                        cx.locate(doc, first)
                    );
                    cx.err(doc, &field_path, message);
                } else {
                    instance_addresses.insert(address, path.clone());
                }
                if let Some(info) = node
                    && info.prefixes_ok
                    && !info.node.prefixes.iter().any(|p| p.contains(address))
                {
                    let prefixes: Vec<_> =
                        info.node.prefixes.iter().map(|p| p.to_string()).collect();
                    let prefixes = if prefixes.is_empty() {
                        "it has none".to_owned()
                    } else {
                        prefixes.join(", ")
                    };
                    let message = format!(
                        "{address} is not inside any prefix of node {:?} ({prefixes})",
                        instance.node
                    );
                    cx.err(doc, &field_path, message);
                }
            }
        }
    }
}

fn check_policies(
    cx: &mut Checker<'_>,
    policies: &[(usize, &SteeringPolicy)],
    services: &[(usize, &ComputeService)],
    services_complete: bool,
    nodes: Option<&Nodes<'_>>,
) {
    let known: HashMap<&str, usize> = services
        .iter()
        .filter(|(doc, _)| cx.ok(*doc, "metadata.name"))
        .map(|(doc, service)| (service.name.as_str(), *doc))
        .collect();
    let mut claimed: HashMap<&str, usize> = HashMap::new();
    for &(doc, policy) in policies {
        if cx.ok(doc, "spec.service") {
            if services_complete && !known.contains_key(policy.service.as_str()) {
                let mut names: Vec<_> = known.keys().copied().collect();
                names.sort_unstable();
                let message = format!(
                    "unknown ComputeService {:?} (services: {})",
                    policy.service,
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                );
                cx.err(doc, "spec.service", message);
            }
            if let Some(first) = claimed.get(policy.service.as_str()) {
                let message = format!(
                    "ComputeService {:?} already has a SteeringPolicy ({}); a service has at \
                     most one",
                    policy.service,
                    cx.locate(*first, "spec.service")
                );
                cx.err(doc, "spec.service", message);
            } else {
                claimed.insert(&policy.service, doc);
            }
        }
        check_policy_nodes(cx, doc, policy, nodes);
        if let Some(&service_doc) = known.get(policy.service.as_str())
            && let Some((_, service)) = services.iter().find(|(d, _)| *d == service_doc)
            && cx.ok(doc, "spec.affinity.portGroups")
            && cx.ok(service_doc, "spec.ports")
        {
            check_port_groups(cx, doc, policy, service);
        }
        if let Some(nodes) = nodes
            && let Some(&service_doc) = known.get(policy.service.as_str())
            && let Some((_, service)) = services.iter().find(|(d, _)| *d == service_doc)
            && cx.ok(doc, "spec.service")
        {
            check_feasible(cx, doc, policy, service_doc, service, nodes);
        }
    }
}

/// Port groups name ports the service matches: a group of ports it does not steer would
/// never see a packet.
fn check_port_groups(
    cx: &mut Checker<'_>,
    doc: usize,
    policy: &SteeringPolicy,
    service: &ComputeService,
) {
    for (g, group) in policy.affinity.port_groups.iter().enumerate() {
        for (p, port) in group.iter().enumerate() {
            if !service.ports.iter().any(|m| m.port == *port) {
                let listed: Vec<String> =
                    service.ports.iter().map(|m| m.port.to_string()).collect();
                let message = format!(
                    "port {port} is not a port of ComputeService {:?} (its ports: {})",
                    service.name,
                    if listed.is_empty() {
                        "none; it matches every port".into()
                    } else {
                        listed.join(", ")
                    }
                );
                cx.err(doc, &format!("spec.affinity.portGroups[{g}][{p}]"), message);
            }
        }
    }
}

/// The node names a policy lists, against the topology; also records whether they all
/// resolved, for [`check_feasible`].
fn check_policy_nodes(
    cx: &mut Checker<'_>,
    doc: usize,
    policy: &SteeringPolicy,
    nodes: Option<&Nodes<'_>>,
) {
    let c = &policy.constraints;
    let mut lists = vec![
        (
            "spec.ingress".to_owned(),
            &policy.ingress,
            Role::Ingress,
            "traffic is steered where it enters",
        ),
        (
            "spec.constraints.waypoints".to_owned(),
            &c.waypoints,
            Role::Transit,
            "waypoints are transit nodes",
        ),
        ("spec.constraints.sites".to_owned(), &c.sites, Role::Egress, "sites are egress nodes"),
        (
            "spec.constraints.excludeSites".to_owned(),
            &c.exclude_sites,
            Role::Egress,
            "sites are egress nodes",
        ),
    ];
    for (g, group) in policy.locality.iter().enumerate() {
        let path = join(&index("spec.locality", g), "sites");
        lists.push((path, &group.sites, Role::Egress, "sites are egress nodes"));
    }
    for (path, names, role, why) in lists {
        if !cx.ok(doc, &path) {
            continue;
        }
        for (j, name) in names.iter().enumerate() {
            lookup(cx, nodes, doc, &index(&path, j), name, role, why);
        }
    }
    let Some(nodes) = nodes else {
        return;
    };

    let avoid_path = "spec.constraints.avoidNodes";
    if cx.ok(doc, avoid_path) {
        let ingress = applicable_ingress(cx, doc, policy, nodes);
        for (j, name) in c.avoid_nodes.iter().enumerate() {
            let path = index(avoid_path, j);
            if !nodes.by_name.contains_key(name.as_str()) {
                if nodes.complete {
                    let message = format!("unknown node {name:?} (nodes: {})", nodes.names());
                    cx.err(doc, &path, message);
                }
                continue;
            }
            let Some(ingress) = &ingress else {
                continue;
            };
            if ingress.contains(&name.as_str()) {
                let why = match policy.ingress.iter().position(|n| n == name) {
                    Some(k) => format!("listed at {}", cx.locate(doc, &index("spec.ingress", k))),
                    None => "spec.ingress is empty, so the policy applies to every ingress node; \
                             list the others in spec.ingress to leave it out"
                        .to_owned(),
                };
                let message = format!(
                    "node {name:?} is an ingress of this policy ({why}); its traffic enters \
                     there, so no path can avoid it"
                );
                cx.err(doc, &path, message);
            }
        }
    }

    let links_path = "spec.constraints.avoidLinks";
    if cx.ok(doc, links_path) && nodes.links_complete && nodes.complete {
        for (j, link) in c.avoid_links.iter().enumerate() {
            if nodes.topology.link_index(link).is_none() {
                let links: Vec<_> =
                    nodes.topology.links.iter().map(|l| format!("{}-{}", l.a, l.b)).collect();
                let message = format!(
                    "no link joins {:?} and {:?} (links: {})",
                    link.a,
                    link.b,
                    if links.is_empty() { "none".to_owned() } else { links.join(", ") }
                );
                cx.err(doc, &index(links_path, j), message);
            }
        }
    }
}

/// The ingress nodes a policy applies to: its list, or every ingress node when the list is
/// empty; `None` when that is not known for sure.
fn applicable_ingress<'t>(
    cx: &Checker<'_>,
    doc: usize,
    policy: &'t SteeringPolicy,
    nodes: &Nodes<'t>,
) -> Option<Vec<&'t str>> {
    if !cx.ok(doc, "spec.ingress") {
        return None;
    }
    if !policy.ingress.is_empty() {
        return Some(policy.ingress.iter().map(String::as_str).collect());
    }
    if !nodes.complete || nodes.by_name.values().any(|info| !info.roles_ok) {
        return None;
    }
    Some(
        nodes
            .topology
            .nodes
            .iter()
            .filter(|node| node.has_role(Role::Ingress))
            .map(|node| node.name.as_str())
            .collect(),
    )
}

/// Milliseconds for messages: at most three decimals, without trailing zeros.
fn ms(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What a path must do: pass `waypoints` in order, avoiding nodes and links.
#[derive(Clone)]
struct PathRules<'p> {
    waypoints: &'p [String],
    avoid_nodes: &'p [String],
    /// Positions in `topology.links`.
    avoid_links: Vec<usize>,
}

impl PathRules<'_> {
    /// The best declared round trip from `from` to any of `instances` that follows the
    /// rules, with the instance. The only use of the compile module's path engine.
    fn best<'i>(
        &self,
        topology: &Topology,
        from: &str,
        instances: &[&'i Instance],
    ) -> Option<(f64, &'i Instance)> {
        use crate::compile::graph::{Avoid, Graph, LinkId, NodeId};
        let graph = Graph::new(topology, |i| topology.links[i].latency_ms);
        let avoid = Avoid::new(
            &graph,
            self.avoid_nodes.iter().map(String::as_str),
            self.avoid_links.iter().map(|&link| link as LinkId),
        );
        let source = graph.node_id(from)?;
        let waypoints: Vec<NodeId> =
            self.waypoints.iter().map(|name| graph.node_id(name)).collect::<Option<_>>()?;
        instances
            .iter()
            .filter_map(|instance| {
                let target = graph.node_id(&instance.node)?;
                let path = graph.constrained_path(source, &waypoints, target, &avoid)?;
                Some((2.0 * path.latency_ms, *instance))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }
}

/// Constraints that no instance can meet, for some ingress: no instance left on the allowed
/// sites, none with enough capacity, no path, or none within the latency bound.
fn check_feasible(
    cx: &mut Checker<'_>,
    doc: usize,
    policy: &SteeringPolicy,
    service_doc: usize,
    service: &ComputeService,
    nodes: &Nodes<'_>,
) {
    // A service of pods alone has its instances only once pods register; the registry merge
    // checks each one as it comes.
    if service.instances.is_empty() {
        return;
    }
    let c = &policy.constraints;
    let fields = ["sites", "excludeSites", "avoidNodes", "avoidLinks", "waypoints"]
        .map(|field| join("spec.constraints", field));
    let all_ok = cx.ok(doc, "spec.constraints") && fields.iter().all(|path| cx.ok(doc, path));
    let names_ok = nodes.complete
        && nodes.links_complete
        && nodes.by_name.values().all(|info| info.roles_ok)
        && [&c.sites, &c.exclude_sites, &c.avoid_nodes, &c.waypoints, &policy.ingress]
            .iter()
            .all(|names| names.iter().all(|name| nodes.by_name.contains_key(name.as_str())))
        && c.avoid_links.iter().all(|link| nodes.topology.link_index(link).is_some())
        && !c.waypoints.iter().any(|waypoint| c.avoid_nodes.contains(waypoint));
    let instances_ok = cx.ok(service_doc, "spec.instances")
        && service.instances.iter().enumerate().all(|(i, instance)| {
            let path = index("spec.instances", i);
            cx.ok(service_doc, &path)
                && cx.ok(service_doc, &join(&path, "node"))
                && cx.ok(service_doc, &join(&path, "tops"))
                && nodes.by_name.contains_key(instance.node.as_str())
        });
    if !all_ok || !names_ok || !instances_ok {
        return;
    }
    let Some(ingress) = applicable_ingress(cx, doc, policy, nodes) else {
        return;
    };
    if ingress.iter().any(|name| c.avoid_nodes.iter().any(|n| n == name)) {
        return; // Reported by check_policy_nodes.
    }

    let describe = |instances: &[&Instance]| {
        instances
            .iter()
            .map(|instance| format!("{} on {}", instance.name, instance.node))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let service_name = &service.name;
    let all: Vec<&Instance> = service.instances.iter().collect();
    let allowed = |field: &str, node: &String| match field {
        "sites" => c.sites.is_empty() || c.sites.contains(node),
        "excludeSites" => !c.exclude_sites.contains(node),
        _ => !c.avoid_nodes.contains(node),
    };
    let steps = [
        ("sites", "runs on none of these sites"),
        ("excludeSites", "would use only excluded sites"),
        ("avoidNodes", "would run only on avoided nodes"),
    ];
    let mut left = all.clone();
    for (field, what) in steps {
        let kept: Vec<&Instance> =
            left.iter().copied().filter(|i| allowed(field, &i.node)).collect();
        if kept.is_empty() {
            let which = if left.len() == all.len() { "its instances" } else { "still allowed" };
            let message = format!(
                "no instance of ComputeService {service_name:?} is left: it {what} ({which}: \
                 {}; {})",
                describe(&left),
                cx.locate(service_doc, "spec.instances")
            );
            cx.err(doc, &join("spec.constraints", field), message);
            return;
        }
        left = kept;
    }
    if let Some(min) = c.min_free_tops {
        let kept: Vec<&Instance> = left.iter().copied().filter(|i| i.tops >= min).collect();
        if kept.is_empty() {
            let (k, largest) = service
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| left.iter().any(|l| l.name == i.name))
                .min_by(|a, b| b.1.tops.total_cmp(&a.1.tops))
                .expect("some instance is left");
            let message = format!(
                "more than the declared capacity of every allowed instance: the largest is {} \
                 with {} tops ({})",
                largest.name,
                largest.tops,
                cx.locate(service_doc, &join(&index("spec.instances", k), "tops"))
            );
            cx.err(doc, "spec.constraints.minFreeTops", message);
            return;
        }
        left = kept;
    }

    // Paths: through the waypoints in order, avoiding nodes and links.
    let topology = nodes.topology;
    let rules = PathRules {
        waypoints: &c.waypoints,
        avoid_nodes: &c.avoid_nodes,
        avoid_links: c.avoid_links.iter().filter_map(|link| topology.link_index(link)).collect(),
    };
    let mut unreachable = Vec::new();
    let mut too_slow = Vec::new();
    for from in &ingress {
        match rules.best(topology, from, &left) {
            None => unreachable.push(*from),
            Some((round_trip, instance)) => {
                if let Some(max) = c.max_latency_ms
                    && round_trip > max
                {
                    too_slow.push(format!(
                        "from {from}, {} ms to {}",
                        ms(round_trip),
                        instance.name
                    ));
                }
            }
        }
    }
    if !unreachable.is_empty() {
        // Blame the one path rule without which a path exists; else all of them.
        let relaxed = [
            (
                "waypoints",
                "through the waypoints in order",
                PathRules { waypoints: &[], ..rules.clone() },
            ),
            ("avoidNodes", "avoiding these nodes", PathRules { avoid_nodes: &[], ..rules.clone() }),
            (
                "avoidLinks",
                "avoiding these links",
                PathRules { avoid_links: Vec::new(), ..rules.clone() },
            ),
        ];
        let field = relaxed.iter().find(|(field, _, relaxed)| {
            let set = match *field {
                "waypoints" => !c.waypoints.is_empty(),
                "avoidNodes" => !c.avoid_nodes.is_empty(),
                _ => !c.avoid_links.is_empty(),
            };
            set && unreachable.iter().all(|from| relaxed.best(topology, from, &left).is_some())
        });
        // Without any path rule, an unreachable instance is the topology's business.
        let constrained =
            !c.waypoints.is_empty() || !c.avoid_nodes.is_empty() || !c.avoid_links.is_empty();
        if constrained {
            let (path, how) = match field {
                Some((field, how, _)) => (join("spec.constraints", field), *how),
                None => ("spec.constraints".to_owned(), "with these waypoints and avoidances"),
            };
            let message = format!(
                "no path {how} leads from ingress {} to an allowed instance ({})",
                unreachable.join(", "),
                describe(&left)
            );
            cx.err(doc, &path, message);
        }
    }
    if !too_slow.is_empty() {
        let message = format!(
            "below the best declared round trip to an allowed instance ({})",
            too_slow.join("; ")
        );
        cx.err(doc, "spec.constraints.maxLatencyMs", message);
    }
}
