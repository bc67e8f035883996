//! Where a service's demand enters: the packets each headend steered for it, read from the
//! headend's per-service counters (pinned per-CPU maps) and turned into rates.
//!
//! Instances report the requests they receive, but not which ingress they came through; the
//! headends' counters give each ingress's share, so the compiler plans each ingress for its
//! own part of the demand rather than an even split.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::headend_counters::HeadendCounters;
use crate::state::NodeState;

/// A rate is taken over at least this long, so one poll's jitter does not swing it.
const WINDOW: Duration = Duration::from_secs(1);

/// Reads the headends' service counters and keeps the last rates.
#[derive(Default)]
pub struct DemandMeter {
    /// Per (ingress, service): when and what the counter was at the start of the window.
    start: BTreeMap<(String, String), (Instant, u64)>,
    /// Per service, per ingress: packets/s over the last full window.
    rates: BTreeMap<String, BTreeMap<String, f64>>,
}

impl DemandMeter {
    /// Reads the counters of every headend in `nodes` and returns the rates of the last full
    /// window. Headends whose maps are not there yet are skipped.
    pub fn read<'n>(
        &mut self,
        nodes: impl IntoIterator<Item = &'n NodeState>,
        counters: &mut HeadendCounters,
        now: Instant,
    ) -> &BTreeMap<String, BTreeMap<String, f64>> {
        let mut seen = std::collections::BTreeSet::new();
        for node in nodes {
            let Some(headend) = &node.headend else { continue };
            // Not there: the agent has not written its maps yet.
            let Some(open) = counters.get(&node.node) else { continue };
            let read: Result<Vec<u64>, _> = headend
                .services
                .iter()
                .map(|s| open.service_counter(s.slot).map(|c| c.packets))
                .collect();
            let Ok(packets) = read else {
                counters.forget(&node.node);
                continue;
            };
            for (svc, packets) in headend.services.iter().zip(packets) {
                let key = (node.node.clone(), svc.name.clone());
                seen.insert(key.clone());
                let (since, before) = *self.start.entry(key.clone()).or_insert((now, packets));
                let elapsed = now.saturating_duration_since(since);
                if elapsed >= WINDOW {
                    let rate = packets.saturating_sub(before) as f64 / elapsed.as_secs_f64();
                    self.rates.entry(svc.name.clone()).or_default().insert(node.node.clone(), rate);
                    self.start.insert(key, (now, packets));
                }
            }
        }
        // An ingress that no longer steers a service has no share of its demand.
        self.start.retain(|key, _| seen.contains(key));
        for (svc, rates) in &mut self.rates {
            rates.retain(|node, _| seen.contains(&(node.clone(), svc.clone())));
        }
        self.rates.retain(|_, rates| !rates.is_empty());
        &self.rates
    }
}

/// Whether the ingresses' shares of some service moved by at least `min_change` (absolute,
/// as a fraction of the service's packets): a shift worth re-planning.
pub fn shares_moved(
    old: &BTreeMap<String, BTreeMap<String, f64>>,
    new: &BTreeMap<String, BTreeMap<String, f64>>,
    min_change: f64,
) -> bool {
    let share = |m: &BTreeMap<String, BTreeMap<String, f64>>, svc: &str, ingress: &str| {
        let rates = m.get(svc)?;
        let total: f64 = rates.values().sum();
        (total > 0.0).then(|| rates.get(ingress).copied().unwrap_or(0.0) / total)
    };
    let keys = old.iter().chain(new).flat_map(|(s, r)| r.keys().map(move |i| (s, i)));
    keys.into_iter().any(|(svc, ingress)| {
        match (share(old, svc, ingress), share(new, svc, ingress)) {
            (Some(a), Some(b)) => (a - b).abs() >= min_change,
            (a, b) => a.is_some() != b.is_some(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(entries: &[(&str, &str, f64)]) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut m: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for (svc, ingress, r) in entries {
            m.entry(svc.to_string()).or_default().insert(ingress.to_string(), *r);
        }
        m
    }

    #[test]
    fn only_a_real_shift_between_ingresses_counts() {
        let before = rates(&[("s", "gw1", 30.0), ("s", "gw2", 10.0)]);
        // Twice the traffic, same shares: the instances' request rates already say so.
        assert!(!shares_moved(&before, &rates(&[("s", "gw1", 60.0), ("s", "gw2", 20.0)]), 0.1));
        // 75/25 to 50/50.
        assert!(shares_moved(&before, &rates(&[("s", "gw1", 20.0), ("s", "gw2", 20.0)]), 0.1));
        // First traffic seen.
        assert!(shares_moved(&BTreeMap::new(), &before, 0.1));
    }
}
