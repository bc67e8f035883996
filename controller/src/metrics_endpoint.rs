//! The Prometheus endpoint (`catsd run --metrics-listen ADDR`, `GET /metrics`): OpenMetrics
//! text, or the Prometheus text format 0.0.4 to a client whose `Accept` asks for `text/plain`
//! and not for OpenMetrics (what Prometheus itself sends prefers OpenMetrics).
//!
//! Counters of the dataplane (packets and bytes steered, drops by reason, events, failovers,
//! affinity pins) are read from the nodes' pinned per-CPU maps at scrape time, summed over
//! CPUs; everything else comes from the daemon's newest [`DaemonView`]: weights, predictions,
//! measurements and their age, health probes, and the selection and path changes counted at
//! each poll. Labels are bounded by the intent: `node`, `service`, `instance`, `reason`,
//! `event`, `kind`, `path`, `link` (`a-b`), never a flow key.

use std::collections::BTreeMap;

use cats_common::counters::{DropReason, Event};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    api::{
        Changes, DaemonView, Shared,
        http::{Request, Response},
    },
    dataplane::{
        affinity::{affinity_evictions, pinned_affinity_occupancy},
        stats::PinnedCounters,
    },
};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which text format to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// From the request's `Accept` header: OpenMetrics unless only `text/plain` is asked for.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("text/plain") && !a.contains("openmetrics") => Format::Prometheus,
            _ => Format::OpenMetrics,
        }
    }
}

/// One sample's labels.
pub type Labels = Vec<(&'static str, String)>;

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
}

/// One metric family: its name without the unit and `_total` suffixes, which the encoder
/// adds.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub counter: bool,
    pub samples: Vec<(Labels, Value)>,
}

impl Family {
    fn new(
        name: &'static str,
        help: &'static str,
        unit: Option<&'static str>,
        counter: bool,
    ) -> Self {
        Family { name, help, unit, counter, samples: Vec::new() }
    }

    /// The name samples carry: `name[_unit][_total]`.
    pub fn sample_name(&self) -> String {
        let mut n = self.name.to_string();
        if let Some(u) = self.unit {
            n = format!("{n}_{u}");
        }
        if self.counter {
            n.push_str("_total");
        }
        n
    }

    fn push(&mut self, labels: Labels, value: Value) {
        self.samples.push((labels, value));
    }
}

/// Every family the endpoint exports, empty: their names and kinds (the dashboard test checks
/// against these).
pub fn families() -> Vec<Family> {
    collect(&DaemonView::default(), &Changes::default(), &BTreeMap::new())
}

/// Answers `GET /metrics`.
pub fn route(shared: &Shared, req: Request) -> Response {
    if req.path != "/metrics" {
        return Response::error(404, "the metrics are at /metrics");
    }
    let view = shared.view.borrow().clone();
    let readings = read_dataplane(&view, |n| (shared.pins_of)(n));
    let changes = {
        let mut c = shared.changes.lock().expect("changes lock");
        c.clamp_evictions(&readings);
        c.clone()
    };
    let families = collect(&view, &changes, &readings);
    match Format::negotiate(req.headers.get("accept").map(String::as_str)) {
        Format::OpenMetrics => Response::text(CONTENT_TYPE, encode(families)),
        Format::Prometheus => {
            Response::text(CONTENT_TYPE_PROMETHEUS, encode_as(families, Format::Prometheus))
        }
    }
}

/// The OpenMetrics text of `families` (ends with `# EOF`).
pub fn encode(families: Vec<Family>) -> String {
    encode_as(families, Format::OpenMetrics)
}

/// The text of `families` in `format`.
pub fn encode_as(families: Vec<Family>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families)));
    let mut out = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    }
    .expect("writing to a String does not fail");
    out
}

#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let unit = f.unit.map(|u| Unit::Other(u.to_string()));
            let kind = if f.counter { MetricType::Counter } else { MetricType::Gauge };
            let mut metric = encoder.encode_descriptor(f.name, f.help, unit.as_ref(), kind)?;
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    encode_value(*value, metric.encode_family(&Vec::<(&str, String)>::new())?)?;
                } else {
                    encode_value(*value, metric.encode_family(labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    value: Value,
    encoder: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(v) => ConstCounter::new(v).encode(encoder),
        Value::Gauge(v) => ConstGauge::new(v).encode(encoder),
    }
}

/// Dataplane counters of one node, read at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeReadings {
    pub drops: Vec<(DropReason, u64)>,
    pub events: Vec<(Event, u64)>,
    /// Per service slot: packets, bytes.
    pub services: BTreeMap<u32, (u64, u64)>,
    /// Per instance slot: packets, bytes.
    pub instances: BTreeMap<u32, (u64, u64)>,
    /// Keys in the affinity table (headends).
    pub affinity_flows: Option<u64>,
    /// Evictions as read now (before [`Changes::clamp_evictions`]).
    pub affinity_evictions: Option<u64>,
}

/// Reads the counters of every node the daemon serves from its pinned maps; a node whose maps
/// are not pinned yet is left out.
pub fn read_dataplane(
    view: &DaemonView,
    pins_of: impl Fn(&str) -> std::path::PathBuf,
) -> BTreeMap<String, NodeReadings> {
    let mut out = BTreeMap::new();
    for node in view.agents.keys() {
        let pins = pins_of(node);
        let Ok(counters) = PinnedCounters::open(&pins) else { continue };
        let read = || -> anyhow::Result<NodeReadings> {
            let mut r = NodeReadings::default();
            for &reason in DropReason::ALL {
                r.drops.push((reason, counters.drops(reason)?));
            }
            for &event in Event::ALL {
                r.events.push((event, counters.events(event)?));
            }
            if let Some(headend) = view.states.get(node).and_then(|s| s.headend.as_ref()) {
                for s in &headend.services {
                    let c = counters.service_counter(s.slot)?;
                    r.services.insert(s.slot, (c.packets, c.bytes));
                }
                for i in &headend.instances {
                    let c = counters.instance_counter(i.slot)?;
                    r.instances.insert(i.slot, (c.packets, c.bytes));
                }
                if let Ok(occupancy) = pinned_affinity_occupancy(&pins) {
                    let event = |e| r.events.iter().find(|(x, _)| *x == e).map_or(0, |(_, v)| *v);
                    let (pinned, reset) =
                        (event(Event::AffinityPinned), event(Event::AffinityReset));
                    r.affinity_flows = Some(occupancy);
                    r.affinity_evictions = Some(affinity_evictions(pinned, reset, occupancy));
                }
            }
            Ok(r)
        };
        if let Ok(r) = read() {
            out.insert(node.clone(), r);
        }
    }
    out
}

impl Changes {
    /// Evictions are `pinned − reset − occupancy`, read at slightly different instants: keeps
    /// the counter from going down between scrapes (it restarts with a new table, whose pins
    /// counter starts again from zero).
    pub fn clamp_evictions(&mut self, readings: &BTreeMap<String, NodeReadings>) {
        for (node, r) in readings {
            let Some(now) = r.affinity_evictions else { continue };
            let pinned =
                r.events.iter().find(|(e, _)| *e == Event::AffinityPinned).map_or(0, |(_, v)| *v);
            let entry = self.evictions.entry(node.clone()).or_insert((pinned, now));
            if pinned < entry.0 {
                *entry = (pinned, now);
            } else {
                *entry = (pinned, entry.1.max(now));
            }
        }
    }
}

/// The families of `view`, `changes` and the dataplane `readings`.
pub fn collect(
    view: &DaemonView,
    changes: &Changes,
    readings: &BTreeMap<String, NodeReadings>,
) -> Vec<Family> {
    let s = |x: &str| x.to_string();
    let secs = |ms: f64| Value::Gauge(ms / 1000.0);
    let mut generation =
        Family::new("cats_generation", "Generation of the compiled state.", None, false);
    generation.push(Vec::new(), Value::Gauge(view.generation as f64));

    let mut agent_up =
        Family::new("cats_agent_up", "1 while the node's agent shows it runs.", None, false);
    let mut applied = Family::new(
        "cats_agent_applied_generation",
        "Generation of the last state the node's agent applied.",
        None,
        false,
    );
    for (node, a) in &view.agents {
        agent_up.push(vec![("node", s(node))], Value::Gauge(if a.alive { 1.0 } else { 0.0 }));
        if let Some(g) = a.status.applied_generation {
            applied.push(vec![("node", s(node))], Value::Gauge(g as f64));
        }
    }

    // Dataplane counters.
    let mut svc_packets = Family::new(
        "cats_service_packets",
        "Packets the headend steered for the service.",
        None,
        true,
    );
    let mut svc_bytes = Family::new(
        "cats_service",
        "Bytes (inner IP length) the headend steered for the service.",
        Some("bytes"),
        true,
    );
    let mut inst_packets = Family::new(
        "cats_instance_packets",
        "Packets the headend steered to the instance.",
        None,
        true,
    );
    let mut inst_bytes = Family::new(
        "cats_instance",
        "Bytes (inner IP length) the headend steered to the instance.",
        Some("bytes"),
        true,
    );
    let mut drops = Family::new(
        "cats_drops",
        "Packets the node's XDP programs dropped, by reason.",
        None,
        true,
    );
    let mut events = Family::new(
        "cats_dataplane_events",
        "Decisions of the node's XDP programs, by event.",
        None,
        true,
    );
    let mut failovers = Family::new(
        "cats_failovers",
        "Packets the headend sent around a dead path: kind alternate (same instance, \
         disjoint path), repinned (moved to the backup instance), unavailable (no live \
         backup: primary path anyway).",
        None,
        true,
    );
    let mut aff_flows = Family::new(
        "cats_affinity_flows",
        "Flow pins in the headend's affinity table.",
        None,
        false,
    );
    let mut aff_capacity = Family::new(
        "cats_affinity_capacity_flows",
        "Flows the headend's affinity table holds before it evicts.",
        None,
        false,
    );
    let mut aff_pins =
        Family::new("cats_affinity_pins", "Flow pins added to the affinity table.", None, true);
    let mut aff_resets =
        Family::new("cats_affinity_resets", "Flow pins a TCP RST removed.", None, true);
    let mut aff_evictions = Family::new(
        "cats_affinity_evictions",
        "Flow pins the LRU evicted for new flows (pins − resets − occupancy).",
        None,
        true,
    );
    for (node, r) in readings {
        let headend = view.states.get(node).and_then(|st| st.headend.as_ref());
        for (reason, v) in &r.drops {
            drops.push(vec![("node", s(node)), ("reason", s(reason.label()))], Value::Counter(*v));
        }
        for (event, v) in &r.events {
            events.push(vec![("node", s(node)), ("event", s(event.label()))], Value::Counter(*v));
            let kind = match event {
                Event::FailoverAlternate => "alternate",
                Event::FailoverRepinned => "repinned",
                Event::FailoverUnavailable => "unavailable",
                _ => continue,
            };
            if headend.is_none() {
                continue;
            }
            failovers.push(vec![("node", s(node)), ("kind", s(kind))], Value::Counter(*v));
        }
        let Some(headend) = headend else { continue };
        for svc in &headend.services {
            if let Some((p, b)) = r.services.get(&svc.slot) {
                let labels = vec![("node", s(node)), ("service", s(&svc.name))];
                svc_packets.push(labels.clone(), Value::Counter(*p));
                svc_bytes.push(labels, Value::Counter(*b));
            }
        }
        for inst in &headend.instances {
            if let Some((p, b)) = r.instances.get(&inst.slot) {
                let labels = vec![
                    ("node", s(node)),
                    ("service", s(&inst.service)),
                    ("instance", s(&inst.name)),
                ];
                inst_packets.push(labels.clone(), Value::Counter(*p));
                inst_bytes.push(labels, Value::Counter(*b));
            }
        }
        let labels = vec![("node", s(node))];
        if let Some(f) = r.affinity_flows {
            aff_flows.push(labels.clone(), Value::Gauge(f as f64));
        }
        if let Some(size) = view.agents.get(node).and_then(|a| a.status.affinity_table_size) {
            aff_capacity.push(labels.clone(), Value::Gauge(size as f64));
        }
        let event = |e| r.events.iter().find(|(x, _)| *x == e).map_or(0, |(_, v)| *v);
        aff_pins.push(labels.clone(), Value::Counter(event(Event::AffinityPinned)));
        aff_resets.push(labels.clone(), Value::Counter(event(Event::AffinityReset)));
        if let Some(e) = changes.evictions.get(node).map(|(_, e)| *e).or(r.affinity_evictions) {
            aff_evictions.push(labels, Value::Counter(e));
        }
    }

    // The selection.
    let mut weight = Family::new(
        "cats_instance_weight",
        "The instance's weight at the ingress (of 1000 shares of new flows).",
        None,
        false,
    );
    let mut predicted = Family::new(
        "cats_predicted_completion",
        "Predicted mean completion time (network + service) of a request to the instance.",
        Some("seconds"),
        false,
    );
    let mut path_rtt = Family::new(
        "cats_path_rtt",
        "Round trip of the path to the instance, as the selector used it.",
        Some("seconds"),
        false,
    );
    for sd in &view.decisions {
        for d in &sd.decisions {
            let labels = vec![
                ("node", s(&sd.ingress)),
                ("service", s(&sd.service)),
                ("instance", s(&d.instance)),
            ];
            weight.push(labels.clone(), Value::Gauge(d.weight as f64));
            predicted.push(labels.clone(), secs(d.predicted_ms));
            path_rtt.push(labels, secs(d.network_ms));
        }
    }
    let mut selection = Family::new(
        "cats_selection_changes",
        "Polls after which some instance's weight at the ingress differed.",
        None,
        true,
    );
    for ((node, service), n) in &changes.selection {
        selection.push(vec![("node", s(node)), ("service", s(service))], Value::Counter(*n));
    }
    let mut path_changes = Family::new(
        "cats_path_changes",
        "Polls after which the segment list to the instance differed.",
        None,
        true,
    );
    for ((node, service, instance), n) in &changes.paths {
        path_changes.push(
            vec![("node", s(node)), ("service", s(service)), ("instance", s(instance))],
            Value::Counter(*n),
        );
    }

    // Measurements.
    let service_of = |instance: &str| {
        view.intent
            .services
            .iter()
            .find(|svc| svc.instances.iter().any(|i| i.name == instance))
            .map_or_else(String::new, |svc| svc.name.clone())
    };
    let mut utilization = Family::new(
        "cats_instance_utilization",
        "Utilisation the instance last reported (declared, without a fresh report).",
        Some("ratio"),
        false,
    );
    let mut report_age = Family::new(
        "cats_instance_report_age",
        "Age of the instance's last utilisation report.",
        Some("seconds"),
        false,
    );
    let mut report_stale = Family::new(
        "cats_instance_report_stale",
        "1 when the instance's report is too old to be used.",
        None,
        false,
    );
    for svc in &view.intent.services {
        for inst in &svc.instances {
            let labels = vec![("service", s(&svc.name)), ("instance", s(&inst.name))];
            let report = view.metrics.instances.iter().find(|r| r.instance == inst.name);
            let fresh = report.filter(|r| !r.stale);
            let u = fresh.map_or(inst.utilization, |r| r.metric.utilization);
            utilization.push(labels.clone(), Value::Gauge(u));
            if let Some(r) = report {
                report_age.push(labels.clone(), secs(r.age_ms as f64));
            }
            report_stale.push(labels, Value::Gauge(if fresh.is_some() { 0.0 } else { 1.0 }));
        }
    }
    let mut link_latency = Family::new(
        "cats_link_latency",
        "Measured one-way latency of the link (half its smoothed round trip).",
        Some("seconds"),
        false,
    );
    let mut link_rtt = Family::new(
        "cats_link_rtt",
        "Smoothed round trip of the link probes.",
        Some("seconds"),
        false,
    );
    let mut link_declared = Family::new(
        "cats_link_declared_latency",
        "The link's declared one-way latency (used while it is not measured).",
        Some("seconds"),
        false,
    );
    let mut link_jitter = Family::new(
        "cats_link_jitter",
        "Round-trip variation of the link probes.",
        Some("seconds"),
        false,
    );
    let mut link_loss =
        Family::new("cats_link_loss", "Share of the last link probes lost.", Some("ratio"), false);
    let mut link_age = Family::new(
        "cats_link_metric_age",
        "Time since the link's newest probe echo.",
        Some("seconds"),
        false,
    );
    let mut link_up = Family::new(
        "cats_link_up",
        "0 when every probing end finds the link silent (paths avoid it).",
        None,
        false,
    );
    for l in &view.metrics.links {
        let labels = vec![("link", format!("{}-{}", l.a, l.b))];
        link_declared.push(labels.clone(), secs(l.latency_ms));
        link_up.push(labels.clone(), Value::Gauge(if l.down { 0.0 } else { 1.0 }));
        if l.stale {
            continue;
        }
        if let Some(ow) = l.one_way_ms {
            link_latency.push(labels.clone(), secs(ow));
            link_rtt.push(labels.clone(), secs(2.0 * ow));
        }
        if let Some(j) = l.jitter_ms {
            link_jitter.push(labels.clone(), secs(j));
        }
        if let Some(loss) = l.loss {
            link_loss.push(labels.clone(), Value::Gauge(loss));
        }
        if let Some(age) = l.age_ms {
            link_age.push(labels, secs(age as f64));
        }
    }
    let mut probe_rtt = Family::new(
        "cats_probe_rtt",
        "Round trip of the headend's health probes over the instance's path (primary or \
         alternate).",
        Some("seconds"),
        false,
    );
    let mut probe_up = Family::new(
        "cats_probe_up",
        "1 while the instance answers the headend's health probes over the path.",
        None,
        false,
    );
    for (node, a) in &view.agents {
        let Some(health) = &a.status.health else { continue };
        for p in &health.paths {
            let labels = vec![
                ("node", s(node)),
                ("service", service_of(&p.instance)),
                ("instance", s(&p.instance)),
                ("path", s(&p.path)),
            ];
            probe_up.push(labels.clone(), Value::Gauge(if p.up { 1.0 } else { 0.0 }));
            if let Some(rtt) = p.rtt_ms {
                probe_rtt.push(labels, secs(rtt));
            }
        }
    }

    vec![
        generation,
        agent_up,
        applied,
        svc_packets,
        svc_bytes,
        inst_packets,
        inst_bytes,
        drops,
        events,
        failovers,
        aff_flows,
        aff_capacity,
        aff_pins,
        aff_resets,
        aff_evictions,
        weight,
        predicted,
        path_rtt,
        selection,
        path_changes,
        utilization,
        report_age,
        report_stale,
        link_latency,
        link_rtt,
        link_declared,
        link_jitter,
        link_loss,
        link_age,
        link_up,
        probe_rtt,
        probe_up,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_units_and_total() {
        for f in families() {
            let name = f.sample_name();
            assert!(name.starts_with("cats_"), "{name}");
            assert_eq!(f.counter, name.ends_with("_total"), "{name}");
            if let Some(u) = f.unit {
                assert!(name.trim_end_matches("_total").ends_with(u), "{name}");
                assert!(["seconds", "bytes", "ratio"].contains(&u), "base units only: {name}");
            }
            assert!(!name.contains("_ms"), "base units only: {name}");
        }
    }

    #[test]
    fn the_text_is_openmetrics_with_types_units_and_eof() {
        let mut f = Family::new("cats_link_rtt", "Round trip.", Some("seconds"), false);
        f.push(vec![("link", "gw-core".into())], Value::Gauge(0.002));
        let mut c = Family::new("cats_drops", "Drops.", None, true);
        c.push(vec![("node", "gw".into()), ("reason", "truncated".into())], Value::Counter(3));
        let text = encode(vec![f, c]);
        assert!(text.contains("# TYPE cats_link_rtt_seconds gauge\n"), "{text}");
        assert!(text.contains("# UNIT cats_link_rtt_seconds seconds\n"), "{text}");
        assert!(text.contains("cats_link_rtt_seconds{link=\"gw-core\"} 0.002\n"), "{text}");
        assert!(text.contains("# TYPE cats_drops counter\n"), "{text}");
        assert!(text.contains("cats_drops_total{node=\"gw\",reason=\"truncated\"} 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn prometheus_text_only_for_clients_that_ask_for_nothing_else() {
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        let prometheus =
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain; version=0.0.4")), Format::Prometheus);
        let mut c = Family::new("cats_drops", "Drops.", None, true);
        c.push(vec![("node", "gw".into())], Value::Counter(3));
        let text = encode_as(vec![c], Format::Prometheus);
        assert!(text.contains("# TYPE cats_drops_total counter\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    fn reading(pinned: u64, evictions: u64) -> BTreeMap<String, NodeReadings> {
        let r = NodeReadings {
            events: vec![(Event::AffinityPinned, pinned)],
            affinity_evictions: Some(evictions),
            ..Default::default()
        };
        BTreeMap::from([("gw".to_string(), r)])
    }

    #[test]
    fn evictions_never_go_down_until_the_table_is_new() {
        let mut c = Changes::default();
        c.clamp_evictions(&reading(100, 5));
        // Read while pins were added: the approximation dips; the counter does not.
        c.clamp_evictions(&reading(110, 3));
        assert_eq!(c.evictions["gw"], (110, 5));
        c.clamp_evictions(&reading(120, 9));
        assert_eq!(c.evictions["gw"], (120, 9));
        // A new table (the pins counter restarted): so does the evictions counter.
        c.clamp_evictions(&reading(4, 0));
        assert_eq!(c.evictions["gw"], (4, 0));
    }
}
