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

/// Anything but the health probes' round trips, which move only past the time threshold.
fn status_moved(old: &AgentStatus, new: &AgentStatus) -> bool {
    let without_rtts = |s: &AgentStatus| {
        let mut s = s.clone();
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
    rtts(old).into_iter().zip(rtts(new)).any(|pair| match pair {
        (Some(a), Some(b)) => time_moved(a, b),
        (a, b) => a.is_some() != b.is_some(),
    })
}

fn links_moved(old: &[(usize, Snapshot)], new: &[(usize, Snapshot)]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|((ka, a), (kb, b))| {
            ka != kb
                || a.stale != b.stale
                || a.down != b.down
                || (a.loss - b.loss).abs() >= 0.1
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
