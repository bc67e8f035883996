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
        Ok(m.get(&index, 0)?.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
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
