//! The pod's veth pair as the kernel has it: `CNI_IFNAME` inside the pod's network namespace,
//! and its peer in this (the node's) namespace, where the pod's traffic enters the node.
//!
//! The kernel, not `prevResult`, is the authority: `bridge` lists both the bridge and the
//! veth as host interfaces, and Calico's thin result may name the host side only.

use std::{future::Future, net::IpAddr, path::Path};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};

use crate::spec::{CniError, Code};

/// One interface, as far as cats cares.
#[derive(Clone, Debug)]
struct Facts {
    index: u32,
    name: String,
    veth: bool,
    /// IFLA_LINK: for a veth, the peer's index in the peer's namespace.
    peer: Option<u32>,
    /// The XDP program attached, if any.
    xdp_program: Option<u32>,
    /// The link-layer address.
    mac: Vec<u8>,
}

impl Facts {
    fn of(message: &LinkMessage) -> Facts {
        let mut facts = Facts {
            index: message.header.index,
            name: String::new(),
            veth: false,
            peer: None,
            xdp_program: None,
            mac: Vec::new(),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => facts.name = name.clone(),
                LinkAttribute::Link(peer) => facts.peer = Some(*peer),
                LinkAttribute::Address(mac) => facts.mac = mac.clone(),
                LinkAttribute::LinkInfo(infos) => {
                    facts.veth |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                LinkAttribute::Xdp(xdp) => {
                    facts.xdp_program = xdp.iter().find_map(|x| match x {
                        LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        facts
    }
}

/// Runs `f` with a rtnetlink handle of the calling thread's network namespace.
fn netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a rtnetlink socket")?;
        tokio::spawn(connection);
        f(handle).await
    })
}

/// Every interface of the calling thread's network namespace.
fn interfaces() -> Result<Vec<Facts>> {
    netlink(|handle| async move {
        let messages: Vec<LinkMessage> =
            handle.link().get().execute().try_collect().await.context("listing interfaces")?;
        Ok(messages.iter().map(Facts::of).collect())
    })
}

/// Interfaces of the namespace at `netns`, or the container's absence (code 3).
fn interfaces_in(netns: &Path) -> Result<Vec<Facts>, CniError> {
    if !netns.exists() {
        return Err(CniError::new(
            Code::UnknownContainer,
            format!("the container's network namespace {} does not exist", netns.display()),
        ));
    }
    cats_controller::netns::run_in(netns, interfaces).map_err(|e| {
        CniError::caused(
            Code::UnknownContainer,
            format!("cannot look into the container's network namespace {}", netns.display()),
            e,
        )
    })
}

/// The two ends of the pod's veth pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The node's end (in this namespace).
    pub host_interface: String,
    pub host_index: u32,
    /// The pod's end's MAC address.
    pub pod_mac: Vec<u8>,
}

/// Finds the node's end of the veth whose other end is `ifname` in `netns`.
pub fn find(netns: &Path, ifname: &str) -> Result<Pair, CniError> {
    let pod = interfaces_in(netns)?;
    let Some(pod_end) = pod.iter().find(|f| f.name == ifname) else {
        return Err(CniError::new(
            Code::NoVethPair,
            format!(
                "no interface {ifname} in {}: cats-cni chains after the plugin that creates it",
                netns.display()
            ),
        ));
    };
    let peer = pod_end.peer.filter(|_| pod_end.veth).ok_or_else(|| {
        CniError::new(
            Code::NoVethPair,
            format!(
                "{ifname} in {} is not a veth: cats steers where pod traffic enters the node, \
                 at the node's end of a veth pair",
                netns.display()
            ),
        )
    })?;
    let host = interfaces()
        .map_err(|e| CniError::caused(Code::NoVethPair, "cannot list the node's interfaces", e))?;
    host.into_iter()
        .find(|f| f.index == peer && f.veth && f.peer == Some(pod_end.index))
        .map(|f| Pair { host_interface: f.name, host_index: f.index, pod_mac: pod_end.mac.clone() })
        .ok_or_else(|| {
            CniError::new(
                Code::NoVethPair,
                format!(
                    "the peer of {ifname} (ifindex {peer}) is not a veth in this network \
                     namespace: run cats-cni where the pod's interface plugin puts the host side"
                ),
            )
        })
}

/// The XDP program attached to `interface` of this namespace; `None` when none is or the
/// interface does not exist.
pub fn xdp_program(interface: &str) -> Result<Option<u32>> {
    Ok(interfaces()?.into_iter().find(|f| f.name == interface).and_then(|f| f.xdp_program))
}

/// Permanent neighbour entries for the pod's addresses on the node's end. Pod routes are
/// on-link host routes (`ptp`, Calico), so the node's XDP endpoint forwards a request for a
/// pod instance to the pod's own address, and its FIB lookup needs that neighbour resolved:
/// the kernel alone would only ever resolve the packet's destination, the service address.
pub fn add_neighbours(pair: &Pair, addresses: &[IpAddr]) -> Result<(), CniError> {
    let (index, mac, addresses) = (pair.host_index, pair.pod_mac.clone(), addresses.to_vec());
    netlink(|handle| async move {
        for address in addresses {
            // `ip neigh replace ADDRESS lladdr MAC dev INDEX nud permanent`
            handle
                .neighbours()
                .add(index, address)
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .with_context(|| format!("neighbour {address}"))?;
        }
        Ok(())
    })
    .map_err(|e| {
        CniError::caused(
            Code::NoVethPair,
            format!("adding the pod's neighbour entries on {}", pair.host_interface),
            e,
        )
    })
}

/// Removes the entries [`add_neighbours`] made on `interface`, if both are still there.
pub fn remove_neighbours(interface: &str, addresses: &[IpAddr]) -> Result<()> {
    let Some(index) = interfaces()?.into_iter().find(|f| f.name == interface).map(|f| f.index)
    else {
        return Ok(()); // Gone with the interface.
    };
    let addresses = addresses.to_vec();
    netlink(|handle| async move {
        let entries: Vec<NeighbourMessage> = handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing neighbours")?;
        for entry in entries.into_iter().filter(|n| n.header.ifindex == index) {
            let destination = entry.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    Some(IpAddr::V6(*v6))
                }
                _ => None,
            });
            if destination.is_some_and(|d| addresses.contains(&d)) {
                handle.neighbours().del(entry).execute().await.context("removing a neighbour")?;
            }
        }
        Ok(())
    })
}

/// Makes the pod's end fit for XDP at the node's end: GRO on (so the node's endpoint can
/// redirect steered requests into it) and transmit checksums finished in the pod (so the
/// headend encapsulates complete packets). See `cats_controller::offload`.
pub fn prepare_pod_end(netns: &Path, ifname: &str) -> Result<(), CniError> {
    let name = ifname.to_owned();
    cats_controller::netns::run_in(netns, move || {
        cats_controller::offload::enable_gro(&name)?;
        cats_controller::offload::disable_tx_checksum(&name)
    })
    .map_err(|e| CniError::caused(Code::NoVethPair, format!("preparing {ifname} in the pod"), e))
}

/// Whether the pod's end still has GRO on (CHECK).
pub fn pod_end_prepared(netns: &Path, ifname: &str) -> Result<bool> {
    let name = ifname.to_owned();
    cats_controller::netns::run_in(netns, move || cats_controller::offload::gro_enabled(&name))
}
