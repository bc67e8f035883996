//! Compute metrics reported through files (the one-machine C-SMA transport): each instance
//! writes `<dir>/<instance>.json` every second (see `lab/src/instance.rs`):
//!
//! ```json
//! {"instance":"edge1-a","utilization":0.42,"queue_depth":3,"mean_service_ms":5.1,
//!  "request_rate":81.0,"capacity_tops":4.0,"served_total":1234,"updated_unix_ms":1700000000000}
//! ```
//!
//! `instance`, `utilization` and `updated_unix_ms` are required; the rest may be left out.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::compile::InstanceMetric;

/// A report older than this is stale: left out of the metrics (the declared value applies)
/// and shown as stale in the status.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Report {
    instance: String,
    utilization: f64,
    #[serde(default)]
    queue_depth: f64,
    #[serde(default)]
    mean_service_ms: Option<f64>,
    #[serde(default)]
    request_rate: f64,
    #[serde(default)]
    capacity_tops: Option<f64>,
    #[serde(default)]
    served_total: Option<u64>,
    updated_unix_ms: u64,
}

/// One instance's latest report, as the status shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    pub instance: String,
    #[serde(flatten)]
    pub metric: InstanceMetric,
    pub served_total: Option<u64>,
    /// Time since the instance wrote the report.
    pub age_ms: u64,
    /// Older than [`STALE_AFTER`]: not used.
    pub stale: bool,
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Every report found in `dir`, fresh and stale, by instance name. Unreadable files and
/// reports with a non-finite utilisation are skipped: a half-written report must not stop the
/// controller.
pub fn read_reports(dir: &Path) -> Vec<InstanceReport> {
    read_reports_at(dir, now_unix_ms())
}

/// [`read_reports`] as seen at `now_ms` (Unix milliseconds).
pub fn read_reports_at(dir: &Path, now_ms: u64) -> Vec<InstanceReport> {
    let mut out: BTreeMap<String, InstanceReport> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Ok(r) = serde_json::from_str::<Report>(&text) else { continue };
        if !r.utilization.is_finite() {
            continue;
        }
        let age_ms = now_ms.saturating_sub(r.updated_unix_ms);
        let positive = |v: Option<f64>| v.filter(|x| x.is_finite() && *x > 0.0);
        let non_negative = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        let report = InstanceReport {
            instance: r.instance.clone(),
            metric: InstanceMetric {
                utilization: r.utilization.clamp(0.0, 1.0),
                queue_depth: non_negative(r.queue_depth),
                service_time_ms: positive(r.mean_service_ms),
                request_rate: non_negative(r.request_rate),
                capacity_tops: positive(r.capacity_tops),
            },
            served_total: r.served_total,
            age_ms,
            stale: age_ms > STALE_AFTER.as_millis() as u64,
        };
        // Two files naming the same instance: the newer report wins.
        match out.get(&r.instance) {
            Some(old) if old.age_ms <= report.age_ms => {}
            _ => {
                out.insert(r.instance, report);
            }
        }
    }
    out.into_values().collect()
}

/// The fresh reports, for the compile step.
pub fn fresh(reports: &[InstanceReport]) -> BTreeMap<String, InstanceMetric> {
    reports.iter().filter(|r| !r.stale).map(|r| (r.instance.clone(), r.metric)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(files: &[(&str, String)]) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("cats-metrics-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for (name, body) in files {
            std::fs::write(d.join(name), body).unwrap();
        }
        TempDir(d)
    }

    #[test]
    fn full_reports_are_read_and_stale_ones_kept_apart() {
        let d = dir(&[
            (
                "a.json",
                format!(
                    r#"{{"instance":"a","utilization":0.4,"queue_depth":3,"mean_service_ms":5.5,
                    "request_rate":80.5,"capacity_tops":4,"served_total":99,
                    "updated_unix_ms":{}}}"#,
                    NOW - 300
                ),
            ),
            (
                "b.json",
                format!(
                    r#"{{"instance":"b","utilization":0.9,"updated_unix_ms":{}}}"#,
                    NOW - 60_000
                ),
            ),
            // An older writer: only the required fields; out-of-range utilisation is clamped.
            ("c.json", format!(r#"{{"instance":"c","utilization":1.7,"updated_unix_ms":{NOW}}}"#)),
            ("d.json", "{half written".into()),
            ("e.txt", "not a report".into()),
            ("f.json", format!(r#"{{"instance":"f","utilization":null,"updated_unix_ms":{NOW}}}"#)),
        ]);
        let reports = read_reports_at(&d.0, NOW);
        let names: Vec<&str> = reports.iter().map(|r| r.instance.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            reports[0],
            InstanceReport {
                instance: "a".into(),
                metric: InstanceMetric {
                    utilization: 0.4,
                    queue_depth: 3.0,
                    service_time_ms: Some(5.5),
                    request_rate: 80.5,
                    capacity_tops: Some(4.0),
                },
                served_total: Some(99),
                age_ms: 300,
                stale: false,
            }
        );
        assert!(reports[1].stale);
        assert_eq!(reports[1].age_ms, 60_000);
        assert_eq!(reports[2].metric, InstanceMetric { utilization: 1.0, ..Default::default() });

        let fresh = fresh(&reports);
        assert_eq!(fresh.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "c"]);

        let json = serde_json::to_value(&reports[0]).unwrap();
        assert_eq!(json["serviceTimeMs"], 5.5);
        assert_eq!(json["requestRate"], 80.5);
        assert_eq!(json["ageMs"], 300);
        assert_eq!(json["stale"], false);
    }

    #[test]
    fn the_newer_of_two_reports_for_one_instance_wins() {
        let d = dir(&[
            ("x1.json", format!(r#"{{"instance":"x","utilization":0.1,"updated_unix_ms":{NOW}}}"#)),
            (
                "x2.json",
                format!(r#"{{"instance":"x","utilization":0.8,"updated_unix_ms":{}}}"#, NOW - 900),
            ),
        ]);
        let reports = read_reports_at(&d.0, NOW);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].metric.utilization, 0.1);
    }

    #[test]
    fn a_missing_directory_reads_as_no_reports() {
        assert!(read_reports(Path::new("/nonexistent/cats-metrics")).is_empty());
    }
}
