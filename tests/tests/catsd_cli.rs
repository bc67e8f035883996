//! The `catsd` offline commands, run as an operator runs them: validate, compile --dry-run
//! against a recorded running state, explain. No root needed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use cats_controller::{compile, daemon, running, state::NodeState};

const SERVICE: &str = "plate-recognition";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").into()
}

/// Runs catsd; returns (exit code, stdout, stderr).
fn catsd(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(cats_tests::binaries::catsd())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running catsd");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("catsd writes UTF-8");
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cats-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.0.join(sub)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn example_intent() -> PathBuf {
    workspace().join("examples/smart-traffic/intent")
}

/// A copy of the example intent in `dir`.
fn copy_intent(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(example_intent()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir.to_path_buf()
}

/// Replaces the `nth` (from 0) line of `file` that contains `from`, in that line only.
fn edit_line(file: &Path, from: &str, to: &str, nth: usize) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    let mut hits = 0;
    let mut edited_line = 0;
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if line.contains(from) && !line.trim_start().starts_with('#') {
                hits += 1;
                if hits == nth + 1 {
                    edited_line = i + 1;
                    return line.replacen(from, to, 1);
                }
            }
            line.to_string()
        })
        .collect();
    assert!(edited_line > 0, "{}: no line {nth} with {from:?}", file.display());
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
    edited_line
}

/// Records the compile of `intent` as the running state of every node, as the daemon does.
fn record_running(intent: &Path, state_dir: &Path, generation: u64) {
    let intent = daemon::validate(intent).unwrap();
    let compiled = compile::compile(&intent, &compile::Metrics::default(), generation).unwrap();
    let all: Vec<String> = compiled.nodes.keys().cloned().collect();
    running::record(state_dir, &compiled, &all).unwrap();
}

/// The section of a dry run's output after `== diff ...` and before `== summary`.
fn diff_section(stdout: &str) -> Vec<&str> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("== diff against"));
    assert!(lines.next().is_some(), "no diff section in:\n{stdout}");
    lines.take_while(|l| !l.starts_with("== summary")).filter(|l| !l.is_empty()).collect()
}

fn summary_section(stdout: &str) -> Vec<&str> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("== summary"));
    assert!(lines.next().is_some(), "no summary in:\n{stdout}");
    lines.filter(|l| !l.is_empty()).collect()
}

#[test]
fn validate_accepts_the_example() {
    let dir = example_intent();
    let (code, stdout, stderr) = catsd(&["validate", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("valid (5 nodes, 4 links, 1 services"), "{stdout}");
}

#[test]
fn validate_names_file_line_and_field_of_a_broken_value() {
    let scratch = Scratch::new("broken");
    let intent = copy_intent(&scratch.path("intent"));
    let services = intent.join("services.yaml");
    let line = edit_line(&services, "tops: 100", "tops: lots", 0);

    let (code, stdout, stderr) = catsd(&["validate", intent.to_str().unwrap()]);
    assert_ne!(code, 0, "a broken intent validated: {stdout}");
    let located = format!("{}:{line}:", services.display());
    assert!(stderr.contains(&located), "{located:?} missing from:\n{stderr}");
    assert!(stderr.contains("spec.instances[2].tops"), "field missing from:\n{stderr}");
}

#[test]
fn dry_run_of_the_unchanged_intent_is_no_change() {
    let scratch = Scratch::new("unchanged");
    let intent = copy_intent(&scratch.path("intent"));
    let state = scratch.path("state");
    record_running(&intent, &state, 9); // another generation: not a change

    let (code, stdout, stderr) = catsd(&[
        "compile",
        intent.to_str().unwrap(),
        "--dry-run",
        "--running",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.starts_with("--- # cloud\nnode: cloud\n"), "states first:\n{stdout}");
    assert_eq!(diff_section(&stdout), ["no change"]);
    assert_eq!(
        summary_section(&stdout),
        [
            "cloud: no change",
            "core: no change",
            "edge1: no change",
            "edge2: no change",
            "gw: no change"
        ]
    );
}

/// The weight changes between two compiles, found without the diff module: by instance name.
/// The steering lines a dry run must show between two compiles, worked out from the states
/// themselves: each instance whose backup changed, then each weight that changed.
fn steering_changes(
    old: &BTreeMap<String, NodeState>,
    new: &BTreeMap<String, NodeState>,
) -> Vec<String> {
    let weights = |s: &NodeState| -> BTreeMap<String, u32> {
        let Some(h) = &s.headend else { return BTreeMap::new() };
        h.services
            .iter()
            .flat_map(|svc| {
                svc.weights.iter().map(move |w| {
                    let inst = h.instances.iter().find(|i| i.slot == w.slot).unwrap();
                    (format!("{}/{}", svc.name, inst.name), w.weight)
                })
            })
            .collect()
    };
    let backups = |s: &NodeState| -> BTreeMap<String, String> {
        let Some(h) = &s.headend else { return BTreeMap::new() };
        let name = |slot: Option<u32>| {
            let backup = slot.and_then(|s| h.instances.iter().find(|i| i.slot == s));
            backup.map_or("-".to_string(), |b| b.name.clone())
        };
        h.instances
            .iter()
            .map(|i| (format!("{}/{}", i.service, i.name), name(i.backup_slot)))
            .collect()
    };
    let mut out = Vec::new();
    for (node, state) in new {
        let (before, after) = (backups(&old[node]), backups(state));
        let mut changed: Vec<String> = after
            .iter()
            .filter(|(k, b)| before[*k] != **b)
            .map(|(k, b)| format!("  ~ instance {k} backup {} -> {b}", before[k]))
            .collect();
        let (before, after) = (weights(&old[node]), weights(state));
        changed.extend(
            after
                .iter()
                .filter(|(k, w)| before[*k] != **w)
                .map(|(k, w)| format!("  ~ weight {k} {} -> {w}", before[k])),
        );
        if !changed.is_empty() {
            out.push(format!("{node}:"));
            out.extend(changed);
        }
    }
    out
}

#[test]
fn dry_run_after_a_latency_edit_shows_the_weight_changes() {
    let scratch = Scratch::new("edited");
    let intent = copy_intent(&scratch.path("intent"));
    let state = scratch.path("state");
    record_running(&intent, &state, 1);
    let before = compile::compile(&daemon::validate(&intent).unwrap(), &Default::default(), 1)
        .unwrap()
        .nodes;

    // core -- edge1 (the second link) becomes slow: 2 ms -> 40 ms one way.
    edit_line(&intent.join("network.yaml"), "latencyMs: 2", "latencyMs: 40", 0);
    let after = compile::compile(&daemon::validate(&intent).unwrap(), &Default::default(), 2)
        .unwrap()
        .nodes;
    let expected = steering_changes(&before, &after);
    assert!(
        expected
            .iter()
            .any(|l| l.contains(&format!("~ weight {SERVICE}/edge1-a ")) && l.ends_with(" -> 0")),
        "a slow edge1 should lose its share: {expected:?}"
    );

    let (code, stdout, stderr) = catsd(&[
        "compile",
        intent.to_str().unwrap(),
        "--dry-run",
        "--running",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(diff_section(&stdout), expected, "whole output:\n{stdout}");
    let changes = expected.len() - 1;
    assert_eq!(
        summary_section(&stdout),
        [
            "cloud: no change".to_string(),
            "core: no change".into(),
            "edge1: no change".into(),
            "edge2: no change".into(),
            format!("gw: {changes} changes"),
        ]
    );

    // One node, as JSON: the same changes, machine-readable.
    let (code, stdout, _) = catsd(&[
        "compile",
        intent.to_str().unwrap(),
        "--node",
        "gw",
        "--running",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(json["nodes"].as_array().unwrap().len(), 1);
    let lines: Vec<String> = json["diff"]["changes"]["gw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("  {}", l.as_str().unwrap()))
        .collect();
    assert_eq!(lines, expected[1..]);
}

#[test]
fn explain_prints_one_row_per_instance_with_its_weight() {
    let dir = example_intent();
    let intent = dir.to_str().unwrap();
    let (code, stdout, stderr) = catsd(&["explain", SERVICE, "--intent", intent]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let mut lines = stdout.lines();
    let header = lines.next().expect("a header");
    let rows: Vec<&str> = lines.collect();

    let (code, json, _) = catsd(&["explain", SERVICE, "--intent", intent, "--format", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let decisions = json[0]["decisions"].as_array().unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "one ingress: gw");
    assert_eq!(rows.len(), 3, "one row per instance:\n{stdout}");
    assert_eq!(decisions.len(), 3);

    // Numbers are right-aligned, so each weight ends where its header does.
    let start = header.find("  weight").expect("a weight column") + 2;
    let end = start + "weight".len();
    for (row, decision) in rows.iter().zip(decisions) {
        let instance = decision["instance"].as_str().unwrap();
        assert!(row.starts_with("gw "), "{row}");
        assert!(row.contains(instance), "{row}");
        assert_eq!(row[start..end].trim(), decision["weight"].to_string(), "{header}\n{row}");
    }
    assert!(stdout.contains("edge1-a") && stdout.contains("cloud-a"));

    let (code, _, stderr) = catsd(&["explain", "no-such-service", "--intent", intent]);
    assert_ne!(code, 0);
    assert!(stderr.contains("services: plate-recognition"), "{stderr}");
}
