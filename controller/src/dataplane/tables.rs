//! Writing a headend's desired state into the maps.
//!
//! Order matters because the program reads the maps while we write them: targets first (new
//! instances become reachable), then lookup tables (flows may pick them), then service entries
//! (traffic may match), and only then removal of what is no longer wanted. A packet therefore
//! never meets a service whose table points at a missing target. Failover entries are written
//! right after the targets, so a slot that flows can pick already has its backup and alternate.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    net::{IpAddr, Ipv6Addr},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap, MapData};
use cats_common::{
    flow::FlowDefinition as WireFlow,
    maps::{
        BY_PORT, Failover, HeadendConfig, InstanceTarget, LOOKUP_TABLE_SIZE, MAP_CONFIG,
        MAP_FAILOVER, MAP_LOOKUP, MAP_SERVICES, MAP_TARGETS, MAX_INSTANCES, MAX_SEGMENTS,
        MAX_SERVICES, NO_INSTANCE, ServiceEntry, ServiceKey,
    },
};

use super::{Dataplane, maglev};
use crate::state::{FlowDefinition, HeadendState, InstanceState, ServiceState};

/// Outer hop limit of encapsulated packets (what Linux uses for its own seg6 encap by default).
pub const OUTER_HOP_LIMIT: u8 = 64;

/// The map key form of an address: IPv6 as is, IPv4 IPv4-mapped.
pub fn key_addr(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// What the service map must hold for `state`: one entry per match, plus the per-address
/// entry that says "match by port" when an address's services are port-specific. A port's
/// entry carries its match's port group; an address's `(address, 0, 0)` entry has none (0).
pub fn service_entries(state: &HeadendState) -> Result<BTreeMap<KeyOrd, ServiceEntry>> {
    let mut out = BTreeMap::new();
    for svc in &state.services {
        if svc.slot >= MAX_SERVICES {
            bail!(
                "service {} has slot {} but the headend holds {MAX_SERVICES}",
                svc.name,
                svc.slot
            );
        }
        let entry = ServiceEntry {
            slot: svc.slot,
            cs_id: svc.cs_id,
            flow_definition: match svc.flow {
                FlowDefinition::FiveTuple => WireFlow::FiveTuple as u8,
                FlowDefinition::SourceAddress => WireFlow::SourceAddress as u8,
                FlowDefinition::SourcePortGroup => WireFlow::SourcePortGroup as u8,
            },
            port_group: 0,
            affinity_timeout_ns: svc.affinity_timeout_ms.saturating_mul(1_000_000),
        };
        for m in &svc.matches {
            let addr = key_addr(m.address);
            let by_address = m.port == 0 && m.protocol == 0;
            let port_group = if by_address { 0 } else { m.port_group };
            out.insert(
                KeyOrd(ServiceKey { addr, port: m.port, proto: m.protocol, _pad: 0 }),
                ServiceEntry { port_group, ..entry },
            );
            if !by_address {
                let marker = ServiceEntry {
                    slot: BY_PORT,
                    cs_id: 0,
                    flow_definition: 0,
                    port_group: 0,
                    affinity_timeout_ns: 0,
                };
                out.entry(KeyOrd(ServiceKey { addr, port: 0, proto: 0, _pad: 0 }))
                    .or_insert(marker);
            }
        }
    }
    Ok(out)
}

/// `ServiceKey` ordered by its bytes, so desired and current sets can be diffed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyOrd(pub ServiceKey);

impl KeyOrd {
    fn bytes(&self) -> ([u8; 16], u16, u8) {
        (self.0.addr, self.0.port, self.0.proto)
    }
}
impl PartialOrd for KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(&other.bytes())
    }
}

/// The map value for one instance: its segment list in SRH order.
pub fn target(instance: &InstanceState) -> Result<InstanceTarget> {
    segment_list(instance, &instance.segments, "segments")
}

fn segment_list(instance: &InstanceState, list: &[Ipv6Addr], what: &str) -> Result<InstanceTarget> {
    let n = list.len();
    if n == 0 || n > MAX_SEGMENTS {
        bail!("instance {} has {n} {what}; the headend takes 1 to {MAX_SEGMENTS}", instance.name);
    }
    let mut segments = [[0u8; 16]; MAX_SEGMENTS];
    // SRH order is reversed: the last SID to visit is entry 0.
    for (i, sid) in list.iter().rev().enumerate() {
        segments[i] = sid.octets();
    }
    Ok(InstanceTarget {
        instance_id: instance.instance_id,
        cs_id: instance.cs_id,
        segment_count: n as u8,
        _pad: 0,
        segments,
    })
}

/// What a slot no longer in use holds: the array's initial value. The headend never reads it
/// (a pin to such a slot is orphaned and re-picked first, and a backup is an instance in use).
const CLEARED_FAILOVER: Failover =
    Failover { backup_slot: 0, _pad: 0, alternate: InstanceTarget::EMPTY };

/// The failover entry of one instance of `state`: its alternate path (none: segment count 0)
/// and its backup's slot (none: `NO_INSTANCE`), which must be another instance of the same
/// service at this headend.
pub fn failover(state: &HeadendState, instance: &InstanceState) -> Result<Failover> {
    let alternate = if instance.alternate_segments.is_empty() {
        InstanceTarget::EMPTY
    } else {
        segment_list(instance, &instance.alternate_segments, "alternate segments")?
    };
    let backup_slot = match instance.backup_slot {
        None => NO_INSTANCE,
        Some(slot) if slot >= MAX_INSTANCES => bail!(
            "instance {} has backup slot {slot} but the headend holds {MAX_INSTANCES}",
            instance.name
        ),
        Some(slot) if slot == instance.slot => {
            bail!("instance {} names its own slot {slot} as its backup", instance.name)
        }
        Some(slot) => {
            let Some(backup) = state.instances.iter().find(|i| i.slot == slot) else {
                bail!(
                    "instance {} has backup slot {slot}, which is no instance of this headend",
                    instance.name
                );
            };
            if backup.service != instance.service {
                bail!(
                    "instance {} of {} has backup {} of another service ({})",
                    instance.name,
                    instance.service,
                    backup.name,
                    backup.service
                );
            }
            slot
        }
    };
    Ok(Failover { backup_slot, _pad: 0, alternate })
}

/// The Maglev table of one service.
pub fn lookup_table(state: &HeadendState, svc: &ServiceState) -> Vec<u32> {
    let names: StdHashMap<u32, &str> =
        state.instances.iter().map(|i| (i.slot, i.name.as_str())).collect();
    let entries: Vec<maglev::Entry<'_>> = svc
        .weights
        .iter()
        .map(|w| maglev::Entry {
            identity: names.get(&w.slot).copied().unwrap_or("?"),
            slot: w.slot,
            weight: w.weight,
        })
        .collect();
    maglev::build(&entries, LOOKUP_TABLE_SIZE)
}

/// What `apply` changed, for logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableChanges {
    pub targets_written: usize,
    pub targets_cleared: usize,
    pub failovers_written: usize,
    pub failovers_cleared: usize,
    pub services_written: usize,
    pub services_removed: usize,
    pub lookup_slots_changed: usize,
}

impl Dataplane {
    /// Changes the node configuration entry in place: the headend owns the encap fields, the
    /// endpoint the SID block, and neither clobbers the other's.
    pub fn update_config(&mut self, change: impl FnOnce(&mut HeadendConfig)) -> Result<()> {
        let mut map: Array<&mut MapData, HeadendConfig> =
            Array::try_from(self.ebpf_mut().map_mut(MAP_CONFIG).context("no config map")?)?;
        let mut config = map.get(&0, 0)?;
        change(&mut config);
        map.set(0, config, 0)?;
        Ok(())
    }

    /// Brings the headend maps to `state`. Everything is validated before the first write, so a
    /// state that cannot be applied leaves the maps as they were.
    pub fn apply_headend(&mut self, state: &HeadendState) -> Result<TableChanges> {
        // Validate and compute everything first.
        let targets: Vec<(u32, InstanceTarget)> = state
            .instances
            .iter()
            .map(|i| {
                if i.slot >= MAX_INSTANCES {
                    bail!(
                        "instance {} has slot {} but the headend holds {MAX_INSTANCES}",
                        i.name,
                        i.slot
                    );
                }
                Ok((i.slot, target(i)?))
            })
            .collect::<Result<_>>()?;
        let failovers: Vec<(u32, Failover)> = state
            .instances
            .iter()
            .map(|i| Ok((i.slot, failover(state, i)?)))
            .collect::<Result<_>>()?;
        let services = service_entries(state)?;
        let tables: Vec<(u32, Vec<u32>)> =
            state.services.iter().map(|s| (s.slot, lookup_table(state, s))).collect();
        let encap_source = state.encap_source.octets();
        self.update_config(|c| {
            c.encap_source = encap_source;
            c.hop_limit = OUTER_HOP_LIMIT;
        })?;

        let mut changes = TableChanges::default();
        let ebpf = self.ebpf_mut();

        let mut target_map: Array<&mut MapData, InstanceTarget> =
            Array::try_from(ebpf.map_mut(MAP_TARGETS).context("no targets map")?)?;
        let wanted: BTreeSet<u32> = targets.iter().map(|(s, _)| *s).collect();
        for (slot, t) in &targets {
            if target_map.get(slot, 0)? != *t {
                target_map.set(*slot, t, 0)?;
                changes.targets_written += 1;
            }
        }
        let mut failover_map: Array<&mut MapData, Failover> =
            Array::try_from(ebpf.map_mut(MAP_FAILOVER).context("no failover map")?)?;
        for (slot, f) in &failovers {
            if failover_map.get(slot, 0)? != *f {
                failover_map.set(*slot, f, 0)?;
                changes.failovers_written += 1;
            }
        }

        let mut lookup: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut(MAP_LOOKUP).context("no lookup map")?)?;
        for (slot, table) in &tables {
            let base = slot * LOOKUP_TABLE_SIZE;
            for (i, instance) in table.iter().enumerate() {
                let index = base + i as u32;
                if lookup.get(&index, 0)? != *instance {
                    lookup.set(index, instance, 0)?;
                    changes.lookup_slots_changed += 1;
                }
            }
        }

        let mut service_map: HashMap<&mut MapData, ServiceKey, ServiceEntry> =
            HashMap::try_from(ebpf.map_mut(MAP_SERVICES).context("no services map")?)?;
        for (key, entry) in &services {
            if service_map.get(&key.0, 0).ok() != Some(*entry) {
                service_map.insert(key.0, entry, 0)?;
                changes.services_written += 1;
            }
        }
        let stale: Vec<ServiceKey> = service_map
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !services.contains_key(&KeyOrd(*k)))
            .collect();
        for key in stale {
            service_map.remove(&key)?;
            changes.services_removed += 1;
        }

        // Tables of services that are gone no longer matter (no entry points at them); clear
        // targets that no service uses so stale flow pins re-pick.
        let mut target_map: Array<&mut MapData, InstanceTarget> =
            Array::try_from(ebpf.map_mut(MAP_TARGETS).context("no targets map")?)?;
        for slot in 0..MAX_INSTANCES {
            if !wanted.contains(&slot) && target_map.get(&slot, 0)?.segment_count != 0 {
                target_map.set(slot, InstanceTarget::EMPTY, 0)?;
                changes.targets_cleared += 1;
            }
        }
        let mut failover_map: Array<&mut MapData, Failover> =
            Array::try_from(ebpf.map_mut(MAP_FAILOVER).context("no failover map")?)?;
        for slot in 0..MAX_INSTANCES {
            if !wanted.contains(&slot) && failover_map.get(&slot, 0)? != CLEARED_FAILOVER {
                failover_map.set(slot, CLEARED_FAILOVER, 0)?;
                changes.failovers_cleared += 1;
            }
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{InstanceWeight, ServiceMatch};

    fn service(flow: FlowDefinition, matches: Vec<ServiceMatch>) -> HeadendState {
        HeadendState {
            interfaces: vec!["cams".into()],
            affinity_table_size: 65536,
            encap_source: "fc00:0:1::1".parse().unwrap(),
            services: vec![ServiceState {
                name: "calls".into(),
                slot: 3,
                cs_id: 7,
                matches,
                flow,
                affinity_timeout_ms: 30_000,
                weights: vec![InstanceWeight { slot: 0, weight: 1 }],
                health: Default::default(),
            }],
            instances: vec![],
        }
    }

    fn key(addr: IpAddr, proto: u8, port: u16) -> KeyOrd {
        KeyOrd(ServiceKey { addr: key_addr(addr), port, proto, _pad: 0 })
    }

    #[test]
    fn port_entries_carry_their_group_and_the_address_entry_none() {
        let address: IpAddr = "2001:db8::1".parse().unwrap();
        let m = |port, port_group| ServiceMatch { address, protocol: 17, port, port_group };
        let state = service(
            FlowDefinition::SourcePortGroup,
            vec![m(5004, 1), m(5006, 1), m(5008, 0), m(6000, 2)],
        );
        let entries = service_entries(&state).unwrap();
        assert_eq!(entries.len(), 5);
        for (port, group) in [(5004, 1), (5006, 1), (5008, 0), (6000, 2)] {
            let e = entries[&key(address, 17, port)];
            assert_eq!(
                (e.slot, e.cs_id, e.flow_definition, e.port_group),
                (3, 7, WireFlow::SourcePortGroup as u8, group),
                "port {port}"
            );
        }
        let by_address = entries[&key(address, 0, 0)];
        assert_eq!((by_address.slot, by_address.port_group), (BY_PORT, 0));
    }

    fn instance(name: &str, slot: u32, service: &str, backup_slot: Option<u32>) -> InstanceState {
        InstanceState {
            name: name.into(),
            slot,
            service: service.into(),
            cs_id: 7,
            instance_id: slot + 1,
            segments: vec!["fc00:0:3:e007::".parse().unwrap()],
            alternate_segments: Vec::new(),
            backup_slot,
        }
    }

    #[test]
    fn failover_entries_carry_the_alternate_in_srh_order_and_the_backup_slot() {
        let mut state = service(FlowDefinition::FiveTuple, vec![]);
        let mut a = instance("a", 0, "calls", Some(4));
        a.alternate_segments =
            vec!["fc00:0:2::".parse().unwrap(), "fc00:0:3:e007::".parse().unwrap()];
        state.instances = vec![a.clone(), instance("b", 4, "calls", None)];
        let f = failover(&state, &a).unwrap();
        assert_eq!(f.backup_slot, 4);
        assert_eq!((f.alternate.instance_id, f.alternate.cs_id), (1, 7));
        assert_eq!(f.alternate.segment_count, 2);
        assert_eq!(f.alternate.segments[0], a.alternate_segments[1].octets(), "the last SID first");
        assert_eq!(f.alternate.segments[1], a.alternate_segments[0].octets());
        let b = failover(&state, &state.instances[1]).unwrap();
        assert_eq!((b.backup_slot, b.alternate), (NO_INSTANCE, InstanceTarget::EMPTY));
    }

    #[test]
    fn a_backup_must_be_another_instance_of_the_same_service_here() {
        let mut state = service(FlowDefinition::FiveTuple, vec![]);
        state.instances = vec![instance("b", 4, "calls", None), instance("x", 5, "other", None)];
        for (backup, says) in [
            (MAX_INSTANCES, "backup slot 1024 but the headend holds 1024"),
            (9, "backup slot 9, which is no instance of this headend"),
            (0, "names its own slot 0 as its backup"),
            (5, "has backup x of another service (other)"),
        ] {
            let error = failover(&state, &instance("a", 0, "calls", Some(backup))).unwrap_err();
            assert!(error.to_string().contains(says), "{error}");
        }
        let mut too_long = instance("a", 0, "calls", None);
        too_long.alternate_segments = vec!["fc00:0:2::".parse().unwrap(); MAX_SEGMENTS + 1];
        let error = failover(&state, &too_long).unwrap_err();
        assert!(error.to_string().contains("7 alternate segments"), "{error}");
    }

    #[test]
    fn an_address_matched_whole_has_no_port_group() {
        let address: IpAddr = "198.51.100.1".parse().unwrap();
        // A group on an all-ports match is meaningless: the entry carries none.
        let m = ServiceMatch { address, protocol: 0, port: 0, port_group: 4 };
        let entries = service_entries(&service(FlowDefinition::SourcePortGroup, vec![m])).unwrap();
        let e = entries[&key(address, 0, 0)];
        assert_eq!((e.slot, e.port_group), (3, 0));
    }
}
