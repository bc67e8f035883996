//! Per-CPU counters: no atomics needed, the agent sums the CPUs when it reads.

use aya_ebpf::maps::PerCpuArray;
use cats_common::counters::{Counter, DropReason, Event};

use crate::maps::{DROPS, EVENTS, INSTANCE_STATS, SERVICE_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(v) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the pointer is a live map value.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
pub fn drop(reason: DropReason) {
    bump(&DROPS, reason as u32);
}

#[inline(always)]
pub fn event(event: Event) {
    bump(&EVENTS, event as u32);
}

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: as in `bump`.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts one steered packet of `bytes` (inner IP length) for its service and instance.
#[inline(always)]
pub fn steered(service_slot: u32, instance_slot: u32, bytes: u64) {
    add(&SERVICE_STATS, service_slot, bytes);
    add(&INSTANCE_STATS, instance_slot, bytes);
}
