//! What each headend's affinity table holds, for the status: flows pinned now, pins added,
//! pins a TCP RST removed, and pins the LRU evicted to make room (the table is full).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use cats_common::counters::Event;
use serde::{Deserialize, Serialize};

use super::headend_counters::HeadendCounters;
use crate::{
    dataplane::affinity::{affinity_evictions, pinned_affinity_occupancy},
    state::NodeState,
};

/// Counting the pins walks the table key by key: not on every poll.
const EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityReport {
    /// Flow pins in the table now (expired ones included until reused or evicted).
    pub occupancy: u64,
    /// New pins since the program was loaded.
    pub pinned: u64,
    /// Pins a TCP RST removed.
    pub reset: u64,
    /// Pins the LRU evicted for new flows: `pinned − reset − occupancy`, an approximation
    /// (see `dataplane::affinity`).
    pub evicted: u64,
}

/// Reads the headends' affinity figures at most every [`EVERY`].
#[derive(Default)]
pub struct AffinityMeter {
    last: Option<Instant>,
    reports: BTreeMap<String, AffinityReport>,
}

impl AffinityMeter {
    /// The latest figures per headend node; headends whose maps are not there yet are left
    /// out.
    pub fn read<'n>(
        &mut self,
        nodes: impl IntoIterator<Item = &'n NodeState>,
        counters: &mut HeadendCounters,
        now: Instant,
    ) -> &BTreeMap<String, AffinityReport> {
        if self.last.is_some_and(|at| now.duration_since(at) < EVERY) {
            return &self.reports;
        }
        self.last = Some(now);
        let mut seen = std::collections::BTreeSet::new();
        for node in nodes.into_iter().filter(|n| n.headend.is_some()) {
            seen.insert(node.node.clone());
            let pins = counters.pins(&node.node);
            let Some(open) = counters.get(&node.node) else { continue };
            let read = || -> anyhow::Result<AffinityReport> {
                let pinned = open.events(Event::AffinityPinned)?;
                let reset = open.events(Event::AffinityReset)?;
                let occupancy = pinned_affinity_occupancy(&pins)?;
                let evicted = affinity_evictions(pinned, reset, occupancy);
                Ok(AffinityReport { occupancy, pinned, reset, evicted })
            };
            match read() {
                Ok(report) => {
                    self.reports.insert(node.node.clone(), report);
                }
                Err(_) => counters.forget(&node.node),
            }
        }
        self.reports.retain(|node, _| seen.contains(node));
        &self.reports
    }
}
