//! The node agent's kernel reconciler against a real kernel: every test builds its own network
//! namespaces (deleted again by the `Namespace` drop guard), runs the reconciler on a thread
//! inside one of them, and checks the result with `ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use cats_controller::{
    agent::kernel::{Kernel, KernelChanges, PartialApply},
    netns::run_in,
    state::{InterfaceAddress, LocalSid, NodeState, SidBehavior, UnderlayRoute},
};
use cats_lab::netns::{Namespace, unique_name};
use ipnetwork::IpNetwork;

/// Applies `state` (or flushes, for `None`) with a fresh connection made on a thread inside
/// `ns`, on a current-thread runtime built on that thread.
fn reconcile(ns: &Namespace, state: Option<&NodeState>) -> Result<KernelChanges> {
    let state = state.cloned();
    run_in(&ns.path(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let kernel = Kernel::connect()?;
            match state {
                Some(state) => kernel.apply(&state).await,
                None => kernel.flush().await,
            }
        })
    })
}

fn apply(ns: &Namespace, state: &NodeState) -> KernelChanges {
    reconcile(ns, Some(state)).unwrap_or_else(|e| panic!("apply in {}: {e:#}", ns.name()))
}

fn flush(ns: &Namespace) -> KernelChanges {
    reconcile(ns, None).unwrap_or_else(|e| panic!("flush in {}: {e:#}", ns.name()))
}

/// A namespace with DAD off, so IPv6 addresses are usable at once.
fn namespace(prefix: &str) -> Namespace {
    let ns = Namespace::create(&unique_name(prefix)).expect("creating a namespace");
    for conf in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{conf}.accept_dad"), "0").unwrap();
    }
    ns
}

/// `ip -n NS ARGS`; routes printed with protocol 202 read `proto 202` however iproute2 names it.
fn ip(ns: &Namespace, args: &[&str]) -> String {
    ns.ip(args)
        .unwrap()
        .replace(" proto 0xca ", " proto 202 ")
        .replace(" proto cats ", " proto 202 ")
}

/// The lines of `output`, each with its runs of blanks squeezed to one space (iproute2 prints
/// two after a host route's destination).
fn lines(output: &str) -> Vec<String> {
    output.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

fn has_line(output: &str, line: &str) -> bool {
    lines(output).iter().any(|l| l == line)
}

#[track_caller]
fn assert_line(output: &str, line: &str) {
    assert!(has_line(output, line), "expected line `{line}` in:\n{output}");
}

#[track_caller]
fn assert_no_line(output: &str, line: &str) {
    assert!(!has_line(output, line), "unexpected line `{line}` in:\n{output}");
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn address(interface: &str, address: &str) -> InterfaceAddress {
    InterfaceAddress { interface: interface.into(), address: net(address) }
}

fn route(destination: &str, via: &str, interface: &str) -> UnderlayRoute {
    UnderlayRoute {
        destination: net(destination),
        via: via.parse::<IpAddr>().unwrap(),
        interface: interface.into(),
    }
}

fn sid(sid: &str, behavior: SidBehavior, interface: &str) -> LocalSid {
    LocalSid { sid: v6(sid), behavior, interface: interface.into() }
}

/// The node under test (`node`, interface `n0`) and its peer (`p0`), with hand-made link
/// addresses: 10.10.0.1/24 and fc00:10::1/64 on the node, .2 and ::2 on the peer.
fn node_and_peer() -> (Namespace, Namespace) {
    let node = namespace("knod");
    let peer = namespace("kpee");
    node.veth_to("n0", &peer, "p0").unwrap();
    node.ip(&["addr", "add", "10.10.0.1/24", "dev", "n0"]).unwrap();
    node.ip(&["-6", "addr", "add", "fc00:10::1/64", "dev", "n0", "nodad"]).unwrap();
    peer.ip(&["addr", "add", "10.10.0.2/24", "dev", "p0"]).unwrap();
    peer.ip(&["-6", "addr", "add", "fc00:10::2/64", "dev", "p0", "nodad"]).unwrap();
    (node, peer)
}

/// Router addresses on lo, a link address the IPv4 route needs (so it must go in first), an
/// IPv6 and an IPv4 underlay route, and one SID of every behaviour.
fn node_state() -> NodeState {
    NodeState {
        node: "n".into(),
        generation: 1,
        addresses: vec![
            address("lo", "fc00:0:1::1/128"),
            address("lo", "10.255.0.1/32"),
            address("n0", "10.30.0.1/24"),
        ],
        routes: vec![
            route("fc00:0:2::/48", "fc00:10::2", "n0"),
            route("10.20.0.0/16", "10.30.0.2", "n0"),
        ],
        sids: vec![
            sid("fc00:0:1:e::", SidBehavior::End, "lo"),
            sid("fc00:0:1:d6::", SidBehavior::EndDx6 { nexthop: v6("fc00:10::2") }, "n0"),
            sid("fc00:0:1:d4::", SidBehavior::EndDx4 { nexthop: v4("10.10.0.2") }, "n0"),
            sid("fc00:0:1:d7::", SidBehavior::EndDt6 { table: 254 }, "lo"),
        ],
        headend: None,
        endpoint: None,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn installs_addresses_routes_and_every_sid_behaviour_once() {
    let (node, _peer) = node_and_peer();
    let state = node_state();

    let changes = apply(&node, &state);
    assert_eq!(
        changes,
        KernelChanges {
            added: strings(&[
                "address fc00:0:1::1/128 dev lo",
                "address 10.255.0.1/32 dev lo",
                "address 10.30.0.1/24 dev n0",
                "fc00:0:2::/48 via fc00:10::2 dev n0 proto 0xca",
                "10.20.0.0/16 via 10.30.0.2 dev n0 proto 0xca",
                "fc00:0:1:e::/128 encap seg6local action End dev lo proto 0xca",
                "fc00:0:1:d6::/128 encap seg6local action End.DX6 nh6 fc00:10::2 dev n0 proto 0xca",
                "fc00:0:1:d4::/128 encap seg6local action End.DX4 nh4 10.10.0.2 dev n0 proto 0xca",
                "fc00:0:1:d7::/128 encap seg6local action End.DT6 table 254 dev lo proto 0xca",
            ]),
            removed: vec![],
            unchanged: 0,
        }
    );

    // ip -n NODE -6 route show
    let routes6 = ip(&node, &["-6", "route", "show"]);
    assert_line(&routes6, "fc00:0:2::/48 via fc00:10::2 dev n0 proto 202 metric 1024 pref medium");
    assert_line(
        &routes6,
        "fc00:0:1:e:: encap seg6local action End dev lo proto 202 metric 1024 pref medium",
    );
    assert_line(
        &routes6,
        "fc00:0:1:d6:: encap seg6local action End.DX6 nh6 fc00:10::2 dev n0 proto 202 metric 1024 pref medium",
    );
    assert_line(
        &routes6,
        "fc00:0:1:d4:: encap seg6local action End.DX4 nh4 10.10.0.2 dev n0 proto 202 metric 1024 pref medium",
    );
    assert_line(
        &routes6,
        "fc00:0:1:d7:: encap seg6local action End.DT6 table main dev lo proto 202 metric 1024 pref medium",
    );

    // ip -n NODE route show
    let routes4 = ip(&node, &["route", "show"]);
    assert_line(&routes4, "10.20.0.0/16 via 10.30.0.2 dev n0 proto 202");
    assert_line(&routes4, "10.30.0.0/24 dev n0 proto kernel scope link src 10.30.0.1");

    // ip -n NODE -6 addr show dev lo
    let addr6 = ip(&node, &["-6", "addr", "show", "dev", "lo"]);
    assert!(addr6.contains("inet6 fc00:0:1::1/128 scope global"), "{addr6}");
    // ip -n NODE -4 addr show dev lo
    let addr4 = ip(&node, &["-4", "addr", "show", "dev", "lo"]);
    assert!(addr4.contains("inet 10.255.0.1/32 scope global lo"), "{addr4}");

    // ip netns exec NODE sysctl -n net.ipv6.conf.{all,lo,n0}.seg6_enabled net.ipv6.conf.all.forwarding net.ipv4.ip_forward
    let sysctls = node
        .run(
            "sysctl",
            &[
                "-n",
                "net.ipv6.conf.all.seg6_enabled",
                "net.ipv6.conf.lo.seg6_enabled",
                "net.ipv6.conf.n0.seg6_enabled",
                "net.ipv6.conf.all.forwarding",
                "net.ipv4.ip_forward",
            ],
        )
        .unwrap();
    assert_eq!(lines(&sysctls), strings(&["1", "1", "1", "1", "1"]));

    // A second reconcile finds everything in place.
    let again = apply(&node, &state);
    assert_eq!(again, KernelChanges { added: vec![], removed: vec![], unchanged: 9 });
    // ip -n NODE -6 route show (unchanged)
    assert_eq!(ip(&node, &["-6", "route", "show"]), routes6);
}

#[test]
fn changes_only_what_changed_and_never_touches_foreign_objects() {
    let (node, _peer) = node_and_peer();
    let state = node_state();
    apply(&node, &state);

    // Hand-made objects cats must leave alone, some of them looking just like cats' own.
    // ip -n NODE -6 route add fc00:99::/64 via fc00:10::2 dev n0 proto static
    node.ip(&[
        "-6",
        "route",
        "add",
        "fc00:99::/64",
        "via",
        "fc00:10::2",
        "dev",
        "n0",
        "proto",
        "static",
    ])
    .unwrap();
    // ip -n NODE route add 10.99.0.0/16 via 10.10.0.2 dev n0 proto static
    node.ip(&["route", "add", "10.99.0.0/16", "via", "10.10.0.2", "dev", "n0", "proto", "static"])
        .unwrap();
    // ip -n NODE -6 route add fc00:0:1:99::/128 encap seg6local action End dev lo proto static
    node.ip(&[
        "-6",
        "route",
        "add",
        "fc00:0:1:99::/128",
        "encap",
        "seg6local",
        "action",
        "End",
        "dev",
        "lo",
        "proto",
        "static",
    ])
    .unwrap();
    // ip -n NODE addr add 10.255.9.9/32 dev lo
    node.ip(&["addr", "add", "10.255.9.9/32", "dev", "lo"]).unwrap();
    let foreign6 = [
        "fc00:99::/64 via fc00:10::2 dev n0 proto static metric 1024 pref medium",
        "fc00:0:1:99:: encap seg6local action End dev lo proto static metric 1024 pref medium",
    ];
    let foreign4 = "10.99.0.0/16 via 10.10.0.2 dev n0 proto static";

    // Drop the End.DX4 SID and the lo IPv4 address, move the IPv6 route to another next hop.
    let mut changed = state.clone();
    changed.generation = 2;
    changed.sids.retain(|s| !matches!(s.behavior, SidBehavior::EndDx4 { .. }));
    changed.addresses.retain(|a| a.address != net("10.255.0.1/32"));
    changed.routes[0].via = "fc00:10::3".parse().unwrap();
    let changes = apply(&node, &changed);
    assert_eq!(
        changes,
        KernelChanges {
            added: strings(&["fc00:0:2::/48 via fc00:10::3 dev n0 proto 0xca"]),
            removed: strings(&[
                "fc00:0:2::/48 via fc00:10::2 dev n0 proto 0xca",
                "fc00:0:1:d4::/128 encap seg6local action End.DX4 nh4 10.10.0.2 dev n0 proto 0xca",
                "address 10.255.0.1/32 dev lo",
            ]),
            unchanged: 6,
        }
    );

    // ip -n NODE -6 route show
    let routes6 = ip(&node, &["-6", "route", "show"]);
    assert_line(&routes6, "fc00:0:2::/48 via fc00:10::3 dev n0 proto 202 metric 1024 pref medium");
    assert_no_line(
        &routes6,
        "fc00:0:2::/48 via fc00:10::2 dev n0 proto 202 metric 1024 pref medium",
    );
    assert!(!routes6.contains("End.DX4"), "{routes6}");
    assert_line(
        &routes6,
        "fc00:0:1:d6:: encap seg6local action End.DX6 nh6 fc00:10::2 dev n0 proto 202 metric 1024 pref medium",
    );
    for line in foreign6 {
        assert_line(&routes6, line);
    }
    // ip -n NODE route show
    let routes4 = ip(&node, &["route", "show"]);
    assert_line(&routes4, "10.20.0.0/16 via 10.30.0.2 dev n0 proto 202");
    assert_line(&routes4, foreign4);
    // ip -n NODE -4 addr show dev lo
    let addr4 = ip(&node, &["-4", "addr", "show", "dev", "lo"]);
    assert!(!addr4.contains("10.255.0.1/32"), "{addr4}");
    assert!(addr4.contains("inet 10.255.9.9/32 scope global lo"), "{addr4}");

    // Settled again.
    assert_eq!(
        apply(&node, &changed),
        KernelChanges { added: vec![], removed: vec![], unchanged: 7 }
    );

    // A missing interface is an error that names it, and changes nothing.
    let mut broken = changed.clone();
    broken.sids.push(sid("fc00:0:1:d8::", SidBehavior::End, "nosuch0"));
    let error = reconcile(&node, Some(&broken)).unwrap_err();
    assert!(format!("{error:#}").contains("\"nosuch0\""), "{error:#}");
    // ip -n NODE -6 route show (unchanged)
    assert_eq!(ip(&node, &["-6", "route", "show"]), routes6);

    // A kernel error names the route, the kernel's reason, and keeps the stale routes:
    // cats will not overwrite the hand-made route to fc00:99::/64.
    let mut clash = changed.clone();
    clash.routes.push(route("fc00:99::/64", "fc00:10::2", "n0"));
    clash.sids.clear();
    let error = reconcile(&node, Some(&clash)).unwrap_err();
    let partial = error.downcast_ref::<PartialApply>().expect("a PartialApply");
    assert_eq!(
        partial.failures,
        strings(&[
            "add route fc00:99::/64 via fc00:10::2 dev n0 proto 0xca: File exists (os error 17)"
        ])
    );
    assert_eq!(partial.kept_stale, 3);
    // ip -n NODE -6 route show (SIDs still there, foreign route untouched)
    assert_eq!(ip(&node, &["-6", "route", "show"]), routes6);

    // Flush removes exactly cats' objects.
    let mut flushed = flush(&node);
    flushed.removed.sort();
    assert_eq!(
        flushed,
        KernelChanges {
            added: vec![],
            removed: {
                let mut removed = strings(&[
                    "fc00:0:1:e::/128 encap seg6local action End dev lo proto 0xca",
                    "fc00:0:1:d6::/128 encap seg6local action End.DX6 nh6 fc00:10::2 dev n0 proto 0xca",
                    "fc00:0:1:d7::/128 encap seg6local action End.DT6 table 254 dev lo proto 0xca",
                    "fc00:0:2::/48 via fc00:10::3 dev n0 proto 0xca",
                    "10.20.0.0/16 via 10.30.0.2 dev n0 proto 0xca",
                    "address fc00:0:1::1/128 dev lo",
                    "address 10.30.0.1/24 dev n0",
                ]);
                removed.sort();
                removed
            },
            unchanged: 0,
        }
    );
    // ip -n NODE -6 route show proto 202 ; ip -n NODE route show proto 202
    assert_eq!(ip(&node, &["-6", "route", "show", "proto", "202"]), "");
    assert_eq!(ip(&node, &["route", "show", "proto", "202"]), "");
    // ip -n NODE -6 route show
    let routes6 = ip(&node, &["-6", "route", "show"]);
    for line in foreign6 {
        assert_line(&routes6, line);
    }
    // ip -n NODE route show
    assert_line(&ip(&node, &["route", "show"]), foreign4);
    // ip -n NODE addr show dev lo
    let addr = ip(&node, &["addr", "show", "dev", "lo"]);
    assert!(!addr.contains("fc00:0:1::1/128"), "{addr}");
    assert!(addr.contains("inet 10.255.9.9/32 scope global lo"), "{addr}");
    // ip -n NODE addr show dev n0: the hand-made link addresses stay, cats' is gone
    let addr = ip(&node, &["addr", "show", "dev", "n0"]);
    assert!(addr.contains("inet 10.10.0.1/24"), "{addr}");
    assert!(addr.contains("inet6 fc00:10::1/64"), "{addr}");
    assert!(!addr.contains("10.30.0.1"), "{addr}");

    // Nothing left to flush.
    assert_eq!(flush(&node), KernelChanges::default());
}

/// A (kernel seg6 headend) -- B (cats End.DX6) -- C (owns fc00:c::1 on lo). A's ping to
/// fc00:c::1 is encapsulated towards B's SID; B has no route to fc00:c::1 at all, only the
/// SID's next hop; the reply goes back over plain IPv6 routes.
#[test]
fn kernel_seg6_headend_reaches_a_destination_through_the_cats_end_dx6_sid() {
    let a = namespace("kA");
    let b = namespace("kB");
    let c = namespace("kC");
    a.veth_to("ab", &b, "ba").unwrap();
    b.veth_to("bc", &c, "cb").unwrap();

    a.ip(&["-6", "addr", "add", "fc00:ab::1/64", "dev", "ab", "nodad"]).unwrap();
    a.ip(&["-6", "route", "add", "fc00:b::/64", "via", "fc00:ab::2", "dev", "ab"]).unwrap();
    a.ip(&[
        "-6",
        "route",
        "add",
        "fc00:c::1/128",
        "encap",
        "seg6",
        "mode",
        "encap",
        "segs",
        "fc00:b::d6",
        "dev",
        "ab",
    ])
    .unwrap();

    c.ip(&["-6", "addr", "add", "fc00:bc::2/64", "dev", "cb", "nodad"]).unwrap();
    c.ip(&["-6", "addr", "add", "fc00:c::1/128", "dev", "lo"]).unwrap();
    c.ip(&["-6", "route", "add", "fc00:ab::/64", "via", "fc00:bc::1", "dev", "cb"]).unwrap();

    let state = NodeState {
        node: "b".into(),
        generation: 1,
        addresses: vec![
            address("lo", "fc00:b::1/128"),
            address("ba", "fc00:ab::2/64"),
            address("bc", "fc00:bc::1/64"),
        ],
        routes: vec![],
        sids: vec![sid("fc00:b::d6", SidBehavior::EndDx6 { nexthop: v6("fc00:bc::2") }, "bc")],
        headend: None,
        endpoint: None,
    };
    let changes = apply(&b, &state);
    assert_eq!(changes.added.len(), 4, "{changes:?}");

    // ip -n B -6 route show
    let routes = ip(&b, &["-6", "route", "show"]);
    assert_line(
        &routes,
        "fc00:b::d6 encap seg6local action End.DX6 nh6 fc00:bc::2 dev bc proto 202 metric 1024 pref medium",
    );
    // ip -n B -6 route get fc00:c::1: B cannot reach C's address by plain routing
    assert!(b.ip(&["-6", "route", "get", "fc00:c::1"]).is_err());

    // ip netns exec A ping -6 -c 3 -i 0.2 -W 2 fc00:c::1
    let ping = a.run("ping", &["-6", "-c", "3", "-i", "0.2", "-W", "2", "fc00:c::1"]);
    assert!(ping.is_ok(), "ping through the End.DX6 SID failed: {ping:?}");

    // Without the SID the same ping gets nowhere.
    flush(&b);
    // ip -n B -6 route show proto 202
    assert_eq!(ip(&b, &["-6", "route", "show", "proto", "202"]), "");
    // ip netns exec A ping -6 -c 2 -i 0.2 -W 1 fc00:c::1
    let out = a.exec("ping", &["-6", "-c", "2", "-i", "0.2", "-W", "1", "fc00:c::1"]).unwrap();
    assert!(!out.status.success(), "ping got through without the SID");

    // And back.
    apply(&b, &state);
    let ping = a.run("ping", &["-6", "-c", "3", "-i", "0.2", "-W", "2", "fc00:c::1"]);
    assert!(ping.is_ok(), "ping after re-applying failed: {ping:?}");
}

/// The sysctls go to the namespace the connection was opened in, even when `apply` runs on a
/// thread of another namespace (here: a multi-thread runtime whose threads live in `other`).
#[test]
fn sysctls_follow_the_connection_not_the_polling_thread() {
    let home = namespace("kHom");
    let other = namespace("kOth");
    let state = NodeState {
        node: "h".into(),
        generation: 1,
        addresses: vec![address("lo", "fc00:0:7::1/128")],
        ..NodeState::default()
    };
    let home_path = home.path();
    let changes = run_in(&other.path(), move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let handle = runtime.handle().clone();
        let kernel = run_in(&home_path, move || {
            let _runtime = handle.enter();
            Kernel::connect()
        })?;
        runtime.block_on(kernel.apply(&state))
    })
    .unwrap();
    assert_eq!(changes.added, strings(&["address fc00:0:7::1/128 dev lo"]));

    let keys = [
        "net.ipv6.conf.all.seg6_enabled",
        "net.ipv6.conf.lo.seg6_enabled",
        "net.ipv6.conf.all.forwarding",
    ];
    // ip netns exec HOME sysctl -n net.ipv6.conf.all.seg6_enabled net.ipv6.conf.lo.seg6_enabled net.ipv6.conf.all.forwarding
    let sysctls = home.run("sysctl", &[&["-n"][..], &keys[..]].concat()).unwrap();
    assert_eq!(lines(&sysctls), strings(&["1", "1", "1"]));
    // ip netns exec OTHER sysctl -n (same keys): untouched
    let sysctls = other.run("sysctl", &[&["-n"][..], &keys[..]].concat()).unwrap();
    assert_eq!(lines(&sysctls), strings(&["0", "0", "0"]));
    // ip -n HOME -6 addr show dev lo
    assert!(ip(&home, &["-6", "addr", "show", "dev", "lo"]).contains("inet6 fc00:0:7::1/128"));
    // ip -n OTHER -6 addr show dev lo
    assert!(!ip(&other, &["-6", "addr", "show", "dev", "lo"]).contains("fc00:0:7::1/128"));
}
