//! The headend's maps. Who writes and reads each one is documented in `cats_common::maps`.
//! Maps are declared unpinned; the agent chooses pin paths when it loads the object, so tests
//! can load private copies.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use cats_common::{
    counters::{Counter, DropReason, Event},
    flow::{FlowEntry, FlowKey},
    maps::*,
};

#[map(name = "CATS_CONFIG")]
pub static CONFIG: Array<HeadendConfig> = Array::with_max_entries(1, 0);

#[map(name = "CATS_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceEntry> =
    HashMap::with_max_entries(MAX_SERVICE_MATCHES, 0);

#[map(name = "CATS_LOOKUP")]
pub static LOOKUP: Array<u32> = Array::with_max_entries(MAX_SERVICES * LOOKUP_TABLE_SIZE, 0);

#[map(name = "CATS_TARGETS")]
pub static TARGETS: Array<InstanceTarget> = Array::with_max_entries(MAX_INSTANCES, 0);

#[map(name = "CATS_FAILOVER")]
pub static FAILOVER: Array<Failover> = Array::with_max_entries(MAX_INSTANCES, 0);

#[map(name = "CATS_HEALTH")]
pub static HEALTH: Array<u32> = Array::with_max_entries(MAX_INSTANCES, 0);

#[map(name = "CATS_AFFINITY")]
pub static AFFINITY: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(AFFINITY_TABLE_SIZE, 0);

#[map(name = "CATS_SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map(name = "CATS_INSTANCE_STATS")]
pub static INSTANCE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_INSTANCES, 0);

#[map(name = "CATS_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

#[map(name = "CATS_EVENTS")]
pub static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Event::COUNT, 0);

#[map(name = "CATS_SIDS")]
pub static SIDS: LpmTrie<[u8; 16], SidEntry> =
    LpmTrie::with_max_entries(MAX_LOCAL_SIDS, BPF_F_NO_PREALLOC);

#[map(name = "CATS_INTERFACES")]
pub static INTERFACES: HashMap<u32, InterfaceFlags> = HashMap::with_max_entries(MAX_INTERFACES, 0);
