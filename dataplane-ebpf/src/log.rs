//! Debug events through aya-log, at decision points only: a drop and its reason, a failover
//! decision, a new affinity pin. Never on the affinity-hit path.
//!
//! Off unless the loader asks: aya-log-ebpf keeps its level in the global `AYA_LOG_LEVEL`
//! (`.rodata`), which `Dataplane` overrides at load time, to 0 (off) unless `--ebpf-log`.
//! `.rodata` is a frozen read-only map, so the verifier knows the level and removes every
//! disabled branch: with logging off the programs run as they did before it existed.
//!
//! Each event is an out-of-line function taking scalars behind an inline level check: its
//! record is built in a stack frame of its own (the headend's is close to the 512-byte
//! limit), and nothing of it is reached, let alone verified, with logging off. The values
//! are numbers: a drop reason is the index of `cats_common::counters::DropReason` (its
//! label is the name `catsd` counters show), a slot an instance slot of `CATS_TARGETS`.

use aya_log_ebpf::{
    debug, info,
    macro_support::{Level, level_enabled},
};

/// The headend dropped a packet for `reason`.
#[inline(always)]
pub fn headend_drop(reason: u32) {
    if level_enabled(Level::Info) {
        headend_drop_record(reason);
    }
}

#[inline(never)]
fn headend_drop_record(reason: u32) {
    info!(&(), "headend drop reason={}", reason);
}

/// The endpoint dropped a packet for `reason`.
#[inline(always)]
pub fn endpoint_drop(reason: u32) {
    if level_enabled(Level::Info) {
        endpoint_drop_record(reason);
    }
}

#[inline(never)]
fn endpoint_drop_record(reason: u32) {
    info!(&(), "endpoint drop reason={}", reason);
}

/// A flow of service `service` was pinned (new key, or an expired pin renewed) to `instance`.
#[inline(always)]
pub fn pinned(service: u32, instance: u32) {
    if level_enabled(Level::Debug) {
        pinned_record(service, instance);
    }
}

#[inline(never)]
fn pinned_record(service: u32, instance: u32) {
    debug!(&(), "affinity pin service={} instance={}", service, instance);
}

/// Slot `slot` is down over its primary path: sent over its alternate path.
#[inline(always)]
pub fn failover_alternate(slot: u32) {
    if level_enabled(Level::Info) {
        failover_alternate_record(slot);
    }
}

#[inline(never)]
fn failover_alternate_record(slot: u32) {
    info!(&(), "failover alternate instance={}", slot);
}

/// Slot `slot` is unreachable: its flow goes to (and is re-pinned to) `backup`.
#[inline(always)]
pub fn failover_repinned(slot: u32, backup: u32) {
    if level_enabled(Level::Info) {
        failover_repinned_record(slot, backup);
    }
}

#[inline(never)]
fn failover_repinned_record(slot: u32, backup: u32) {
    info!(&(), "failover repinned instance={} backup={}", slot, backup);
}

/// Slot `slot` and its backup are unreachable: sent on the primary path anyway.
#[inline(always)]
pub fn failover_unavailable(slot: u32) {
    if level_enabled(Level::Info) {
        failover_unavailable_record(slot);
    }
}

#[inline(never)]
fn failover_unavailable_record(slot: u32) {
    info!(&(), "failover unavailable instance={}", slot);
}
