//! The endpoint program: SRv6 endpoint behaviours for local SIDs (RFC 8986), SRv6 transit in
//! the SID block, and SR-domain protection (RFC 8754 5.1). Anything it does not handle goes to
//! the kernel unchanged, where cats' seg6local routes are the slow path.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, maps::lpm_trie::Key, programs::XdpContext,
};
use cats_common::{
    counters::{DropReason, Event},
    maps::{Behavior, FLAVOR_PSP, FLAVOR_USD, SidEntry},
    srh::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV6_HLEN},
};

use crate::{
    counters,
    forward::{self, Destination, Lookup},
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr},
    maps::{CONFIG, INTERFACES, SIDS},
    packet::{self, Family, ptr_at, read},
    srv6::{self, Headers, Srh},
};

/// What the endpoint will do with a packet, decided before anything in it changes.
enum Decision {
    Pass(Event),
    Forward(Plan),
}

/// A forwarding plan: where to look the next hop up, and how to rewrite the packet then.
struct Plan {
    towards: Destination,
    /// IP length of the packet as it will leave (for the FIB's MTU check).
    tot_len: u16,
    /// Routing table for the lookup (0: as routed).
    table: u32,
    rewrite: Rewrite,
    event: Event,
}

enum Rewrite {
    /// Transit: only the hop limit goes down.
    HopLimit,
    /// End/End.X: Segments Left and the destination change; with `pop`, the SRH goes (PSP).
    Advance { srh: Srh, left: u8, next: [u8; 16], pop: bool },
    /// End.DX6/DX4/DT6: the outer headers go, the inner packet starts at `inner`.
    Decapsulate { inner: usize, family: Family },
}

pub fn process(ctx: &XdpContext) -> Result<u32, DropReason> {
    let plan = match decide(ctx)? {
        Decision::Pass(event) => return pass(event),
        Decision::Forward(plan) => plan,
    };
    // Decide before changing anything, so the kernel can take the packet as it came.
    let Lookup::Resolved(hop) = forward::lookup(ctx, plan.towards, plan.tot_len, plan.table)?
    else {
        return pass(Event::EndpointToStack);
    };
    match plan.rewrite {
        Rewrite::HopLimit => packet::decrement_hop_limit(ctx, Family::V6)?,
        Rewrite::Advance { srh, left, next, pop: true } => {
            pop_srh(ctx, &srh, next)?;
            counters::event(Event::SrhPopped);
            let _ = left;
        }
        Rewrite::Advance { srh, left, next, pop: false } => {
            let sl = ptr_at::<u8>(ctx, srh.offset + 3)?;
            let dst = ptr_at::<[u8; 16]>(ctx, ETH_HLEN + 24)?;
            // SAFETY: in bounds (ptr_at); frame memory is writable in XDP.
            unsafe {
                *sl = left;
                core::ptr::write_unaligned(dst, next);
            }
            packet::decrement_hop_limit(ctx, Family::V6)?;
        }
        Rewrite::Decapsulate { inner, family } => {
            strip_outer(ctx, inner, family)?;
            packet::decrement_hop_limit(ctx, family)?;
        }
    }
    forward::transmit(ctx, &hop, plan.event)
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> Result<Decision, DropReason> {
    let eth: EthHdr = read(ctx, 0)?;
    if u16::from_be_bytes(eth.ether_type) != ETH_P_IPV6 {
        return Ok(Decision::Pass(Event::NotForUs));
    }
    let ip: Ipv6Hdr = read(ctx, ETH_HLEN)?;
    let in_block = in_sid_block(&ip.dst);
    if in_block && from_outside(ctx) {
        return Err(DropReason::OutsideDomain);
    }
    let Some(entry) = SIDS.get(Key::new(128, ip.dst)).copied() else {
        return Ok(if in_block { transit(&ip) } else { Decision::Pass(Event::NotForUs) });
    };
    let behavior = match Behavior::from_u8(entry.behavior) {
        // A function of ours the controller did not program: the kernel answers it.
        None | Some(Behavior::Locator) => return Ok(Decision::Pass(Event::EndpointToStack)),
        Some(b) => b,
    };
    let headers = srv6::walk(ctx, ip.next_header)?;
    if headers.foreign_routing {
        return Ok(Decision::Pass(Event::EndpointToStack));
    }
    match behavior {
        Behavior::End | Behavior::EndX => advance(ctx, &ip, &headers, &entry, behavior),
        Behavior::EndDx6 => decapsulate(ctx, &headers, Decap::Dx6(entry.nexthop)),
        Behavior::EndDx4 => decapsulate(ctx, &headers, Decap::Dx4(entry.nexthop)),
        Behavior::EndDt6 => decapsulate(ctx, &headers, Decap::Dt6(entry.table)),
        Behavior::Locator => Ok(Decision::Pass(Event::EndpointToStack)),
    }
}

#[inline(always)]
fn pass(event: Event) -> Result<u32, DropReason> {
    counters::event(event);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn in_sid_block(addr: &[u8; 16]) -> bool {
    let Some(config) = CONFIG.get(0) else { return false };
    let len = config.sr_block_len as u32;
    if len == 0 || len > 128 {
        return false;
    }
    // Two 64-bit halves and masks: no variable indexing for the verifier to doubt.
    let half = |b: &[u8; 16], i: usize| {
        u64::from_be_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ])
    };
    let (mask_hi, mask_lo) = if len >= 64 {
        (u64::MAX, if len == 64 { 0 } else { u64::MAX << (128 - len) })
    } else {
        (u64::MAX << (64 - len), 0)
    };
    (half(addr, 0) ^ half(&config.sr_block, 0)) & mask_hi == 0
        && (half(addr, 8) ^ half(&config.sr_block, 8)) & mask_lo == 0
}

#[inline(always)]
fn from_outside(ctx: &XdpContext) -> bool {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: plain data written whole by the agent.
    unsafe { INTERFACES.get(ifindex) }.is_some_and(|f| f.external != 0)
}

/// SRv6 transit: a SID of another node, forwarded by the FIB without the stack.
#[inline(always)]
fn transit(ip: &Ipv6Hdr) -> Decision {
    if ip.hop_limit <= 1 {
        return Decision::Pass(Event::HopLimitToStack);
    }
    Decision::Forward(Plan {
        towards: Destination::V6(ip.dst),
        tot_len: IPV6_HLEN as u16 + u16::from_be_bytes(ip.payload_len),
        table: 0,
        rewrite: Rewrite::HopLimit,
        event: Event::TransitForwarded,
    })
}

/// End and End.X: the next segment becomes the destination (RFC 8986 4.1, 4.2), with PSP.
#[inline(always)]
fn advance(
    ctx: &XdpContext,
    ip: &Ipv6Hdr,
    headers: &Headers,
    entry: &SidEntry,
    behavior: Behavior,
) -> Result<Decision, DropReason> {
    let srh = match headers.srh {
        Some(srh) if srh.fixed.segments_left > 0 => srh,
        // Segments Left 0 (or no SRH): the upper layer is for this node. With USD an inner
        // IPv6 packet is decapsulated and routed; otherwise the kernel processes it.
        _ if entry.flavors & FLAVOR_USD != 0 && headers.payload_proto == IPPROTO_IPV6 => {
            return decapsulate(ctx, headers, Decap::Dt6(0));
        }
        _ => return Ok(Decision::Pass(Event::EndpointToStack)),
    };
    if ip.hop_limit <= 1 {
        return Ok(Decision::Pass(Event::HopLimitToStack));
    }
    let left = srh.fixed.segments_left - 1;
    let next = srv6::segment(ctx, &srh, left)?;
    let pop = left == 0 && entry.flavors & FLAVOR_PSP != 0 && headers.srh_first;
    let mut tot_len = IPV6_HLEN as u16 + u16::from_be_bytes(ip.payload_len);
    if pop {
        tot_len -= srh.len as u16;
    }
    Ok(Decision::Forward(Plan {
        towards: Destination::V6(if behavior == Behavior::EndX { entry.nexthop } else { next }),
        tot_len,
        table: 0,
        rewrite: Rewrite::Advance { srh, left, next, pop },
        event: Event::SegmentAdvanced,
    }))
}

/// PSP (RFC 8986 4.16.1): the SRH goes, the IPv6 header moves up to the payload.
#[inline(always)]
fn pop_srh(ctx: &XdpContext, srh: &Srh, next: [u8; 16]) -> Result<(), DropReason> {
    let eth: EthHdr = read(ctx, 0)?;
    let mut ip: Ipv6Hdr = read(ctx, ETH_HLEN)?;
    ip.next_header = srh.fixed.next_header;
    ip.payload_len = u16::from_be_bytes(ip.payload_len).wrapping_sub(srh.len as u16).to_be_bytes();
    ip.dst = next;
    ip.hop_limit = ip.hop_limit.wrapping_sub(1);
    // SAFETY: the helper validates the delta against the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, srh.len as i32) } != 0 {
        return Err(DropReason::Truncated);
    }
    let e = ptr_at::<EthHdr>(ctx, 0)?;
    let h = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: in bounds (ptr_at).
    unsafe {
        core::ptr::write_unaligned(e, eth);
        core::ptr::write_unaligned(h, ip);
    }
    Ok(())
}

/// What a decapsulating behaviour does with the inner packet.
#[derive(Clone, Copy)]
enum Decap {
    /// End.DX6: to this IPv6 next hop.
    Dx6([u8; 16]),
    /// End.DX4: to this IPv4 next hop (IPv4-mapped in the entry).
    Dx4([u8; 16]),
    /// End.DT6: look the inner destination up in this table (0: as routed).
    Dt6(u32),
}

/// End.DX6, End.DX4, End.DT6 (RFC 8986 4.4, 4.5, 4.6) and USD.
#[inline(always)]
fn decapsulate(ctx: &XdpContext, headers: &Headers, how: Decap) -> Result<Decision, DropReason> {
    if headers.srh.is_some_and(|s| s.fixed.segments_left != 0) {
        return Err(DropReason::NotLastSegment);
    }
    let inner = headers.payload_offset;
    let (family, hop_limit, tot_len, dst) = match (how, headers.payload_proto) {
        (Decap::Dx6(_) | Decap::Dt6(_), IPPROTO_IPV6) => {
            let h: Ipv6Hdr = read(ctx, inner)?;
            (
                Family::V6,
                h.hop_limit,
                IPV6_HLEN as u16 + u16::from_be_bytes(h.payload_len),
                Destination::V6(h.dst),
            )
        }
        (Decap::Dx4(_), IPPROTO_IPIP) => {
            let h: Ipv4Hdr = read(ctx, inner)?;
            (Family::V4, h.ttl, u16::from_be_bytes(h.tot_len), Destination::V4(h.dst))
        }
        _ => return Err(DropReason::WrongPayload),
    };
    if hop_limit <= 1 {
        return Ok(Decision::Pass(Event::HopLimitToStack));
    }
    let (towards, table) = match how {
        Decap::Dx6(nh) => (Destination::V6(nh), 0),
        Decap::Dx4(nh) => (Destination::V4([nh[12], nh[13], nh[14], nh[15]]), 0),
        Decap::Dt6(table) => (dst, table),
    };
    Ok(Decision::Forward(Plan {
        towards,
        tot_len,
        table,
        rewrite: Rewrite::Decapsulate { inner, family },
        event: Event::Decapsulated,
    }))
}

/// Removes everything between Ethernet and the inner packet at `inner`.
#[inline(always)]
fn strip_outer(ctx: &XdpContext, inner: usize, family: Family) -> Result<(), DropReason> {
    let mut eth: EthHdr = read(ctx, 0)?;
    eth.ether_type = match family {
        Family::V6 => ETH_P_IPV6,
        Family::V4 => ETH_P_IP,
    }
    .to_be_bytes();
    let shrink = inner - ETH_HLEN;
    // SAFETY: the helper validates the delta against the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, shrink as i32) } != 0 {
        return Err(DropReason::Truncated);
    }
    let e = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: in bounds (ptr_at).
    unsafe { core::ptr::write_unaligned(e, eth) };
    Ok(())
}
