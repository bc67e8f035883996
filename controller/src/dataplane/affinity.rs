//! The affinity table seen from userspace: how many flows it pins now, and how many the LRU
//! has evicted.
//!
//! The headend counts `affinity_pinned` for every key it adds and `affinity_reset` for every
//! pin a TCP RST deletes; the keys still in the table are counted here by iterating them.
//! Whatever was added and is neither deleted nor still there was evicted.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use cats_common::{
    counters::Event,
    flow::{FlowEntry, FlowKey},
    maps::MAP_AFFINITY,
};

use super::Dataplane;

impl Dataplane {
    /// Flow pins in `CATS_AFFINITY` now, expired ones included (a pin goes only when the LRU
    /// evicts it, a RST deletes it, or a packet of its flow re-pins it in place).
    pub fn affinity_occupancy(&self) -> Result<u64> {
        let map = self.ebpf().map(MAP_AFFINITY).context("no affinity map")?;
        count_keys(&HashMap::<&MapData, FlowKey, FlowEntry>::try_from(map)?)
    }

    /// Pins the LRU has evicted, by [`affinity_evictions`] (an approximation: see there).
    pub fn affinity_evictions(&self) -> Result<u64> {
        Ok(affinity_evictions(
            self.events(Event::AffinityPinned)?,
            self.events(Event::AffinityReset)?,
            self.affinity_occupancy()?,
        ))
    }
}

/// [`Dataplane::affinity_occupancy`] of a node's pinned map under its pin directory
/// (`paths::node_pins`): works from another process and while the daemon is down. With
/// `PinnedCounters` for the two events, [`affinity_evictions`] gives the evictions.
pub fn pinned_affinity_occupancy(pins: &Path) -> Result<u64> {
    let path = pins.join("maps").join(MAP_AFFINITY);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    count_keys(&HashMap::<MapData, FlowKey, FlowEntry>::try_from(Map::from_map_data(data)?)?)
}

fn count_keys<T: std::borrow::Borrow<MapData>>(
    map: &HashMap<T, FlowKey, FlowEntry>,
) -> Result<u64> {
    let mut n = 0;
    for key in map.keys() {
        key.context("iterating the affinity table")?;
        n += 1;
    }
    Ok(n)
}

/// Flow pins the LRU evicted to make room: `pinned - reset - occupancy`, from the
/// `affinity_pinned` and `affinity_reset` events and the keys in the table now, 0 at least.
///
/// An approximation:
/// - a pin that expired and was re-pinned in place (its flow came back after the idle
///   timeout) counts neither as pinned nor as evicted: the key never left the table;
/// - the counters and the keys are read one after the other, not at one instant: under
///   traffic the result is off by the pins added or deleted in between, and a key deleted
///   while the keys are iterated can make the kernel restart the walk (counted twice);
/// - keys removed from userspace (a test clearing the table) count as evicted.
pub fn affinity_evictions(pinned: u64, reset: u64, occupancy: u64) -> u64 {
    pinned.saturating_sub(reset).saturating_sub(occupancy)
}

#[cfg(test)]
mod tests {
    use super::affinity_evictions;

    #[test]
    fn evictions_are_pins_neither_reset_nor_present() {
        assert_eq!(affinity_evictions(10, 2, 5), 3);
        assert_eq!(affinity_evictions(10, 2, 8), 0);
        // Read at different instants the parts may not add up; never below zero.
        assert_eq!(affinity_evictions(3, 2, 5), 0);
    }
}
