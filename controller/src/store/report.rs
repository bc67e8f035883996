//! What an agent tells the controllers about its node through a shared store, and when it is
//! worth telling: with a thousand nodes, every wobble of a measurement written at once would
//! flood the store, so a report is written only when something the controller acts on (or
//! shows) moved past the same thresholds the compile step dampens with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    agent::node::AgentStatus,
    compile::Metrics,
    measure::{
        Snapshot,
        affinity::AffinityReport,
        dampen::{self, time_moved},
    },
    metrics_files::{self, InstanceReport},
};

/// One node's report: its agent's status, its ends of its links, its instances' reports and
/// its headend's demand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub status: AgentStatus,
    /// This node's end of each link it probes: (position in `spec.links`, reading).
    pub links: Vec<(usize, Snapshot)>,
    /// The reports of the instances on this node (stale ones marked by the agent).
    pub instances: Vec<InstanceReport>,
    /// Per service, the packets/s this node's headend steers.
    pub demand: BTreeMap<String, f64>,
    pub affinity: Option<AffinityReport>,
}

/// Whether `new` is worth writing over `old` (the report last written).
pub fn worth_writing(old: Option<&NodeReport>, new: &NodeReport) -> bool {
    let Some(old) = old else { return true };
    status_moved(&old.status, &new.status)
        || links_moved(&old.links, &new.links)
        || instances_moved(&old.instances, &new.instances)
        || demand_moved(&old.demand, &new.demand)
        || affinity_moved(old.affinity, new.affinity)
}

/// Anything but the health probes' round trips, which move only past the time threshold,
/// and the heartbeat (the lease says the agent is alive).
fn status_moved(old: &AgentStatus, new: &AgentStatus) -> bool {
    let without_rtts = |s: &AgentStatus| {
        let mut s = s.clone();
        s.heartbeat = None;
        if let Some(h) = &mut s.health {
            h.paths.iter_mut().for_each(|p| p.rtt_ms = None);
        }
        s
    };
    if without_rtts(old) != without_rtts(new) {
        return true;
    }
    let rtts = |s: &AgentStatus| -> Vec<Option<f64>> {
        s.health.iter().flat_map(|h| h.paths.iter().map(|p| p.rtt_ms)).collect()
    };
    // Shown in the status only (the verdicts act): rounded to the millisecond, they flicker
    // by 1 ms, so they must move by max(2 ms, 20 %).
    rtts(old).into_iter().zip(rtts(new)).any(|pair| match pair {
        (Some(a), Some(b)) => (a - b).abs() > 2.0_f64.max(0.2 * a.abs()),
        (a, b) => a.is_some() != b.is_some(),
    })
}

fn links_moved(old: &[(usize, Snapshot)], new: &[(usize, Snapshot)]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|((ka, a), (kb, b))| {
            ka != kb
                || a.stale != b.stale
                || a.down != b.down
                // Loss is shown, not acted on: one probe in the 20 of the window is 0.05.
                || (a.loss - b.loss).abs() >= 0.2
                || match (a.rtt_ms, b.rtt_ms) {
                    (Some(x), Some(y)) => time_moved(x / 2.0, y / 2.0),
                    (x, y) => x.is_some() != y.is_some(),
                }
        })
}

fn instances_moved(old: &[InstanceReport], new: &[InstanceReport]) -> bool {
    let fresh =
        |r: &[InstanceReport]| Metrics { instances: metrics_files::fresh(r), ..Default::default() };
    let names = |r: &[InstanceReport]| -> Vec<(String, bool)> {
        r.iter().map(|i| (i.instance.clone(), i.stale)).collect()
    };
    names(old) != names(new) || dampen::changed_enough(&fresh(old), &fresh(new))
}

/// A headend's rate of a service moved by 10 % (and 1 packet/s), or a service came or went.
fn demand_moved(old: &BTreeMap<String, f64>, new: &BTreeMap<String, f64>) -> bool {
    !old.keys().eq(new.keys())
        || old
            .values()
            .zip(new.values())
            .any(|(a, b)| (a - b).abs() >= 1.0_f64.max(dampen::MIN_RELATIVE_CHANGE * a.abs()))
}

fn affinity_moved(old: Option<AffinityReport>, new: Option<AffinityReport>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => {
            a.evicted != b.evicted
                || a.reset != b.reset
                || a.occupancy.abs_diff(b.occupancy) as f64
                    >= 1.0_f64.max(dampen::MIN_RELATIVE_CHANGE * a.occupancy as f64)
        }
        (a, b) => a.is_some() != b.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::health::{HealthReport, PathReport},
        compile::InstanceMetric,
    };

    fn link(rtt_ms: f64) -> (usize, Snapshot) {
        let s = Snapshot {
            rtt_ms: Some(rtt_ms),
            jitter_ms: 0.1,
            loss: 0.0,
            samples: 50,
            age: None,
            stale: false,
            down: false,
        };
        (0, s)
    }

    fn instance(utilization: f64) -> InstanceReport {
        InstanceReport {
            instance: "edge1-a".into(),
            metric: InstanceMetric { utilization, ..Default::default() },
            served_total: None,
            age_ms: 100,
            stale: false,
        }
    }

    fn report(rtt_ms: f64, utilization: f64, rate: f64) -> NodeReport {
        NodeReport {
            links: vec![link(rtt_ms)],
            instances: vec![instance(utilization)],
            demand: [("plate-recognition".to_string(), rate)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn wobbles_are_not_written_and_what_the_controller_acts_on_is() {
        let old = report(4.0, 0.30, 100.0);
        assert!(worth_writing(None, &old), "the first report");
        assert!(!worth_writing(Some(&old), &report(4.2, 0.35, 105.0)), "a wobble");
        assert!(worth_writing(Some(&old), &report(8.0, 0.30, 100.0)), "a link twice as slow");
        assert!(worth_writing(Some(&old), &report(4.0, 0.45, 100.0)), "utilisation +0.15");
        assert!(worth_writing(Some(&old), &report(4.0, 0.30, 150.0)), "demand +50 %");
        let mut stale = old.clone();
        stale.links[0].1.stale = true;
        assert!(worth_writing(Some(&old), &stale), "a link gone stale");
        let mut beating = old.clone();
        beating.status.heartbeat = Some(std::time::Instant::now());
        assert!(!worth_writing(Some(&old), &beating), "a heartbeat");
        let mut applied = old.clone();
        applied.status.applied_generation = Some(7);
        assert!(worth_writing(Some(&old), &applied), "a new state applied");
    }

    #[test]
    fn health_round_trips_count_only_past_the_threshold_and_verdicts_always() {
        let with_health = |up: bool, rtt_ms: f64| {
            let mut r = report(4.0, 0.3, 100.0);
            r.status.health = Some(HealthReport {
                paths: vec![PathReport {
                    instance: "edge1-a".into(),
                    slot: 1,
                    path: "primary".into(),
                    up,
                    rtt_ms: Some(rtt_ms),
                }],
                unreachable: if up { vec![] } else { vec!["edge1-a".into()] },
            });
            r
        };
        let old = with_health(true, 6.0);
        assert!(!worth_writing(Some(&old), &with_health(true, 7.0)), "a 1 ms flicker");
        assert!(worth_writing(Some(&old), &with_health(true, 12.0)));
        assert!(worth_writing(Some(&old), &with_health(false, 6.0)));
    }
}
