//! `catsd explain`: the figures that decided each candidate's weight, as a table.
//!
//! The table is built from the serde JSON of the decisions, not from their Rust fields: every
//! field of [`crate::compile::select::Decision`] becomes a column (a nested object becomes one
//! column per member, `scores.l1`), so a field added to the selector shows up here without a
//! change. Known fields come in a fixed, readable order; others follow, and the exclusion
//! reason, the longest, comes last.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::compile::{InstanceMetric, LinkMetric, Metrics, ServiceDecisions};

/// Column order for the fields we know of (matched on a column's first path component).
const PREFERRED: &[&str] = &[
    "ingress",
    "instance",
    "site",
    "group",
    "path",
    "segments",
    "backupPath",
    "networkMs",
    "jitterMs",
    "serviceMs",
    "predictedMs",
    "predictedP99Ms",
    "utilization",
    "freeTops",
    "plannedRps",
    "networkScore",
    "computeScore",
    "score",
    "weight",
    "held",
];
/// Columns after all others.
const LAST: &[&str] = &["excluded"];

/// One table for `entries` (one row per ingress and candidate).
pub fn table(entries: &[ServiceDecisions]) -> String {
    let json: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::to_value(e).expect("decisions serialise to JSON"))
        .collect();
    table_from_json(&json)
}

/// Like [`table`], from the JSON of `ServiceDecisions` (`{service, ingress, decisions: [..]}`).
pub fn table_from_json(entries: &[Value]) -> String {
    let mut rows: Vec<BTreeMap<String, String>> = Vec::new();
    let mut seen: Vec<String> = Vec::new(); // columns in order of first appearance
    for entry in entries {
        let ingress = entry.get("ingress").map(cell_of).unwrap_or_default();
        for decision in entry.get("decisions").and_then(Value::as_array).into_iter().flatten() {
            let mut row = BTreeMap::new();
            row.insert("ingress".to_string(), ingress.clone());
            flatten("", decision, &mut row, &mut seen);
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return "no candidates\n".into();
    }
    let columns = order(&seen);
    let cells: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| r.get(c).map_or("", String::as_str)).collect())
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| header(c)).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells.iter().map(|r| r[i].chars().count()).chain([headers[i].chars().count()]).max()
        })
        .map(|w| w.unwrap_or(0))
        .collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| {
            let mut values = cells.iter().map(|r| r[i]).filter(|c| !c.is_empty() && *c != "-");
            values.clone().next().is_some() && values.all(|c| c.parse::<f64>().is_ok())
        })
        .collect();
    let mut out = String::new();
    let mut line = |row: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if numeric[i] {
                text.push_str(&format!("{cell:>w$}", w = widths[i]));
            } else {
                text.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(String::as_str).collect());
    for row in cells {
        line(row);
    }
    out
}

/// Preferred columns first, then unknown ones as they came, then [`LAST`].
fn order(seen: &[String]) -> Vec<String> {
    let first = |c: &String| c.split('.').next().unwrap_or(c).to_string();
    let rank = |c: &String| {
        let f = first(c);
        if let Some(i) = PREFERRED.iter().position(|p| *p == f) {
            (0, i)
        } else if let Some(i) = LAST.iter().position(|p| *p == f) {
            (2, i)
        } else {
            (1, 0)
        }
    };
    let mut columns: Vec<String> =
        ["ingress".to_string()].into_iter().chain(seen.iter().cloned()).collect();
    // Stable: columns of equal rank keep their order of appearance.
    columns.sort_by_key(rank);
    columns
}

/// `networkMs` → `network ms`, `scores.l1` → `scores.l1`.
fn header(column: &str) -> String {
    let mut out = String::new();
    for ch in column.chars() {
        if ch.is_ascii_uppercase() {
            out.push(' ');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Objects become one column per member (`a.b`); everything else one cell.
fn flatten(
    prefix: &str,
    value: &Value,
    row: &mut BTreeMap<String, String>,
    seen: &mut Vec<String>,
) {
    if let Value::Object(members) = value {
        for (key, v) in members {
            let column = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            flatten(&column, v, row, seen);
        }
        return;
    }
    if !seen.iter().any(|s| s == prefix) {
        seen.push(prefix.to_string());
    }
    let last = prefix.rsplit('.').next().unwrap_or(prefix);
    let cell = match value {
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let separator = if last == "path" || last.ends_with("Path") { ">" } else { "," };
            let joined: Vec<String> = items.iter().map(cell_of).collect();
            if joined.is_empty() { "-".to_string() } else { joined.join(separator) }
        }
        other => cell_of(other),
    };
    row.insert(prefix.to_string(), cell);
}

/// One value as a table cell.
fn cell_of(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) if n.is_f64() => number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Two decimals at most, one at least: `6.0`, `0.7`, `22.67`.
fn number(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') { format!("{s}0") } else { s.to_string() }
}

/// The metrics a daemon used, from its status file (or a recorded `decisions.json`).
///
/// The status file's `metrics` section is taken when there is one: each link and instance
/// entry (a list with `link`/`instance` members, or a map by index/name) not marked `stale`.
/// Without it, each instance's utilisation comes from the decisions: the figure the daemon
/// used (the larger of declared and measured), the largest over the ingresses.
#[allow(clippy::needless_update)] // the metric types grow; figures not named keep their default
pub fn metrics_from_status(status: &Value) -> Metrics {
    let mut metrics = Metrics::default();
    if let Some(m) = status.get("metrics").filter(|m| m.is_object()) {
        let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        for (name, v) in entries(m.get("instances"), "instance") {
            let metric = InstanceMetric {
                utilization: f(v, "utilization").unwrap_or(0.0),
                queue_depth: f(v, "queueDepth").unwrap_or(0.0),
                service_time_ms: f(v, "serviceTimeMs"),
                request_rate: f(v, "requestRate").unwrap_or(0.0),
                capacity_tops: f(v, "capacityTops"),
                ..Default::default()
            };
            metrics.instances.insert(name, metric);
        }
        for (index, v) in entries(m.get("links"), "link") {
            let (Ok(index), Some(one_way_ms)) = (index.parse(), f(v, "oneWayMs")) else {
                continue; // declared latency applies
            };
            let metric = LinkMetric {
                one_way_ms,
                jitter_ms: f(v, "jitterMs").unwrap_or(0.0),
                loss: f(v, "loss").unwrap_or(0.0),
                ..Default::default()
            };
            metrics.links.insert(index, metric);
        }
        return metrics;
    }
    let entries = status.get("decisions").unwrap_or(status);
    for entry in entries.as_array().into_iter().flatten() {
        for d in entry.get("decisions").and_then(Value::as_array).into_iter().flatten() {
            let (Some(name), Some(u)) = (
                d.get("instance").and_then(Value::as_str),
                d.get("utilization").and_then(Value::as_f64),
            ) else {
                continue;
            };
            let metric = metrics.instances.entry(name.to_string()).or_default();
            metric.utilization = metric.utilization.max(u);
        }
    }
    metrics
}

/// The fresh members of a map (by key) or list (by `key_member`), as (key, value).
fn entries<'a>(section: Option<&'a Value>, key_member: &str) -> Vec<(String, &'a Value)> {
    let all: Vec<(String, &Value)> = match section {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| {
                let key = v.get(key_member)?;
                Some((key.as_str().map_or_else(|| key.to_string(), str::to_string), v))
            })
            .collect(),
        _ => Vec::new(),
    };
    all.into_iter().filter(|(_, v)| v.get("stale") != Some(&Value::Bool(true))).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_row_per_candidate_known_columns_first_unknown_before_the_reason() {
        let entries = [json!({
            "service": "plates",
            "ingress": "gw",
            "decisions": [
                {"instance": "edge1-a", "weight": 500, "networkMs": 6.0, "excluded": null,
                 "path": ["gw", "core", "edge1"], "segments": ["fc00:0:3:4001::1"],
                 "newFigure": true, "scores": {"l1": 7.5, "l2": 8.0}, "utilization": 0.7},
                {"instance": "cloud-a", "weight": 0, "networkMs": 32.0,
                 "excluded": "predicted 32.2 ms > 16.5 ms", "path": ["gw", "core", "cloud"],
                 "segments": [], "newFigure": false, "scores": {"l1": 1.0, "l2": 2.25},
                 "utilization": 0.0}
            ]
        })];
        assert_eq!(
            table_from_json(&entries),
            "\
ingress  instance  path           segments          network ms  utilization  weight  new figure  scores.l1  scores.l2  excluded
gw       edge1-a   gw>core>edge1  fc00:0:3:4001::1         6.0          0.7     500  yes               7.5        8.0  -
gw       cloud-a   gw>core>cloud  -                       32.0          0.0       0  no                1.0       2.25  predicted 32.2 ms > 16.5 ms
"
        );
    }

    #[test]
    fn rows_of_several_ingresses_and_no_candidates() {
        let entries = [
            json!({"ingress": "gw", "decisions": [{"instance": "a", "weight": 1000}]}),
            json!({"ingress": "gw2", "decisions": [{"instance": "a", "weight": 7}]}),
        ];
        assert_eq!(
            table_from_json(&entries),
            "ingress  instance  weight\ngw       a           1000\ngw2      a              7\n"
        );
        assert_eq!(table_from_json(&[]), "no candidates\n");
    }

    #[test]
    fn metrics_from_the_decisions_of_a_status_file() {
        let status = json!({
            "generation": 4,
            "decisions": [
                {"ingress": "gw", "decisions": [{"instance": "a", "utilization": 0.7},
                                                {"instance": "b", "utilization": 0.0}]},
                {"ingress": "gw2", "decisions": [{"instance": "a", "utilization": 0.75}]}
            ]
        });
        let m = metrics_from_status(&status);
        assert_eq!(m.utilization("a"), Some(0.75));
        assert_eq!(m.utilization("b"), Some(0.0));
        // A bare decisions.json is the same array.
        assert_eq!(metrics_from_status(&status["decisions"]), m);
    }

    #[test]
    fn metrics_section_of_the_status_file_without_stale_entries() {
        let status = json!({
            "metrics": {
                "links": [
                    {"link": 1, "a": "core", "b": "edge1", "latencyMs": 2.0, "oneWayMs": 2.5,
                     "jitterMs": 0.1, "loss": 0.0, "stale": false},
                    {"link": 3, "a": "core", "b": "cloud", "latencyMs": 15.0, "oneWayMs": 40.0,
                     "stale": true},
                    {"link": 0, "a": "gw", "b": "core", "latencyMs": 1.0, "oneWayMs": null,
                     "probed": false, "stale": false}
                ],
                "instances": [
                    {"instance": "a", "utilization": 0.6, "queueDepth": 2.0, "ageMs": 10,
                     "stale": false},
                    {"instance": "b", "utilization": 0.9, "stale": true}
                ]
            },
            "decisions": [{"ingress": "gw", "decisions": [{"instance": "b", "utilization": 0.9}]}]
        });
        let m = metrics_from_status(&status);
        assert_eq!(m.links.keys().collect::<Vec<_>>(), [&1]);
        assert_eq!(m.links[&1].one_way_ms, 2.5);
        assert_eq!(m.utilization("a"), Some(0.6));
        assert_eq!(m.instances["a"].queue_depth, 2.0);
        assert_eq!(m.utilization("b"), None, "stale: the declared value applies");
    }

    #[test]
    fn metrics_member_wins() {
        let status = json!({
            "metrics": {"instances": {"a": {"utilization": 0.5, "capacityTops": 8.0}},
                        "links": {"2": {"oneWayMs": 3.5}}},
            "decisions": [{"ingress": "gw", "decisions": [{"instance": "a", "utilization": 0.9}]}]
        });
        let m = metrics_from_status(&status);
        assert_eq!(m.utilization("a"), Some(0.5));
        assert_eq!(m.instances["a"].capacity_tops, Some(8.0));
        assert_eq!(m.links[&2].one_way_ms, 3.5);
    }
}
