//! The prober's handle on `CATS_HEALTH`: one word of `HEALTH_*` bits per instance slot, 0 while
//! the instance answers over its primary path. Only the prober writes it; `apply_headend`
//! leaves it alone, so a new generation of the state does not undo what the prober found.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData};
use cats_common::maps::{MAP_HEALTH, MAX_INSTANCES};

use super::Dataplane;

pub struct HealthMap {
    map: Array<MapData, u32>,
}

impl HealthMap {
    /// Takes the map out of a loaded dataplane (the prober owns it from then on; the program
    /// keeps reading it).
    pub fn take(dataplane: &mut Dataplane) -> Result<Self> {
        let map = dataplane.ebpf_mut().take_map(MAP_HEALTH).context("no health map")?;
        Ok(Self { map: Array::try_from(map)? })
    }

    /// Opens a node's pinned map under its pin directory (`paths::node_pins`), from another
    /// process (tests, tools).
    pub fn open_pinned(pins: &Path) -> Result<Self> {
        let path = pins.join("maps").join(MAP_HEALTH);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { map: Array::try_from(Map::Array(data))? })
    }

    /// Sets a slot's `HEALTH_*` bits (0: healthy).
    pub fn set(&mut self, slot: u32, bits: u32) -> Result<()> {
        check(slot)?;
        self.map.set(slot, bits, 0).with_context(|| format!("setting health of slot {slot}"))
    }

    pub fn get(&self, slot: u32) -> Result<u32> {
        check(slot)?;
        self.map.get(&slot, 0).with_context(|| format!("reading health of slot {slot}"))
    }
}

fn check(slot: u32) -> Result<()> {
    if slot >= MAX_INSTANCES {
        bail!("instance slot {slot} is outside the health map ({MAX_INSTANCES} slots)");
    }
    Ok(())
}
