//! Instance selection (C-PS), first cost model.
//!
//! For each candidate instance of a service, seen from one headend:
//!
//! ```text
//! network_ms  = 2 × one-way latency of the path (headend → waypoints → egress)
//! idle_ms     = requestCost / tops × 1000          (service time on an idle instance)
//! service_ms  = idle_ms / (1 − utilization)        (M/M/1: response time grows as 1/(1−ρ))
//! predicted   = network_ms + service_ms            (objective min-completion-time)
//!             = network_ms                         (objective min-latency)
//! ```
//!
//! Candidates over `maxLatencyMs` (network round trip) are excluded. Of the rest, every one
//! whose prediction is within `(1 + slack)` of the best shares the traffic, in proportion to
//! its spare capacity `tops × (1 − utilization)`: near-equal choices split the load instead of
//! herding onto one winner, and a big idle site takes more than a small busy one.
//! Utilisation is the larger of the declared value and a fresh measurement.

use serde::Serialize;

/// Total weight handed out per service; weights are integers for the Maglev table.
pub const WEIGHT_SCALE: u32 = 1000;
/// Utilisation is capped here so a saturated instance gets a large, finite service time.
const MAX_UTILIZATION: f64 = 0.99;

/// Inputs for one candidate.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub instance: String,
    pub path_one_way_ms: f64,
    pub request_cost: f64,
    pub tops: f64,
    pub utilization: f64,
}

/// The figures that decided a candidate's weight, for `explain` and dry runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub instance: String,
    pub network_ms: f64,
    pub service_ms: f64,
    pub predicted_ms: f64,
    pub utilization: f64,
    pub weight: u32,
    /// Why it got no weight, if it got none.
    pub excluded: Option<String>,
}

/// Selection parameters from the steering policy.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub latency_only: bool,
    pub max_network_ms: Option<f64>,
    pub slack: f64,
}

pub fn decide(candidates: &[Candidate], policy: Policy) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = candidates
        .iter()
        .map(|c| {
            let network_ms = 2.0 * c.path_one_way_ms;
            let utilization = c.utilization.clamp(0.0, MAX_UTILIZATION);
            let service_ms = c.request_cost / c.tops * 1000.0 / (1.0 - utilization);
            let predicted_ms =
                if policy.latency_only { network_ms } else { network_ms + service_ms };
            let excluded = policy
                .max_network_ms
                .filter(|max| network_ms > *max)
                .map(|max| format!("network round trip {network_ms:.1} ms > maxLatencyMs {max}"));
            Decision {
                instance: c.instance.clone(),
                network_ms,
                service_ms,
                predicted_ms,
                utilization,
                weight: 0,
                excluded,
            }
        })
        .collect();

    let best = decisions
        .iter()
        .filter(|d| d.excluded.is_none())
        .map(|d| d.predicted_ms)
        .min_by(f64::total_cmp);
    let Some(best) = best else { return decisions };
    let bound = best * (1.0 + policy.slack);
    for d in decisions.iter_mut().filter(|d| d.excluded.is_none() && d.predicted_ms > bound) {
        d.excluded = Some(format!(
            "predicted {:.1} ms > {:.1} ms ((1 + slack) × best)",
            d.predicted_ms, bound
        ));
    }

    let spare: Vec<f64> = candidates
        .iter()
        .zip(&decisions)
        .map(|(c, d)| if d.excluded.is_none() { c.tops * (1.0 - d.utilization) } else { 0.0 })
        .collect();
    let total: f64 = spare.iter().sum();
    for (d, s) in decisions.iter_mut().zip(spare) {
        if d.excluded.is_none() {
            // At least 1, so a member of the good set is never silently drained.
            d.weight = ((s / total * f64::from(WEIGHT_SCALE)).round() as u32).max(1);
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, one_way: f64, tops: f64, util: f64) -> Candidate {
        Candidate {
            instance: name.into(),
            path_one_way_ms: one_way,
            request_cost: 0.02,
            tops,
            utilization: util,
        }
    }
    const POLICY: Policy = Policy { latency_only: false, max_network_ms: Some(100.0), slack: 0.5 };

    fn weight(ds: &[Decision], name: &str) -> u32 {
        ds.iter().find(|d| d.instance == name).unwrap().weight
    }

    #[test]
    fn idle_edges_share_and_far_cloud_is_out() {
        let ds = decide(
            &[c("e1", 3.0, 4.0, 0.0), c("e2", 3.0, 4.0, 0.0), c("cloud", 16.0, 100.0, 0.0)],
            POLICY,
        );
        assert_eq!(weight(&ds, "e1"), 500);
        assert_eq!(weight(&ds, "e2"), 500);
        assert_eq!(weight(&ds, "cloud"), 0);
        assert!((ds[0].predicted_ms - 11.0).abs() < 1e-9, "6 ms network + 5 ms compute");
    }

    #[test]
    fn busy_edge_loses_its_new_flows() {
        let ds = decide(
            &[c("e1", 3.0, 4.0, 0.85), c("e2", 3.0, 4.0, 0.0), c("cloud", 16.0, 100.0, 0.0)],
            POLICY,
        );
        assert_eq!(weight(&ds, "e1"), 0);
        assert_eq!(weight(&ds, "e2"), 1000);
    }

    #[test]
    fn when_edges_are_busy_the_big_cloud_takes_most() {
        let ds = decide(
            &[c("e1", 3.0, 4.0, 0.8), c("e2", 3.0, 4.0, 0.8), c("cloud", 16.0, 100.0, 0.0)],
            POLICY,
        );
        assert!(weight(&ds, "cloud") > 950, "{ds:?}");
        assert!(weight(&ds, "e1") >= 1);
    }

    #[test]
    fn latency_budget_excludes_and_min_latency_ignores_compute() {
        let strict = Policy { max_network_ms: Some(10.0), ..POLICY };
        let ds = decide(&[c("e1", 3.0, 4.0, 0.9), c("cloud", 16.0, 100.0, 0.0)], strict);
        assert_eq!(weight(&ds, "cloud"), 0);
        assert!(ds[1].excluded.as_ref().unwrap().contains("maxLatencyMs"));
        let latency = Policy { latency_only: true, max_network_ms: None, slack: 0.0 };
        let ds = decide(&[c("e1", 3.0, 1.0, 0.9), c("cloud", 16.0, 100.0, 0.0)], latency);
        assert_eq!(weight(&ds, "e1"), 1000);
    }
}
