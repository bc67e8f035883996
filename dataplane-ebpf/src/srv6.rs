//! RFC 8754 section 4.3 on the way in: walk the IPv6 extension headers to the SRH, check its
//! fields against each other, walk its TLVs. Every malformation is a named drop reason.

use aya_ebpf::{helpers::bpf_xdp_load_bytes, programs::XdpContext};
use cats_common::{
    counters::DropReason,
    srh::{
        ETH_HLEN, IPPROTO_ROUTING, IPV6_HLEN, ROUTING_TYPE_SRH, SEGMENT_LEN, SRH_FIXED_LEN,
        SrhFixed,
    },
};

use crate::packet::read;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Extension headers walked, the SRH included, before giving up (RFC 8504 5.3 lets a node
/// limit them).
const MAX_EXT_HEADERS: usize = 4;
/// TLVs walked in one SRH (real SRHs carry one or two: PadN, HMAC).
const MAX_TLVS: usize = 32;
/// Upper bound on header offsets, so the verifier sees every packet access bounded: an SRH
/// can be 2048 bytes (RFC 8754), plus the extension headers around it.
const MAX_OFFSET: usize = 4096;
const FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
const FRAGMENT_MORE: u16 = 0x0001;
const TLV_PAD1: u8 = 0;

/// A validated SRH in the frame.
#[derive(Clone, Copy)]
pub struct Srh {
    /// Offset of the SRH from the frame start.
    pub offset: usize,
    pub fixed: SrhFixed,
    /// Whole header length in bytes.
    pub len: usize,
}

/// The outer packet's extension headers, walked.
pub struct Headers {
    pub srh: Option<Srh>,
    /// True when the SRH directly follows the IPv6 header (PSP can pop it in place).
    pub srh_first: bool,
    /// Something the stack must answer (RFC 8200): a routing header of another type with
    /// segments left, or a hop-by-hop header not right after the IPv6 header.
    pub to_stack: bool,
    /// Offset and protocol of what follows the last extension header.
    pub payload_offset: usize,
    pub payload_proto: u8,
}

/// Walks from the IPv6 header's next header to the upper-layer header. `end` is the frame
/// offset where the IPv6 packet ends (by its Payload Length): no header may run past it.
#[inline(always)]
pub fn walk(ctx: &XdpContext, first: u8, end: usize) -> Result<Headers, DropReason> {
    let mut next = first;
    let mut offset = ETH_HLEN + IPV6_HLEN;
    let mut headers = Headers {
        srh: None,
        srh_first: false,
        to_stack: false,
        payload_offset: 0,
        payload_proto: 0,
    };
    // One more round than headers, to note the upper layer after the last one.
    for i in 0..=MAX_EXT_HEADERS {
        if offset > MAX_OFFSET {
            return Err(DropReason::TooManyExtensionHeaders);
        }
        let len = match next {
            IPPROTO_HOPOPTS if i != 0 => {
                // RFC 8200 4.1: only right after the IPv6 header; the stack answers it.
                headers.to_stack = true;
                return Ok(headers);
            }
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => {
                let h: [u8; 2] = read(ctx, offset)?;
                next = h[0];
                (h[1] as usize + 1) * 8
            }
            IPPROTO_ROUTING => {
                if headers.srh.is_some() {
                    return Err(DropReason::RoutingHeaderRepeated);
                }
                let fixed: SrhFixed = read(ctx, offset)?;
                let len = (fixed.hdr_ext_len as usize + 1) * 8;
                if offset + len > end {
                    return Err(DropReason::Truncated);
                }
                if fixed.routing_type != ROUTING_TYPE_SRH {
                    // RFC 8200 4.4: an unknown routing type with segments left is the
                    // stack's to answer (ICMP Parameter Problem); with none, it is skipped.
                    if fixed.segments_left != 0 {
                        headers.to_stack = true;
                        return Ok(headers);
                    }
                } else {
                    validate(ctx, offset, &fixed)?;
                    headers.srh = Some(Srh { offset, fixed, len });
                    headers.srh_first = i == 0;
                }
                next = fixed.next_header;
                len
            }
            IPPROTO_FRAGMENT => {
                let f: [u8; 4] = read(ctx, offset)?;
                let offset_and_flags = u16::from_be_bytes([f[2], f[3]]);
                if offset_and_flags & (FRAGMENT_OFFSET_MASK | FRAGMENT_MORE) == 0 {
                    // An atomic fragment needs no reassembly (RFC 6946): skip the header.
                    next = f[0];
                    8
                } else if headers.srh.is_some() {
                    // After the SRH: the fragment passes a segment endpoint like any
                    // forwarded packet; only where it ends does it need reassembly.
                    headers.payload_offset = offset;
                    headers.payload_proto = IPPROTO_FRAGMENT;
                    return Ok(headers);
                } else {
                    return Err(DropReason::Fragment);
                }
            }
            _ => {
                headers.payload_offset = offset;
                headers.payload_proto = next;
                return Ok(headers);
            }
        };
        offset += len;
        if offset > end {
            return Err(DropReason::Truncated);
        }
    }
    Err(DropReason::TooManyExtensionHeaders)
}

/// RFC 8754 4.3.1.1 consistency (as Linux checks it), then the TLVs.
#[inline(always)]
fn validate(ctx: &XdpContext, offset: usize, srh: &SrhFixed) -> Result<(), DropReason> {
    let last_entry = srh.last_entry as usize;
    // The segment list must fit the header, and Segments Left may point one past it
    // (a reduced SRH, whose first segment is only in the destination address).
    if (last_entry + 1) * 2 > srh.hdr_ext_len as usize
        || srh.segments_left as usize > last_entry + 1
    {
        return Err(DropReason::SrhInvalid);
    }
    let end = offset + (srh.hdr_ext_len as usize + 1) * 8;
    if ctx.data() + end > ctx.data_end() {
        return Err(DropReason::Truncated);
    }
    let mut tlv = offset + SRH_FIXED_LEN + (last_entry + 1) * SEGMENT_LEN;
    for _ in 0..MAX_TLVS {
        if tlv >= end {
            return Ok(());
        }
        if tlv > MAX_OFFSET + 2048 {
            return Err(DropReason::TlvInvalid);
        }
        // Pad1 is a single byte; every other TLV is type, length, value (HMAC included:
        // cats walks it but does not verify it).
        tlv += if load_byte(ctx, tlv)? == TLV_PAD1 {
            1
        } else {
            2 + load_byte(ctx, tlv + 1)? as usize
        };
        if tlv > end {
            return Err(DropReason::TlvInvalid);
        }
    }
    if tlv == end { Ok(()) } else { Err(DropReason::TlvInvalid) }
}

/// One byte at a variable offset, copied by the kernel (`bpf_xdp_load_bytes` checks the
/// bounds): a TLV byte may be the frame's very last one, which a direct one-byte read at a
/// computed offset cannot prove to the verifier.
#[inline(always)]
fn load_byte(ctx: &XdpContext, offset: usize) -> Result<u8, DropReason> {
    let mut b = 0u8;
    // SAFETY: the helper writes at most one byte into `b`, which lives for the call.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, (&mut b as *mut u8).cast(), 1) };
    if rc != 0 {
        return Err(DropReason::TlvInvalid);
    }
    Ok(b)
}

/// Segment List[index] of `srh`.
#[inline(always)]
pub fn segment(ctx: &XdpContext, srh: &Srh, index: u8) -> Result<[u8; 16], DropReason> {
    let offset = srh.offset + SRH_FIXED_LEN + index as usize * SEGMENT_LEN;
    if offset > MAX_OFFSET {
        return Err(DropReason::SrhInvalid);
    }
    read(ctx, offset)
}
