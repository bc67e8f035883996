//! Compute metrics reported through files (the one-machine C-SMA transport): each instance
//! writes `<dir>/<instance>.json` with its utilisation every second.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

/// A report older than this is stale and ignored (the declared value applies).
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// Changes smaller than this do not trigger a recompile (dampening against churn).
pub const MIN_CHANGE: f64 = 0.1;

#[derive(Deserialize)]
struct Report {
    instance: String,
    utilization: f64,
    updated_unix_ms: u64,
}

/// Fresh utilisation per instance found in `dir`. Unreadable files are skipped: a half-written
/// report must not stop the controller.
pub fn read_utilization(dir: &Path) -> BTreeMap<String, f64> {
    let now_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Ok(report) = serde_json::from_str::<Report>(&text) else { continue };
        let age = now_ms.saturating_sub(report.updated_unix_ms);
        if age <= STALE_AFTER.as_millis() as u64 && report.utilization.is_finite() {
            out.insert(report.instance, report.utilization.clamp(0.0, 1.0));
        }
    }
    out
}

/// Whether `new` differs from `used` enough to recompile.
pub fn changed_enough(used: &BTreeMap<String, f64>, new: &BTreeMap<String, f64>) -> bool {
    let keys: std::collections::BTreeSet<&String> = used.keys().chain(new.keys()).collect();
    keys.into_iter().any(|k| {
        let a = used.get(k).copied().unwrap_or(0.0);
        let b = new.get(k).copied().unwrap_or(0.0);
        (a - b).abs() >= MIN_CHANGE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[test]
    fn fresh_reports_count_stale_and_broken_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("cats-metrics-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, body: String| std::fs::write(dir.join(name), body).unwrap();
        write(
            "a.json",
            format!(r#"{{"instance":"a","utilization":0.4,"updated_unix_ms":{}}}"#, now_ms()),
        );
        write(
            "b.json",
            format!(
                r#"{{"instance":"b","utilization":0.9,"updated_unix_ms":{}}}"#,
                now_ms() - 60_000
            ),
        );
        write("c.json", "{half written".into());
        write("d.txt", "not a report".into());
        let got = read_utilization(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, BTreeMap::from([("a".to_string(), 0.4)]));
    }

    #[test]
    fn small_changes_are_dampened() {
        let used = BTreeMap::from([("a".to_string(), 0.40)]);
        assert!(!changed_enough(&used, &BTreeMap::from([("a".to_string(), 0.45)])));
        assert!(changed_enough(&used, &BTreeMap::from([("a".to_string(), 0.55)])));
        // A report that goes stale counts as 0: a big drop is a change.
        assert!(changed_enough(&used, &BTreeMap::new()));
    }
}
