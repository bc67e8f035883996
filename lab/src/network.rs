//! Builds the emulated network of an intent: one namespace per node, veth links with the
//! topology's one-way latency (through a delay relay), a client LAN behind each ingress and a
//! namespace per compute instance behind its egress node.
//!
//! Addresses the lab owns (cats' agents add the link and router addresses themselves):
//! - ingress node: its headend interface holds the first host of each node prefix
//!   (`fd00:10::1/64`, `198.18.10.1/24`); the client namespace behind it holds `::100`/`.100`.
//! - egress node: the veth to its instance (or bridge `lan`, with several) holds the first
//!   host of each prefix; each instance namespace holds the instance's addresses on `eth0` and
//!   every service address on `lo`.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use cats_controller::intent::{Instance, Intent, Node, Role};
use ipnetwork::IpNetwork;

use crate::{
    faults::Faults,
    instance::{BoundInstance, InstanceConfig},
    netns::Namespace,
    offload::{disable_tx_checksum, enable_gro},
    relay::run_relay,
    scenario::LinkDelay,
};

/// The host part the lab gives the node on a LAN, and the client on the client LAN.
const NODE_HOST: u32 = 1;
const CLIENT_HOST: u32 = 100;

/// A running emulated network. Dropping it stops its threads and deletes every namespace.
pub struct LabNetwork {
    prefix: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    nodes: BTreeMap<String, Namespace>,
    /// Client LAN namespace behind each ingress node.
    clients: BTreeMap<String, Namespace>,
    /// One namespace per instance.
    instances: BTreeMap<String, Namespace>,
    relays: Vec<Namespace>,
    /// The real one-way delay of each link (by position), `None` without a relay.
    link_delays: Vec<Option<Duration>>,
    /// The topology's links as built, by position.
    pub(crate) links: Vec<LabLink>,
    /// Emulated instances started with [`LabNetwork::add_instance`], by name.
    running: BTreeMap<String, LabInstance>,
    /// What the fault injection took down (see `faults.rs`).
    pub(crate) faults: Faults,
}

/// One topology link as the lab built it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabLink {
    pub a: String,
    /// The link's interface in node `a`'s namespace.
    pub a_interface: String,
    pub b: String,
    pub b_interface: String,
    /// The delay relay's namespace (interfaces `ra` towards `a`, `rb` towards `b`), if any.
    pub relay: Option<String>,
}

impl LabLink {
    /// `a-b`, as errors name the link.
    pub fn name(&self) -> String {
        format!("{}-{}", self.a, self.b)
    }

    /// Whether this is the link between `x` and `y`, in either order.
    pub fn joins(&self, x: &str, y: &str) -> bool {
        (self.a == x && self.b == y) || (self.a == y && self.b == x)
    }
}

/// An emulated instance with its own stop flag, so it can die and come back alone.
struct LabInstance {
    cfg: InstanceConfig,
    stop: Arc<AtomicBool>,
    /// `None` while stopped.
    thread: Option<JoinHandle<Result<()>>>,
}

/// The `n`th host address of `net`.
pub fn host(net: &IpNetwork, n: u32) -> IpNetwork {
    let addr: IpAddr = match net {
        IpNetwork::V4(v4) => std::net::Ipv4Addr::from(u32::from(v4.network()) + n).into(),
        IpNetwork::V6(v6) => {
            std::net::Ipv6Addr::from(u128::from(v6.network()) + u128::from(n)).into()
        }
    };
    IpNetwork::new(addr, net.prefix()).expect("same prefix length")
}

impl LabNetwork {
    /// Builds the network. `prefix` (at most 8 characters) names every namespace, so labs and
    /// tests can run side by side. With `delays` false, links have no delay element (faster
    /// tests that do not measure latency).
    pub fn build(intent: &Intent, prefix: &str, delays: bool) -> Result<Self> {
        Self::build_with(intent, prefix, delays, &[])
    }

    /// Like [`LabNetwork::build`], with some links' real delay differing from the declared
    /// `latencyMs` (the controller only learns it by measuring).
    pub fn build_with(
        intent: &Intent,
        prefix: &str,
        delays: bool,
        link_delays: &[LinkDelay],
    ) -> Result<Self> {
        let real = real_delays(intent, delays, link_delays)?;
        let mut lab = LabNetwork {
            prefix: prefix.to_string(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            nodes: BTreeMap::new(),
            clients: BTreeMap::new(),
            instances: BTreeMap::new(),
            relays: Vec::new(),
            link_delays: real.clone(),
            links: Vec::new(),
            running: BTreeMap::new(),
            faults: Faults::default(),
        };
        for node in &intent.topology.nodes {
            let ns = Namespace::create(&format!("{prefix}{}", node.name))?;
            router_sysctls(&ns)?;
            lab.nodes.insert(node.name.clone(), ns);
        }
        for (k, link) in intent.topology.links.iter().enumerate() {
            let relay = lab
                .link(k + 1, &link.a, &link.a_interface, &link.b, &link.b_interface, real[k])
                .with_context(|| format!("building link {}-{}", link.a, link.b))?;
            lab.links.push(LabLink {
                a: link.a.clone(),
                a_interface: link.a_interface.clone(),
                b: link.b.clone(),
                b_interface: link.b_interface.clone(),
                relay,
            });
        }
        for node in &intent.topology.nodes {
            if node.has_role(Role::Ingress) {
                lab.client_lan(node)?;
            }
            let hosted: Vec<(&Instance, Vec<IpAddr>)> = intent
                .services
                .iter()
                .flat_map(|s| s.instances.iter().map(move |i| (i, s.addresses.clone())))
                .filter(|(i, _)| i.node == node.name)
                .collect();
            if !hosted.is_empty() {
                lab.instance_lan(node, &hosted)?;
            }
        }
        Ok(lab)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn node(&self, name: &str) -> &Namespace {
        &self.nodes[name]
    }

    /// Node `name`'s namespace, `None` if the topology has no such node.
    pub fn try_node(&self, name: &str) -> Option<&Namespace> {
        self.nodes.get(name)
    }

    /// The client LAN namespace behind ingress node `node`.
    pub fn clients(&self, node: &str) -> &Namespace {
        &self.clients[node]
    }

    /// The namespace of instance `name`.
    pub fn instance(&self, name: &str) -> &Namespace {
        &self.instances[name]
    }

    /// The real one-way delay of link `k` (0-based position), `None` without a delay relay.
    pub fn link_delay(&self, k: usize) -> Option<Duration> {
        self.link_delays.get(k).copied().flatten()
    }

    /// The topology's links as built, in the intent's order.
    pub fn links(&self) -> &[LabLink] {
        &self.links
    }

    /// The lab's stop flag. Setting it stops the relays, the threads of [`Self::spawn_in`] and
    /// every instance.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Starts an emulated instance in the namespace of instance `cfg.name` and returns once
    /// its sockets are bound. It runs until [`Self::stop_instance`] or the lab stops; the
    /// configuration is kept for [`Self::start_instance`].
    pub fn add_instance(&mut self, cfg: InstanceConfig) -> Result<()> {
        let name = cfg.name.clone();
        if self.running.get(&name).is_some_and(|i| i.thread.is_some()) {
            bail!("instance {name} is already running");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = self.spawn_instance(&cfg, stop.clone())?;
        self.running.insert(name, LabInstance { cfg, stop, thread: Some(thread) });
        Ok(())
    }

    /// Stops instance `name` as if its process died: on return its sockets are closed, so
    /// the kernel answers datagrams to the service with ICMP port unreachable. Fails if the
    /// instance is unknown or stopped already, or reports how it ended if it had failed.
    pub fn stop_instance(&mut self, name: &str) -> Result<()> {
        let inst = self
            .running
            .get_mut(name)
            .with_context(|| format!("instance {name}: not started by the lab"))?;
        let thread = inst.thread.take().with_context(|| format!("instance {name}: not running"))?;
        inst.stop.store(true, Ordering::Relaxed);
        match thread.join() {
            Ok(r) => r.with_context(|| format!("instance {name} had stopped with an error")),
            Err(_) => bail!("instance {name} panicked"),
        }
    }

    /// Starts a stopped instance again with its configuration (same addresses and ports),
    /// returning once its sockets are bound. Its queue and counters start empty.
    pub fn start_instance(&mut self, name: &str) -> Result<()> {
        let inst = self
            .running
            .get(name)
            .with_context(|| format!("instance {name}: not started by the lab"))?;
        if inst.thread.is_some() {
            bail!("instance {name} is already running");
        }
        let cfg = inst.cfg.clone();
        self.add_instance(cfg)
    }

    /// Whether instance `name` was started by the lab and is not stopped (it may still have
    /// failed on its own).
    pub fn instance_running(&self, name: &str) -> bool {
        self.running.get(name).is_some_and(|i| i.thread.is_some())
    }

    /// Binds the instance's sockets inside its namespace, then serves there until its own
    /// flag or the lab's is set.
    fn spawn_instance(
        &self,
        cfg: &InstanceConfig,
        own: Arc<AtomicBool>,
    ) -> Result<JoinHandle<Result<()>>> {
        let ns = self
            .instances
            .get(&cfg.name)
            .with_context(|| format!("instance {}: no namespace in this lab", cfg.name))?
            .path();
        let lab = self.stop.clone();
        let (bound_tx, bound_rx) = mpsc::sync_channel::<Result<()>>(1);
        let cfg = cfg.clone();
        let thread = cats_controller::netns::spawn_in(&ns, move || {
            let instance = match BoundInstance::bind(cfg) {
                Ok(i) => i,
                Err(e) => {
                    // Reported to the starter, which fails with it.
                    let _ = bound_tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = bound_tx.send(Ok(()));
            instance.serve(|| lab.load(Ordering::Relaxed) || own.load(Ordering::Relaxed))
        })?;
        match bound_rx.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => bail!("instance thread ended before binding its sockets"),
            },
        }
    }

    /// Runs `f` on a thread inside the namespace at `netns` until the lab stops.
    pub fn spawn_in(
        &mut self,
        netns: &Path,
        what: &str,
        f: impl FnOnce(Arc<AtomicBool>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let stop = self.stop.clone();
        let what = what.to_string();
        let handle = cats_controller::netns::spawn_in(netns, move || {
            if let Err(e) = f(stop) {
                eprintln!("lab: {what} stopped: {e:#}");
            }
            Ok(())
        })?;
        self.threads.push(std::thread::spawn(move || {
            let _ = handle.join();
        }));
        Ok(())
    }

    fn link(
        &mut self,
        k: usize,
        a: &str,
        a_if: &str,
        b: &str,
        b_if: &str,
        delay: Option<Duration>,
    ) -> Result<Option<String>> {
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        // The relay namespace's name, if there is one.
        let relay_name = match delay {
            None => {
                na.veth_to(a_if, nb, b_if)?;
                // XDP_REDIRECT into a veth needs NAPI on the receiving end: GRO turns it on.
                in_ns(na, a_if, enable_gro)?;
                in_ns(nb, b_if, enable_gro)?;
                None
            }
            Some(d) => {
                let relay = Namespace::create(&format!("{}r{k}", self.prefix))?;
                relay.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
                na.veth_to(a_if, &relay, "ra")?;
                nb.veth_to(b_if, &relay, "rb")?;
                in_ns(&relay, "ra", enable_gro)?;
                in_ns(&relay, "rb", enable_gro)?;
                in_ns(na, a_if, enable_gro)?;
                in_ns(nb, b_if, enable_gro)?;
                let stop = self.stop.clone();
                let handle = cats_controller::netns::spawn_in(&relay.path(), move || {
                    run_relay("ra", "rb", d, d, stop)
                })?;
                self.threads.push(std::thread::spawn(move || {
                    if let Ok(Err(e)) = handle.join() {
                        eprintln!("lab: delay relay stopped: {e:#}");
                    }
                }));
                let name = relay.name().to_string();
                self.relays.push(relay);
                Some(name)
            }
        };
        Ok(relay_name)
    }

    /// One client namespace behind the ingress node's (first) headend interface.
    fn client_lan(&mut self, node: &Node) -> Result<()> {
        let Some(iface) = node.headend_interfaces.first() else {
            bail!("ingress node {} has no headend interface", node.name)
        };
        let ns = Namespace::create(&format!("{}c-{}", self.prefix, node.name))?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        let router = &self.nodes[&node.name];
        router.veth_to(iface, &ns, "eth0")?;
        in_ns(&ns, "eth0", disable_tx_checksum)?;
        for prefix in &node.prefixes {
            router.ip(&["addr", "add", &host(prefix, NODE_HOST).to_string(), "dev", iface])?;
            ns.ip(&["addr", "add", &host(prefix, CLIENT_HOST).to_string(), "dev", "eth0"])?;
            default_route(&ns, prefix)?;
        }
        self.clients.insert(node.name.clone(), ns);
        Ok(())
    }

    /// A namespace per instance behind the egress node. One instance gets a point-to-point
    /// veth whose node end holds the LAN addresses: XDP can redirect into a veth, not into a
    /// bridge. Several instances share a bridge `lan`, which XDP hands to the kernel.
    fn instance_lan(&mut self, node: &Node, hosted: &[(&Instance, Vec<IpAddr>)]) -> Result<()> {
        let router = &self.nodes[&node.name];
        let shared = hosted.len() > 1;
        if shared {
            router.ip(&["link", "add", "lan", "type", "bridge"])?;
            router.ip(&["link", "set", "lan", "up"])?;
        }
        let lan_device = if shared { "lan" } else { "i0" };
        for (n, (inst, service_addresses)) in hosted.iter().enumerate() {
            let ns = Namespace::create(&format!("{}i-{}", self.prefix, inst.name))?;
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            let port = format!("i{n}");
            router.veth_to(&port, &ns, "eth0")?;
            in_ns(&ns, "eth0", disable_tx_checksum)?;
            in_ns(&ns, "eth0", enable_gro)?;
            in_ns(router, &port, enable_gro)?;
            if shared {
                router.ip(&["link", "set", &port, "master", "lan"])?;
            }
            let addrs = [inst.address.map(IpAddr::V6), inst.address4.map(IpAddr::V4)];
            for addr in addrs.into_iter().flatten() {
                let prefix =
                    node.prefixes.iter().find(|p| p.contains(addr)).with_context(|| {
                        format!("instance {} address {addr} outside node prefixes", inst.name)
                    })?;
                ns.ip(&["addr", "add", &format!("{addr}/{}", prefix.prefix()), "dev", "eth0"])?;
                default_route(&ns, prefix)?;
            }
            // The instance owns the service's anycast addresses.
            for sa in service_addresses {
                let len = if sa.is_ipv4() { 32 } else { 128 };
                ns.ip(&["addr", "add", &format!("{sa}/{len}"), "dev", "lo"])?;
            }
            self.instances.insert(inst.name.clone(), ns);
        }
        for prefix in &node.prefixes {
            router.ip(&["addr", "add", &host(prefix, NODE_HOST).to_string(), "dev", lan_device])?;
        }
        Ok(())
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (name, inst) in &mut self.running {
            if let Some(Ok(Err(e))) = inst.thread.take().map(|t| t.join()) {
                eprintln!("lab: instance {name} stopped: {e:#}");
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Namespaces (and every veth and bridge in them) go with their guards.
    }
}

/// Each link's delay: its declared latency, or its override; none at all without relays.
fn real_delays(
    intent: &Intent,
    delays: bool,
    overrides: &[LinkDelay],
) -> Result<Vec<Option<Duration>>> {
    let links = &intent.topology.links;
    let mut out: Vec<Option<Duration>> =
        links.iter().map(|l| delays.then(|| Duration::from_secs_f64(l.latency_ms / 1e3))).collect();
    for o in overrides {
        if !delays {
            bail!("linkDelays need the delay relays");
        }
        if !(o.one_way_ms.is_finite() && (0.0..=10_000.0).contains(&o.one_way_ms)) {
            bail!("linkDelays {}-{}: oneWayMs must be within 0..=10000", o.a, o.b);
        }
        let k = links
            .iter()
            .position(|l| (l.a == o.a && l.b == o.b) || (l.a == o.b && l.b == o.a))
            .with_context(|| format!("linkDelays: no link {}-{} in the topology", o.a, o.b))?;
        out[k] = Some(Duration::from_secs_f64(o.one_way_ms / 1e3));
    }
    Ok(out)
}

fn router_sysctls(ns: &Namespace) -> Result<()> {
    for (k, v) in [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        ns.sysctl(k, v)?;
    }
    Ok(())
}

fn default_route(ns: &Namespace, prefix: &IpNetwork) -> Result<()> {
    let gw = host(prefix, NODE_HOST).ip().to_string();
    let family = if prefix.is_ipv4() { "-4" } else { "-6" };
    ns.ip(&[family, "route", "replace", "default", "via", &gw])?;
    Ok(())
}

fn in_ns(ns: &Namespace, ifname: &str, f: fn(&str) -> Result<()>) -> Result<()> {
    let ifname = ifname.to_string();
    cats_controller::netns::run_in(&ns.path(), move || f(&ifname))
}
