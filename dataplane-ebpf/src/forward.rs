//! Forwarding the encapsulated packet: the kernel FIB picks the next hop and its MAC addresses.

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

const AF_INET6: u8 = 10;

/// Sends the (already encapsulated) frame towards its outer destination.
#[inline(always)]
pub fn send(ctx: &XdpContext) -> Result<u32, DropReason> {
    let outer = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: in bounds (ptr_at).
    let outer = unsafe { core::ptr::read_unaligned(outer) };

    // SAFETY: an all-zero bpf_fib_lookup is a valid starting value (plain integers and unions).
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET6;
    params.l4_protocol = outer.next_header;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_1.tot_len =
        (IPV6_HLEN as u16).wrapping_add(u16::from_be_bytes(outer.payload_len));
    // SAFETY: writing plain arrays into unions of plain arrays.
    unsafe {
        params.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>(outer.src);
        params.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(outer.dst);
    }

    // SAFETY: params lives on this stack frame for the duration of the call.
    let rc = unsafe {
        fib_lookup(ctx.ctx as *mut _, &mut params, core::mem::size_of::<bpf_fib_lookup>() as i32, 0)
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            return Err(DropReason::Unreachable);
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Err(DropReason::FragNeeded),
        // No neighbour entry yet, a local destination, or forwarding off: the stack knows best,
        // and resolves the neighbour for the next packets.
        _ => {
            counters::event(Event::EncapToStack);
            return Ok(xdp_action::XDP_PASS);
        }
    }

    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&params.dmac);
    macs[6..].copy_from_slice(&params.smac);
    // SAFETY: in bounds (ptr_at).
    unsafe { core::ptr::write_unaligned(eth, macs) };

    if params.ifindex == ctx.ingress_ifindex() as u32 {
        counters::event(Event::Transmitted);
        return Ok(xdp_action::XDP_TX);
    }
    counters::event(Event::Redirected);
    // SAFETY: bpf_redirect takes an ifindex and flags; the kernel validates the ifindex.
    Ok(unsafe { bpf_redirect(params.ifindex, 0) } as u32)
}
