//! The API's documents as aligned text tables (`catsctl -o table`): a header row in capitals,
//! columns two spaces apart, numbers right-aligned, `-` for nothing.

use super::views::{
    FlowView, InstanceView, NodeView, PathView, ServiceView, StatusView, TopologyView,
};

/// Renders `rows` under `headers`. A column whose every non-empty cell is a number (or `-`)
/// is right-aligned; trailing spaces are trimmed.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain([headers[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let numeric: Vec<bool> = (0..columns)
        .map(|i| {
            let mut cells =
                rows.iter().filter_map(|r| r.get(i)).filter(|c| !c.is_empty() && *c != "-");
            cells.clone().next().is_some() && cells.all(|c| c.parse::<f64>().is_ok())
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate().take(columns) {
            if i > 0 {
                text.push_str("  ");
            }
            let w = widths[i];
            if numeric[i] {
                text.push_str(&format!("{cell:>w$}"));
            } else {
                text.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(",") }
}

fn ms(x: f64) -> String {
    format!("{x:.1}")
}

pub fn status(s: &StatusView) -> String {
    let unreachable: Vec<String> =
        s.unreachable.iter().map(|(n, i)| format!("{n}: {}", i.join(","))).collect();
    let rows = [
        ("generation", s.generation.to_string()),
        ("nodes", format!("{} ({} alive, {} applied)", s.nodes, s.nodes_alive, s.nodes_applied)),
        (
            "services",
            format!(
                "{} ({} instances, {} without a fresh report)",
                s.services, s.instances, s.instances_stale
            ),
        ),
        ("links", format!("{} ({} measured, {} down)", s.links, s.links_measured, s.links_down)),
        ("unreachable", if unreachable.is_empty() { "-".into() } else { unreachable.join("; ") }),
        ("metrics", or_dash(s.metrics_listen.as_ref().map(|a| format!("http://{a}/metrics")))),
        ("intent error", or_dash(s.intent_error.clone())),
        ("compile error", or_dash(s.compile_error.clone())),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<14}{v}\n"));
    }
    out
}

pub fn nodes(nodes: &[NodeView]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let applied = match (n.applied_generation, n.desired_generation) {
                (Some(a), Some(d)) => format!("{a}/{d}"),
                (None, Some(d)) => format!("-/{d}"),
                (Some(a), None) => format!("{a}/-"),
                (None, None) => "-".into(),
            };
            let flows = match (n.affinity_flows, n.affinity_table_size) {
                (Some(f), Some(s)) => format!("{f}/{s}"),
                (Some(f), None) => f.to_string(),
                (None, Some(s)) => format!("-/{s}"),
                (None, None) => "-".into(),
            };
            vec![
                n.name.clone(),
                n.index.to_string(),
                list(&n.roles),
                n.dataplane.clone(),
                if !n.served {
                    "not served".into()
                } else if n.alive {
                    "yes".into()
                } else {
                    "no".into()
                },
                applied,
                list(&n.attached),
                list(&n.instances),
                flows,
                or_dash(n.last_error.clone()),
            ]
        })
        .collect();
    render(
        &[
            "NODE",
            "INDEX",
            "ROLES",
            "DATAPLANE",
            "ALIVE",
            "APPLIED",
            "ATTACHED",
            "INSTANCES",
            "FLOWS",
            "ERROR",
        ],
        &rows,
    )
}

pub fn services(services: &[ServiceView]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.cs_id.to_string(),
                list(&s.addresses),
                if s.ports.is_empty() { "any".into() } else { s.ports.join(",") },
                list(&s.instances),
                list(&s.ingresses),
                or_dash(s.objective.clone()),
            ]
        })
        .collect();
    render(
        &["SERVICE", "CS-ID", "ADDRESSES", "PORTS", "INSTANCES", "INGRESSES", "OBJECTIVE"],
        &rows,
    )
}

pub fn instances(instances: &[InstanceView]) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.service.clone(),
                i.instance.clone(),
                i.site.clone(),
                i.ingress.clone(),
                i.weight.to_string(),
                format!("{:.2}", i.utilization),
                ms(i.network_ms),
                ms(i.predicted_ms),
                i.health.clone(),
                or_dash(i.probe_rtt_ms.map(ms)),
                or_dash(i.report_age_ms.map(|a| format!("{:.1}", a as f64 / 1000.0))),
                or_dash(i.excluded.clone()),
            ]
        })
        .collect();
    render(
        &[
            "SERVICE",
            "INSTANCE",
            "SITE",
            "INGRESS",
            "WEIGHT",
            "UTIL",
            "NETWORK-MS",
            "PREDICTED-MS",
            "HEALTH",
            "PROBE-RTT-MS",
            "REPORT-AGE-S",
            "EXCLUDED",
        ],
        &rows,
    )
}

/// One row per SID; a path's first row carries its ingress, service, instance, kind, weight
/// and nodes.
pub fn paths(paths: &[PathView]) -> String {
    let mut rows = Vec::new();
    for p in paths {
        for (k, s) in p.segments.iter().enumerate() {
            let head = if k == 0 {
                vec![
                    p.ingress.clone(),
                    p.service.clone(),
                    p.instance.clone(),
                    p.kind.clone(),
                    p.weight.to_string(),
                    if p.nodes.is_empty() { "-".into() } else { p.nodes.join(">") },
                ]
            } else {
                vec![String::new(); 6]
            };
            let mut row = head;
            row.extend([
                (k + 1).to_string(),
                s.sid.clone(),
                s.node.clone(),
                s.behavior.clone(),
                or_dash(s.target.clone()),
            ]);
            rows.push(row);
        }
    }
    render(
        &[
            "INGRESS", "SERVICE", "INSTANCE", "KIND", "WEIGHT", "NODES", "#", "SID", "NODE",
            "BEHAVIOR", "TARGET",
        ],
        &rows,
    )
}

pub fn flows(flows: &[FlowView]) -> String {
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            vec![
                f.node.clone(),
                f.service.clone(),
                f.instance.clone(),
                f.protocol.clone(),
                f.source.clone(),
                f.destination.clone(),
                format!("{:.1}", f.idle_ms as f64 / 1000.0),
                if f.expired { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    render(
        &["NODE", "SERVICE", "INSTANCE", "PROTO", "SOURCE", "DESTINATION", "IDLE-S", "EXPIRED"],
        &rows,
    )
}

/// Links and sites of a topology (what `catsctl graph` also draws).
pub fn topology(t: &TopologyView) -> String {
    let rows: Vec<Vec<String>> = t
        .links
        .iter()
        .map(|l| {
            vec![
                format!("{}-{}", l.a, l.b),
                ms(l.declared_ms),
                or_dash(l.measured_ms.map(ms)),
                if l.down { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    render(&["LINK", "DECLARED-MS", "MEASURED-MS", "DOWN"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::SegmentView;

    #[test]
    fn columns_align_numbers_right_and_text_left() {
        let rows = vec![
            vec!["edge1-a".to_string(), "500".into(), "up".into()],
            vec!["cloud-a".to_string(), "0".into(), "-".into()],
        ];
        assert_eq!(
            render(&["INSTANCE", "WEIGHT", "HEALTH"], &rows),
            "INSTANCE  WEIGHT  HEALTH\n\
             edge1-a      500  up\n\
             cloud-a        0  -\n"
        );
    }

    #[test]
    fn a_path_takes_one_row_per_sid() {
        let seg = |sid: &str, node: &str, behavior: &str, target: Option<&str>| SegmentView {
            sid: sid.into(),
            node: node.into(),
            behavior: behavior.into(),
            target: target.map(String::from),
        };
        let p = PathView {
            ingress: "gw".into(),
            service: "plates".into(),
            instance: "cloud-a".into(),
            kind: "primary".into(),
            weight: 1000,
            nodes: vec!["gw".into(), "core".into(), "cloud".into()],
            segments: vec![
                seg("fc00:0:2:1::", "core", "End", None),
                seg("fc00:0:5:4001::3", "cloud", "End.DX6", Some("plates/cloud-a")),
            ],
        };
        assert_eq!(
            paths(&[p]),
            "\
INGRESS  SERVICE  INSTANCE  KIND     WEIGHT  NODES          #  SID               NODE   BEHAVIOR  TARGET
gw       plates   cloud-a   primary    1000  gw>core>cloud  1  fc00:0:2:1::      core   End       -
                                                            2  fc00:0:5:4001::3  cloud  End.DX6   plates/cloud-a
"
        );
    }

    #[test]
    fn instances_show_health_and_dashes_for_what_is_unknown() {
        let i = InstanceView {
            service: "plates".into(),
            instance: "edge1-a".into(),
            site: "edge1".into(),
            ingress: "gw".into(),
            weight: 500,
            utilization: 0.123,
            network_ms: 6.04,
            predicted_ms: 11.0,
            health: "up".into(),
            probe_rtt_ms: Some(6.3),
            report_age_ms: None,
            excluded: None,
        };
        let text = instances(&[i]);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "plates", "edge1-a", "edge1", "gw", "500", "0.12", "6.0", "11.0", "up", "6.3", "-",
                "-"
            ]
        );
    }
}
