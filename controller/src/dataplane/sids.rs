//! Writing a node's endpoint state into the maps: local SIDs (and its locators) in the LPM
//! trie, external interfaces, and the SID block in the configuration entry.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context, Result};
use aya::maps::{
    HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use cats_common::maps::{
    Behavior, FLAVOR_PSP, FLAVOR_USD, InterfaceFlags, MAP_INTERFACES, MAP_SIDS, SidEntry,
};

use super::{Dataplane, tables::key_addr};
use crate::state::{EndpointState, LocalSid, SidBehavior};

/// The trie entries for a node: one /128 per SID, one per locator.
pub fn sid_entries(
    state: &EndpointState,
    sids: &[LocalSid],
) -> BTreeMap<(u32, [u8; 16]), SidEntry> {
    let mut out = BTreeMap::new();
    let entry = |behavior: Behavior, flavors: u8, table: u32, nexthop: [u8; 16]| SidEntry {
        behavior: behavior as u8,
        flavors,
        _pad: [0; 2],
        table,
        nexthop,
    };
    for locator in &state.locators {
        out.insert(
            (u32::from(locator.prefix()), locator.network().octets()),
            entry(Behavior::Locator, 0, 0, [0; 16]),
        );
    }
    let psp = if state.psp { FLAVOR_PSP } else { 0 };
    let usd = if state.usd { FLAVOR_USD } else { 0 };
    for sid in sids {
        let e = match &sid.behavior {
            SidBehavior::End => entry(Behavior::End, psp | usd, 0, [0; 16]),
            SidBehavior::EndX { nexthop } => entry(Behavior::EndX, psp, 0, nexthop.octets()),
            SidBehavior::EndDx6 { nexthop } => entry(Behavior::EndDx6, 0, 0, nexthop.octets()),
            SidBehavior::EndDx4 { nexthop } => {
                entry(Behavior::EndDx4, 0, 0, key_addr(IpAddr::V4(*nexthop)))
            }
            SidBehavior::EndDt6 { table } => entry(Behavior::EndDt6, 0, *table, [0; 16]),
        };
        out.insert((128, sid.sid.octets()), e);
    }
    out
}

/// The ifindex of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string; the call reads nothing else.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        anyhow::bail!("interface {name:?} does not exist");
    }
    Ok(index)
}

impl Dataplane {
    /// Brings the endpoint maps to `state` and `sids`; `slow_path` lists the ifindexes XDP
    /// cannot redirect into (bridges). Interface names are resolved in the calling thread's
    /// namespace before anything is written.
    pub fn apply_endpoint(
        &mut self,
        state: &EndpointState,
        sids: &[LocalSid],
        slow_path: &[u32],
    ) -> Result<()> {
        let wanted = sid_entries(state, sids);
        let external: Vec<u32> =
            state.external_interfaces.iter().map(|i| ifindex(i)).collect::<Result<_>>()?;
        let block = state.sr_block.network().octets();
        let block_len = state.sr_block.prefix();
        self.update_config(|c| {
            c.sr_block = block;
            c.sr_block_len = block_len;
        })?;

        let ebpf = self.ebpf_mut();
        let mut trie: LpmTrie<&mut MapData, [u8; 16], SidEntry> =
            LpmTrie::try_from(ebpf.map_mut(MAP_SIDS).context("no SID map")?)?;
        for ((len, addr), entry) in &wanted {
            trie.insert(&Key::new(*len, *addr), entry, 0)?;
        }
        let stale: Vec<Key<[u8; 16]>> = trie
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains_key(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            trie.remove(&key)?;
        }

        let mut flags: BTreeMap<u32, InterfaceFlags> = BTreeMap::new();
        let none = InterfaceFlags { external: 0, slow_path: 0, _pad: [0; 2] };
        for index in &external {
            flags.entry(*index).or_insert(none).external = 1;
        }
        for index in slow_path {
            flags.entry(*index).or_insert(none).slow_path = 1;
        }
        let mut interfaces: HashMap<&mut MapData, u32, InterfaceFlags> =
            HashMap::try_from(ebpf.map_mut(MAP_INTERFACES).context("no interface map")?)?;
        for (index, f) in &flags {
            interfaces.insert(index, f, 0)?;
        }
        let stale: Vec<u32> =
            interfaces.keys().filter_map(|k| k.ok()).filter(|k| !flags.contains_key(k)).collect();
        for index in stale {
            interfaces.remove(&index)?;
        }
        Ok(())
    }
}
