//! Local fast failover: which instance slot and which of its segment lists carry a packet,
//! given the slot its flow is pinned to and what the agent's prober wrote in `CATS_HEALTH`.

use cats_common::{
    counters::Event,
    maps::{HEALTH_ALTERNATE_DOWN, HEALTH_PRIMARY_DOWN, NO_INSTANCE},
};

use crate::{
    counters, log,
    maps::{FAILOVER, HEALTH, TARGETS},
};

/// Set in a [`Choice`] when the slot's alternate list (`CATS_FAILOVER`) is used instead of
/// its primary one (`CATS_TARGETS`).
const VIA_ALTERNATE: u64 = 1 << 32;

/// A slot and a path packed in one register: the decision crosses a BPF-to-BPF call, and a
/// scalar return keeps map pointers and stack out of that call's interface.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Choice(u64);

impl Choice {
    #[inline(always)]
    fn primary(slot: u32) -> Self {
        Self(slot as u64)
    }

    #[inline(always)]
    fn alternate(slot: u32) -> Self {
        Self(slot as u64 | VIA_ALTERNATE)
    }

    /// The instance slot the packet goes to (and counts for).
    #[inline(always)]
    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    #[inline(always)]
    pub fn via_alternate(self) -> bool {
        self.0 & VIA_ALTERNATE != 0
    }
}

/// Where a packet of a flow pinned to `slot` goes. Exactly one `failover_*` event counts each
/// packet whose slot is down: alternate (same slot), re-pinned (the backup's slot; the caller
/// moves the pin), or unavailable (the primary path anyway: a defined verdict, not a drop).
/// Out of line: inlined, its lookups would add to the headend's stack frame.
#[inline(never)]
pub fn resolve(slot: u32) -> Choice {
    let health = health(slot);
    if health & HEALTH_PRIMARY_DOWN == 0 {
        return Choice::primary(slot);
    }
    if let Some(failover) = FAILOVER.get(slot) {
        if failover.alternate.segment_count > 0 && health & HEALTH_ALTERNATE_DOWN == 0 {
            counters::event(Event::FailoverAlternate);
            log::failover_alternate(slot);
            return Choice::alternate(slot);
        }
        let backup = failover.backup_slot;
        if backup != NO_INSTANCE
            && let Some(choice) = usable(backup)
        {
            counters::event(Event::FailoverRepinned);
            log::failover_repinned(slot, choice.slot());
            return choice;
        }
    }
    counters::event(Event::FailoverUnavailable);
    log::failover_unavailable(slot);
    Choice::primary(slot)
}

/// A backup slot's own path, if it has one that is up. No further chaining: a backup that is
/// down makes the flow's instance unavailable, it does not hand on to the backup's backup.
#[inline(always)]
fn usable(slot: u32) -> Option<Choice> {
    let health = health(slot);
    // An empty target is an instance the controller removed: never re-pin to it.
    if health & HEALTH_PRIMARY_DOWN == 0 && TARGETS.get(slot).is_some_and(|t| t.segment_count > 0) {
        return Some(Choice::primary(slot));
    }
    if health & HEALTH_ALTERNATE_DOWN == 0
        && FAILOVER.get(slot).is_some_and(|f| f.alternate.segment_count > 0)
    {
        return Some(Choice::alternate(slot));
    }
    None
}

/// A slot's `HEALTH_*` bits; 0 (healthy) for a slot outside the map.
#[inline(always)]
fn health(slot: u32) -> u32 {
    HEALTH.get(slot).copied().unwrap_or(0)
}
