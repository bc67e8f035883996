//! The headends' pinned counter maps, opened once for every reader in the daemon (demand,
//! affinity) and opened again when the agent has replaced them.

use std::{collections::BTreeMap, path::PathBuf};

use crate::dataplane::stats::PinnedCounters;

/// Open counter maps by node, and where each node's pins are.
pub struct HeadendCounters {
    pins_of: Box<dyn Fn(&str) -> PathBuf + Send>,
    open: BTreeMap<String, PinnedCounters>,
}

impl HeadendCounters {
    pub fn new(pins_of: impl Fn(&str) -> PathBuf + Send + 'static) -> Self {
        HeadendCounters { pins_of: Box::new(pins_of), open: BTreeMap::new() }
    }

    /// Where `node`'s pins are (its maps, and the affinity table).
    pub fn pins(&self, node: &str) -> PathBuf {
        (self.pins_of)(node)
    }

    /// `node`'s counters, opened now if they are not yet; `None` while the agent has not
    /// pinned them.
    pub fn get(&mut self, node: &str) -> Option<&PinnedCounters> {
        if !self.open.contains_key(node) {
            let counters = PinnedCounters::open(&(self.pins_of)(node)).ok()?;
            self.open.insert(node.to_string(), counters);
        }
        self.open.get(node)
    }

    /// Drops `node`'s maps after a failed read: they were replaced, open them afresh.
    pub fn forget(&mut self, node: &str) {
        self.open.remove(node);
    }
}
