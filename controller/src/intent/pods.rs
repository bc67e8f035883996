//! Pods in the intent: a service's `podSelector`, and the merge of the pods the CNI plugin
//! registered ([`crate::registry`]) into a validated intent.
//!
//! A registered pod adds two things:
//! - on an ingress node, its host-side interface becomes a headend interface: the pod's
//!   requests to a service are steered where they leave the pod (and the agent keeps the
//!   attachment instead of removing a link it does not know);
//! - on an egress node, a pod a service's selector picks becomes an instance of that service,
//!   named `<namespace>.<pod>`, with a stable id derived from that name.
//!
//! Each registration is checked on its own; one that does not fit is reported and left out,
//! so a bad pod never keeps the others (or the declared intent) from being compiled.

use std::{collections::BTreeMap, net::IpAddr};

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::model::{Instance, Intent, Node, Role};
use crate::registry::Registration;

/// Which registered pods become instances of a service.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// The pod's Kubernetes namespace; any namespace when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The start of the pod's name; any name when absent. At least one of the two is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Capacity of each selected pod in tera-operations per second, in (0, 1e6].
    pub tops: f64,
}

impl PodSelector {
    /// Whether the pod `namespace`/`pod` is selected. A pod without Kubernetes identity never is.
    pub fn selects(&self, namespace: &str, pod: &str) -> bool {
        !namespace.is_empty()
            && !pod.is_empty()
            && self.namespace.as_ref().is_none_or(|n| n == namespace)
            && self.name_prefix.as_ref().is_none_or(|p| pod.starts_with(p.as_str()))
    }
}

/// `intent` with the pods of `registrations` (file name, registration) merged in, and one
/// line per registration (or part of one) left out, saying why.
pub fn with_pods(
    intent: &Intent,
    registrations: &[(String, Registration)],
) -> (Intent, Vec<String>) {
    let mut merged = intent.clone();
    let mut problems = Vec::new();
    add_headend_interfaces(&mut merged, registrations, &mut problems);
    add_instances(&mut merged, registrations, &mut problems);
    (merged, problems)
}

fn add_headend_interfaces(
    intent: &mut Intent,
    registrations: &[(String, Registration)],
    problems: &mut Vec<String>,
) {
    // (node, interface) -> who uses it: the intent's own interfaces first.
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    for node in &intent.topology.nodes {
        for interface in node.headend_interfaces.iter().chain(&node.external_interfaces) {
            claimed.insert((node.name.clone(), interface.clone()), "the intent".into());
        }
    }
    for link in &intent.topology.links {
        claimed.insert((link.a.clone(), link.a_interface.clone()), "a link of the intent".into());
        claimed.insert((link.b.clone(), link.b_interface.clone()), "a link of the intent".into());
    }
    for (file, pod) in registrations {
        let Some(node) = intent.topology.nodes.iter_mut().find(|n| n.name == pod.node) else {
            problems.push(format!("{file}: node {:?} is not in the topology", pod.node));
            continue;
        };
        if !node.has_role(Role::Ingress) {
            continue;
        }
        let key = (node.name.clone(), pod.host_interface.clone());
        if let Some(owner) = claimed.get(&key) {
            problems.push(format!(
                "{file}: interface {:?} on node {} is already used by {owner}",
                pod.host_interface, node.name
            ));
            continue;
        }
        claimed.insert(key, file.clone());
        node.headend_interfaces.push(pod.host_interface.clone());
    }
}

/// One pod (all its attachments on one node), as a candidate instance.
struct Pod<'r> {
    file: &'r str,
    node: &'r str,
    namespace: &'r str,
    name: &'r str,
    addresses: Vec<IpAddr>,
}

fn pods(registrations: &[(String, Registration)]) -> Vec<Pod<'_>> {
    let mut by_pod: BTreeMap<(&str, &str, &str), Pod<'_>> = BTreeMap::new();
    for (file, r) in registrations {
        if r.namespace.is_empty() || r.pod.is_empty() {
            continue;
        }
        let pod =
            by_pod.entry((r.namespace.as_str(), r.pod.as_str(), r.node.as_str())).or_insert(Pod {
                file,
                node: &r.node,
                namespace: &r.namespace,
                name: &r.pod,
                addresses: Vec::new(),
            });
        pod.addresses.extend(&r.addresses);
    }
    by_pod.into_values().collect()
}

fn add_instances(
    intent: &mut Intent,
    registrations: &[(String, Registration)],
    problems: &mut Vec<String>,
) {
    let pods = pods(registrations);
    // Instance names are unique across services: a pod is an instance of one service.
    let mut names: BTreeMap<String, String> = intent
        .services
        .iter()
        .flat_map(|s| s.instances.iter().map(move |i| (i.name.clone(), s.name.clone())))
        .collect();
    let nodes = intent.topology.nodes.clone();
    for service in &mut intent.services {
        let Some(selector) = service.pod_selector.clone() else { continue };
        for pod in pods.iter().filter(|p| selector.selects(p.namespace, p.name)) {
            let name = format!("{}.{}", pod.namespace, pod.name);
            let Some(node) = nodes.iter().find(|n| n.name == pod.node) else {
                continue; // Reported with the interfaces.
            };
            let placed = place(pod, node, service.addresses.as_slice());
            let (address, address4) = match placed {
                Ok(addresses) => addresses,
                Err(why) => {
                    problems.push(format!(
                        "{}: pod {name} cannot be an instance of {}: {why}",
                        pod.file, service.name
                    ));
                    continue;
                }
            };
            if let Some(other) = names.get(&name) {
                problems.push(format!(
                    "{}: pod {name} is already an instance of {other}; a pod serves one service",
                    pod.file
                ));
                continue;
            }
            names.insert(name.clone(), service.name.clone());
            let id = stable_id(&name, |id| service.instances.iter().any(|i| i.id == id));
            service.instances.push(Instance {
                name,
                id,
                node: node.name.clone(),
                address,
                address4,
                tops: selector.tops,
                utilization: 0.0,
                drain: false,
            });
        }
    }
}

type Placed = (Option<std::net::Ipv6Addr>, Option<std::net::Ipv4Addr>);

/// The pod's instance addresses on `node`: one of each family the service has, inside the
/// node's prefixes (the egress delivers there).
fn place(pod: &Pod<'_>, node: &Node, service_addresses: &[IpAddr]) -> Result<Placed, String> {
    if !node.has_role(Role::Egress) {
        return Err(format!("node {} does not have role egress", node.name));
    }
    let inside = |a: &IpAddr| node.prefixes.iter().any(|p: &IpNetwork| p.contains(*a));
    let v6 = pod.addresses.iter().find_map(|a| match a {
        IpAddr::V6(v6) if inside(a) => Some(*v6),
        _ => None,
    });
    let v4 = pod.addresses.iter().find_map(|a| match a {
        IpAddr::V4(v4) if inside(a) => Some(*v4),
        _ => None,
    });
    let wants_v6 = service_addresses.iter().any(IpAddr::is_ipv6);
    let wants_v4 = service_addresses.iter().any(IpAddr::is_ipv4);
    if wants_v6 && v6.is_none() {
        return Err(missing("IPv6", pod, node));
    }
    if wants_v4 && v4.is_none() {
        return Err(missing("IPv4", pod, node));
    }
    let placed: Placed = (v6.filter(|_| wants_v6), v4.filter(|_| wants_v4));
    Ok(placed)
}

fn missing(family: &str, pod: &Pod<'_>, node: &Node) -> String {
    let prefixes: Vec<String> = node.prefixes.iter().map(ToString::to_string).collect();
    let addresses: Vec<String> = pod.addresses.iter().map(ToString::to_string).collect();
    format!(
        "the service has an {family} address, but none of the pod's addresses ({}) is an \
         {family} address inside the prefixes of node {} ({})",
        if addresses.is_empty() { "none".into() } else { addresses.join(", ") },
        node.name,
        if prefixes.is_empty() { "none".into() } else { prefixes.join(", ") },
    )
}

/// An instance id that stays the same across recompiles and daemons (FNV-1a of the name, so
/// flows pinned to a pod keep it), moved on past ids `taken` in the service.
fn stable_id(name: &str, taken: impl Fn(u32) -> bool) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let mut id = hash.max(1);
    while taken(id) {
        id = id.checked_add(1).unwrap_or(1);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_skip_taken_ones_and_zero() {
        let first = stable_id("shop.plate-0", |_| false);
        assert_eq!(first, stable_id("shop.plate-0", |_| false));
        assert_ne!(first, stable_id("shop.plate-1", |_| false));
        assert_eq!(stable_id("shop.plate-0", |id| id == first), first.wrapping_add(1).max(1));
    }

    #[test]
    fn selector_needs_kubernetes_identity() {
        let selector = PodSelector { namespace: Some("shop".into()), name_prefix: None, tops: 1.0 };
        assert!(selector.selects("shop", "plate-0"));
        assert!(!selector.selects("shop", ""));
        assert!(!selector.selects("other", "plate-0"));
        let by_prefix =
            PodSelector { namespace: None, name_prefix: Some("plate-".into()), tops: 1.0 };
        assert!(by_prefix.selects("any", "plate-7"));
        assert!(!by_prefix.selects("any", "web-7"));
    }
}
