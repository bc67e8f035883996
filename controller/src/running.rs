//! The running state: the desired state the daemon last published for each node, recorded on
//! disk so that `catsd compile --dry-run` can show what a new intent would change.
//!
//! Layout of a state directory (default [`paths::DEFAULT_STATE_DIR`]):
//!
//! ```text
//! <state_dir>/nodes/<node>.json   one NodeState per node this daemon serves
//! <state_dir>/decisions.json      the selection figures of the same compile
//! ```
//!
//! Every file is written to a temporary name and renamed, so a reader sees the old file or the
//! new one, never half of one.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result, bail};

use crate::{compile::Compiled, paths, state::NodeState};

/// Records the states of the `served` nodes and all the decisions of `compiled`.
pub fn record(state_dir: &Path, compiled: &Compiled, served: &[String]) -> Result<()> {
    let nodes_dir = paths::running_nodes_dir(state_dir);
    std::fs::create_dir_all(&nodes_dir)
        .with_context(|| format!("creating {}", nodes_dir.display()))?;
    for node in served {
        if let Some(state) = compiled.nodes.get(node) {
            write_file(
                &paths::running_node_file(state_dir, node),
                &serde_json::to_vec_pretty(state)?,
            )?;
        }
    }
    write_file(
        &paths::running_decisions_file(state_dir),
        &serde_json::to_vec_pretty(&compiled.decisions)?,
    )
}

/// The recorded state of every node in `state_dir`, by node name.
pub fn load_running(state_dir: &Path) -> Result<BTreeMap<String, NodeState>> {
    let nodes_dir = paths::running_nodes_dir(state_dir);
    let entries = std::fs::read_dir(&nodes_dir)
        .with_context(|| format!("reading the running state in {}", nodes_dir.display()))?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry.with_context(|| format!("reading {}", nodes_dir.display()))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue; // temporary files of a write in progress, and anything else
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let state: NodeState = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a node state", path.display()))?;
        if path.file_stem().is_none_or(|s| *s != *state.node) {
            bail!("{}: holds the state of node {}", path.display(), state.node);
        }
        out.insert(state.node.clone(), state);
    }
    Ok(out)
}

/// The recorded decisions (as JSON: `[{service, ingress, decisions: [...]}, ...]`), if any.
pub fn load_decisions(state_dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = paths::running_decisions_file(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// [`crate::atomic_file::write`], with the path in the error.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic_file::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cats-running-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn node(name: &str, generation: u64) -> NodeState {
        NodeState { node: name.into(), generation, ..Default::default() }
    }

    #[test]
    fn records_served_nodes_and_loads_them_back() {
        let dir = scratch("roundtrip");
        let compiled = Compiled {
            nodes: [("gw".to_string(), node("gw", 3)), ("core".to_string(), node("core", 3))]
                .into(),
            decisions: Vec::new(),
        };
        record(&dir, &compiled, &["gw".to_string()]).unwrap();
        let loaded = load_running(&dir).unwrap();
        assert_eq!(loaded, [("gw".to_string(), node("gw", 3))].into());
        assert_eq!(load_decisions(&dir).unwrap(), Some(serde_json::json!([])));

        // A newer record replaces the file; no temporary file is left behind.
        let mut newer = compiled.clone();
        newer.nodes.get_mut("gw").unwrap().generation = 4;
        record(&dir, &newer, &["gw".to_string()]).unwrap();
        assert_eq!(load_running(&dir).unwrap()["gw"].generation, 4);
        let names: Vec<_> = std::fs::read_dir(paths::running_nodes_dir(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["gw.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_is_an_error_and_missing_decisions_are_none() {
        let dir = scratch("missing");
        assert!(load_running(&dir).is_err());
        assert_eq!(load_decisions(&dir).unwrap(), None);
    }
}
