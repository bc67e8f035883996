//! Measurements the compile step takes as input (L0 metrics in draft-ietf-cats-metric-definition
//! terms): what the C-NMA measured on links and what the C-SMA reported for instances.
//!
//! Only fresh values belong here: whoever gathers them (the daemon) leaves stale ones out, so
//! the declared values of the intent apply instead, and reports the stale ones separately.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Fresh measurements; anything absent falls back to what the intent declares.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Per link, by its position in `spec.links`.
    pub links: BTreeMap<usize, LinkMetric>,
    /// Per instance, by instance name.
    pub instances: BTreeMap<String, InstanceMetric>,
    /// Per service, per ingress: the packets/s its headend steers. Only the shares matter:
    /// they split the demand the instances report among the ingresses (evenly without them).
    pub ingress_rates: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per ingress: the instances its health prober finds unreachable over every path it
    /// has (instance, node or link down). They get no new flows from that ingress and are
    /// nobody's backup there.
    pub unreachable: BTreeMap<String, BTreeSet<String>>,
}

/// What probing one link measured (both directions folded together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkMetric {
    /// Smoothed (EWMA) one-way latency: half the round trip.
    pub one_way_ms: f64,
    /// Smoothed variation of the round trip (RFC 3550 style).
    pub jitter_ms: f64,
    /// Share of probes lost over the recent window, in [0, 1].
    pub loss: f64,
}

/// What one instance (or its node) reported about its compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMetric {
    /// Share of the capacity in use, in [0, 1].
    pub utilization: f64,
    /// Requests waiting or in service right now.
    pub queue_depth: f64,
    /// Mean time to serve one request on this instance, when it measures it.
    pub service_time_ms: Option<f64>,
    /// Requests per second of this service the instance received recently.
    pub request_rate: f64,
    /// Capacity the instance reports, in TOPS; overrides the declared `tops` when present.
    pub capacity_tops: Option<f64>,
}

impl Metrics {
    /// Whether `ingress`'s prober finds `instance` unreachable.
    pub fn is_unreachable(&self, ingress: &str, instance: &str) -> bool {
        self.unreachable.get(ingress).is_some_and(|down| down.contains(instance))
    }

    /// Measured utilisation of one instance, if fresh.
    pub fn utilization(&self, instance: &str) -> Option<f64> {
        self.instances.get(instance).map(|m| m.utilization)
    }
}
