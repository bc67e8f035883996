//! Instance selection (C-PS): which instances of a service one ingress sends new flows to,
//! and in what shares.
//!
//! # The model
//!
//! Each candidate instance is an M/M/1 queue seen through a network path:
//!
//! ```text
//! d        = network round trip: 2 × one-way latency of the path (headend → waypoints → egress)
//! μ        = service rate in requests/s: 1000 / measured service time, else tops / requestCost
//! ρ_bg     = utilisation by everyone but this service: utilisation − request_rate / μ
//! μ'       = μ × (1 − ρ_bg) − what ingresses planned before this one send there
//! b        = queue depth × mean service time: the backlog to work off first
//! T(x)     = d + b + 1000 / (μ' − x)                mean completion (ms) when we send x req/s
//! T99(x)   = d + b + ln(100) × 1000 / (μ' − x)      its 99th percentile (M/M/1 sojourn is exponential)
//! ```
//!
//! **Constraints first.** Candidates over `maxLatencyMs` (round trip) or under `minFreeTops`
//! (`tops × (1 − utilisation)`) are out. Of the rest, only the most preferred locality group
//! that has any candidate left is used; the later groups are its failover.
//!
//! **Then shares, not a winner.** With objective `min-completion-time` and a known demand λ
//! (req/s of this service at this ingress, measured), the shares level the predicted 99th
//! percentile: find the level L with Σ x_i = λ·(1 + headroom), where
//! `x_i = max(0, μ'_i − ln(100)·1000 / (L − d_i))` (water-filling, Wardrop equilibrium of
//! the tail). The controller plans the ingresses of a service one after another against one
//! capacity ledger (`planned_elsewhere_rps`), so they never all count on the same spare
//! capacity. Every instance whose idle tail is below the level gets traffic, the big idle
//! ones most; a far instance joins only when the near ones would queue. Planning for
//! `HEADROOM` more than measured (at most half the capacity left) keeps a burst from
//! overfilling the near ones. When λ is
//! unknown (no measurement yet), every candidate whose current prediction
//! `d + service time at current load` is within `(1 + slack)` of the best shares the flows in
//! proportion to its spare capacity `tops × (1 − utilisation)`. That is also the rule of
//! `min-latency` (with `d` alone), and `balanced` spreads over every allowed candidate in
//! proportion to spare capacity × L2 score.
//!
//! **Hysteresis (CATS R9: metrics must not make routes oscillate).** Against the previous
//! decisions of the same ingress: an instance that had flows keeps its place in the slack set
//! until it is `hysteresis` beyond the bound, and when the set of instances with flows is the
//! same and no instance's weight would move by more than `hysteresis` of itself (or 1 % of
//! the scale), the previous weights stay (marked `held`). Hard constraints always apply at once.
//!
//! **Scores (draft-ietf-cats-metric-definition L1/L2).** Each candidate also gets an L1 network
//! score (round trip plus two jitters, scaled by delivery ratio) and an L1 compute score
//! (service time at current load), each mapped linearly onto 0..10 between the policy's
//! `best` and `worst` bounds, and an L2 score, their weighted mean. `balanced` uses them; the
//! other objectives show them for `explain`.

use serde::Serialize;

use crate::intent::{Objective, ScoreRange, Scoring};

/// Total weight handed out per service; weights are integers for the Maglev table.
pub const WEIGHT_SCALE: u32 = 1000;
/// Utilisation is capped here so a saturated instance gets a large, finite service time.
const MAX_UTILIZATION: f64 = 0.99;
/// `ln(100)`: the 99th percentile of an exponential distribution in units of its mean.
const P99_FACTOR: f64 = 4.605_170_185_988_091;
/// Plan for this much more demand than measured, so a burst does not overfill the best ones.
const HEADROOM: f64 = 0.25;

/// Inputs for one candidate instance, seen from one ingress.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    pub instance: String,
    /// The egress node hosting it.
    pub site: String,
    /// Locality group of the site: 0 is the most preferred.
    pub group: usize,
    pub path_one_way_ms: f64,
    pub jitter_ms: f64,
    /// Share of probes lost on the path, in [0, 1].
    pub loss: f64,
    /// Tera-operations one request costs.
    pub request_cost: f64,
    /// Capacity in TOPS (declared, or reported by the instance).
    pub tops: f64,
    /// Utilisation, in [0, 1]: the larger of the declared and the measured one.
    pub utilization: f64,
    /// Requests waiting or in service at the last report.
    pub queue_depth: f64,
    /// Measured mean service time of one request, if the instance reports it.
    pub service_time_ms: Option<f64>,
    /// Requests/s of this service the instance received recently (from every ingress).
    pub request_rate: f64,
    /// Requests/s of this service that other ingresses, planned before this one, will send.
    pub planned_elsewhere_rps: f64,
}

/// Selection parameters from the steering policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub objective: Objective,
    /// Upper bound on the network round trip.
    pub max_network_ms: Option<f64>,
    /// Lower bound on free capacity, in TOPS.
    pub min_free_tops: Option<f64>,
    pub slack: f64,
    pub hysteresis: f64,
    /// Requests/s of this service arriving at this ingress; 0 when unknown.
    pub demand_rps: f64,
    pub scoring: Scoring,
}

/// The figures that decided a candidate's weight, for `explain` and dry runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub instance: String,
    pub site: String,
    pub group: usize,
    /// Round trip of the path.
    pub network_ms: f64,
    pub jitter_ms: f64,
    /// Mean service time (queueing included) at the current load.
    pub service_ms: f64,
    /// Predicted mean completion (network + service) with the planned share.
    pub predicted_ms: f64,
    /// Predicted 99th percentile of completion with the planned share.
    pub predicted_p99_ms: f64,
    pub utilization: f64,
    pub free_tops: f64,
    /// Requests/s this ingress plans to send (water-filling only).
    pub planned_rps: f64,
    /// L1 network score, 0..10.
    pub network_score: f64,
    /// L1 compute score, 0..10.
    pub compute_score: f64,
    /// L2 score: weighted mean of the L1 scores, 0..10.
    pub score: f64,
    pub weight: u32,
    /// The previous weight was kept: the change was within the hysteresis.
    pub held: bool,
    /// Why it got no weight, if it got none.
    pub excluded: Option<String>,
    /// No instance had the policy's compute margin: this one takes flows anyway.
    pub last_resort: bool,
    /// Nodes of the chosen path (filled in by the compile step).
    pub path: Vec<String>,
    /// The segment list the headend pushes, decoded (filled in by the compile step).
    pub segments: Vec<String>,
    /// Nodes of the disjoint backup path, if one exists (filled in by the compile step).
    pub backup_path: Option<Vec<String>>,
}

/// What the model derives from one candidate before any choice.
struct Figures {
    network_ms: f64,
    /// Service rate left for this ingress, requests/s.
    residual_rps: f64,
    service_ms: f64,
    /// Time to work off the requests already queued.
    backlog_ms: f64,
}

fn figures(c: &Candidate) -> Figures {
    let network_ms = 2.0 * c.path_one_way_ms;
    let mean_service_ms = c
        .service_time_ms
        .filter(|ms| *ms > 0.0)
        .unwrap_or(c.request_cost / c.tops * 1000.0)
        .max(1e-6);
    let rate = 1000.0 / mean_service_ms;
    let utilization = c.utilization.clamp(0.0, MAX_UTILIZATION);
    let background = (utilization - c.request_rate / rate).clamp(0.0, MAX_UTILIZATION);
    // M/M/1 sojourn at the current load, or what the queue in front says, whichever is worse.
    let service_ms = (mean_service_ms / (1.0 - utilization))
        .max(mean_service_ms * (1.0 + c.queue_depth.max(0.0)));
    let residual_rps = (rate * (1.0 - background) - c.planned_elsewhere_rps.max(0.0)).max(0.0);
    let backlog_ms = mean_service_ms * c.queue_depth.max(0.0);
    Figures { network_ms, residual_rps, service_ms, backlog_ms }
}

/// Linear map onto 0..10: 10 at or below `best`, 0 at or beyond `worst`.
fn l1(value: f64, range: &ScoreRange) -> f64 {
    let span = range.worst_ms - range.best_ms;
    if span <= 0.0 {
        return if value <= range.best_ms { 10.0 } else { 0.0 };
    }
    10.0 * ((range.worst_ms - value) / span).clamp(0.0, 1.0)
}

pub fn decide(
    candidates: &[Candidate],
    policy: &Policy,
    previous: Option<&[Decision]>,
) -> Vec<Decision> {
    // Without a previous decision (a fresh start) everyone counts as having flows: admission
    // margins are for instances coming back, not for the first plan.
    let had_flows =
        |name: &str| previous.is_none_or(|p| p.iter().any(|d| d.instance == name && d.weight > 0));
    let figs: Vec<Figures> = candidates.iter().map(figures).collect();
    let mut decisions: Vec<Decision> = candidates
        .iter()
        .zip(&figs)
        .map(|(c, f)| {
            let utilization = c.utilization.clamp(0.0, 1.0);
            let network_score = l1(f.network_ms + 2.0 * c.jitter_ms, &policy.scoring.network)
                * (1.0 - c.loss.clamp(0.0, 1.0));
            let compute_score = l1(f.service_ms, &policy.scoring.compute);
            let w = &policy.scoring.weights;
            let score = if w.network + w.compute > 0.0 {
                (w.network * network_score + w.compute * compute_score) / (w.network + w.compute)
            } else {
                0.0
            };
            Decision {
                instance: c.instance.clone(),
                site: c.site.clone(),
                group: c.group,
                network_ms: f.network_ms,
                jitter_ms: c.jitter_ms,
                service_ms: f.service_ms,
                predicted_ms: f.network_ms + f.service_ms,
                predicted_p99_ms: f.network_ms + P99_FACTOR * f.service_ms,
                utilization,
                free_tops: c.tops * (1.0 - utilization),
                network_score,
                compute_score,
                score,
                excluded: constraint_violation(c, f, policy, had_flows(&c.instance)),
                ..Default::default()
            }
        })
        .collect();

    // Last resort: when no instance has the compute margin the policy asks for, a slow
    // answer beats none: those short only of `minFreeTops` (not of a path or a latency
    // bound) take the flows, marked, rather than the service black-holing them.
    let short_of_compute =
        |d: &Decision| d.excluded.as_deref().is_some_and(|e| e.starts_with(SHORT_OF_COMPUTE));
    if decisions.iter().all(|d| d.excluded.is_some()) && decisions.iter().any(short_of_compute) {
        for d in decisions.iter_mut().filter(|d| short_of_compute(d)) {
            d.excluded = None;
            d.last_resort = true;
        }
    }

    // Locality: the most preferred group with a candidate left; the others are its failover.
    let Some(group) = decisions.iter().filter(|d| d.excluded.is_none()).map(|d| d.group).min()
    else {
        return decisions;
    };
    for d in decisions.iter_mut().filter(|d| d.excluded.is_none() && d.group > group) {
        d.excluded = Some(format!("locality group {} has instances left", group + 1));
    }

    let was_in = |name: &str| previous.is_some() && had_flows(name);
    match policy.objective {
        Objective::MinCompletionTime if policy.demand_rps > 0.0 => {
            water_fill(&mut decisions, &figs, policy.demand_rps);
        }
        Objective::MinCompletionTime | Objective::MinLatency => {
            let latency_only = policy.objective == Objective::MinLatency;
            let cost = |d: &Decision| if latency_only { d.network_ms } else { d.predicted_ms };
            slack_set(&mut decisions, cost, policy, &was_in);
            by_spare_capacity(&mut decisions, |d| d.free_tops);
        }
        Objective::Balanced => {
            by_spare_capacity(&mut decisions, |d| d.free_tops * (d.score / 10.0).max(0.01));
        }
    }
    if let Some(previous) = previous {
        hold(&mut decisions, previous, policy.hysteresis);
    }
    decisions
}

/// How an exclusion for lack of compute margin begins (the last resort lifts those).
const SHORT_OF_COMPUTE: &str = "free compute";

/// The policy's hard constraints, as a reason; `None` when the candidate meets them all.
fn constraint_violation(
    c: &Candidate,
    f: &Figures,
    policy: &Policy,
    had_flows: bool,
) -> Option<String> {
    if let Some(max) = policy.max_network_ms.filter(|max| f.network_ms > *max) {
        return Some(format!("network round trip {:.1} ms > maxLatencyMs {max}", f.network_ms));
    }
    let free = c.tops * (1.0 - c.utilization.clamp(0.0, 1.0));
    if let Some(min) = policy.min_free_tops.filter(|min| free < *min) {
        return Some(format!("{SHORT_OF_COMPUTE} {free:.2} TOPS < minFreeTops {min}"));
    }
    // An instance without flows must keep the margin after taking the whole demand: its
    // utilisation does not show our load yet, and admitting it on today's figure would send
    // the flows there, push it under the bound, drain it, and start again.
    let after = free - policy.demand_rps * c.request_cost;
    if let Some(min) = policy.min_free_tops.filter(|min| !had_flows && after < *min) {
        return Some(format!(
            "{SHORT_OF_COMPUTE} {free:.2} TOPS, {after:.2} after taking the demand < minFreeTops \
             {min}"
        ));
    }
    None
}

/// Excludes candidates whose cost is beyond `(1 + slack)` of the best; one that had flows
/// keeps them until it is a further `hysteresis` beyond.
fn slack_set(
    decisions: &mut [Decision],
    cost: impl Fn(&Decision) -> f64,
    policy: &Policy,
    was_in: &dyn Fn(&str) -> bool,
) {
    let Some(best) =
        decisions.iter().filter(|d| d.excluded.is_none()).map(&cost).min_by(f64::total_cmp)
    else {
        return;
    };
    let bound = best * (1.0 + policy.slack);
    for d in decisions.iter_mut().filter(|d| d.excluded.is_none()) {
        let own_bound = if was_in(&d.instance) { bound * (1.0 + policy.hysteresis) } else { bound };
        let c = cost(d);
        if c > own_bound {
            d.excluded =
                Some(format!("predicted {c:.1} ms > {own_bound:.1} ms ((1 + slack) × best)"));
        }
    }
}

/// Shares in proportion to `share` among the candidates still in.
fn by_spare_capacity(decisions: &mut [Decision], share: impl Fn(&Decision) -> f64) {
    let shares: Vec<f64> = decisions
        .iter()
        .map(|d| if d.excluded.is_none() { share(d).max(0.0) } else { 0.0 })
        .collect();
    let total: f64 = shares.iter().sum();
    let count = decisions.iter().filter(|d| d.excluded.is_none()).count();
    for (d, s) in decisions.iter_mut().zip(shares) {
        if d.excluded.is_none() {
            let fraction = if total > 0.0 { s / total } else { 1.0 / count as f64 };
            d.weight = to_weight(fraction);
        }
    }
}

/// At least 1 for a member of the set, so it is never silently drained.
fn to_weight(fraction: f64) -> u32 {
    ((fraction * f64::from(WEIGHT_SCALE)).round() as u32).max(1)
}

/// Levels the predicted 99th percentile across the candidates still in, for `demand` req/s.
fn water_fill(decisions: &mut [Decision], figs: &[Figures], measured: f64) {
    let live: Vec<usize> = (0..decisions.len())
        .filter(|&i| decisions[i].excluded.is_none() && figs[i].residual_rps > 0.0)
        .collect();
    if live.is_empty() {
        return;
    }
    let tail = P99_FACTOR * 1000.0;
    let rate_at = |i: usize, level: f64| -> f64 {
        let d = figs[i].network_ms + figs[i].backlog_ms;
        if level <= d {
            return 0.0;
        }
        (figs[i].residual_rps - tail / (level - d)).max(0.0)
    };
    let capacity: f64 = live.iter().map(|&i| figs[i].residual_rps).sum();
    // Headroom for bursts, but never more than half the capacity left: near saturation the
    // plan must still say where the spare capacity is, not split by capacity alone.
    let demand = if measured >= capacity {
        measured
    } else {
        (measured * (1.0 + HEADROOM)).min(measured + 0.5 * (capacity - measured))
    };
    let rates: Vec<(usize, f64)> = if demand >= capacity * 0.999 {
        // Overloaded: every candidate runs flat out; share by what each can take.
        live.iter().map(|&i| (i, figs[i].residual_rps * 0.999)).collect()
    } else {
        let mut low = live
            .iter()
            .map(|&i| figs[i].network_ms + figs[i].backlog_ms + tail / figs[i].residual_rps)
            .fold(f64::INFINITY, f64::min);
        let mut high = low.max(1.0) * 2.0;
        while live.iter().map(|&i| rate_at(i, high)).sum::<f64>() < demand {
            high *= 2.0;
        }
        for _ in 0..100 {
            let mid = 0.5 * (low + high);
            if live.iter().map(|&i| rate_at(i, mid)).sum::<f64>() < demand {
                low = mid;
            } else {
                high = mid;
            }
        }
        live.iter().map(|&i| (i, rate_at(i, high))).collect()
    };
    let total: f64 = rates.iter().map(|(_, r)| r).sum();
    for (i, rate) in rates {
        let d = &mut decisions[i];
        // A saturated instance has no steady state; it is shown at 20 × its idle time.
        let residual = figs[i].residual_rps;
        let left = if rate < residual * 0.99 { residual - rate } else { residual * 0.05 };
        d.planned_rps = rate;
        let fixed = d.network_ms + figs[i].backlog_ms;
        d.predicted_ms = fixed + 1000.0 / left;
        d.predicted_p99_ms = fixed + P99_FACTOR * 1000.0 / left;
        if rate > 0.0 && total > 0.0 {
            d.weight = to_weight(rate / total);
        } else {
            d.excluded = Some(format!(
                "idle tail {:.1} ms is above the level the others reach",
                d.predicted_p99_ms
            ));
        }
    }
}

/// Keeps the previous weights when the same instances have flows and no weight moves by more
/// than the hysteresis (a fraction of that instance's weight).
fn hold(decisions: &mut [Decision], previous: &[Decision], hysteresis: f64) {
    let before = |name: &str| previous.iter().find(|p| p.instance == name).map(|p| p.weight);
    let same_members = decisions.len() == previous.len()
        && decisions.iter().all(|d| before(&d.instance).is_some_and(|w| (w > 0) == (d.weight > 0)));
    if !same_members {
        return;
    }
    // Relative to each instance's own weight: 38 -> 3 is a tenfold change for a small
    // instance though only 3.5 % of the total. Moves of at most 1 % of the scale are noise.
    let small = decisions.iter().all(|d| {
        let (old, new) = (f64::from(before(&d.instance).unwrap_or(0)), f64::from(d.weight));
        let limit = (hysteresis * old.max(new)).max(0.01 * f64::from(WEIGHT_SCALE));
        (new - old).abs() <= limit
    });
    if small {
        for d in decisions.iter_mut() {
            let w = before(&d.instance).unwrap_or(0);
            d.held = w != d.weight;
            d.weight = w;
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
