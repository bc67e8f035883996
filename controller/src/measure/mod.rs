//! Measurement: what the network and the instances really do, as input to the compile step.
//!
//! - C-NMA (network metrics): a [`probe::Prober`] per served node probes the peer at the
//!   other end of each of its links every [`ProbeConfig::interval`] and keeps per-link-end
//!   statistics ([`stats::LinkStats`]) in a shared [`LinkTable`]. [`link_reports`] folds both
//!   ends of every link together; [`link_metrics`] keeps the fresh ones for the compile step.
//! - C-SMA (service metrics): instances report into files, read by
//!   [`crate::metrics_files`].
//! - The headends' affinity tables: [`affinity::AffinityMeter`] (pins, resets, evictions).
//! - Demand per ingress: [`demand::DemandMeter`] reads the headends' per-service counters.
//! - [`changed_enough`] decides whether new metrics are worth a recompile (dampening), and
//!   [`gather::Gatherer`] is what the daemon runs: probers plus both readings every poll.
//!
//! Addressing: with `underlay: static` each end of link k has an address from
//! [`addressing::link_v6`](crate::compile::addressing::link_v6); probing the peer's link
//! address crosses exactly that link. With `underlay: external` links are not probed (the
//! declared latencies apply).

pub mod affinity;
pub mod dampen;
pub mod demand;
pub mod gather;
pub mod headend_counters;
pub mod probe;
pub mod stats;

use std::{
    collections::BTreeMap,
    net::Ipv6Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

pub use self::{
    dampen::changed_enough,
    gather::{Gathered, Gatherer, MetricsReport},
    probe::{PROBE_PORT, Prober},
    stats::{LinkStats, Snapshot, StatsConfig},
};
use crate::{
    compile::{LinkMetric, addressing},
    intent::{Intent, Underlay},
};

/// How often and how patiently links are probed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeConfig {
    /// Time between two probes of a link.
    pub interval: Duration,
    pub stats: StatsConfig,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { interval: Duration::from_millis(100), stats: StatsConfig::default() }
    }
}

/// One link a node probes: its peer's address on that link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTarget {
    /// 0-based position of the link in `spec.links`.
    pub link: usize,
    pub peer: String,
    /// The probing node's interface on the link.
    pub interface: String,
    /// The peer's address on the link.
    pub peer_address: Ipv6Addr,
}

/// The links `node` probes. Empty with an external underlay: cats does not own link
/// addresses there, so it does not measure links (the declared latencies apply).
pub fn targets(intent: &Intent, node: &str) -> Vec<LinkTarget> {
    if intent.topology.underlay != Underlay::Static {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (k, link) in intent.topology.links.iter().enumerate() {
        if link.a == link.b {
            continue;
        }
        let (peer, interface, peer_is_b) = if link.a == node {
            (&link.b, &link.a_interface, true)
        } else if link.b == node {
            (&link.a, &link.b_interface, false)
        } else {
            continue;
        };
        out.push(LinkTarget {
            link: k,
            peer: peer.clone(),
            interface: interface.clone(),
            peer_address: addressing::link_v6(k + 1, peer_is_b).ip(),
        });
    }
    out
}

/// Statistics of every probed link end, by (link position, probing node); shared between the
/// probers (writers) and the daemon (reader).
#[derive(Clone, Debug, Default)]
pub struct LinkTable(Arc<Mutex<BTreeMap<(usize, String), LinkStats>>>);

impl LinkTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(usize, String), LinkStats>> {
        // Statistics stay usable even if a prober panicked while holding the lock.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a fresh record for `node`'s end of `link`.
    pub fn register(&self, link: usize, node: &str, config: StatsConfig) {
        self.lock().insert((link, node.to_string()), LinkStats::new(config));
    }

    /// Runs `f` on the record of `node`'s end of `link`, if registered.
    pub fn with(&self, link: usize, node: &str, f: impl FnOnce(&mut LinkStats)) {
        if let Some(s) = self.lock().get_mut(&(link, node.to_string())) {
            f(s);
        }
    }

    /// Drops every record `node` made (its prober stopped or was replaced).
    pub fn forget(&self, node: &str) {
        self.lock().retain(|(_, n), _| n != node);
    }

    /// Every link end's figures at `now`.
    pub fn snapshot(&self, now: Instant) -> BTreeMap<(usize, String), Snapshot> {
        self.lock().iter_mut().map(|(k, s)| (k.clone(), s.snapshot(now))).collect()
    }
}

/// One link as the status shows it: declared and measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkReport {
    /// 0-based position in `spec.links`.
    pub link: usize,
    pub a: String,
    pub b: String,
    /// The declared one-way latency.
    pub latency_ms: f64,
    /// Whether any served node probes this link.
    pub probed: bool,
    /// Measured one-way latency (half the smoothed round trip, both ends averaged); with a
    /// stale link, the last estimate.
    pub one_way_ms: Option<f64>,
    /// Smoothed round-trip variation.
    pub jitter_ms: Option<f64>,
    pub loss: Option<f64>,
    /// Time since the newest echo of either end.
    pub age_ms: Option<u64>,
    /// Echoes received, both ends together.
    pub samples: u64,
    /// Probed, but no end had an echo for `stale_after`: the declared latency applies.
    pub stale: bool,
    /// Every probing end finds it silent while still probing: paths avoid it.
    pub down: bool,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| sum / n as f64)
}

/// Folds the link ends of `snapshots` into one report per link of the intent. A link with a
/// fresh end takes the fresh ends' average; a link whose every end is stale keeps its last
/// estimates but is marked stale.
pub fn link_reports(
    intent: &Intent,
    snapshots: &BTreeMap<(usize, String), Snapshot>,
) -> Vec<LinkReport> {
    intent
        .topology
        .links
        .iter()
        .enumerate()
        .map(|(k, link)| {
            let ends: Vec<&Snapshot> = snapshots
                .iter()
                .filter(|((l, n), _)| *l == k && (*n == link.a || *n == link.b))
                .map(|(_, s)| s)
                .collect();
            let fresh: Vec<&Snapshot> =
                ends.iter().copied().filter(|s| !s.stale && s.rtt_ms.is_some()).collect();
            let stale = !ends.is_empty() && fresh.is_empty();
            let used = if fresh.is_empty() { &ends } else { &fresh };
            LinkReport {
                link: k,
                a: link.a.clone(),
                b: link.b.clone(),
                latency_ms: link.latency_ms,
                probed: !ends.is_empty(),
                one_way_ms: mean(used.iter().filter_map(|s| s.rtt_ms).map(|r| r / 2.0)),
                jitter_ms: mean(used.iter().filter(|s| s.samples > 0).map(|s| s.jitter_ms)),
                loss: mean(used.iter().map(|s| s.loss)),
                age_ms: used.iter().filter_map(|s| s.age).min().map(|a| a.as_millis() as u64),
                samples: ends.iter().map(|s| s.samples).sum(),
                stale,
                down: !ends.is_empty() && ends.iter().all(|s| s.down),
            }
        })
        .collect()
}

/// The fresh measured links, for the compile step. A down link has an infinite latency,
/// which takes it out of the TE graph.
pub fn link_metrics(reports: &[LinkReport]) -> BTreeMap<usize, LinkMetric> {
    let down = reports
        .iter()
        .filter(|r| r.down)
        .map(|r| (r.link, LinkMetric { one_way_ms: f64::INFINITY, jitter_ms: 0.0, loss: 1.0 }));
    reports
        .iter()
        .filter(|r| r.probed && !r.stale && !r.down)
        .filter_map(|r| {
            Some((
                r.link,
                LinkMetric {
                    one_way_ms: r.one_way_ms?,
                    jitter_ms: r.jitter_ms.unwrap_or(0.0),
                    loss: r.loss.unwrap_or(0.0),
                },
            ))
        })
        .chain(down)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Intent {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/smart-traffic/intent");
        crate::intent::load_dir(&dir).expect("example intent")
    }

    fn snap(rtt_ms: f64, loss: f64, age_ms: u64, stale: bool) -> Snapshot {
        Snapshot {
            rtt_ms: Some(rtt_ms),
            jitter_ms: 0.5,
            loss,
            samples: 10,
            age: Some(Duration::from_millis(age_ms)),
            stale,
            down: false,
        }
    }

    #[test]
    fn a_link_is_down_when_every_end_finds_it_silent_and_then_has_no_latency() {
        let intent = intent();
        let down = Snapshot { down: true, ..snap(2.0, 0.3, 1500, false) };
        let mut snapshots = BTreeMap::new();
        snapshots.insert((1, "core".to_string()), down);
        snapshots.insert((1, "edge1".to_string()), down);
        // One end still hears the other on link 2: not down.
        snapshots.insert((2, "core".to_string()), down);
        snapshots.insert((2, "edge2".to_string()), snap(2.0, 0.0, 50, false));
        let reports = link_reports(&intent, &snapshots);
        assert!(reports[1].down && !reports[2].down);
        let metrics = link_metrics(&reports);
        assert_eq!(metrics[&1].one_way_ms, f64::INFINITY);
        assert_eq!(metrics[&1].loss, 1.0);
        assert!(metrics[&2].one_way_ms.is_finite());
    }

    #[test]
    fn targets_are_the_peers_link_addresses() {
        let intent = intent();
        let core = targets(&intent, "core");
        // core is side b of link 1 (gw-core) and side a of links 2..4.
        assert_eq!(core.len(), 4);
        assert_eq!(core[0].peer, "gw");
        assert_eq!(core[0].peer_address, "fdff:ca75:0:1::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(core[0].interface, "gw");
        assert_eq!(core[3].peer, "cloud");
        assert_eq!(core[3].link, 3);
        assert_eq!(core[3].peer_address, "fdff:ca75:0:4::2".parse::<Ipv6Addr>().unwrap());
        let gw = targets(&intent, "gw");
        assert_eq!(gw.len(), 1);
        assert_eq!(gw[0].peer_address, "fdff:ca75:0:1::2".parse::<Ipv6Addr>().unwrap());

        let mut external = intent.clone();
        external.topology.underlay = Underlay::External;
        assert!(targets(&external, "core").is_empty());
    }

    #[test]
    fn both_ends_are_averaged_and_stale_links_are_left_out() {
        let intent = intent();
        let snapshots = BTreeMap::from([
            // gw-core: both ends fresh.
            ((0, "gw".to_string()), snap(2.0, 0.0, 50, false)),
            ((0, "core".to_string()), snap(2.4, 0.1, 20, false)),
            // core-edge1: one end stale, the other fresh.
            ((1, "core".to_string()), snap(40.0, 1.0, 5000, true)),
            ((1, "edge1".to_string()), snap(4.2, 0.0, 30, false)),
            // core-edge2: both ends stale.
            ((2, "core".to_string()), snap(4.0, 0.9, 4000, true)),
            ((2, "edge2".to_string()), snap(4.4, 0.7, 3500, true)),
            // core-cloud: not probed at all.
        ]);
        let reports = link_reports(&intent, &snapshots);
        assert_eq!(reports.len(), 4);
        let r = &reports[0];
        assert!((r.one_way_ms.unwrap() - 1.1).abs() < 1e-9, "{r:?}");
        assert!((r.loss.unwrap() - 0.05).abs() < 1e-9);
        assert_eq!((r.age_ms, r.samples, r.stale, r.latency_ms), (Some(20), 20, false, 1.0));
        let r = &reports[1];
        assert_eq!((r.one_way_ms, r.loss, r.stale), (Some(2.1), Some(0.0), false));
        let r = &reports[2];
        assert!(r.stale && r.probed);
        assert_eq!((r.one_way_ms, r.age_ms), (Some(2.1), Some(3500)));
        assert!((r.loss.unwrap() - 0.8).abs() < 1e-9);
        let r = &reports[3];
        assert!(!r.probed && !r.stale);
        assert_eq!((r.one_way_ms, r.loss, r.age_ms), (None, None, None));

        let metrics = link_metrics(&reports);
        assert_eq!(metrics.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(metrics[&1], LinkMetric { one_way_ms: 2.1, jitter_ms: 0.5, loss: 0.0 });
    }
}
