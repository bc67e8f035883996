//! A picture of the network (`catsctl graph`): Graphviz DOT of a [`TopologyView`], and SVG
//! through Graphviz's `dot`.
//!
//! Nodes show their roles; egress nodes their site load (the TOPS-weighted utilisation of
//! their instances) and instances. Links are labelled with the measured one-way latency, or
//! the declared one marked `(declared)` and dashed; a link found down is red and dotted. The
//! paths in use (primary paths of instances with weight) are drawn as coloured arrows, one
//! colour per service, labelled at their first hop with the instance and its weight. Every
//! element has an `id` (`node-N`, `link-A-B`, `path-SERVICE-INSTANCE-A-B`) that the SVG keeps.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::api::views::TopologyView;

/// Colours of the services' paths, in the order services first appear.
const PALETTE: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// A DOT string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// Fill colour for a site load: green when idle to red when full.
fn load_colour(load: f64) -> &'static str {
    match load {
        l if l >= 0.8 => "#f4cccc",
        l if l >= 0.5 => "#fce5cd",
        _ => "#d9ead3",
    }
}

/// The DOT text of `t`.
pub fn dot(t: &TopologyView) -> String {
    let mut out = String::new();
    out.push_str("digraph cats {\n");
    out.push_str(&format!(
        "  graph [rankdir=LR, fontname=\"Helvetica\", labelloc=t, label={}];\n",
        quote(&format!("cats: {}", t.name))
    ));
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\", fontname=\"Helvetica\", fontsize=11];\n",
    );
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let sites: BTreeMap<&str, _> = t.sites.iter().map(|s| (s.node.as_str(), s)).collect();
    for n in &t.nodes {
        let mut label = format!("{}\n{}", n.name, n.roles.join(", "));
        let mut fill = if n.roles.iter().any(|r| r == "ingress") { "#cfe2f3" } else { "#eeeeee" };
        if let Some(site) = sites.get(n.name.as_str()) {
            label.push_str(&format!("\nsite load {:.2}", site.load));
            for i in &site.instances {
                label.push_str(&format!(
                    "\n{} ({} TOPS, util {:.2})",
                    i.name, i.tops, i.utilization
                ));
            }
            fill = load_colour(site.load);
        }
        if n.served && !n.alive {
            label.push_str("\nagent not alive");
        }
        out.push_str(&format!(
            "  {} [id={}, label={}, fillcolor={}];\n",
            quote(&n.name),
            quote(&format!("node-{}", n.name)),
            quote(&label),
            quote(fill)
        ));
    }
    for l in &t.links {
        let (label, style, colour) = match (l.down, l.measured_ms) {
            (true, _) => ("down".to_string(), "dotted", "#cc0000"),
            (false, Some(ms)) => (format!("{ms:.1} ms"), "solid", "#888888"),
            (false, None) => (format!("{:.1} ms (declared)", l.declared_ms), "dashed", "#888888"),
        };
        out.push_str(&format!(
            "  {} -> {} [id={}, dir=none, label={}, style={style}, color={}];\n",
            quote(&l.a),
            quote(&l.b),
            quote(&format!("link-{}-{}", l.a, l.b)),
            quote(&label),
            quote(colour)
        ));
    }
    let mut colours: BTreeMap<&str, &str> = BTreeMap::new();
    for p in &t.paths {
        let n = colours.len();
        colours.entry(p.service.as_str()).or_insert(PALETTE[n % PALETTE.len()]);
    }
    for p in &t.paths {
        let colour = colours[p.service.as_str()];
        for (k, hop) in p.nodes.windows(2).enumerate() {
            let label = if k == 0 {
                format!("{} → {} ({})", p.service, p.instance, p.weight)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  {} -> {} [id={}, color={}, fontcolor={}, penwidth=2.5, label={}, tooltip={}];\n",
                quote(&hop[0]),
                quote(&hop[1]),
                quote(&format!("path-{}-{}-{}-{}", p.service, p.instance, hop[0], hop[1])),
                quote(colour),
                quote(colour),
                quote(&label),
                quote(&format!("{} at {} → {}", p.service, p.ingress, p.instance))
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// Writes `topology.dot` and `topology.svg` (through `dot -Tsvg`) into `dir`.
pub fn write(dir: &Path, t: &TopologyView) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dot_file = dir.join("topology.dot");
    let svg_file = dir.join("topology.svg");
    std::fs::write(&dot_file, dot(t)).with_context(|| format!("writing {}", dot_file.display()))?;
    let output = Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(&svg_file)
        .arg(&dot_file)
        .output()
        .context("running Graphviz `dot` (Debian: apt-get install graphviz)")?;
    if !output.status.success() {
        bail!("dot -Tsvg failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok((dot_file, svg_file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::{LinkView, NodeView, PathView, SiteInstance, SiteView};

    fn topology() -> TopologyView {
        let node = |name: &str, role: &str| NodeView {
            name: name.into(),
            roles: vec![role.into()],
            served: true,
            alive: true,
            ..Default::default()
        };
        TopologyView {
            name: "lab".into(),
            nodes: vec![node("gw", "ingress"), node("core", "transit"), node("edge1", "egress")],
            links: vec![
                LinkView {
                    a: "gw".into(),
                    b: "core".into(),
                    declared_ms: 1.0,
                    measured_ms: Some(1.04),
                    down: false,
                },
                LinkView {
                    a: "core".into(),
                    b: "edge1".into(),
                    declared_ms: 2.0,
                    measured_ms: None,
                    down: false,
                },
            ],
            sites: vec![SiteView {
                node: "edge1".into(),
                load: 0.9,
                instances: vec![SiteInstance {
                    name: "edge1-a".into(),
                    service: "plates".into(),
                    tops: 4.0,
                    utilization: 0.9,
                }],
            }],
            paths: vec![PathView {
                ingress: "gw".into(),
                service: "plates".into(),
                instance: "edge1-a".into(),
                kind: "primary".into(),
                weight: 1000,
                nodes: vec!["gw".into(), "core".into(), "edge1".into()],
                segments: Vec::new(),
            }],
        }
    }

    #[test]
    fn links_show_measured_or_declared_latency_and_paths_are_coloured_per_service() {
        let text = dot(&topology());
        assert!(
            text.contains(
                "\"gw\" -> \"core\" [id=\"link-gw-core\", dir=none, label=\"1.0 ms\", style=solid"
            ),
            "{text}"
        );
        assert!(text.contains("label=\"2.0 ms (declared)\", style=dashed"), "{text}");
        assert!(text.contains("id=\"path-plates-edge1-a-gw-core\", color=\"#1f77b4\""), "{text}");
        assert!(text.contains("id=\"path-plates-edge1-a-core-edge1\""), "{text}");
        assert!(text.contains("label=\"plates → edge1-a (1000)\""), "{text}");
        assert!(text.contains("site load 0.90\\nedge1-a (4 TOPS, util 0.90)"), "{text}");
        assert!(text.contains("fillcolor=\"#f4cccc\""), "a busy site is red: {text}");
    }

    #[test]
    fn names_are_quoted_safely() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}
