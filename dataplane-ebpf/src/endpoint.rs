//! The endpoint program: SRv6 endpoint behaviours for local SIDs (RFC 8986), SRv6 transit in
//! the SID block, and SR-domain protection (RFC 8754 5.1). Anything it does not handle goes to
//! the kernel unchanged, where cats' seg6local routes are the slow path.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_get_buff_len},
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use cats_common::{
    counters::{DropReason, Event},
    maps::{Behavior, FLAVOR_PSP, FLAVOR_USD, SidEntry},
    srh::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV6_HLEN},
};

use crate::{
    counters, domain,
    forward::{self, Destination, Lookup},
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr},
    maps::{INTERFACES, SIDS},
    packet::{self, Family, ptr_at, read},
    srv6::{self, Headers, IPPROTO_FRAGMENT},
};

/// What the endpoint will do with a packet, decided before anything in it changes.
enum Decision {
    Pass(Event),
    Forward(Plan),
}

/// A forwarding plan: where to look the next hop up, and how to rewrite the packet then.
///
/// Plain fields, every one set on every path: enums carrying data here let LLVM leave a
/// stale register (a map value pointer) in the unused variant's slot and shift it, which the
/// verifier rejects.
struct Plan {
    /// Look up an IPv4 next hop (the last four bytes of `towards`) instead of IPv6.
    towards_v4: bool,
    towards: [u8; 16],
    /// IP length of the packet as it will leave (for the FIB's MTU check).
    tot_len: u16,
    /// Routing table for the lookup (0: as routed).
    table: u32,
    rewrite: Rewrite,
    /// End/End.X: SRH offset and length, its next header, the new Segments Left and
    /// destination, and whether PSP pops the SRH.
    srh_offset: u16,
    srh_len: u16,
    srh_next_header: u8,
    left: u8,
    next: [u8; 16],
    pop: bool,
    /// End.DX/DT: where the inner packet starts and its family.
    inner: u16,
    inner_v4: bool,
    event: Event,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// Transit: only the hop limit goes down.
    HopLimit,
    /// End/End.X: Segments Left and the destination change; with `pop`, the SRH goes (PSP).
    Advance,
    /// End.DX6/DX4/DT6: the outer headers go, the inner packet starts at `inner`.
    Decapsulate,
}

impl Plan {
    #[inline(always)]
    fn new(rewrite: Rewrite, towards: [u8; 16], tot_len: u16, event: Event) -> Self {
        Plan {
            towards_v4: false,
            towards,
            tot_len,
            table: 0,
            rewrite,
            srh_offset: 0,
            srh_len: 0,
            srh_next_header: 0,
            left: 0,
            next: [0; 16],
            pop: false,
            inner: 0,
            inner_v4: false,
            event,
        }
    }
}

pub fn process(ctx: &XdpContext) -> Result<u32, DropReason> {
    let plan = match decide(ctx)? {
        Decision::Pass(event) => return pass(event),
        Decision::Forward(plan) => plan,
    };
    let towards = if plan.towards_v4 {
        let t = plan.towards;
        Destination::V4([t[12], t[13], t[14], t[15]])
    } else {
        Destination::V6(plan.towards)
    };
    // Decide before changing anything, so the kernel can take the packet as it came: when
    // the neighbour is unresolved, or the packet too big for the egress link (the kernel
    // then sends Packet Too Big, RFC 4443 3.1).
    let Lookup::Resolved(hop) = forward::lookup(ctx, towards, plan.tot_len, plan.table)? else {
        return pass(Event::EndpointToStack);
    };
    // A device XDP cannot redirect into (a bridge) is the kernel's to reach.
    // SAFETY: plain data written whole by the agent.
    if unsafe { INTERFACES.get(hop.ifindex) }.is_some_and(|f| f.slow_path != 0) {
        return pass(Event::EndpointToStack);
    }
    match plan.rewrite {
        Rewrite::HopLimit => packet::decrement_hop_limit(ctx, Family::V6)?,
        Rewrite::Advance if plan.pop => {
            pop_srh(ctx, plan.srh_len, plan.srh_next_header, plan.next)?;
            counters::event(Event::SrhPopped);
        }
        Rewrite::Advance => {
            // The first four SRH bytes as one access (Segments Left is the fourth): a one-byte
            // access at a computed offset compiles to a bounds check the verifier rejects.
            let head = ptr_at::<[u8; 4]>(ctx, plan.srh_offset as usize)?;
            let dst = ptr_at::<[u8; 16]>(ctx, ETH_HLEN + 24)?;
            // SAFETY: in bounds (ptr_at); frame memory is writable in XDP.
            unsafe {
                let mut bytes = core::ptr::read_unaligned(head);
                bytes[3] = plan.left;
                core::ptr::write_unaligned(head, bytes);
                core::ptr::write_unaligned(dst, plan.next);
            }
            packet::decrement_hop_limit(ctx, Family::V6)?;
        }
        Rewrite::Decapsulate => {
            let family = if plan.inner_v4 { Family::V4 } else { Family::V6 };
            strip_outer(ctx, plan.inner as usize, family)?;
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
    if ip.vtc_flow[0] >> 4 != 6 {
        return Ok(Decision::Pass(Event::NotForUs));
    }
    let in_block = domain::in_sid_block(&ip.dst);
    if in_block && from_outside(ctx) {
        return Err(DropReason::OutsideDomain);
    }
    let sid = SIDS.get(Key::new(128, ip.dst)).copied();
    if sid.is_none() && !in_block {
        return Ok(Decision::Pass(Event::NotForUs));
    }
    // A jumbogram (Payload Length 0 and a hop-by-hop header, RFC 2675) is bigger than any
    // link cats forwards onto: the kernel answers it.
    if ip.payload_len == [0, 0] && ip.next_header == 0 {
        return Ok(Decision::Pass(Event::EndpointToStack));
    }
    // Ours from here on: the frame must hold the whole packet the header declares.
    let end = packet_end(ctx, &ip)?;
    let tot_len =
        (IPV6_HLEN as u32 + u16::from_be_bytes(ip.payload_len) as u32).min(u16::MAX as u32) as u16;
    let Some(entry) = sid else {
        return Ok(transit(&ip, tot_len));
    };
    let behavior = match Behavior::from_u8(entry.behavior) {
        // A function of ours the controller did not program: the kernel answers it.
        None | Some(Behavior::Locator) => return Ok(Decision::Pass(Event::EndpointToStack)),
        Some(b) => b,
    };
    let headers = srv6::walk(ctx, ip.next_header, end)?;
    if headers.to_stack {
        return Ok(Decision::Pass(Event::EndpointToStack));
    }
    match behavior {
        Behavior::End | Behavior::EndX => advance(ctx, &ip, &headers, &entry, behavior, tot_len),
        Behavior::EndDx6 => decapsulate(ctx, &headers, Decap::Dx6(entry.nexthop)),
        Behavior::EndDx4 => decapsulate(ctx, &headers, Decap::Dx4(entry.nexthop)),
        Behavior::EndDt6 => decapsulate(ctx, &headers, Decap::Dt6(entry.table)),
        Behavior::Locator => Ok(Decision::Pass(Event::EndpointToStack)),
    }
}

/// Frame offset where the IPv6 packet ends, by its Payload Length. Compared with the whole
/// frame, fragments of a multi-buffer frame included (the headers are in the first buffer).
#[inline(always)]
fn packet_end(ctx: &XdpContext, ip: &Ipv6Hdr) -> Result<usize, DropReason> {
    let end = ETH_HLEN + IPV6_HLEN + u16::from_be_bytes(ip.payload_len) as usize;
    // SAFETY: the helper only reads the context it is given.
    let frame = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    if end > frame {
        return Err(DropReason::Truncated);
    }
    Ok(end)
}

#[inline(always)]
fn pass(event: Event) -> Result<u32, DropReason> {
    counters::event(event);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn from_outside(ctx: &XdpContext) -> bool {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: plain data written whole by the agent.
    unsafe { INTERFACES.get(ifindex) }.is_some_and(|f| f.external != 0)
}

/// SRv6 transit: a SID of another node, forwarded by the FIB without the stack.
#[inline(always)]
fn transit(ip: &Ipv6Hdr, tot_len: u16) -> Decision {
    if ip.hop_limit <= 1 {
        return Decision::Pass(Event::HopLimitToStack);
    }
    Decision::Forward(Plan::new(Rewrite::HopLimit, ip.dst, tot_len, Event::TransitForwarded))
}

/// End and End.X: the next segment becomes the destination (RFC 8986 4.1, 4.2), with PSP.
#[inline(always)]
fn advance(
    ctx: &XdpContext,
    ip: &Ipv6Hdr,
    headers: &Headers,
    entry: &SidEntry,
    behavior: Behavior,
    tot_len: u16,
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
    let tot_len = if pop { tot_len.saturating_sub(srh.len as u16) } else { tot_len };
    let towards = if behavior == Behavior::EndX { entry.nexthop } else { next };
    let mut plan = Plan::new(Rewrite::Advance, towards, tot_len, Event::SegmentAdvanced);
    plan.srh_offset = srh.offset as u16;
    plan.srh_len = srh.len as u16;
    plan.srh_next_header = srh.fixed.next_header;
    plan.left = left;
    plan.next = next;
    plan.pop = pop;
    Ok(Decision::Forward(plan))
}

/// PSP (RFC 8986 4.16.1): the SRH goes, the IPv6 header moves up to the payload.
#[inline(always)]
fn pop_srh(
    ctx: &XdpContext,
    srh_len: u16,
    next_header: u8,
    next: [u8; 16],
) -> Result<(), DropReason> {
    let eth: EthHdr = read(ctx, 0)?;
    let mut ip: Ipv6Hdr = read(ctx, ETH_HLEN)?;
    ip.next_header = next_header;
    ip.payload_len = u16::from_be_bytes(ip.payload_len).wrapping_sub(srh_len).to_be_bytes();
    ip.dst = next;
    ip.hop_limit = ip.hop_limit.wrapping_sub(1);
    // SAFETY: the helper validates the delta against the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, srh_len as i32) } != 0 {
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
    if headers.payload_proto == IPPROTO_FRAGMENT {
        // The packet ends here and needs reassembly first, which XDP does not do.
        return Err(DropReason::Fragment);
    }
    let inner = headers.payload_offset;
    let (family, hop_limit, tot_len, dst) = match (how, headers.payload_proto) {
        (Decap::Dx6(_) | Decap::Dt6(_), IPPROTO_IPV6) => {
            let h: Ipv6Hdr = read(ctx, inner)?;
            (
                Family::V6,
                h.hop_limit,
                (IPV6_HLEN as u16).saturating_add(u16::from_be_bytes(h.payload_len)),
                h.dst,
            )
        }
        (Decap::Dx4(_), IPPROTO_IPIP) => {
            let h: Ipv4Hdr = read(ctx, inner)?;
            (Family::V4, h.ttl, u16::from_be_bytes(h.tot_len), [0; 16])
        }
        _ => return Err(DropReason::WrongPayload),
    };
    if hop_limit <= 1 {
        return Ok(Decision::Pass(Event::HopLimitToStack));
    }
    let (towards, table) = match how {
        Decap::Dx6(nh) | Decap::Dx4(nh) => (nh, 0),
        Decap::Dt6(table) => (dst, table),
    };
    let mut plan = Plan::new(Rewrite::Decapsulate, towards, tot_len, Event::Decapsulated);
    plan.towards_v4 = matches!(how, Decap::Dx4(_));
    plan.table = table;
    plan.inner = inner as u16;
    plan.inner_v4 = family == Family::V4;
    Ok(Decision::Forward(plan))
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
