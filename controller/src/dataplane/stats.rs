//! Reading the per-CPU counters back, summed over CPUs.

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
use cats_common::{
    counters::{Counter, DropReason, Event},
    maps::{MAP_DROPS, MAP_EVENTS, MAP_INSTANCE_STATS, MAP_SERVICE_STATS},
};

use super::Dataplane;

impl Dataplane {
    fn sum_u64(&self, map: &str, index: u32) -> Result<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf().map(map).with_context(|| format!("no map {map}"))?)?;
        Ok(m.get(&index, 0)?.iter().sum())
    }

    fn sum_counter(&self, map: &str, index: u32) -> Result<Counter> {
        let m: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.ebpf().map(map).with_context(|| format!("no map {map}"))?)?;
        Ok(sum(&m.get(&index, 0)?))
    }

    pub fn drops(&self, reason: DropReason) -> Result<u64> {
        self.sum_u64(MAP_DROPS, reason as u32)
    }

    pub fn events(&self, event: Event) -> Result<u64> {
        self.sum_u64(MAP_EVENTS, event as u32)
    }

    /// Packets and bytes (inner IP length) steered for a service slot.
    pub fn service_counter(&self, slot: u32) -> Result<Counter> {
        self.sum_counter(MAP_SERVICE_STATS, slot)
    }

    /// Packets and bytes (inner IP length) steered to an instance slot.
    pub fn instance_counter(&self, slot: u32) -> Result<Counter> {
        self.sum_counter(MAP_INSTANCE_STATS, slot)
    }
}

/// Counters of a node read straight from its pinned maps: works while the daemon is down, and
/// from another process (the lab, tests, operators' tools).
pub struct PinnedCounters {
    drops: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    services: PerCpuArray<MapData, Counter>,
    instances: PerCpuArray<MapData, Counter>,
}

impl PinnedCounters {
    /// Opens the maps under a node's pin directory (`paths::node_pins`).
    pub fn open(pins: &std::path::Path) -> Result<Self> {
        let open = |name: &str| -> Result<aya::maps::Map> {
            let path = pins.join("maps").join(name);
            let data =
                MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            Ok(aya::maps::Map::PerCpuArray(data))
        };
        Ok(Self {
            drops: PerCpuArray::try_from(open(MAP_DROPS)?)?,
            events: PerCpuArray::try_from(open(MAP_EVENTS)?)?,
            services: PerCpuArray::try_from(open(MAP_SERVICE_STATS)?)?,
            instances: PerCpuArray::try_from(open(MAP_INSTANCE_STATS)?)?,
        })
    }

    pub fn drops(&self, reason: DropReason) -> Result<u64> {
        Ok(self.drops.get(&(reason as u32), 0)?.iter().sum())
    }

    pub fn events(&self, event: Event) -> Result<u64> {
        Ok(self.events.get(&(event as u32), 0)?.iter().sum())
    }

    pub fn service_counter(&self, slot: u32) -> Result<Counter> {
        Ok(sum(&self.services.get(&slot, 0)?))
    }

    pub fn instance_counter(&self, slot: u32) -> Result<Counter> {
        Ok(sum(&self.instances.get(&slot, 0)?))
    }
}

fn sum(values: &[Counter]) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}
