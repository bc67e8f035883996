//! Forwarding with the kernel's FIB: look the next hop up (route, egress interface, neighbour
//! MAC addresses), then rewrite Ethernet and redirect.
//!
//! The endpoint looks up *before* it changes a packet, so that when the FIB cannot answer
//! fully (no neighbour entry yet) it hands the unchanged packet to the kernel, whose own SRv6
//! routes are the slow path. The headend looks up after encapsulating: the stack can forward
//! an encapsulated packet as it is.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE, bpf_fib_lookup, xdp_action,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use cats_common::{
    counters::{DropReason, Event},
    srh::{ETH_HLEN, IPV6_HLEN},
};

use crate::{counters, headers::Ipv6Hdr, packet::ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const BPF_FIB_LOOKUP_TBID: u32 = 8;

/// Where to look the next hop up.
#[derive(Clone, Copy)]
pub enum Destination {
    V6([u8; 16]),
    V4([u8; 4]),
}

/// A resolved next hop.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// What the FIB said.
pub enum Lookup {
    Resolved(NextHop),
    /// Route found but no neighbour entry, a local destination, or forwarding off.
    ToStack,
    /// Larger than the egress MTU: the stack sends Packet Too Big (or fragments IPv4).
    TooBig,
}

/// Looks `dst` up for a packet of `tot_len` bytes (IP header included) that came in on the
/// context's interface. `table` selects a routing table (0: the main table as routed).
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    dst: Destination,
    tot_len: u16,
    table: u32,
) -> Result<Lookup, DropReason> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid starting value (plain integers, unions).
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_1.tot_len = tot_len;
    match dst {
        Destination::V6(addr) => {
            params.family = AF_INET6;
            // SAFETY: writing a plain array into a union of plain arrays.
            unsafe {
                params.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(addr)
            };
        }
        Destination::V4(addr) => {
            params.family = AF_INET;
            params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(addr);
        }
    }
    let mut flags = 0;
    if table != 0 {
        // The table id shares the union with the VLAN fields on input.
        params.__bindgen_anon_5.tbid = table;
        flags = BPF_FIB_LOOKUP_TBID;
    }
    // SAFETY: params lives on this stack frame for the duration of the call.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(Lookup::Resolved(NextHop {
            ifindex: params.ifindex,
            smac: params.smac,
            dmac: params.dmac,
        })),
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            Err(DropReason::Unreachable)
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Ok(Lookup::TooBig),
        _ => Ok(Lookup::ToStack),
    }
}

/// Writes the next hop's MAC addresses into the frame and redirects it to the next hop's
/// interface (which may be the receiving one: counted as `transmitted`).
#[inline(always)]
pub fn transmit(ctx: &XdpContext, hop: &NextHop, event_redirect: Event) -> Result<u32, DropReason> {
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&hop.dmac);
    macs[6..].copy_from_slice(&hop.smac);
    // SAFETY: in bounds (ptr_at).
    unsafe { core::ptr::write_unaligned(eth, macs) };
    // Back out of the receiving interface too goes by redirect, not XDP_TX: on a veth whose
    // frames arrive from the stack (not from another XDP program), XDP_TX frames were lost in
    // the lab while redirects to the same ifindex are delivered.
    counters::event(event_redirect);
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        counters::event(Event::Transmitted);
    }
    // SAFETY: bpf_redirect takes an ifindex and flags; the kernel validates the ifindex.
    Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
}

/// Sends the (already encapsulated) frame towards its outer destination.
#[inline(always)]
pub fn send_encapsulated(ctx: &XdpContext) -> Result<u32, DropReason> {
    let outer = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: in bounds (ptr_at).
    let outer = unsafe { core::ptr::read_unaligned(outer) };
    let tot_len = (IPV6_HLEN as u16).wrapping_add(u16::from_be_bytes(outer.payload_len));
    match lookup(ctx, Destination::V6(outer.dst), tot_len, 0)? {
        Lookup::Resolved(hop) => transmit(ctx, &hop, Event::Redirected),
        // Already encapsulated: a Packet Too Big from the stack would go to ourselves.
        Lookup::TooBig => Err(DropReason::FragNeeded),
        // No neighbour entry yet, a local destination, or forwarding off: the stack knows
        // best, and resolves the neighbour for the next packets.
        Lookup::ToStack => {
            counters::event(Event::EncapToStack);
            Ok(xdp_action::XDP_PASS)
        }
    }
}
