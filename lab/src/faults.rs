//! Fault injection on a running lab: a topology link cut, a node dead, and both undone.
//!
//! Everything is done by taking interfaces administratively down and up again:
//! - a link with a delay relay is cut in the relay's namespace (`ra` and `rb` down): the nodes'
//!   own interfaces stay up and configured and merely lose their carrier, like a fibre cut;
//! - a link without a relay is cut at its veth ends in the two node namespaces;
//! - a dead node has every interface but `lo` down (its links, its instance LAN, its client
//!   LAN), so nothing goes in or out, while its namespace, its agent and XDP programs stay.
//!
//! Taking an interface down makes the kernel flush what is configured on it: its IPv6
//! addresses (IPv4 ones stay), every route through it, its neighbour entries. None of that comes
//! back by itself on the way up, and the daemon's agent only reconciles when its desired state
//! changes (or after a failed apply), so each interface's addresses, main-table routes and
//! static or managed neighbour entries are saved just before it goes down and put back once
//! it is up (see [`LabNetwork::revive_node`]). An interface taken down by two faults (a node
//! killed behind a cut relay-less link) comes up only when both are undone.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::{Command, Stdio},
    slice::from_ref,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{netns::unique_name, network::LabNetwork};

/// What the fault injection holds down.
#[derive(Default)]
pub(crate) struct Faults {
    /// Interfaces held down, by (namespace, interface).
    held: BTreeMap<(String, String), Held>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// The topology link at this position.
    Link(usize),
    Node(String),
}

struct Held {
    /// The faults holding the interface down; it comes up when the last one is undone.
    by: BTreeSet<Fault>,
    /// What was configured on it when it first went down, if it carries any configuration.
    saved: Option<Saved>,
}

/// One interface's configuration, as `ip ... save` dumps it (netlink messages).
struct Saved {
    addresses: Vec<u8>,
    routes4: Vec<u8>,
    routes6: Vec<u8>,
    /// `ip neigh replace` arguments after the address and `dev IF`.
    neighbours: Vec<(String, Vec<String>)>,
}

impl LabNetwork {
    /// Cuts the topology link between nodes `a` and `b` (either order): nothing passes either
    /// way until [`Self::restore_link`]. Frames the relay holds at that moment are lost.
    pub fn cut_link(&mut self, a: &str, b: &str) -> Result<()> {
        let (k, link) = self.find_link(a, b)?;
        let fault = Fault::Link(k);
        if self.faults.holds(&fault) {
            bail!("link {} is cut already", link.name());
        }
        let (na, nb) =
            (self.node(&link.a).name().to_string(), self.node(&link.b).name().to_string());
        let result = match &link.relay {
            // The relay namespace holds no addresses or routes: nothing to save.
            Some(relay) => {
                self.faults.take_down(&[(relay, &["ra".into(), "rb".into()])], &fault, false)
            }
            None => {
                let (ia, ib) = (from_ref(&link.a_interface), from_ref(&link.b_interface));
                self.faults.take_down(&[(&na, ia), (&nb, ib)], &fault, true)
            }
        };
        if result.is_err() {
            // Nothing half cut stays behind.
            let _ = self.faults.bring_up(&fault);
        }
        result.with_context(|| format!("cutting link {}", link.name()))
    }

    /// Undoes [`Self::cut_link`]: the interfaces come up (unless a dead node still holds one
    /// down) with what was configured on them.
    pub fn restore_link(&mut self, a: &str, b: &str) -> Result<()> {
        let (k, link) = self.find_link(a, b)?;
        let fault = Fault::Link(k);
        if !self.faults.holds(&fault) {
            bail!("link {} is not cut", link.name());
        }
        self.faults.bring_up(&fault).with_context(|| format!("restoring link {}", link.name()))
    }

    /// Kills node `name`: every interface of its namespace but `lo` goes down, which cuts all
    /// its links, its instances' LAN and its client LAN. The agent keeps running (its node is
    /// unreachable, not gone), and the instances behind it keep running, unreachable.
    pub fn kill_node(&mut self, name: &str) -> Result<()> {
        let fault = Fault::Node(name.to_string());
        let ns = self.node_namespace(name)?;
        if self.faults.holds(&fault) {
            bail!("node {name} is dead already");
        }
        let result = interfaces(&ns).and_then(|ifaces| {
            let ifaces: Vec<String> = ifaces.into_iter().filter(|i| i != "lo").collect();
            self.faults.take_down(&[(&ns, &ifaces)], &fault, true)
        });
        if result.is_err() {
            let _ = self.faults.bring_up(&fault);
        }
        result.with_context(|| format!("killing node {name}"))
    }

    /// Revives a node killed with [`Self::kill_node`]. Its interfaces come up (those a cut link
    /// still holds stay down), and what was on each when it went down is put back: its
    /// addresses (IPv6 ones were flushed; link-local ones come back by themselves), its routes
    /// in the main table (the underlay and SID routes cats' agent installs, proto 202, and any
    /// other), and its permanent and managed neighbour entries.
    ///
    /// Not restored: routes in other tables or multipath routes whose next hops are on several
    /// interfaces (the lab installs neither), anything the agent added or changed while the
    /// node was dead (an apply that failed then is retried by the agent every second until it
    /// gets through), and resolved (non-permanent) neighbour entries, which are learnt again.
    pub fn revive_node(&mut self, name: &str) -> Result<()> {
        let fault = Fault::Node(name.to_string());
        self.node_namespace(name)?;
        if !self.faults.holds(&fault) {
            bail!("node {name} is not dead");
        }
        self.faults.bring_up(&fault).with_context(|| format!("reviving node {name}"))
    }

    /// Whether the link between `a` and `b` is cut now.
    pub fn link_is_cut(&self, a: &str, b: &str) -> bool {
        self.find_link(a, b).is_ok_and(|(k, _)| self.faults.holds(&Fault::Link(k)))
    }

    /// Whether node `name` is dead now.
    pub fn node_is_dead(&self, name: &str) -> bool {
        self.faults.holds(&Fault::Node(name.to_string()))
    }

    fn find_link(&self, a: &str, b: &str) -> Result<(usize, crate::network::LabLink)> {
        self.links
            .iter()
            .position(|l| l.joins(a, b))
            .map(|k| (k, self.links[k].clone()))
            .with_context(|| format!("no link {a}-{b} in the topology"))
    }

    fn node_namespace(&self, name: &str) -> Result<String> {
        let ns = self.try_node(name).with_context(|| format!("no node {name} in the lab"))?;
        Ok(ns.name().to_string())
    }
}

impl Faults {
    fn holds(&self, fault: &Fault) -> bool {
        self.held.values().any(|h| h.by.contains(fault))
    }

    /// Takes interfaces down for `fault`, `places` naming them per namespace. With `save`,
    /// the configuration of every one not down already is saved first, all before any goes
    /// down: the far end of a veth loses its carrier, and a route saved without carrier would
    /// be marked `linkdown`.
    fn take_down(&mut self, places: &[(&str, &[String])], fault: &Fault, save: bool) -> Result<()> {
        let mut newly: Vec<(&str, &String)> = Vec::new();
        for &(ns, ifaces) in places {
            for iface in ifaces {
                let key = (ns.to_string(), iface.clone());
                if !self.held.contains_key(&key) {
                    let saved = if save { Some(Saved::take(ns, iface)?) } else { None };
                    newly.push((ns, iface));
                    self.held.insert(key.clone(), Held { by: BTreeSet::new(), saved });
                }
                self.held.get_mut(&key).expect("inserted above").by.insert(fault.clone());
            }
        }
        // One batch per namespace, so its interfaces go down together.
        for &(ns, _) in places {
            let batch: String = newly
                .iter()
                .filter(|(n, _)| *n == ns)
                .map(|(_, i)| format!("link set dev {i} down\n"))
                .collect();
            if !batch.is_empty() {
                ip_in(ns, &["-batch", "-"], Some(Input::Bytes(batch.as_bytes())))?;
            }
        }
        Ok(())
    }

    /// Releases every interface `fault` holds; those no other fault holds come up and get
    /// their saved configuration back.
    fn bring_up(&mut self, fault: &Fault) -> Result<()> {
        let mut freed: BTreeMap<String, Vec<(String, Option<Saved>)>> = BTreeMap::new();
        let keys: Vec<(String, String)> = self.held.keys().cloned().collect();
        for key in keys {
            let held = self.held.get_mut(&key).expect("key from the map");
            if !held.by.remove(fault) || !held.by.is_empty() {
                continue;
            }
            let held = self.held.remove(&key).expect("key from the map");
            freed.entry(key.0).or_default().push((key.1, held.saved));
        }
        let mut result = Ok(());
        for (ns, ifaces) in freed {
            let batch: String =
                ifaces.iter().map(|(i, _)| format!("link set dev {i} up\n")).collect();
            let r =
                ip_in(&ns, &["-batch", "-"], Some(Input::Bytes(batch.as_bytes()))).and_then(|_| {
                    // Addresses first: routes need their connected prefixes and source addresses.
                    for (iface, saved) in &ifaces {
                        if let Some(s) = saved {
                            s.restore_addresses(&ns, iface)?;
                        }
                    }
                    for (iface, saved) in &ifaces {
                        if let Some(s) = saved {
                            s.restore_routes(&ns, iface)?;
                        }
                    }
                    Ok(())
                });
            result = result.and(r.with_context(|| format!("in namespace {ns}")));
        }
        result
    }
}

impl Saved {
    fn take(ns: &str, iface: &str) -> Result<Saved> {
        let neighbours = ip_in(ns, &["-j", "neigh", "show", "dev", iface], None)?;
        let neighbours: Value = serde_json::from_slice(&neighbours)
            .with_context(|| format!("reading the neighbours of {iface}"))?;
        Ok(Saved {
            addresses: ip_in(ns, &["addr", "save", "dev", iface], None)?,
            routes4: ip_in(ns, &["-4", "route", "save", "dev", iface], None)?,
            routes6: ip_in(ns, &["-6", "route", "save", "dev", iface], None)?,
            neighbours: lasting_neighbours(&neighbours),
        })
    }

    fn restore_addresses(&self, ns: &str, iface: &str) -> Result<()> {
        // Addresses that survived or came back by themselves fail with "exists", which
        // `ip ... restore` ignores.
        restore(ns, "addr", &self.addresses).with_context(|| format!("addresses of {iface}"))
    }

    fn restore_routes(&self, ns: &str, iface: &str) -> Result<()> {
        for (routes, family) in [(&self.routes4, "IPv4"), (&self.routes6, "IPv6")] {
            let mut routes = routes.clone();
            without_carrier_flags(&mut routes);
            restore(ns, "route", &routes).with_context(|| format!("{family} routes of {iface}"))?;
        }
        for (addr, rest) in &self.neighbours {
            let mut args = vec!["neigh", "replace", addr.as_str(), "dev", iface];
            args.extend(rest.iter().map(String::as_str));
            ip_in(ns, &args, None).with_context(|| format!("neighbour {addr} on {iface}"))?;
        }
        Ok(())
    }
}

/// The permanent and managed entries of `ip -j neigh show`, as `ip neigh replace` arguments;
/// the others are learnt again.
fn lasting_neighbours(entries: &Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for n in entries.as_array().into_iter().flatten() {
        let Some(dst) = n["dst"].as_str() else { continue };
        let permanent = n["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s.as_str() == Some("PERMANENT")));
        if let (true, Some(lladdr)) = (permanent, n["lladdr"].as_str()) {
            out.push((
                dst.to_string(),
                vec!["lladdr".into(), lladdr.into(), "nud".into(), "permanent".into()],
            ));
        } else if n.get("managed").is_some() {
            out.push((dst.to_string(), vec!["managed".into()]));
        }
    }
    out
}

/// Clears the `dead` and `linkdown` flags of the routes in an `ip route save` dump (a route
/// saved while its interface had no carrier carries them, and the kernel refuses to add a
/// route with them). The dump is a 4-byte magic, then netlink messages as the kernel sent
/// them; next-hop flags inside multipath routes are left as they are.
fn without_carrier_flags(dump: &mut [u8]) {
    const RTM_NEWROUTE: u16 = 24;
    // nlmsghdr (16 bytes), then rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
    // type (one byte each), flags (u32).
    const FLAGS_AT: usize = 16 + 8;
    const CLEAR: u32 = 0x1 | 0x10; // RTNH_F_DEAD | RTNH_F_LINKDOWN
    let mut at = 4;
    while at + FLAGS_AT + 4 <= dump.len() {
        let len = u32::from_ne_bytes(dump[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len < FLAGS_AT + 4 || at + len > dump.len() {
            return;
        }
        let kind = u16::from_ne_bytes(dump[at + 4..at + 6].try_into().expect("2 bytes"));
        if kind == RTM_NEWROUTE {
            let f = at + FLAGS_AT;
            let flags = u32::from_ne_bytes(dump[f..f + 4].try_into().expect("4 bytes"));
            dump[f..f + 4].copy_from_slice(&(flags & !CLEAR).to_ne_bytes());
        }
        at += len.next_multiple_of(4);
    }
}

/// Feeds an `ip addr save` or `ip route save` dump back to the kernel.
fn restore(ns: &str, object: &str, dump: &[u8]) -> Result<()> {
    // A dump holds a 4-byte magic before any message: nothing to put back without one.
    if dump.len() <= 4 {
        return Ok(());
    }
    // `ip route restore` wants a seekable input (it calls ftell): a file, not a pipe. Its
    // name goes as soon as it is open, so nothing is left behind.
    let path = std::env::temp_dir().join(format!("cats-{}.dump", unique_name(ns)));
    std::fs::write(&path, dump).with_context(|| format!("writing {}", path.display()))?;
    let file = std::fs::File::open(&path);
    let _ = std::fs::remove_file(&path);
    ip_in(ns, &[object, "restore"], Some(Input::File(file?))).map(drop)
}

/// The names of the interfaces in namespace `ns`.
fn interfaces(ns: &str) -> Result<Vec<String>> {
    let out = ip_in(ns, &["-j", "link", "show"], None)?;
    let links: Value = serde_json::from_slice(&out).context("reading `ip -j link show`")?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect())
}

/// What `ip` reads on its standard input.
enum Input<'a> {
    Bytes(&'a [u8]),
    File(std::fs::File),
}

/// Runs `ip -n NS ARGS`, feeding it `stdin`; returns stdout (bytes: dumps are binary) or an
/// error with ip's own message.
fn ip_in(ns: &str, args: &[&str], stdin: Option<Input>) -> Result<Vec<u8>> {
    let (stdin, bytes) = match stdin {
        None => (Stdio::null(), None),
        Some(Input::Bytes(b)) => (Stdio::piped(), Some(b)),
        Some(Input::File(f)) => (Stdio::from(f), None),
    };
    let mut child = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip (iproute2)")?;
    if let (Some(input), Some(mut pipe)) = (bytes, child.stdin.take()) {
        pipe.write_all(input).context("writing to ip")?;
    }
    let out = child.wait_with_output().context("waiting for ip")?;
    if !out.status.success() {
        bail!(
            "`ip -n {ns} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_flags_are_cleared_in_every_route_message_and_nothing_else() {
        // Magic, then two 28-byte route messages, flags DEAD|LINKDOWN|ONLINK (0x15) and 0x10,
        // then a message of another type whose bytes at the flags' place must stay.
        let message = |kind: u16, flags: u32| {
            let mut m = Vec::new();
            m.extend_from_slice(&28u32.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&[10, 24, 0, 0, 254, 202, 0, 1]);
            m.extend_from_slice(&flags.to_ne_bytes());
            m
        };
        let mut dump = 0x4531_1224u32.to_ne_bytes().to_vec();
        dump.extend(message(24, 0x15));
        dump.extend(message(24, 0x10));
        dump.extend(message(20, 0x11));
        without_carrier_flags(&mut dump);
        let flags_of = |k: usize| {
            let at = 4 + 28 * k + 24;
            u32::from_ne_bytes(dump[at..at + 4].try_into().unwrap())
        };
        assert_eq!((flags_of(0), flags_of(1), flags_of(2)), (0x4, 0, 0x11));
        // A truncated dump is left alone rather than read past its end.
        let mut short = dump[..40].to_vec();
        without_carrier_flags(&mut short);
    }
}
