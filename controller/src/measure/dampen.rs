//! Dampening: whether new measurements differ enough from those of the last compile to
//! compile again. Measurements always wobble a little; recompiling on every wobble would
//! churn the weights (and every node's maps) for nothing.

use crate::compile::Metrics;

/// Utilisation must move by this much (absolute).
pub const MIN_UTILIZATION_CHANGE: f64 = 0.1;
/// Latencies and service times must move by at least this much...
pub const MIN_TIME_CHANGE_MS: f64 = 1.0;
/// ...and by at least this share of the old value (so a 40 ms link needs 4 ms). Capacities
/// must move by this share too.
pub const MIN_RELATIVE_CHANGE: f64 = 0.1;

/// Whether `new` differs enough from `old` (the metrics of the last compile) to recompile:
/// - a link or instance became fresh or stale (appeared in or left the metrics);
/// - a link's one-way latency moved by at least max(1 ms, 10 %);
/// - an instance's utilisation moved by at least 0.1, its service time by at least
///   max(1 ms, 10 %), or its reported capacity by 10 % (or appeared or went away).
///
/// Queue depth, request rate, jitter and loss are carried along but do not trigger a
/// recompile on their own: the compile step does not weigh them (yet).
pub fn changed_enough(old: &Metrics, new: &Metrics) -> bool {
    if !old.links.keys().eq(new.links.keys()) || !old.instances.keys().eq(new.instances.keys()) {
        return true;
    }
    let links = old
        .links
        .iter()
        .zip(new.links.values())
        .any(|((_, a), b)| time_moved(a.one_way_ms, b.one_way_ms));
    let instances = old.instances.values().zip(new.instances.values()).any(|(a, b)| {
        (a.utilization - b.utilization).abs() >= MIN_UTILIZATION_CHANGE
            || match (a.service_time_ms, b.service_time_ms) {
                (Some(x), Some(y)) => time_moved(x, y),
                (x, y) => x.is_some() != y.is_some(),
            }
            || match (a.capacity_tops, b.capacity_tops) {
                (Some(x), Some(y)) => (x - y).abs() >= MIN_RELATIVE_CHANGE * x.abs(),
                (x, y) => x.is_some() != y.is_some(),
            }
    });
    links || instances
}

/// Whether a time moved by at least max(1 ms, 10 %).
pub fn time_moved(old_ms: f64, new_ms: f64) -> bool {
    (old_ms - new_ms).abs() >= MIN_TIME_CHANGE_MS.max(MIN_RELATIVE_CHANGE * old_ms.abs())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::compile::{InstanceMetric, LinkMetric};

    fn links(v: &[(usize, f64)]) -> Metrics {
        Metrics {
            links: v
                .iter()
                .map(|(k, ms)| (*k, LinkMetric { one_way_ms: *ms, ..Default::default() }))
                .collect(),
            ..Default::default()
        }
    }

    fn instance(m: InstanceMetric) -> Metrics {
        Metrics { instances: BTreeMap::from([("a".to_string(), m)]), ..Default::default() }
    }

    fn util(u: f64) -> InstanceMetric {
        InstanceMetric { utilization: u, ..Default::default() }
    }

    #[test]
    fn equal_metrics_do_not_recompile() {
        assert!(!changed_enough(&Metrics::default(), &Metrics::default()));
        let m = links(&[(0, 1.0), (3, 15.0)]);
        assert!(!changed_enough(&m, &m.clone()));
    }

    #[test]
    fn small_utilisation_changes_are_dampened() {
        assert!(!changed_enough(&instance(util(0.40)), &instance(util(0.45))));
        assert!(changed_enough(&instance(util(0.40)), &instance(util(0.55))));
        // Rate and queue do not count on their own.
        let busy = InstanceMetric { request_rate: 150.0, queue_depth: 9.0, ..util(0.40) };
        assert!(!changed_enough(&instance(util(0.40)), &instance(busy)));
    }

    #[test]
    fn latency_must_move_by_a_millisecond_and_ten_percent() {
        // 2 ms link: 1 ms is the bar.
        assert!(!changed_enough(&links(&[(1, 2.0)]), &links(&[(1, 2.9)])));
        assert!(changed_enough(&links(&[(1, 2.0)]), &links(&[(1, 3.0)])));
        // 40 ms link: 10 % (4 ms) is the bar.
        assert!(!changed_enough(&links(&[(3, 40.0)]), &links(&[(3, 37.0)])));
        assert!(changed_enough(&links(&[(3, 40.0)]), &links(&[(3, 44.0)])));
        // Jitter and loss alone do not count.
        let mut noisy = links(&[(1, 2.0)]);
        noisy.links.get_mut(&1).unwrap().loss = 0.3;
        noisy.links.get_mut(&1).unwrap().jitter_ms = 5.0;
        assert!(!changed_enough(&links(&[(1, 2.0)]), &noisy));
    }

    #[test]
    fn going_stale_or_fresh_always_counts() {
        // A link measured for the first time, or no longer (stale: left out of the metrics).
        assert!(changed_enough(&links(&[(0, 1.0)]), &links(&[(0, 1.0), (1, 2.0)])));
        assert!(changed_enough(&links(&[(0, 1.0), (1, 2.0)]), &links(&[(0, 1.0)])));
        // Same count, different link.
        assert!(changed_enough(&links(&[(0, 1.0)]), &links(&[(1, 1.0)])));
        // An instance report going stale, even at utilisation 0.
        assert!(changed_enough(&instance(util(0.0)), &Metrics::default()));
        assert!(changed_enough(&Metrics::default(), &instance(util(0.0))));
    }

    #[test]
    fn service_time_and_capacity_changes() {
        let m = |st: Option<f64>, cap: Option<f64>| {
            instance(InstanceMetric { service_time_ms: st, capacity_tops: cap, ..util(0.2) })
        };
        assert!(!changed_enough(&m(Some(5.0), Some(4.0)), &m(Some(5.5), Some(4.2))));
        assert!(changed_enough(&m(Some(5.0), None), &m(Some(6.0), None)));
        assert!(changed_enough(&m(None, Some(4.0)), &m(None, Some(4.4))));
        assert!(changed_enough(&m(None, Some(4.0)), &m(None, None)));
        assert!(changed_enough(&m(None, None), &m(Some(5.0), None)));
    }
}
