//! The headend decision: is this service traffic, which instance does its flow belong to, and
//! then encapsulate and forward.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    programs::XdpContext,
};
use cats_common::{
    counters::{DropReason, Event},
    flow::{FlowDefinition, FlowEntry, FlowKey, flow_hash},
    maps::{BY_PORT, LOOKUP_TABLE_SIZE, NO_INSTANCE, ServiceEntry, ServiceKey},
    srh::{ETH_HLEN, IPPROTO_TCP},
};

use crate::{
    counters, domain, encap, failover, forward,
    maps::{AFFINITY, FAILOVER, LOOKUP, SERVICES, TARGETS},
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
    let pinned = pin(&key, hash, &service)?;
    let choice = failover::resolve(pinned);
    let instance_slot = choice.slot();
    if instance_slot != pinned {
        repin(&key, instance_slot);
    }
    // Deleting after the pick keeps `pin` simple; a RST of a flow without a pin makes one and
    // deletes it at once, counted by both `affinity_pinned` and `affinity_reset`, so the
    // eviction count (pinned - reset - occupancy) stays right.
    if ends_connection(ctx, &pkt, &service) {
        unpin(&key);
    }
    // A pointer into the map value: a segment list is too big to copy onto the stack.
    let target = if choice.via_alternate() {
        &FAILOVER.get(instance_slot).ok_or(DropReason::NoSegments)?.alternate
    } else {
        TARGETS.get(instance_slot).ok_or(DropReason::NoSegments)?
    };

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

/// Source port of a port-group affinity key (no real source port is kept in such keys).
const GROUP_KEY: u16 = u16::MAX;

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
    let definition = FlowDefinition::from_u8(service.flow_definition);
    if definition == FlowDefinition::SourceAddress {
        return key;
    }
    key.dst = pkt.dst.bytes();
    key.proto = pkt.proto;
    if let Some(p) = ports {
        key.dport = p.dst;
        if definition == FlowDefinition::FiveTuple {
            key.sport = p.src;
        }
    }
    // Source port group: the group stands in for the port, so the ports of one group share a
    // pin (a port in no group is its own group); source ports never matter, so the source
    // port field marks a group key: group 7 and an ungrouped port 7 are two pins.
    if definition == FlowDefinition::SourcePortGroup && service.port_group != 0 {
        key.dport = service.port_group as u16;
        key.sport = GROUP_KEY;
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

/// Whether the packet ends its flow: a TCP RST of a five-tuple flow. It is still steered to
/// its pinned instance (the instance's end of the connection must see it), and then the pin
/// goes, so the next SYN of the same 5-tuple picks afresh.
///
/// A FIN does not end the flow here: after the server's FIN the client still sends the last
/// ACK (and either side may keep sending after its own FIN, a half-close), and without the
/// pin those packets could reach another instance, which would answer them with a RST. The
/// idle timeout clears such pins instead.
#[inline(always)]
fn ends_connection(ctx: &XdpContext, pkt: &Packet, service: &ServiceEntry) -> bool {
    if pkt.proto != IPPROTO_TCP
        || FlowDefinition::from_u8(service.flow_definition) != FlowDefinition::FiveTuple
    {
        return false;
    }
    let Some(offset) = pkt.l4_offset else {
        return false;
    };
    packet::tcp_flags(ctx, offset, pkt.ip_len).is_some_and(|f| f & packet::TCP_RST != 0)
}

/// The instance slot of the flow: its live pin, or a fresh pick from the lookup table.
#[inline(always)]
fn pin(key: &FlowKey, hash: u32, service: &ServiceEntry) -> Result<u32, DropReason> {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let existing = AFFINITY.get_ptr_mut(key);
    if let Some(entry) = existing {
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
    crate::log::pinned(service.slot, slot);
    if let Some(entry) = existing {
        // An expired or orphaned pin is re-pinned in place: the key stays, nothing is added.
        // SAFETY: as above.
        let entry = unsafe { &mut *entry };
        entry.instance_slot = slot;
        entry.last_seen_ns = now;
    } else {
        let entry = FlowEntry { instance_slot: slot, _pad: 0, last_seen_ns: now };
        // A full LRU evicts its oldest flow. Insert fails when another CPU pinned the key
        // since the lookup (it picked the same slot: the hash is the key's) or on memory
        // pressure; either way the packet is still steered, and only a new key counts.
        if AFFINITY.insert(key, entry, BPF_NOEXIST as u64).is_ok() {
            counters::event(Event::AffinityPinned);
        }
    }
    Ok(slot)
}

/// Moves a flow's pin to the backup slot failover chose: the flow stays there even after its
/// first instance is back (its connection now lives there). A new flow's pin was made a
/// moment ago by `pin`, so it too ends up pinned straight to the backup.
#[inline(always)]
fn repin(key: &FlowKey, slot: u32) {
    if let Some(entry) = AFFINITY.get_ptr_mut(key) {
        // SAFETY: a live map value; a concurrent update of the same flow writes the same slot.
        unsafe { (*entry).instance_slot = slot };
    }
}

/// Deletes a flow's pin, counting it when it was there.
#[inline(always)]
fn unpin(key: &FlowKey) {
    if AFFINITY.remove(key).is_ok() {
        counters::event(Event::AffinityReset);
    }
}
