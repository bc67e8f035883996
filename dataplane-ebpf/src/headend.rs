//! The headend decision: is this service traffic, which instance does its flow belong to, and
//! then encapsulate and forward.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use cats_common::{
    counters::{DropReason, Event},
    flow::{FlowDefinition, FlowEntry, FlowKey, flow_hash},
    maps::{BY_PORT, LOOKUP_TABLE_SIZE, NO_INSTANCE, ServiceEntry, ServiceKey},
    srh::ETH_HLEN,
};

use crate::{
    counters, domain, encap, forward,
    maps::{AFFINITY, LOOKUP, SERVICES, TARGETS},
    packet::{self, Family, Packet, Ports},
};

pub fn steer(ctx: &XdpContext) -> Result<u32, DropReason> {
    let Some(pkt) = packet::parse(ctx)? else {
        counters::event(Event::NotService);
        return Ok(xdp_action::XDP_PASS);
    };
    // Headend interfaces face outside the SR domain: nothing arriving there may be addressed
    // into the SID block (RFC 8754 5.1).
    if pkt.family == Family::V6 && domain::in_sid_block(&pkt.dst.bytes()) {
        return Err(DropReason::OutsideDomain);
    }
    let Some((service, ports)) = classify(ctx, &pkt)? else {
        counters::event(Event::NotService);
        return Ok(xdp_action::XDP_PASS);
    };
    // The frame must hold the whole IP packet its header declares.
    if ctx.data() + ETH_HLEN + pkt.ip_len > ctx.data_end() {
        return Err(DropReason::Truncated);
    }
    // A packet that would expire here goes to the stack, which sends ICMP Time Exceeded.
    if pkt.hop_limit <= 1 {
        counters::event(Event::HopLimitToStack);
        return Ok(xdp_action::XDP_PASS);
    }

    let key = flow_key(&pkt, ports, &service);
    let hash = hash_of(&key);
    let instance_slot = pin(&key, hash, &service)?;
    let target = TARGETS.get(instance_slot).ok_or(DropReason::NoSegments)?;

    packet::decrement_hop_limit(ctx, pkt.family)?;
    encap::push(ctx, &pkt, target, hash)?;
    counters::steered(service.slot, instance_slot, pkt.ip_len as u64);
    forward::send_encapsulated(ctx)
}

/// Finds the service a packet belongs to: `None` for everything else.
#[inline(always)]
fn classify(
    ctx: &XdpContext,
    pkt: &Packet,
) -> Result<Option<(ServiceEntry, Option<Ports>)>, DropReason> {
    let by_address = ServiceKey { addr: pkt.dst.bytes(), port: 0, proto: 0, _pad: 0 };
    // SAFETY: values are plain data the agent replaces whole; a torn read only affects this packet.
    let Some(entry) = (unsafe { SERVICES.get(by_address) }).copied() else {
        return Ok(None);
    };
    // Ports are read only inside the IP packet its header declares, never from padding.
    let ports = match pkt.l4_offset {
        Some(offset) if offset + 4 > ETH_HLEN + pkt.ip_len => return Err(DropReason::Truncated),
        Some(offset) => Some(packet::ports(ctx, offset)?),
        None => None,
    };
    if pkt.family == Family::V4 && !packet::ipv4_checksum_ok(ctx)? {
        // RFC 1812 5.2.2: the stack discards it; it is nobody's service traffic.
        return Ok(None);
    }
    if entry.slot != BY_PORT {
        return Ok(Some((entry, ports)));
    }
    let Some(p) = ports else {
        // A protocol without ports (ICMP, say) cannot match a port; a fragment or an IPv6
        // extension header only hides them.
        return if packet::may_hide_ports(pkt) {
            Err(DropReason::PortsUnreadable)
        } else {
            Ok(None)
        };
    };
    let by_port = ServiceKey { addr: pkt.dst.bytes(), port: p.dst, proto: pkt.proto, _pad: 0 };
    // SAFETY: as above.
    Ok(unsafe { SERVICES.get(by_port) }.copied().map(|e| (e, ports)))
}

/// The affinity key under the service's flow definition.
#[inline(always)]
fn flow_key(pkt: &Packet, ports: Option<Ports>, service: &ServiceEntry) -> FlowKey {
    let mut key = FlowKey {
        src: pkt.src.bytes(),
        dst: [0; 16],
        sport: 0,
        dport: 0,
        proto: 0,
        _pad: [0; 3],
        service_slot: service.slot,
    };
    if FlowDefinition::from_u8(service.flow_definition) == FlowDefinition::FiveTuple {
        key.dst = pkt.dst.bytes();
        key.proto = pkt.proto;
        if let Some(p) = ports {
            key.sport = p.src;
            key.dport = p.dst;
        }
    }
    key
}

/// The flow hash in a function of its own (a BPF-to-BPF call, with its own stack frame):
/// inlined, its arithmetic over the key's bytes spills enough registers to take the headend
/// past the 512 bytes of stack a BPF program has.
#[inline(never)]
fn hash_of(key: &FlowKey) -> u32 {
    flow_hash(key)
}

/// The instance slot of the flow: its live pin, or a fresh pick from the lookup table.
#[inline(always)]
fn pin(key: &FlowKey, hash: u32, service: &ServiceEntry) -> Result<u32, DropReason> {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(entry) = AFFINITY.get_ptr_mut(key) {
        // SAFETY: a live map value; a concurrent update of the same flow only moves last_seen.
        let entry = unsafe { &mut *entry };
        let fresh = now.wrapping_sub(entry.last_seen_ns) <= service.affinity_timeout_ns;
        // A pin to an instance the controller removed (empty target) is chosen afresh.
        let target_live = TARGETS.get(entry.instance_slot).is_some_and(|t| t.segment_count > 0);
        if fresh && target_live {
            entry.last_seen_ns = now;
            counters::event(Event::AffinityHit);
            return Ok(entry.instance_slot);
        }
    }
    counters::event(Event::AffinityMiss);
    let index = service.slot * LOOKUP_TABLE_SIZE + hash % LOOKUP_TABLE_SIZE;
    let slot = *LOOKUP.get(index).ok_or(DropReason::NoInstance)?;
    if slot == NO_INSTANCE {
        return Err(DropReason::NoInstance);
    }
    let entry = FlowEntry { instance_slot: slot, _pad: 0, last_seen_ns: now };
    // A full LRU evicts its oldest flow; insert only fails on memory pressure, and then the
    // packet is still steered, just without a pin.
    let _ = AFFINITY.insert(key, entry, 0);
    Ok(slot)
}
