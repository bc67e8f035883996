//! What the daemon runs for measurement: a prober per served node, and every poll one reading
//! of links and instance reports into [`Metrics`] (fresh values only) plus a [`MetricsReport`]
//! for the status (everything, stale values marked).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::Serialize;
use tracing::warn;

use super::{LinkReport, LinkTable, LinkTarget, ProbeConfig, Prober, link_metrics, link_reports};
use crate::{
    compile::Metrics,
    intent::Intent,
    metrics_files::{self, InstanceReport},
    paths,
};

/// The `metrics` section of the status file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MetricsReport {
    pub links: Vec<LinkReport>,
    pub instances: Vec<InstanceReport>,
}

/// One reading: fresh metrics for the compile step, and the whole picture for the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gathered {
    pub metrics: Metrics,
    pub report: MetricsReport,
}

/// Probers of the served nodes and the instance report directory. Dropping it stops (and
/// joins) every prober.
pub struct Gatherer {
    netns_prefix: Option<String>,
    metrics_dir: Option<PathBuf>,
    config: ProbeConfig,
    table: LinkTable,
    probers: BTreeMap<String, (Vec<LinkTarget>, Prober)>,
    /// What each node probes, as last asked.
    wanted: BTreeMap<String, Vec<LinkTarget>>,
}

impl Gatherer {
    /// Starts a prober for every node of `served` that has links to probe.
    pub fn start(
        intent: &Intent,
        served: &[String],
        netns_prefix: Option<&str>,
        metrics_dir: Option<&Path>,
        config: ProbeConfig,
    ) -> Self {
        let wanted = served.iter().map(|n| (n.clone(), super::targets(intent, n))).collect();
        Self::for_targets(wanted, netns_prefix, metrics_dir, config)
    }

    /// Probers for `wanted` (links by node) instead of an intent's: a remote agent learns its
    /// links from its desired state.
    pub fn for_targets(
        wanted: BTreeMap<String, Vec<LinkTarget>>,
        netns_prefix: Option<&str>,
        metrics_dir: Option<&Path>,
        config: ProbeConfig,
    ) -> Self {
        let mut g = Gatherer {
            netns_prefix: netns_prefix.map(str::to_string),
            metrics_dir: metrics_dir.map(Path::to_path_buf),
            config,
            table: LinkTable::default(),
            probers: BTreeMap::new(),
            wanted: BTreeMap::new(),
        };
        g.retarget_to(wanted);
        g
    }

    /// Follows a changed intent: restarts the probers whose links changed, stops those of
    /// nodes no longer served or without links.
    pub fn retarget(&mut self, intent: &Intent, served: &[String]) {
        self.retarget_to(served.iter().map(|n| (n.clone(), super::targets(intent, n))).collect());
    }

    /// Probes `wanted` (links by node) from now on, restarting what changed or died.
    pub fn retarget_to(&mut self, wanted: BTreeMap<String, Vec<LinkTarget>>) {
        self.wanted.clone_from(&wanted);
        // Probers whose links changed, and those whose thread ended (it could not enter its
        // namespace or bind its port; it is tried again here, on every poll).
        let gone: Vec<String> = self
            .probers
            .iter()
            .filter(|(n, (t, p))| wanted.get(*n).is_none_or(|w| w != t) || p.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        // Signal them all first, so their threads wind down together.
        for n in &gone {
            self.probers[n].1.signal_stop();
        }
        for n in gone {
            drop(self.probers.remove(&n));
            self.table.forget(&n);
        }
        for (node, targets) in &wanted {
            if targets.is_empty() || self.probers.contains_key(node) {
                continue;
            }
            let netns = paths::node_netns(self.netns_prefix.as_deref(), node);
            match Prober::spawn(node, netns, targets.clone(), self.table.clone(), self.config) {
                Ok(p) => {
                    self.probers.insert(node.clone(), (targets.clone(), p));
                }
                Err(e) => warn!(node, error = %format!("{e:#}"), "cannot start the link prober"),
            }
        }
    }

    /// Reads the probe table and the instance reports now, restarting any prober that died.
    pub fn gather(&mut self, intent: &Intent) -> Gathered {
        let links = link_reports(intent, &self.link_ends());
        let instances = self.instance_reports();
        let metrics = Metrics {
            links: link_metrics(&links),
            instances: metrics_files::fresh(&instances),
            // The daemon adds the headends' demand shares (measure::demand) and what their
            // health probers find unreachable.
            ingress_rates: Default::default(),
            unreachable: Default::default(),
        };
        Gathered { metrics, report: MetricsReport { links, instances } }
    }

    /// Every probed link end's figures now, by (link position, probing node), restarting
    /// any prober that died.
    pub fn link_ends(&mut self) -> BTreeMap<(usize, String), super::Snapshot> {
        if self.probers.values().any(|(_, p)| p.is_finished()) {
            self.retarget_to(self.wanted.clone());
        }
        self.table.snapshot(Instant::now())
    }

    /// The instance reports in the metrics directory, fresh and stale.
    pub fn instance_reports(&self) -> Vec<InstanceReport> {
        match &self.metrics_dir {
            Some(dir) => metrics_files::read_reports(dir),
            None => Vec::new(),
        }
    }
}

impl Drop for Gatherer {
    fn drop(&mut self) {
        for (_, p) in self.probers.values() {
            p.signal_stop();
        }
        // Each Prober joins its thread as it drops.
        self.probers.clear();
    }
}
