use super::*;

/// A candidate on a site of its own name, 0.02 TOPs a request (the lab's figures).
pub(in crate::compile) fn c(name: &str, one_way: f64, tops: f64, util: f64) -> Candidate {
    Candidate {
        instance: name.into(),
        site: name.into(),
        path_one_way_ms: one_way,
        request_cost: 0.02,
        tops,
        utilization: util,
        ..Default::default()
    }
}

fn policy() -> Policy {
    Policy {
        objective: Objective::MinCompletionTime,
        max_network_ms: Some(100.0),
        slack: 0.5,
        hysteresis: 0.1,
        ..Default::default()
    }
}

fn weight(ds: &[Decision], name: &str) -> u32 {
    ds.iter().find(|d| d.instance == name).unwrap().weight
}

fn lab() -> Vec<Candidate> {
    vec![c("e1", 3.0, 4.0, 0.0), c("e2", 3.0, 4.0, 0.0), c("cloud", 16.0, 100.0, 0.0)]
}

#[test]
fn without_demand_idle_edges_share_and_the_far_cloud_is_out() {
    let ds = decide(&lab(), &policy(), None);
    assert_eq!(weight(&ds, "e1"), 500);
    assert_eq!(weight(&ds, "e2"), 500);
    assert_eq!(weight(&ds, "cloud"), 0);
    assert!((ds[0].predicted_ms - 11.0).abs() < 1e-9, "6 ms network + 5 ms compute");
    assert!(ds[2].excluded.as_ref().unwrap().contains("slack"));
}

#[test]
fn a_busy_edge_loses_its_new_flows() {
    let mut cs = lab();
    cs[0].utilization = 0.85;
    let ds = decide(&cs, &policy(), None);
    assert_eq!(weight(&ds, "e1"), 0);
    assert_eq!(weight(&ds, "e2"), 1000);
}

#[test]
fn a_queue_in_front_counts_even_when_utilisation_lags() {
    let mut cs = lab();
    cs[0].queue_depth = 20.0;
    let ds = decide(&cs, &policy(), None);
    assert!((ds[0].service_ms - 105.0).abs() < 1e-9, "21 requests of 5 ms: {ds:?}");
    assert_eq!(weight(&ds, "e1"), 0);
}

#[test]
fn constraints_come_first() {
    let strict = Policy { max_network_ms: Some(10.0), ..policy() };
    let ds = decide(&[c("e1", 3.0, 4.0, 0.9), c("cloud", 16.0, 100.0, 0.0)], &strict, None);
    assert_eq!(weight(&ds, "cloud"), 0);
    assert!(ds[1].excluded.as_ref().unwrap().contains("maxLatencyMs"));
    assert_eq!(weight(&ds, "e1"), 1000, "the only one left, however busy");

    let roomy = Policy { min_free_tops: Some(2.0), ..policy() };
    let ds = decide(&[c("e1", 3.0, 4.0, 0.6), c("cloud", 16.0, 100.0, 0.0)], &roomy, None);
    assert!(ds[0].excluded.as_ref().unwrap().contains("minFreeTops"), "{ds:?}");
    assert_eq!(weight(&ds, "cloud"), 1000);
}

#[test]
fn min_latency_ignores_compute() {
    let latency = Policy { objective: Objective::MinLatency, slack: 0.0, ..policy() };
    let ds = decide(&[c("e1", 3.0, 1.0, 0.9), c("cloud", 16.0, 100.0, 0.0)], &latency, None);
    assert_eq!(weight(&ds, "e1"), 1000);
}

#[test]
fn the_preferred_locality_group_is_used_while_it_has_candidates() {
    let mut cs = lab();
    cs[2].group = 0;
    cs[0].group = 1;
    cs[1].group = 1;
    let ds = decide(&cs, &policy(), None);
    assert_eq!(weight(&ds, "cloud"), 1000, "{ds:?}");
    assert!(ds[0].excluded.as_ref().unwrap().contains("locality group 1"));
    // The cloud breaks the latency bound: the group fails over to the edges.
    let strict = Policy { max_network_ms: Some(20.0), ..policy() };
    let ds = decide(&cs, &strict, None);
    assert_eq!(weight(&ds, "e1") + weight(&ds, "e2"), 1000);
}

#[test]
fn with_light_demand_water_filling_keeps_to_the_edges() {
    // 30 req/s: each edge serves 200 req/s, so their tail stays below the cloud's.
    let p = Policy { demand_rps: 30.0, ..policy() };
    let ds = decide(&lab(), &p, None);
    assert_eq!(weight(&ds, "cloud"), 0, "{ds:?}");
    assert_eq!(weight(&ds, "e1"), 500);
    let total: f64 = ds.iter().map(|d| d.planned_rps).sum();
    assert!((total - 37.5).abs() < 1e-6, "plans for the demand plus headroom: {total}");
}

#[test]
fn with_heavy_demand_the_big_cloud_takes_the_overflow_at_an_equal_tail() {
    let p = Policy { demand_rps: 300.0, ..policy() };
    let ds = decide(&lab(), &p, None);
    assert!(ds.iter().all(|d| d.weight > 0), "{ds:?}");
    assert!(weight(&ds, "cloud") > weight(&ds, "e1"));
    let tails: Vec<f64> = ds.iter().map(|d| d.predicted_p99_ms).collect();
    assert!((tails[0] - tails[2]).abs() < 0.01, "levelled tails: {tails:?}");
}

#[test]
fn background_load_shrinks_what_is_left_for_the_service() {
    // e1 is 85% busy, of which only 10 req/s (5%) is this service: 15% is left.
    let mut cs = lab();
    cs[0].utilization = 0.85;
    cs[0].request_rate = 10.0;
    let p = Policy { demand_rps: 30.0, ..policy() };
    let ds = decide(&cs, &p, None);
    assert!(weight(&ds, "e1") < weight(&ds, "e2"), "{ds:?}");
}

#[test]
fn balanced_spreads_over_everything_allowed() {
    let p = Policy { objective: Objective::Balanced, ..policy() };
    let ds = decide(&lab(), &p, None);
    assert!(ds.iter().all(|d| d.weight > 0), "{ds:?}");
    assert!(weight(&ds, "cloud") > 900, "most spare capacity × score: {ds:?}");
}

#[test]
fn small_metric_changes_keep_the_previous_weights() {
    let first = decide(&lab(), &policy(), None);
    let mut cs = lab();
    cs[0].utilization = 0.1; // spare capacity 3.6 vs 4: weights 474 / 526, within 10%
    let second = decide(&cs, &policy(), Some(&first));
    assert_eq!(weight(&second, "e1"), 500, "{second:?}");
    assert!(second.iter().any(|d| d.held));
    cs[0].utilization = 0.5; // 333 / 667: beyond the hysteresis, weights move
    let third = decide(&cs, &policy(), Some(&second));
    assert_eq!(weight(&third, "e1"), 333);
}

#[test]
fn an_instance_with_flows_stays_in_until_clearly_worse() {
    // e2's prediction is just over the slack bound: a newcomer is out, a member stays.
    let mut cs = lab();
    cs[1].path_one_way_ms = 3.0 + 2.9; // 11.8 + 5 = 16.8 > 16.5 but < 16.5 × 1.1
    let fresh = decide(&cs, &policy(), None);
    assert_eq!(weight(&fresh, "e2"), 0);
    let before = decide(&lab(), &policy(), None);
    let kept = decide(&cs, &policy(), Some(&before));
    assert!(weight(&kept, "e2") > 0, "{kept:?}");
}

#[test]
fn scores_map_onto_zero_to_ten() {
    let ds = decide(&lab(), &policy(), None);
    // Round trip 6 ms over a 0..200 range: 9.7; service 5 ms over 0..1000: 9.95.
    assert!((ds[0].network_score - 9.7).abs() < 1e-9, "{ds:?}");
    assert!((ds[0].compute_score - 9.95).abs() < 1e-9);
    assert!((ds[0].score - 9.825).abs() < 1e-9);
}

#[test]
fn an_instance_without_flows_must_keep_the_margin_after_taking_the_demand() {
    // e1 was drained; at 70% busy it has 1.2 TOPS free, but 30 req/s of 0.02 TOPs would eat
    // 0.6 of them: it stays out rather than flap back in.
    let p = Policy { min_free_tops: Some(1.0), demand_rps: 30.0, ..policy() };
    let mut cs = lab();
    cs[0].utilization = 0.95;
    let drained = decide(&cs, &p, None);
    assert_eq!(weight(&drained, "e1"), 0);
    cs[0].utilization = 0.7;
    let later = decide(&cs, &p, Some(&drained));
    assert_eq!(weight(&later, "e1"), 0, "{later:?}");
    assert!(later[0].excluded.as_ref().unwrap().contains("after taking the demand"));
    // Once it has room for the demand (and its tail beats the level e2 alone reaches), it
    // comes back.
    cs[0].utilization = 0.1;
    assert!(weight(&decide(&cs, &p, Some(&later)), "e1") > 0);
}

#[test]
fn near_saturation_the_plan_still_levels_tails_instead_of_splitting_by_capacity() {
    // Edges of 40 req/s and a cloud of 1000 (requestCost 0.1), 864 req/s measured: 80 % of
    // the capacity. Planning 25 % more would reach the capacity and split 4:4:100.
    let cs = [c("e1", 3.0, 4.0, 0.0), c("e2", 3.0, 4.0, 0.0), c("cloud", 16.0, 100.0, 0.0)]
        .map(|c| Candidate { request_cost: 0.1, ..c });
    let p = Policy { demand_rps: 864.0, ..policy() };
    let ds = decide(&cs, &p, None);
    let total: f64 = ds.iter().map(|d| d.planned_rps).sum();
    assert!((total - 972.0).abs() < 1e-6, "halfway to the capacity: {total}");
    assert!(weight(&ds, "e1") < 15, "the edges stay well below their capacity: {ds:?}");
    let tails: Vec<f64> = ds.iter().map(|d| d.predicted_p99_ms).collect();
    assert!((tails[0] - tails[2]).abs() < 0.01, "levelled: {tails:?}");
}

#[test]
fn when_no_instance_has_the_compute_margin_the_nearest_short_ones_still_get_flows() {
    // Both edges busy beyond minFreeTops, the cloud too far for the latency bound.
    let cs = vec![c("e1", 3.0, 4.0, 0.9), c("e2", 3.0, 4.0, 0.95), c("cloud", 60.0, 100.0, 0.0)];
    let p = Policy { min_free_tops: Some(1.0), ..policy() };
    let ds = decide(&cs, &p, None);
    assert!(weight(&ds, "e1") + weight(&ds, "e2") > 0, "a slow answer beats none: {ds:?}");
    assert!(ds.iter().filter(|d| d.weight > 0).all(|d| d.last_resort));
    assert_eq!(weight(&ds, "cloud"), 0, "the latency bound is not lifted");
    assert!(ds[2].excluded.as_ref().unwrap().contains("maxLatencyMs"));
    // With one instance that has the margin, the last resort is not needed.
    let mut cs = cs;
    cs[1].utilization = 0.1;
    let ds = decide(&cs, &p, None);
    assert_eq!(weight(&ds, "e2"), 1000);
    assert!(ds.iter().all(|d| !d.last_resort));
}
