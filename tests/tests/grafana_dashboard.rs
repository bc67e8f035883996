//! The Grafana dashboard (`examples/grafana/cats.json`) only queries metrics the daemon's
//! endpoint exports, by their exposed names (`_total` on counters, units as suffixes). No root
//! needed: the names come from the endpoint's own list of families.

use std::{collections::BTreeSet, path::Path};

use cats_controller::metrics_endpoint;
use serde_json::Value;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana/cats.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every PromQL string of the dashboard: the panels' `expr` and the variables' `query`.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(q)) => out.push(q.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// The `cats_...` identifiers in a PromQL expression.
fn metric_names(promql: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = promql;
    while let Some(at) = rest.find("cats_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let exported: BTreeSet<String> =
        metrics_endpoint::families().iter().map(|f| f.sample_name()).collect();
    let mut promql = Vec::new();
    queries(&dashboard(), &mut promql);
    let used: BTreeSet<String> = promql.iter().flat_map(|q| metric_names(q)).collect();
    assert!(used.len() >= 20, "the dashboard shows most of the metrics: {used:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?} (exported: {exported:?})");
    // The per-instance counters, drops, failovers and probe RTTs are all on it.
    for needed in [
        "cats_instance_packets_total",
        "cats_drops_total",
        "cats_failovers_total",
        "cats_probe_rtt_seconds",
        "cats_link_rtt_seconds",
        "cats_affinity_evictions_total",
        "cats_selection_changes_total",
    ] {
        assert!(used.contains(needed), "{needed} is not on the dashboard");
    }
}

#[test]
fn names_are_found_in_promql() {
    assert_eq!(
        metric_names("sum by (node) (rate(cats_drops_total{node=~\"$node\"}[1m])) / cats_x"),
        ["cats_drops_total", "cats_x"]
    );
    assert!(metric_names("label_values(my_cats_thing, x)").is_empty());
}

#[test]
fn every_panel_has_a_prometheus_datasource_and_a_query() {
    let d = dashboard();
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        assert_eq!(p["datasource"]["type"], "prometheus", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        assert!(targets.iter().all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())));
    }
}
