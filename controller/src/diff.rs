//! A semantic diff between two sets of node states (running → new), in lines an operator
//! reads:
//!
//! ```text
//! gw:
//!   ~ weight plate-recognition/edge1-a 500 -> 0
//!   ~ weight plate-recognition/edge2-a 500 -> 1000
//! + edge3 (new node):
//!   + address lo fc00:0:6::1/128
//! ```
//!
//! Items are matched by what names them (an address by itself, a route by its destination, a
//! SID by its address, a service by its name, an instance and its weight by service and
//! instance name), so a reordering or a new slot number alone is not a change of meaning:
//! slots are where the agent puts things in its maps, not what the node does. The generation
//! number is left out too: every compile bumps it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    net::SocketAddr,
};

use crate::state::{
    EndpointState, FlowDefinition, HeadendState, LocalSid, NodeState, ServiceMatch, SidBehavior,
};

/// What changed, node by node (in node-name order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    pub nodes: Vec<NodeDiff>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeDiff {
    pub node: String,
    pub kind: NodeChange,
    /// One line per change, each starting with `+`, `-` or `~`.
    pub lines: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChange {
    /// Only in the new states.
    Added,
    /// Only in the running states.
    Removed,
    /// In both (possibly unchanged: then `lines` is empty).
    Kept,
}

/// Compares `running` with `new`.
pub fn diff(running: &BTreeMap<String, NodeState>, new: &BTreeMap<String, NodeState>) -> Diff {
    let empty = NodeState::default();
    let names: BTreeSet<&String> = running.keys().chain(new.keys()).collect();
    let nodes = names
        .into_iter()
        .map(|name| {
            let (kind, old, new) = match (running.get(name), new.get(name)) {
                (Some(old), Some(new)) => (NodeChange::Kept, old, new),
                (None, Some(new)) => (NodeChange::Added, &empty, new),
                (Some(old), None) => (NodeChange::Removed, old, &empty),
                (None, None) => unreachable!("the name came from one of the maps"),
            };
            NodeDiff { node: name.clone(), kind, lines: node_lines(old, new) }
        })
        .collect();
    Diff { nodes }
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.nodes.iter().all(|n| n.kind == NodeChange::Kept && n.lines.is_empty())
    }

    /// The changed nodes with their changes, or `no change`.
    pub fn render(&self) -> String {
        if self.is_empty() {
            return "no change\n".into();
        }
        let mut out = String::new();
        for n in &self.nodes {
            let header = match n.kind {
                NodeChange::Kept if n.lines.is_empty() => continue,
                NodeChange::Kept => format!("{}:", n.node),
                NodeChange::Added => format!("+ {} (new node):", n.node),
                NodeChange::Removed => format!("- {} (removed):", n.node),
            };
            out.push_str(&header);
            out.push('\n');
            for line in &n.lines {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// One line per node: `edge1: 3 changes`, `core: no change`, `edge3: new node (12 items)`.
    pub fn summary(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let count = match n.lines.len() {
                    1 => "1 change".to_string(),
                    k => format!("{k} changes"),
                };
                match n.kind {
                    NodeChange::Kept if n.lines.is_empty() => format!("{}: no change", n.node),
                    NodeChange::Kept => format!("{}: {count}", n.node),
                    NodeChange::Added => format!("{}: new node ({count})", n.node),
                    NodeChange::Removed => format!("{}: removed ({count})", n.node),
                }
            })
            .collect()
    }
}

fn node_lines(old: &NodeState, new: &NodeState) -> Vec<String> {
    let mut out = Vec::new();
    let addresses = |s: &NodeState| {
        s.addresses.iter().map(|a| (format!("{} {}", a.interface, a.address), ())).collect()
    };
    keyed(&mut out, "address", &addresses(old), &addresses(new), |()| String::new());

    let routes = |s: &NodeState| {
        s.routes
            .iter()
            .map(|r| (r.destination, format!("via {} dev {}", r.via, r.interface)))
            .collect()
    };
    keyed(&mut out, "route", &routes(old), &routes(new), String::clone);

    let sids = |s: &NodeState| s.sids.iter().map(|l| (l.sid, sid(l))).collect();
    keyed(&mut out, "sid", &sids(old), &sids(new), String::clone);

    headend(&mut out, old.headend.as_ref(), new.headend.as_ref());
    endpoint(&mut out, old.endpoint.as_ref(), new.endpoint.as_ref());
    out
}

/// Compares two keyed collections: `- kind key old`, `+ kind key new`, `~ kind key old -> new`.
fn keyed<K: Ord + Display, V: PartialEq>(
    out: &mut Vec<String>,
    kind: &str,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    show: impl Fn(&V) -> String,
) {
    let line = |sign: char, key: &K, detail: String| {
        if detail.is_empty() {
            format!("{sign} {kind} {key}")
        } else {
            format!("{sign} {kind} {key} {detail}")
        }
    };
    for (key, v) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
        out.push(line('-', key, show(v)));
    }
    for (key, v) in new {
        match old.get(key) {
            None => out.push(line('+', key, show(v))),
            Some(was) if was != v => {
                out.push(line('~', key, format!("{} -> {}", show(was), show(v))));
            }
            Some(_) => {}
        }
    }
}

/// `~ kind field old -> new` when the field differs.
fn field<T: PartialEq + Display>(out: &mut Vec<String>, what: &str, old: T, new: T) {
    if old != new {
        out.push(format!("~ {what} {old} -> {new}"));
    }
}

fn sid(l: &LocalSid) -> String {
    let behavior = match &l.behavior {
        SidBehavior::End => "End".to_string(),
        SidBehavior::EndX { nexthop } => format!("End.X nexthop {nexthop}"),
        SidBehavior::EndDx6 { nexthop } => format!("End.DX6 nexthop {nexthop}"),
        SidBehavior::EndDx4 { nexthop } => format!("End.DX4 nexthop {nexthop}"),
        SidBehavior::EndDt6 { table } => format!("End.DT6 table {table}"),
    };
    format!("{behavior} dev {}", l.interface)
}

fn list<T: Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn flow(f: FlowDefinition) -> &'static str {
    match f {
        FlowDefinition::FiveTuple => "five-tuple",
        FlowDefinition::SourceAddress => "source-address",
        FlowDefinition::SourcePortGroup => "source-port-group",
    }
}

fn service_match(m: &ServiceMatch) -> String {
    let protocol = match m.protocol {
        0 => "any".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        p => format!("protocol {p}"),
    };
    let group = match m.port_group {
        0 => String::new(),
        g => format!(" group {g}"),
    };
    if m.port == 0 {
        format!("{protocol} {}{group}", m.address)
    } else {
        format!("{protocol} {}{group}", SocketAddr::new(m.address, m.port))
    }
}

fn headend(out: &mut Vec<String>, old: Option<&HeadendState>, new: Option<&HeadendState>) {
    match (old, new) {
        (None, None) => return,
        (None, Some(h)) => out.push(format!(
            "+ headend on {} encap-source {}",
            list(&h.interfaces),
            h.encap_source
        )),
        (Some(h), None) => out.push(format!(
            "- headend on {} encap-source {}",
            list(&h.interfaces),
            h.encap_source
        )),
        (Some(o), Some(n)) => {
            field(out, "headend interfaces", list(&o.interfaces), list(&n.interfaces));
            field(out, "headend encap-source", o.encap_source, n.encap_source);
            field(out, "headend affinity-table-size", o.affinity_table_size, n.affinity_table_size);
        }
    }
    let none = HeadendState {
        interfaces: Vec::new(),
        encap_source: std::net::Ipv6Addr::UNSPECIFIED,
        services: Vec::new(),
        instances: Vec::new(),
        affinity_table_size: 0,
    };
    let (old, new) = (old.unwrap_or(&none), new.unwrap_or(&none));

    let services = |h: &HeadendState| -> BTreeMap<String, Fields> {
        h.services
            .iter()
            .map(|s| {
                let fields = vec![
                    ("cs-id", s.cs_id.to_string()),
                    ("flow", flow(s.flow).to_string()),
                    ("timeout", format!("{} ms", s.affinity_timeout_ms)),
                ];
                (s.name.clone(), fields)
            })
            .collect()
    };
    by_field(out, "service", &services(old), &services(new));

    let matches = |h: &HeadendState| -> BTreeMap<String, ()> {
        h.services
            .iter()
            .flat_map(|s| {
                s.matches.iter().map(move |m| (format!("{} {}", s.name, service_match(m)), ()))
            })
            .collect()
    };
    keyed(out, "match", &matches(old), &matches(new), |()| String::new());

    let instances = |h: &HeadendState| -> BTreeMap<String, Fields> {
        let name_of = |slot: Option<u32>| {
            let backup = slot.and_then(|s| h.instances.iter().find(|i| i.slot == s));
            backup.map_or("-".to_string(), |b| b.name.clone())
        };
        h.instances
            .iter()
            .map(|i| {
                let alternate = if i.alternate_segments.is_empty() {
                    "-".into()
                } else {
                    list(&i.alternate_segments)
                };
                let fields = vec![
                    ("id", i.instance_id.to_string()),
                    ("cs-id", i.cs_id.to_string()),
                    ("segments", list(&i.segments)),
                    ("alternate", alternate),
                    ("backup", name_of(i.backup_slot)),
                ];
                (format!("{}/{}", i.service, i.name), fields)
            })
            .collect()
    };
    by_field(out, "instance", &instances(old), &instances(new));

    let weights = |h: &HeadendState| -> BTreeMap<String, u32> {
        h.services
            .iter()
            .flat_map(|s| {
                s.weights.iter().map(move |w| {
                    let instance = h
                        .instances
                        .iter()
                        .find(|i| i.slot == w.slot)
                        .map_or_else(|| format!("slot {}", w.slot), |i| i.name.clone());
                    (format!("{}/{instance}", s.name), w.weight)
                })
            })
            .collect()
    };
    keyed(out, "weight", &weights(old), &weights(new), u32::to_string);
}

/// Named fields of an item, in display order.
type Fields = Vec<(&'static str, String)>;

/// Items added and removed whole (`+ kind key f1 v1 f2 v2`), changed field by field
/// (`~ kind key f old -> new`).
fn by_field(
    out: &mut Vec<String>,
    kind: &str,
    old: &BTreeMap<String, Fields>,
    new: &BTreeMap<String, Fields>,
) {
    let whole = |fields: &Fields| {
        fields.iter().map(|(name, value)| format!("{name} {value}")).collect::<Vec<_>>().join(" ")
    };
    for (key, v) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
        out.push(format!("- {kind} {key} {}", whole(v)));
    }
    for (key, v) in new {
        let Some(was) = old.get(key) else {
            out.push(format!("+ {kind} {key} {}", whole(v)));
            continue;
        };
        for ((name, a), (_, b)) in was.iter().zip(v) {
            field(out, &format!("{kind} {key} {name}"), a, b);
        }
    }
}

fn endpoint(out: &mut Vec<String>, old: Option<&EndpointState>, new: Option<&EndpointState>) {
    let whole = |e: &EndpointState| {
        format!(
            "on {} external {} sr-block {} locators {} psp {} usd {}",
            list(&e.interfaces),
            list(&e.external_interfaces),
            e.sr_block,
            list(&e.locators),
            e.psp,
            e.usd
        )
    };
    match (old, new) {
        (None, None) => {}
        (None, Some(e)) => out.push(format!("+ endpoint {}", whole(e))),
        (Some(e), None) => out.push(format!("- endpoint {}", whole(e))),
        (Some(o), Some(n)) => {
            field(out, "endpoint interfaces", list(&o.interfaces), list(&n.interfaces));
            field(
                out,
                "endpoint external-interfaces",
                list(&o.external_interfaces),
                list(&n.external_interfaces),
            );
            field(out, "endpoint sr-block", o.sr_block, n.sr_block);
            field(out, "endpoint locators", list(&o.locators), list(&n.locators));
            field(out, "endpoint psp", o.psp, n.psp);
            field(out, "endpoint usd", o.usd, n.usd);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::state::{
        InstanceState, InstanceWeight, InterfaceAddress, ServiceState, UnderlayRoute,
    };

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn instance(name: &str, slot: u32, id: u32, segments: &[&str]) -> InstanceState {
        InstanceState {
            name: name.into(),
            slot,
            service: "plates".into(),
            cs_id: 1,
            instance_id: id,
            segments: segments.iter().map(|s| ip6(s)).collect(),
            alternate_segments: Vec::new(),
            backup_slot: None,
        }
    }

    /// An ingress with one service and two instances, 500 each.
    fn gw() -> NodeState {
        NodeState {
            node: "gw".into(),
            generation: 1,
            addresses: vec![InterfaceAddress {
                interface: "lo".into(),
                address: "fc00:0:1::1/128".parse().unwrap(),
            }],
            routes: vec![UnderlayRoute {
                destination: "fc00:0:3::/48".parse().unwrap(),
                via: "fd99::2".parse().unwrap(),
                interface: "core".into(),
            }],
            sids: vec![LocalSid {
                sid: ip6("fc00:0:1:1::"),
                behavior: SidBehavior::End,
                interface: "core".into(),
            }],
            headend: Some(HeadendState {
                interfaces: vec!["cams".into()],
                affinity_table_size: 65536,
                encap_source: ip6("fc00:0:1::1"),
                services: vec![ServiceState {
                    name: "plates".into(),
                    slot: 0,
                    cs_id: 1,
                    matches: vec![ServiceMatch {
                        address: "2001:db8::1".parse().unwrap(),
                        protocol: 17,
                        port: 7000,
                        port_group: 0,
                    }],
                    flow: FlowDefinition::FiveTuple,
                    affinity_timeout_ms: 30_000,
                    weights: vec![
                        InstanceWeight { slot: 0, weight: 500 },
                        InstanceWeight { slot: 1, weight: 500 },
                    ],
                    health: Default::default(),
                }],
                instances: vec![
                    instance("edge1-a", 0, 1, &["fc00:0:3:4001::1"]),
                    instance("edge2-a", 1, 2, &["fc00:0:4:4001::2"]),
                ],
            }),
            endpoint: Some(EndpointState {
                interfaces: vec!["core".into()],
                external_interfaces: Vec::new(),
                sr_block: "fc00::/32".parse().unwrap(),
                locators: vec!["fc00:0:1::/48".parse().unwrap()],
                psp: false,
                usd: false,
            }),
        }
    }

    fn core() -> NodeState {
        NodeState {
            node: "core".into(),
            generation: 1,
            sids: vec![LocalSid {
                sid: ip6("fc00:0:2:1::"),
                behavior: SidBehavior::End,
                interface: "gw".into(),
            }],
            ..Default::default()
        }
    }

    fn states(list: &[NodeState]) -> BTreeMap<String, NodeState> {
        list.iter().map(|s| (s.node.clone(), s.clone())).collect()
    }

    fn headend(s: &mut NodeState) -> &mut HeadendState {
        s.headend.as_mut().unwrap()
    }

    #[test]
    fn equal_states_are_no_change_whatever_the_generation() {
        let mut newer = gw();
        newer.generation = 7;
        let d = diff(&states(&[gw(), core()]), &states(&[newer, core()]));
        assert!(d.is_empty());
        assert_eq!(d.render(), "no change\n");
        assert_eq!(d.summary(), ["core: no change", "gw: no change"]);
    }

    #[test]
    fn weight_changes_name_service_and_instance() {
        let mut new = gw();
        headend(&mut new).services[0].weights =
            vec![InstanceWeight { slot: 0, weight: 0 }, InstanceWeight { slot: 1, weight: 1000 }];
        let d = diff(&states(&[gw(), core()]), &states(&[new, core()]));
        assert_eq!(
            d.render(),
            "gw:\n  ~ weight plates/edge1-a 500 -> 0\n  ~ weight plates/edge2-a 500 -> 1000\n"
        );
        assert_eq!(d.summary(), ["core: no change", "gw: 2 changes"]);
    }

    #[test]
    fn reordered_slots_are_not_a_change() {
        let mut new = gw();
        let h = headend(&mut new);
        h.instances.reverse();
        h.instances[0].slot = 0;
        h.instances[1].slot = 1;
        h.services[0].weights.reverse(); // same weight per instance, by the new slots
        let d = diff(&states(&[gw()]), &states(&[new]));
        assert_eq!(d.render(), "no change\n");
    }

    #[test]
    fn every_kind_of_change() {
        let mut new = gw();
        new.addresses.push(InterfaceAddress {
            interface: "core".into(),
            address: "fd99::1/64".parse().unwrap(),
        });
        new.routes[0].via = "fd99::3".parse().unwrap();
        new.routes[0].interface = "core2".into();
        new.sids[0].behavior = SidBehavior::EndDt6 { table: 254 };
        new.sids.push(LocalSid {
            sid: ip6("fc00:0:1:101::"),
            behavior: SidBehavior::EndX { nexthop: ip6("fd99::2") },
            interface: "core".into(),
        });
        let h = headend(&mut new);
        h.interfaces.push("cams2".into());
        let svc = &mut h.services[0];
        svc.flow = FlowDefinition::SourceAddress;
        svc.affinity_timeout_ms = 60_000;
        svc.matches.push(ServiceMatch {
            address: IpAddr::V4("198.51.100.1".parse().unwrap()),
            protocol: 17,
            port: 7000,
            port_group: 0,
        });
        svc.weights.pop();
        h.instances[0].segments.insert(0, ip6("fc00:0:2:1::"));
        h.instances[0].alternate_segments = vec![ip6("fc00:0:6:1::"), ip6("fc00:0:3:4001::1")];
        h.affinity_table_size = 1 << 20;
        h.instances.pop(); // edge2-a goes
        new.endpoint.as_mut().unwrap().psp = true;

        let mut edge3 = core();
        edge3.node = "edge3".into();
        let d = diff(&states(&[gw(), core()]), &states(&[new, edge3]));
        assert_eq!(
            d.render(),
            "\
- core (removed):
  - sid fc00:0:2:1:: End dev gw
+ edge3 (new node):
  + sid fc00:0:2:1:: End dev gw
gw:
  + address core fd99::1/64
  ~ route fc00:0:3::/48 via fd99::2 dev core -> via fd99::3 dev core2
  ~ sid fc00:0:1:1:: End dev core -> End.DT6 table 254 dev core
  + sid fc00:0:1:101:: End.X nexthop fd99::2 dev core
  ~ headend interfaces cams -> cams,cams2
  ~ headend affinity-table-size 65536 -> 1048576
  ~ service plates flow five-tuple -> source-address
  ~ service plates timeout 30000 ms -> 60000 ms
  + match plates udp 198.51.100.1:7000
  - instance plates/edge2-a id 2 cs-id 1 segments fc00:0:4:4001::2 alternate - backup -
  ~ instance plates/edge1-a segments fc00:0:3:4001::1 -> fc00:0:2:1::,fc00:0:3:4001::1
  ~ instance plates/edge1-a alternate - -> fc00:0:6:1::,fc00:0:3:4001::1
  - weight plates/edge2-a 500
  ~ endpoint psp false -> true
"
        );
        assert_eq!(
            d.summary(),
            ["core: removed (1 change)", "edge3: new node (1 change)", "gw: 14 changes"]
        );
    }

    #[test]
    fn a_new_headend_lists_all_it_brings() {
        let mut old = gw();
        old.headend = None;
        old.endpoint = None;
        let d = diff(&states(&[old]), &states(&[gw()]));
        assert_eq!(
            d.render(),
            "\
gw:
  + headend on cams encap-source fc00:0:1::1
  + service plates cs-id 1 flow five-tuple timeout 30000 ms
  + match plates udp [2001:db8::1]:7000
  + instance plates/edge1-a id 1 cs-id 1 segments fc00:0:3:4001::1 alternate - backup -
  + instance plates/edge2-a id 2 cs-id 1 segments fc00:0:4:4001::2 alternate - backup -
  + weight plates/edge1-a 500
  + weight plates/edge2-a 500
  + endpoint on core external (none) sr-block fc00::/32 locators fc00:0:1::/48 psp false usd false
"
        );
    }
}
