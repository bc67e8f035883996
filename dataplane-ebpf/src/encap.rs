//! H.Encaps (RFC 8986 section 5.1): outer IPv6 header plus a full SRH in front of the packet.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use cats_common::{
    counters::DropReason,
    maps::{InstanceTarget, MAX_SEGMENTS},
    sid::{FUNC_COMPUTE_V4, MAX_CS_ID},
    srh::{
        ETH_HLEN, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_ROUTING, IPV6_HLEN, SEGMENT_LEN,
        SRH_FIXED_LEN, SrhFixed, encap_len,
    },
};

use crate::{
    headers::{EthHdr, Ipv6Hdr},
    maps::CONFIG,
    packet::{Family, Packet, ptr_at},
};

/// Everything H.Encaps puts in front of the inner packet, up to the segment list.
#[repr(C)]
#[derive(Clone, Copy)]
struct OuterHeaders {
    eth: EthHdr,
    ip6: Ipv6Hdr,
    srh: SrhFixed,
}

/// Grows the frame at the front and writes Ethernet + IPv6 + SRH for `target`'s segments.
/// The Ethernet addresses are the received ones until forwarding rewrites them.
#[inline(always)]
pub fn push(
    ctx: &XdpContext,
    pkt: &Packet,
    target: &InstanceTarget,
    hash: u32,
) -> Result<(), DropReason> {
    let config = CONFIG.get(0).ok_or(DropReason::NotConfigured)?;
    let count = target.segment_count as usize;
    if count == 0 || count > MAX_SEGMENTS {
        return Err(DropReason::NoSegments);
    }
    let first_sid = sid_at(target, count - 1, pkt.family)?;
    let old_eth: EthHdr = crate::packet::read(ctx, 0)?;

    trim_padding(ctx, pkt.ip_len)?;
    let grow = encap_len(count) as i32;
    // SAFETY: the helper validates the delta against the frame's headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(DropReason::NoHeadroom);
    }

    let inner_next = match pkt.family {
        Family::V6 => IPPROTO_IPV6,
        Family::V4 => IPPROTO_IPIP,
    };
    let srh_len = SRH_FIXED_LEN + count * SEGMENT_LEN;
    let flow_label = hash & 0x000f_ffff;
    let outer = OuterHeaders {
        eth: EthHdr { dst: old_eth.dst, src: old_eth.src, ether_type: ETH_P_IPV6.to_be_bytes() },
        ip6: Ipv6Hdr {
            vtc_flow: (0x6000_0000u32 | flow_label).to_be_bytes(),
            payload_len: ((srh_len + pkt.ip_len) as u16).to_be_bytes(),
            next_header: IPPROTO_ROUTING,
            hop_limit: config.hop_limit,
            src: config.encap_source,
            dst: first_sid,
        },
        srh: SrhFixed::for_segments(inner_next, count as u8, target.cs_id),
    };
    let head = ptr_at::<OuterHeaders>(ctx, 0)?;
    // SAFETY: ptr_at checked the frame holds the fixed headers.
    unsafe { core::ptr::write_unaligned(head, outer) };

    write_segments(ctx, target, count, pkt.family)
}

/// SRH entry `i` of the target's list. For an IPv4 payload the last SID's function says so
/// (End.DX4 instead of End.DX6), keeping one segment list per instance in the map.
#[inline(always)]
fn sid_at(target: &InstanceTarget, i: usize, family: Family) -> Result<[u8; 16], DropReason> {
    let mut sid = *target.segments.get(i).ok_or(DropReason::NoSegments)?;
    if i == 0 && family == Family::V4 {
        let function = (FUNC_COMPUTE_V4 | (target.cs_id & MAX_CS_ID)).to_be_bytes();
        sid[6] = function[0];
        sid[7] = function[1];
    }
    Ok(sid)
}

/// Copies the segment list in SRH order.
#[inline(always)]
fn write_segments(
    ctx: &XdpContext,
    target: &InstanceTarget,
    count: usize,
    family: Family,
) -> Result<(), DropReason> {
    const LIST: usize = ETH_HLEN + IPV6_HLEN + SRH_FIXED_LEN;
    for i in 0..MAX_SEGMENTS {
        if i >= count {
            break;
        }
        let sid = sid_at(target, i, family)?;
        let slot = ptr_at::<[u8; 16]>(ctx, LIST + i * SEGMENT_LEN)?;
        // SAFETY: ptr_at checked the frame holds this segment.
        unsafe { core::ptr::write_unaligned(slot, sid) };
    }
    Ok(())
}

/// Drops Ethernet padding after the IP packet, so the outer length fields cover the frame.
#[inline(always)]
fn trim_padding(ctx: &XdpContext, ip_len: usize) -> Result<(), DropReason> {
    let frame_ip_len = ctx.data_end() - ctx.data() - ETH_HLEN;
    if frame_ip_len > ip_len {
        let excess = (frame_ip_len - ip_len) as i32;
        // SAFETY: shrinking the tail by less than the frame length is always valid.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -excess) } != 0 {
            return Err(DropReason::Truncated);
        }
    }
    Ok(())
}
