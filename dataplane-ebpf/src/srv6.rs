//! RFC 8754 section 4.3 on the way in: walk the IPv6 extension headers to the SRH, check its
//! fields against each other, walk its TLVs. Every malformation is a named drop reason.

use aya_ebpf::programs::XdpContext;
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
const IPPROTO_FRAGMENT: u8 = 44;
/// Extension headers walked before giving up (hop-by-hop, destination options, routing).
const MAX_EXT_HEADERS: usize = 4;
/// TLVs walked in one SRH (Pad1, PadN, HMAC: real SRHs carry one or two).
const MAX_TLVS: usize = 8;
/// Upper bound on header offsets, so the verifier sees every packet access bounded.
const MAX_OFFSET: usize = 1024;
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
    /// A routing header of another type with segments left: the stack answers it.
    pub foreign_routing: bool,
    /// Offset and protocol of what follows the last extension header.
    pub payload_offset: usize,
    pub payload_proto: u8,
}

/// Walks from the IPv6 header's next header to the upper-layer header.
#[inline(always)]
pub fn walk(ctx: &XdpContext, first: u8) -> Result<Headers, DropReason> {
    let mut next = first;
    let mut offset = ETH_HLEN + IPV6_HLEN;
    let mut headers = Headers {
        srh: None,
        srh_first: false,
        foreign_routing: false,
        payload_offset: 0,
        payload_proto: 0,
    };
    for i in 0..MAX_EXT_HEADERS {
        if offset > MAX_OFFSET {
            return Err(DropReason::TooManyExtensionHeaders);
        }
        match next {
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => {
                let h: [u8; 2] = read(ctx, offset)?;
                next = h[0];
                offset += (h[1] as usize + 1) * 8;
            }
            IPPROTO_ROUTING => {
                if headers.srh.is_some() {
                    return Err(DropReason::RoutingHeaderRepeated);
                }
                let fixed: SrhFixed = read(ctx, offset)?;
                let len = (fixed.hdr_ext_len as usize + 1) * 8;
                if fixed.routing_type != ROUTING_TYPE_SRH {
                    // RFC 8200 4.4: an unknown routing type with segments left is the
                    // stack's to answer (ICMP Parameter Problem); with none, it is skipped.
                    if fixed.segments_left != 0 {
                        headers.foreign_routing = true;
                    }
                } else {
                    validate(ctx, offset, &fixed)?;
                    headers.srh = Some(Srh { offset, fixed, len });
                    headers.srh_first = i == 0;
                }
                next = fixed.next_header;
                offset += len;
            }
            IPPROTO_FRAGMENT => return Err(DropReason::Fragment),
            _ => {
                headers.payload_offset = offset;
                headers.payload_proto = next;
                return Ok(headers);
            }
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
        let t: [u8; 2] = read(ctx, tlv).map_err(|_| DropReason::TlvInvalid)?;
        // Pad1 is a single byte; every other TLV is type, length, value (HMAC included:
        // cats walks it but does not verify it).
        tlv += if t[0] == TLV_PAD1 { 1 } else { 2 + t[1] as usize };
        if tlv > end {
            return Err(DropReason::TlvInvalid);
        }
    }
    if tlv == end { Ok(()) } else { Err(DropReason::TlvInvalid) }
}

/// Segment List[index] of `srh`.
#[inline(always)]
pub fn segment(ctx: &XdpContext, srh: &Srh, index: u8) -> Result<[u8; 16], DropReason> {
    let offset = srh.offset + SRH_FIXED_LEN + index as usize * SEGMENT_LEN;
    if offset > MAX_OFFSET + 4096 {
        return Err(DropReason::SrhInvalid);
    }
    read(ctx, offset)
}
