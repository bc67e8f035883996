//! The node agent's kernel reconciler: brings the addresses, underlay routes and local SIDs of one
//! network namespace to a [`NodeState`].
//!
//! Ownership is tracked in the kernel itself: every route cats installs carries the routing
//! protocol [`RTPROT_CATS`] (and every address the address protocol `IFA_PROTO` with the same
//! value), so the reconciler only ever changes or deletes objects it made, and needs no local
//! bookkeeping to survive a restart.
//!
//! One reconcile ([`Kernel::apply`]) runs in this order:
//!
//! 1. resolve every interface named in the state (nothing changes if one is missing);
//! 2. sysctls: IPv4/IPv6 forwarding, `seg6_enabled` on `all`, `default` and every interface;
//! 3. add missing addresses;
//! 4. add or replace underlay routes, then SID routes (`/128` seg6local routes);
//! 5. delete stale cats routes, then stale cats addresses (make before break).
//!
//! Objects that are already exactly right are left alone. A kernel error on one object does not
//! stop the others from being tried; the reconcile then fails with a [`PartialApply`] that names
//! every failed object with the kernel's error and what did change. Stale objects are kept when
//! something failed, so a half-applied state never loses the old routes it was replacing.

use std::{
    collections::HashMap,
    fmt,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage, AddressProtocol},
    link::LinkAttribute,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteLwTunnelEncap,
        RouteMessage, RouteProtocol, RouteSeg6LocalTunnel, RouteType, RouteVia, Seg6LocalAction,
    },
};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::state::{NodeState, SidBehavior};

/// Routing protocol number (`RTPROT_*`, `IFA_PROTO`) of everything cats installs. `ip route`
/// prints it as `proto 202` unless `/etc/iproute2/rt_protos` names it.
pub const RTPROT_CATS: u8 = 0xCA;

/// The main routing table, where cats puts its routes.
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// What one reconcile changed, as `ip route`-like lines (addresses as `address ADDR dev IF`).
/// A replaced route appears in both lists: its new form under `added`, its old under `removed`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Desired addresses and routes that were already exactly right.
    pub unchanged: usize,
}

impl KernelChanges {
    /// Nothing was added or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// A reconcile that did not get through: which objects failed (with the kernel's error), and
/// what changed anyway. [`Kernel::apply`] and [`Kernel::flush`] return it inside their
/// `anyhow::Error`; `err.downcast_ref::<PartialApply>()` gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialApply {
    /// One line per failed object: `add route ...: <kernel error>`.
    pub failures: Vec<String>,
    /// What was changed before and besides the failures.
    pub changes: KernelChanges,
    /// Stale objects left in place because something failed.
    pub kept_stale: usize,
}

impl fmt::Display for PartialApply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kernel change(s) failed: {}", self.failures.len(), self.failures.join("; "))?;
        write!(
            f,
            " ({} added, {} removed, {} unchanged",
            self.changes.added.len(),
            self.changes.removed.len(),
            self.changes.unchanged
        )?;
        if self.kept_stale > 0 {
            write!(f, ", {} stale object(s) kept until the next reconcile", self.kept_stale)?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for PartialApply {}

/// A netlink connection to the kernel of one network namespace.
pub struct Kernel {
    handle: Handle,
    /// The namespace the netlink socket was opened in; sysctls are written there too.
    netns: File,
}

impl Kernel {
    /// Opens a netlink connection in the *calling thread's* network namespace. Must be called
    /// inside a tokio runtime context; spawns the connection task on it.
    pub fn connect() -> Result<Kernel> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("Kernel::connect must be called inside a tokio runtime")?;
        let netns = File::open(THREAD_NETNS).with_context(|| format!("opening {THREAD_NETNS}"))?;
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a rtnetlink socket")?;
        runtime.spawn(connection);
        Ok(Kernel { handle, netns })
    }

    /// Brings the kernel of this namespace to `state` (see the module documentation for the
    /// order). Returns what changed; on a kernel error, a [`PartialApply`] inside the error.
    pub async fn apply(&self, state: &NodeState) -> Result<KernelChanges> {
        let links = self.links().await?;
        let desired = Desired::resolve(state, &links)?;

        self.enable_forwarding_and_srv6()?;

        let addresses = self.cats_addresses_and_others().await?;
        let routes = self.cats_routes().await?;

        let mut run = Run::default();

        // Addresses first: IPv4 gateways must be on a connected subnet before routes use them.
        let mut kept_addresses = vec![false; addresses.len()];
        for want in &desired.addresses {
            if let Some(i) = addresses.iter().position(|a| a.key == *want) {
                kept_addresses[i] = true;
                run.changes.unchanged += 1;
                continue;
            }
            // One of our own addresses with the same IP and another prefix length: the kernel
            // refuses a second IPv6 address with the same IP, so it goes first.
            let same_ip = (0..addresses.len()).find(|&i| {
                let a = &addresses[i];
                a.cats
                    && !kept_addresses[i]
                    && a.key.index == want.index
                    && a.key.address.ip() == want.address.ip()
            });
            if let Some(i) = same_ip {
                kept_addresses[i] = true;
                let old = &addresses[i];
                let line = old.key.line(&links);
                match self.handle.address().del(address_del_message(&old.message)).execute().await {
                    Ok(()) => run.changes.removed.push(line),
                    Err(e) => {
                        run.fail(format!("delete {line}"), e);
                        continue;
                    }
                }
            }
            let line = want.line(&links);
            let mut request =
                self.handle.address().add(want.index, want.address.ip(), want.address.prefix());
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Protocol(AddressProtocol::from(RTPROT_CATS)));
            match request.execute().await {
                Ok(()) => run.changes.added.push(line),
                Err(e) => run.fail(format!("add {line}"), e),
            }
        }

        // Underlay routes, then SIDs (desired.routes keeps that order).
        let mut handled_routes = vec![false; routes.len()];
        for want in &desired.routes {
            let in_slot: Vec<usize> =
                (0..routes.len()).filter(|&i| routes[i].spec.slot == want.slot).collect();
            if let Some(&i) = in_slot.iter().find(|&&i| routes[i].spec == *want) {
                handled_routes[i] = true;
                run.changes.unchanged += 1;
                continue;
            }
            let line = want.line(&links);
            // Replace our own route in the same slot in place (no window without a route);
            // otherwise create, and fail rather than overwrite a route cats does not own.
            let replaced = in_slot.iter().copied().find(|&i| !handled_routes[i]);
            let mut request = self.handle.route().add(want.message());
            if replaced.is_some() {
                request = request.replace();
            }
            match request.execute().await {
                Ok(()) => {
                    run.changes.added.push(line);
                    if let Some(i) = replaced {
                        handled_routes[i] = true;
                        run.changes.removed.push(routes[i].spec.line(&links));
                    }
                }
                Err(e) => run.fail(format!("add route {line}"), e),
            }
        }

        // Stale objects: SIDs before underlay routes, routes before addresses.
        let mut stale_routes: Vec<&Installed> =
            (0..routes.len()).filter(|&i| !handled_routes[i]).map(|i| &routes[i]).collect();
        stale_routes.sort_by_key(|r| !r.spec.is_sid());
        let stale_addresses: Vec<&InstalledAddress> = (0..addresses.len())
            .filter(|&i| addresses[i].cats && !kept_addresses[i])
            .map(|i| &addresses[i])
            .collect();
        if !run.failures.is_empty() {
            return Err(run.finish(stale_routes.len() + stale_addresses.len()));
        }
        self.delete(&stale_routes, &stale_addresses, &links, &mut run).await;
        if !run.failures.is_empty() {
            return Err(run.finish(0));
        }
        Ok(run.changes)
    }

    /// Removes every route and address with protocol [`RTPROT_CATS`] (`catsd --cleanup`).
    /// Leaves sysctls as they are.
    pub async fn flush(&self) -> Result<KernelChanges> {
        let links = self.links().await?;
        let addresses = self.cats_addresses_and_others().await?;
        let routes = self.cats_routes().await?;
        let mut stale_routes: Vec<&Installed> = routes.iter().collect();
        stale_routes.sort_by_key(|r| !r.spec.is_sid());
        let stale_addresses: Vec<&InstalledAddress> = addresses.iter().filter(|a| a.cats).collect();
        let mut run = Run::default();
        self.delete(&stale_routes, &stale_addresses, &links, &mut run).await;
        if !run.failures.is_empty() {
            return Err(run.finish(0));
        }
        Ok(run.changes)
    }

    async fn delete(
        &self,
        routes: &[&Installed],
        addresses: &[&InstalledAddress],
        links: &Links,
        run: &mut Run,
    ) {
        // An object that vanished since the dump (ESRCH, EADDRNOTAVAIL) is as good as deleted.
        for route in routes {
            let line = route.spec.line(links);
            match self.handle.route().del(route_del_message(&route.message)).execute().await {
                Ok(()) => run.changes.removed.push(line),
                Err(e) if errno(&e) == Some(libc::ESRCH) => {}
                Err(e) => run.fail(format!("delete route {line}"), e),
            }
        }
        for address in addresses {
            let line = address.key.line(links);
            match self.handle.address().del(address_del_message(&address.message)).execute().await {
                Ok(()) => run.changes.removed.push(line),
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => run.fail(format!("delete {line}"), e),
            }
        }
    }

    async fn links(&self) -> Result<Links> {
        let messages = dump(self.handle.link().get().execute(), "interfaces").await?;
        let mut links = Links::default();
        for message in messages {
            for attribute in &message.attributes {
                if let LinkAttribute::IfName(name) = attribute {
                    links.by_name.insert(name.clone(), message.header.index);
                    links.by_index.insert(message.header.index, name.clone());
                }
            }
        }
        Ok(links)
    }

    /// The ifindexes of the bridges in this namespace: XDP cannot redirect into them.
    pub async fn bridges(&self) -> Result<Vec<u32>> {
        use netlink_packet_route::link::{InfoKind, LinkInfo};
        let messages = dump(self.handle.link().get().execute(), "interfaces").await?;
        Ok(messages
            .iter()
            .filter(|m| {
                m.attributes.iter().any(|a| {
                    matches!(a, LinkAttribute::LinkInfo(infos)
                        if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
                })
            })
            .map(|m| m.header.index)
            .collect())
    }

    /// Keeps the neighbour entries of `nexthops` resolved ("managed" entries, Linux 5.16+):
    /// the XDP endpoint can only forward to a next hop whose MAC the FIB already knows, and
    /// for an on-link End.DX next hop the kernel's own slow path resolves the inner
    /// destination instead, so without this the fast path would never start. Each next hop's
    /// interface is the one whose connected prefix holds it; next hops with none are skipped.
    pub async fn manage_neighbours(&self, nexthops: &[IpAddr]) -> Result<usize> {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage,
        };
        let addresses = self.cats_addresses_and_others().await?;
        // Entries that are managed already are left alone: replacing one restarts its
        // resolution and holds packets back meanwhile.
        let existing: Vec<NeighbourMessage> =
            dump(self.handle.neighbours().get().execute(), "neighbours").await?;
        let already_managed = |ip: &IpAddr| {
            existing.iter().any(|n| {
                let mut dst = None;
                let mut managed = false;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            dst = Some(IpAddr::V4(*v4))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                            dst = Some(IpAddr::V6(*v6))
                        }
                        NeighbourAttribute::ExtFlags(f) => {
                            managed = f.contains(NeighbourExtFlags::Managed)
                        }
                        _ => {}
                    }
                }
                managed && dst == Some(*ip)
            })
        };
        let mut managed = 0;
        for nexthop in nexthops.iter().filter(|n| !already_managed(n)) {
            // A connected prefix, not a host address (those on `lo`, say).
            let host_len = if nexthop.is_ipv4() { 32 } else { 128 };
            let Some(on_link) = addresses
                .iter()
                .find(|a| a.key.address.prefix() < host_len && a.key.address.contains(*nexthop))
            else {
                continue;
            };
            let mut request = self
                .handle
                .neighbours()
                .add(on_link.key.index, *nexthop)
                .state(netlink_packet_route::neighbour::NeighbourState::None)
                .replace();
            request.message_mut().attributes.push(
                netlink_packet_route::neighbour::NeighbourAttribute::ExtFlags(
                    netlink_packet_route::neighbour::NeighbourExtFlags::Managed,
                ),
            );
            request
                .execute()
                .await
                .map_err(|e| anyhow!("managed neighbour {nexthop}: {}", kernel_error(&e)))?;
            managed += 1;
        }
        Ok(managed)
    }

    /// Every address of the namespace (desired addresses may exist without our tag); `cats`
    /// marks ours.
    async fn cats_addresses_and_others(&self) -> Result<Vec<InstalledAddress>> {
        let messages: Vec<AddressMessage> =
            dump(self.handle.address().get().execute(), "addresses").await?;
        Ok(messages.into_iter().filter_map(InstalledAddress::parse).collect())
    }

    /// Every route with protocol [`RTPROT_CATS`], IPv4 and IPv6, in every table.
    async fn cats_routes(&self) -> Result<Vec<Installed>> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let messages: Vec<RouteMessage> =
                dump(self.handle.route().get(query).execute(), &format!("{family:?} routes"))
                    .await?;
            found.extend(
                messages
                    .into_iter()
                    .filter(|m| u8::from(m.header.protocol) == RTPROT_CATS)
                    .filter_map(Installed::parse),
            );
        }
        Ok(found)
    }

    /// IPv4/IPv6 forwarding and SRv6 on, in the connection's namespace. `/proc/sys/net` shows
    /// the namespace of the thread that looks, so when the runtime moved this future to a
    /// thread elsewhere, a short-lived helper thread enters the namespace to write.
    fn enable_forwarding_and_srv6(&self) -> Result<()> {
        let here =
            std::fs::metadata(THREAD_NETNS).with_context(|| format!("reading {THREAD_NETNS}"))?;
        let ours = self.netns.metadata().context("reading the connection's namespace")?;
        let changed = if (here.dev(), here.ino()) == (ours.dev(), ours.ino()) {
            write_srv6_sysctls()?
        } else {
            let path = PathBuf::from(format!("/proc/self/fd/{}", self.netns.as_raw_fd()));
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        crate::netns::enter(&path)?;
                        write_srv6_sysctls()
                    })
                    .join()
                    .map_err(|_| anyhow!("sysctl thread panicked"))?
            })?
        };
        for line in changed {
            tracing::debug!("sysctl {line}");
        }
        Ok(())
    }
}

const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Sets what a SRv6 node needs; returns the `key=value` lines it changed.
fn write_srv6_sysctls() -> Result<Vec<String>> {
    let mut keys =
        vec!["net/ipv4/ip_forward".to_string(), "net/ipv6/conf/all/forwarding".to_string()];
    let conf = Path::new("/proc/sys/net/ipv6/conf");
    let mut interfaces: Vec<String> = std::fs::read_dir(conf)
        .with_context(|| format!("listing {} (is IPv6 enabled?)", conf.display()))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", conf.display()))?;
    // `all` first: the kernel only runs SRv6 when both `all` and the interface say so.
    interfaces.sort_by_key(|name| (name != "all", name != "default", name.clone()));
    keys.extend(interfaces.iter().map(|name| format!("net/ipv6/conf/{name}/seg6_enabled")));

    let mut changed = Vec::new();
    for key in keys {
        let path = Path::new("/proc/sys").join(&key);
        let current = match std::fs::read_to_string(&path) {
            Ok(value) => value,
            // An interface that went away between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && key.contains("/conf/") => {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if current.trim() == "1" {
            continue;
        }
        std::fs::write(&path, "1").with_context(|| format!("writing 1 to {}", path.display()))?;
        changed.push(format!("{}=1", key.replace('/', ".")));
    }
    Ok(changed)
}

/// Interfaces of the namespace.
#[derive(Default)]
struct Links {
    by_name: HashMap<String, u32>,
    by_index: HashMap<u32, String>,
}

impl Links {
    fn index(&self, name: &str, what: impl FnOnce() -> String) -> Result<u32> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("interface {name:?} does not exist (needed by {})", what()))
    }

    fn name(&self, index: u32) -> String {
        self.by_index.get(&index).cloned().unwrap_or_else(|| format!("if{index}"))
    }
}

/// Collects results while a reconcile goes on.
#[derive(Default)]
struct Run {
    changes: KernelChanges,
    failures: Vec<String>,
}

impl Run {
    fn fail(&mut self, what: String, error: rtnetlink::Error) {
        let line = format!("{what}: {}", kernel_error(&error));
        tracing::warn!("{line}");
        self.failures.push(line);
    }

    fn finish(self, kept_stale: usize) -> anyhow::Error {
        PartialApply { failures: self.failures, changes: self.changes, kept_stale }.into()
    }
}

/// The positive errno of a kernel error.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io().raw_os_error(),
        _ => None,
    }
}

/// The kernel's error as `strerror` says it, e.g. `File exists (os error 17)`.
fn kernel_error(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
        other => other.to_string(),
    }
}

/// The state, with interfaces resolved and prefixes normalised.
struct Desired {
    addresses: Vec<AddressKey>,
    /// Underlay routes first, then SIDs.
    routes: Vec<RouteSpec>,
}

impl Desired {
    fn resolve(state: &NodeState, links: &Links) -> Result<Desired> {
        let mut addresses = Vec::new();
        for a in &state.addresses {
            let index = links.index(&a.interface, || format!("address {}", a.address))?;
            let key = AddressKey { index, address: a.address };
            if !addresses.contains(&key) {
                addresses.push(key);
            }
        }

        let mut routes: Vec<RouteSpec> = Vec::new();
        for r in &state.routes {
            let what = || format!("route {} via {}", r.destination, r.via);
            let oif = links.index(&r.interface, what)?;
            if r.destination.is_ipv6() && r.via.is_ipv4() {
                bail!("{}: an IPv6 route cannot have an IPv4 next hop", what());
            }
            routes.push(RouteSpec {
                slot: Slot::main(normalise(r.destination)),
                oif: Some(oif),
                target: Target::Via(r.via),
            });
        }
        for s in &state.sids {
            let oif = links.index(&s.interface, || format!("SID {}", s.sid))?;
            routes.push(RouteSpec {
                slot: Slot::main(IpNetwork::V6(s.sid.into())),
                oif: Some(oif),
                target: Target::Seg6Local(s.behavior.clone()),
            });
        }

        // Exact duplicates collapse; two different routes for one destination cannot both be.
        let mut unique: Vec<RouteSpec> = Vec::with_capacity(routes.len());
        for route in routes {
            if let Some(other) = unique.iter().find(|u| u.slot == route.slot) {
                if *other != route {
                    bail!(
                        "the state asks for two routes to {}: `{}` and `{}`",
                        route.slot.destination,
                        other.line(links),
                        route.line(links)
                    );
                }
                continue;
            }
            unique.push(route);
        }
        Ok(Desired { addresses, routes: unique })
    }
}

/// `10.1.2.3/24` → `10.1.2.0/24`: the kernel keys routes by network address.
fn normalise(network: IpNetwork) -> IpNetwork {
    IpNetwork::new(network.network(), network.prefix()).expect("prefix length was valid already")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AddressKey {
    index: u32,
    address: IpNetwork,
}

impl AddressKey {
    fn line(&self, links: &Links) -> String {
        format!("address {} dev {}", self.address, links.name(self.index))
    }
}

struct InstalledAddress {
    key: AddressKey,
    /// Tagged with [`RTPROT_CATS`]: cats added it.
    cats: bool,
    message: AddressMessage,
}

impl InstalledAddress {
    fn parse(message: AddressMessage) -> Option<InstalledAddress> {
        let mut address = None;
        let mut local = None;
        let mut cats = false;
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Protocol(p) => cats = u8::from(*p) == RTPROT_CATS,
                _ => {}
            }
        }
        // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point links
        // (and the only one IPv6 sends otherwise).
        let ip = local.or(address)?;
        let address = IpNetwork::new(ip, message.header.prefix_len).ok()?;
        Some(InstalledAddress {
            key: AddressKey { index: message.header.index, address },
            cats,
            message,
        })
    }
}

/// Collects a netlink dump; a refusal names what was being listed.
async fn dump<T>(
    stream: impl futures::Stream<Item = Result<T, rtnetlink::Error>>,
    what: &str,
) -> Result<Vec<T>> {
    stream.try_collect().await.map_err(|e| anyhow!("listing {what}: {}", kernel_error(&e)))
}

/// Just enough of a dumped address to delete exactly it.
fn address_del_message(dumped: &AddressMessage) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header = dumped.header.clone();
    message.attributes = dumped
        .attributes
        .iter()
        .filter(|a| matches!(a, AddressAttribute::Address(_) | AddressAttribute::Local(_)))
        .cloned()
        .collect();
    message
}

/// Where a route sits in the kernel: another route with the same slot replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    destination: IpNetwork,
    table: u32,
    /// The metric: 0 is the IPv4 default, 1024 the IPv6 one; cats never sets one.
    priority: u32,
    tos: u8,
    /// Length of a source prefix (IPv6 source routing); cats never sets one.
    source_len: u8,
}

impl Slot {
    fn main(destination: IpNetwork) -> Slot {
        let priority = if destination.is_ipv6() { 1024 } else { 0 };
        Slot { destination, table: MAIN_TABLE, priority, tos: 0, source_len: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// `via ADDRESS`.
    Via(IpAddr),
    /// `encap seg6local action ...`.
    Seg6Local(SidBehavior),
    /// A cats-tagged route cats would not install this way (multipath, another encap, a route
    /// without next hop, ...): never equal to a desired route.
    Other(String),
}

/// One route, desired or installed, in the terms cats compares them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteSpec {
    slot: Slot,
    oif: Option<u32>,
    target: Target,
}

impl RouteSpec {
    fn is_sid(&self) -> bool {
        matches!(self.target, Target::Seg6Local(_))
    }

    /// `ip route`-like.
    fn line(&self, links: &Links) -> String {
        let mut line = self.slot.destination.to_string();
        match &self.target {
            Target::Via(IpAddr::V6(via)) if self.slot.destination.is_ipv4() => {
                line += &format!(" via inet6 {via}");
            }
            Target::Via(via) => line += &format!(" via {via}"),
            Target::Seg6Local(behavior) => {
                line += " encap seg6local action ";
                line += &match behavior {
                    SidBehavior::End => "End".to_string(),
                    SidBehavior::EndX { nexthop } => format!("End.X nh6 {nexthop}"),
                    SidBehavior::EndDx6 { nexthop } => format!("End.DX6 nh6 {nexthop}"),
                    SidBehavior::EndDx4 { nexthop } => format!("End.DX4 nh4 {nexthop}"),
                    SidBehavior::EndDt6 { table } => format!("End.DT6 table {table}"),
                };
            }
            Target::Other(what) => line += &format!(" {what}"),
        }
        if let Some(oif) = self.oif {
            line += &format!(" dev {}", links.name(oif));
        }
        if self.slot.table != MAIN_TABLE {
            line += &format!(" table {}", self.slot.table);
        }
        line += &format!(" proto {RTPROT_CATS:#x}");
        if self.slot.priority != Slot::main(self.slot.destination).priority {
            line += &format!(" metric {}", self.slot.priority);
        }
        line
    }

    /// The `RTM_NEWROUTE` message that installs this (desired) route.
    fn message(&self) -> RouteMessage {
        let oif = self.oif.expect("desired routes always name their interface");
        let protocol = RouteProtocol::from(RTPROT_CATS);
        let destination = self.slot.destination;
        match (destination, &self.target) {
            (IpNetwork::V4(dst), Target::Via(via)) => {
                let builder = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst.ip(), dst.prefix())
                    .output_interface(oif)
                    .table_id(self.slot.table)
                    .protocol(protocol);
                match via {
                    IpAddr::V4(via) => builder.gateway(*via),
                    IpAddr::V6(via) => builder.via(*via),
                }
                .build()
            }
            (IpNetwork::V6(dst), target) => {
                let builder = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(dst.ip(), dst.prefix())
                    .output_interface(oif)
                    .table_id(self.slot.table)
                    .protocol(protocol);
                match target {
                    Target::Via(IpAddr::V6(via)) => builder.gateway(*via),
                    Target::Seg6Local(behavior) => {
                        builder.encap_seg6local(seg6local_attributes(behavior))
                    }
                    other => unreachable!("rejected while resolving the state: {other:?}"),
                }
                .build()
            }
            (IpNetwork::V4(_), other) => unreachable!("cats has no IPv4 {other:?} routes"),
        }
    }
}

/// The `SEG6_LOCAL_*` attributes of one behaviour: the action and exactly the parameter it
/// requires. The kernel rejects a missing required parameter (`EINVAL`), silently ignores ones
/// the action does not use, and dumps back only those it kept, so a dump compares exactly.
fn seg6local_attributes(behavior: &SidBehavior) -> Vec<RouteSeg6LocalTunnel> {
    match behavior {
        SidBehavior::End => vec![RouteSeg6LocalTunnel::Action(Seg6LocalAction::End)],
        SidBehavior::EndX { nexthop } => vec![
            RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndX),
            RouteSeg6LocalTunnel::Nh6(*nexthop),
        ],
        SidBehavior::EndDx6 { nexthop } => vec![
            RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDx6),
            RouteSeg6LocalTunnel::Nh6(*nexthop),
        ],
        SidBehavior::EndDx4 { nexthop } => vec![
            RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDx4),
            RouteSeg6LocalTunnel::Nh4(*nexthop),
        ],
        SidBehavior::EndDt6 { table } => vec![
            RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDt6),
            RouteSeg6LocalTunnel::Table(*table),
        ],
    }
}

/// The inverse of [`seg6local_attributes`]; `None` for anything cats would not install.
fn seg6local_behavior(attributes: &[RouteSeg6LocalTunnel]) -> Option<SidBehavior> {
    let mut action = None;
    let (mut nh6, mut nh4, mut table) = (None, None, None);
    for attribute in attributes {
        match attribute {
            RouteSeg6LocalTunnel::Action(a) if action.is_none() => action = Some(*a),
            RouteSeg6LocalTunnel::Nh6(a) if nh6.is_none() => nh6 = Some(*a),
            RouteSeg6LocalTunnel::Nh4(a) if nh4.is_none() => nh4 = Some(*a),
            RouteSeg6LocalTunnel::Table(t) if table.is_none() => table = Some(*t),
            _ => return None,
        }
    }
    match (action?, nh6, nh4, table) {
        (Seg6LocalAction::End, None, None, None) => Some(SidBehavior::End),
        (Seg6LocalAction::EndX, Some(nexthop), None, None) => Some(SidBehavior::EndX { nexthop }),
        (Seg6LocalAction::EndDx6, Some(nexthop), None, None) => {
            Some(SidBehavior::EndDx6 { nexthop })
        }
        (Seg6LocalAction::EndDx4, None, Some(nexthop), None) => {
            Some(SidBehavior::EndDx4 { nexthop })
        }
        (Seg6LocalAction::EndDt6, None, None, Some(table)) => Some(SidBehavior::EndDt6 { table }),
        _ => None,
    }
}

/// A cats route found in the kernel.
struct Installed {
    spec: RouteSpec,
    message: RouteMessage,
}

impl Installed {
    fn parse(message: RouteMessage) -> Option<Installed> {
        let header = &message.header;
        let ipv6 = match header.address_family {
            AddressFamily::Inet => false,
            AddressFamily::Inet6 => true,
            _ => return None,
        };
        let mut destination: IpAddr =
            if ipv6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
        let mut table = u32::from(header.table);
        let mut priority = 0;
        let mut oif = None;
        let mut via = None;
        let mut encap_type = RouteLwEnCapType::None;
        let mut encap = None;
        let mut other = Vec::new();
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => destination = (*a).into(),
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => destination = (*a).into(),
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Priority(p) => priority = *p,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(IpAddr::from(*a)),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => via = Some(IpAddr::from(*a)),
                RouteAttribute::Via(RouteVia::Inet(a)) => via = Some(IpAddr::from(*a)),
                RouteAttribute::Via(RouteVia::Inet6(a)) => via = Some(IpAddr::from(*a)),
                RouteAttribute::EncapType(t) => encap_type = *t,
                RouteAttribute::Encap(e) => encap = Some(e.clone()),
                RouteAttribute::MultiPath(hops) => other.push(format!("{} nexthops", hops.len())),
                RouteAttribute::NhId(id) => other.push(format!("nhid {id}")),
                _ => {}
            }
        }
        if header.kind != RouteType::Unicast {
            other.push(format!("type {:?}", header.kind));
        }
        let destination = IpNetwork::new(destination, header.destination_prefix_length).ok()?;

        let target = match (encap_type, encap, via) {
            _ if !other.is_empty() => Target::Other(other.join(" ")),
            (RouteLwEnCapType::Seg6Local, Some(encap), None) => {
                let attributes: Option<Vec<RouteSeg6LocalTunnel>> = encap
                    .into_iter()
                    .map(|e| match e {
                        RouteLwTunnelEncap::Seg6Local(a) => Some(a),
                        _ => None,
                    })
                    .collect();
                match attributes.as_deref().and_then(seg6local_behavior) {
                    Some(behavior) => Target::Seg6Local(behavior),
                    None => Target::Other("encap seg6local (other)".into()),
                }
            }
            (RouteLwEnCapType::None, None, Some(via)) => Target::Via(via),
            (RouteLwEnCapType::None, None, None) => Target::Other("(no next hop)".into()),
            (t, _, _) => Target::Other(format!("encap {t}")),
        };
        let slot = Slot {
            destination,
            table,
            priority,
            tos: header.tos,
            source_len: header.source_prefix_length,
        };
        Some(Installed { spec: RouteSpec { slot, oif, target }, message })
    }
}

/// Just enough of a dumped route to delete exactly it: the kernel matches a delete on
/// destination, table, protocol, metric and, when given, device and gateway.
fn route_del_message(dumped: &RouteMessage) -> RouteMessage {
    let multipath = dumped.attributes.iter().any(|a| matches!(a, RouteAttribute::MultiPath(_)));
    let mut message = RouteMessage::default();
    message.header = dumped.header.clone();
    message.attributes = dumped
        .attributes
        .iter()
        .filter(|a| match a {
            RouteAttribute::Destination(_)
            | RouteAttribute::Source(_)
            | RouteAttribute::Table(_)
            | RouteAttribute::Priority(_) => true,
            RouteAttribute::Oif(_) | RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => {
                !multipath
            }
            _ => false,
        })
        .cloned()
        .collect();
    message
}
