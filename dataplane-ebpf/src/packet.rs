//! Bounds-checked access to the frame, and the classification of an incoming packet.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

use crate::headers::{EthHdr, Ipv4Hdr, Ipv6Hdr};
use cats_common::{
    counters::DropReason,
    srh::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HLEN, IPV6_HLEN},
};

/// A pointer to a `T` at `offset` from the start of the frame, if the frame holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, DropReason> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return Err(DropReason::Truncated);
    }
    Ok((start + offset) as *mut T)
}

/// Reads a `T` at `offset`. The frame bytes may be unaligned.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, DropReason> {
    // SAFETY: ptr_at checked that the frame holds size_of::<T>() bytes at offset.
    Ok(unsafe { core::ptr::read_unaligned(ptr_at::<T>(ctx, offset)?) })
}

/// IP version of the packet, from the Ethernet type.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// An IPv6 (or IPv4-mapped) address held as two words. Sixteen separate byte values would
/// each take a register, and each a stack slot of 8 bytes when spilled across the helper
/// calls between parsing and building the flow key: 256 of the headend's 512 bytes of stack.
#[derive(Clone, Copy)]
pub struct Addr([u64; 2]);

/// Bytes `i..i + 8` of an address, by constant indexes (no variable indexing for the
/// verifier to doubt).
#[inline(always)]
pub fn eight(b: &[u8; 16], i: usize) -> [u8; 8] {
    [b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]
}

impl Addr {
    #[inline(always)]
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Addr([u64::from_ne_bytes(eight(&b, 0)), u64::from_ne_bytes(eight(&b, 8))])
    }

    /// The address in network order, as the maps store it.
    #[inline(always)]
    pub fn bytes(self) -> [u8; 16] {
        let (hi, lo) = (self.0[0].to_ne_bytes(), self.0[1].to_ne_bytes());
        [
            hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7], lo[0], lo[1], lo[2], lo[3],
            lo[4], lo[5], lo[6], lo[7],
        ]
    }
}

/// What the headend needs from an IP packet before it knows whether it is service traffic.
pub struct Packet {
    pub family: Family,
    /// Source and destination, IPv4 ones IPv4-mapped.
    pub src: Addr,
    pub dst: Addr,
    /// Transport protocol (IPv6: the first next header).
    pub proto: u8,
    /// Offset of the transport header when it directly follows the IP header and the packet is
    /// not a fragment; `None` when the ports cannot be read from a fixed place.
    pub l4_offset: Option<usize>,
    /// Hop limit or TTL as received.
    pub hop_limit: u8,
    /// Length of the IP packet as its header declares it.
    pub ip_len: usize,
}

/// Transport ports, host byte order.
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of an IPv4 address, as the maps store it.
#[inline(always)]
pub fn mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// Parses Ethernet and IP. `Ok(None)` means "not IP": the headend passes it untouched.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Option<Packet>, DropReason> {
    let eth: EthHdr = read(ctx, 0)?;
    match u16::from_be_bytes(eth.ether_type) {
        ETH_P_IPV6 => parse_v6(ctx).map(Some),
        ETH_P_IP => parse_v4(ctx).map(Some),
        _ => Ok(None),
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext) -> Result<Packet, DropReason> {
    let ip: Ipv6Hdr = read(ctx, ETH_HLEN)?;
    let proto = ip.next_header;
    // Ports sit right after the fixed header only for TCP and UDP without extension headers.
    let l4_offset = match proto {
        IPPROTO_TCP | IPPROTO_UDP => Some(ETH_HLEN + IPV6_HLEN),
        _ => None,
    };
    Ok(Packet {
        family: Family::V6,
        src: Addr::from_bytes(ip.src),
        dst: Addr::from_bytes(ip.dst),
        proto,
        l4_offset,
        hop_limit: ip.hop_limit,
        ip_len: IPV6_HLEN + u16::from_be_bytes(ip.payload_len) as usize,
    })
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext) -> Result<Packet, DropReason> {
    let ip: Ipv4Hdr = read(ctx, ETH_HLEN)?;
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    if ihl < IPV4_MIN_HLEN {
        return Err(DropReason::Truncated);
    }
    let frag = u16::from_be_bytes(ip.frag_off);
    let fragment = frag & (IPV4_MF | IPV4_OFFSET_MASK) != 0;
    let l4_offset = match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP if !fragment => Some(ETH_HLEN + ihl),
        _ => None,
    };
    Ok(Packet {
        family: Family::V4,
        src: Addr::from_bytes(mapped(ip.src)),
        dst: Addr::from_bytes(mapped(ip.dst)),
        proto: ip.proto,
        l4_offset,
        hop_limit: ip.ttl,
        ip_len: u16::from_be_bytes(ip.tot_len) as usize,
    })
}

/// Whether ports the packet has are out of reach: an IPv4 fragment of TCP/UDP, or IPv6
/// extension headers in front of the transport header.
#[inline(always)]
pub fn may_hide_ports(pkt: &Packet) -> bool {
    match pkt.family {
        Family::V4 => matches!(pkt.proto, IPPROTO_TCP | IPPROTO_UDP),
        // Hop-by-hop, routing, fragment, destination options, AH, mobility, HIP, shim6.
        Family::V6 => matches!(pkt.proto, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140),
    }
}

/// Verifies the IPv4 header checksum (RFC 1071): the header sums to 0xffff.
#[inline(always)]
pub fn ipv4_checksum_ok(ctx: &XdpContext) -> Result<bool, DropReason> {
    let first: [u8; 1] = read(ctx, ETH_HLEN)?;
    let words = ((first[0] & 0x0f) as usize) * 2;
    let mut sum = 0u32;
    for i in 0..30 {
        if i >= words {
            break;
        }
        let w: [u8; 2] = read(ctx, ETH_HLEN + i * 2)?;
        sum += u16::from_be_bytes(w) as u32;
    }
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    Ok(sum == 0xffff)
}

/// Reads the transport ports at `offset`.
#[inline(always)]
pub fn ports(ctx: &XdpContext, offset: usize) -> Result<Ports, DropReason> {
    // Bound the variable IPv4 header length so the verifier sees a finite offset.
    if offset > ETH_HLEN + 60 {
        return Err(DropReason::Truncated);
    }
    let raw: [u8; 4] = read(ctx, offset)?;
    Ok(Ports {
        src: u16::from_be_bytes([raw[0], raw[1]]),
        dst: u16::from_be_bytes([raw[2], raw[3]]),
    })
}

/// TCP RST (RFC 9293 3.1), in the flags byte at offset 13 of the TCP header.
pub const TCP_RST: u8 = 0x04;

/// The TCP flags of a segment whose header starts at `offset`, or `None` when the IP packet
/// (`ip_len` bytes, as its header declares) holds less than 16 bytes of TCP header (a real one
/// has 20 at least): a header cut that short says nothing, and the packet is steered as any
/// other.
#[inline(always)]
pub fn tcp_flags(ctx: &XdpContext, offset: usize, ip_len: usize) -> Option<u8> {
    // As for the ports: a finite bound on the variable IPv4 header length, and four bytes
    // read at once (data offset, flags and window) rather than one byte at a computed offset,
    // all inside the IP packet.
    if offset > ETH_HLEN + 60 || offset + 16 > ETH_HLEN + ip_len {
        return None;
    }
    let raw: [u8; 4] = read(ctx, offset + 12).ok()?;
    Some(raw[1])
}

/// Decrements the inner hop limit (or TTL, fixing the IPv4 checksum incrementally, RFC 1624),
/// as any router forwarding the packet would.
#[inline(always)]
pub fn decrement_hop_limit(ctx: &XdpContext, family: Family) -> Result<(), DropReason> {
    match family {
        Family::V6 => {
            let hl = ptr_at::<u8>(ctx, ETH_HLEN + 7)?;
            // SAFETY: in bounds (ptr_at); frame memory is writable in XDP.
            unsafe { *hl -= 1 };
        }
        Family::V4 => {
            let ttl = ptr_at::<u8>(ctx, ETH_HLEN + 8)?;
            let check = ptr_at::<[u8; 2]>(ctx, ETH_HLEN + 10)?;
            // SAFETY: as above. TTL is the high byte of its 16-bit word, so the checksum
            // grows by 0x0100 with end-around carry.
            unsafe {
                *ttl -= 1;
                let sum = u16::from_be_bytes(*check) as u32 + 0x0100;
                let sum = (sum & 0xffff) + (sum >> 16);
                *check = (sum as u16).to_be_bytes();
            }
        }
    }
    Ok(())
}
