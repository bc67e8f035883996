//! Every filesystem path cats uses, in one place.

use std::path::{Path, PathBuf};

/// Where bpffs is normally mounted.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Pin directory of one node's maps and links: `<bpffs>/cats/<scope><node>`. `scope` keeps
/// concurrent labs and tests apart (it is the lab's namespace prefix), empty on a real node.
pub fn node_pins(bpffs: &Path, scope: &str, node: &str) -> PathBuf {
    bpffs.join("cats").join(format!("{scope}{node}"))
}

/// The network namespace file of a lab node, or `None` to stay in the current namespace.
pub fn node_netns(netns_prefix: Option<&str>, node: &str) -> Option<PathBuf> {
    netns_prefix.map(|p| crate::netns::path_of(&format!("{p}{node}")))
}

/// Where cats keeps its runtime files on a real node.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/cats";

/// Where the daemon records the desired state it published (`catsd run --state-dir`), and
/// where `catsd compile` looks for the running state by default.
pub const DEFAULT_STATE_DIR: &str = "/run/cats/state";

/// Directory of the per-node desired states of a state directory: `<state_dir>/nodes`.
pub fn running_nodes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("nodes")
}

/// The recorded desired state of one node: `<state_dir>/nodes/<node>.json`.
pub fn running_node_file(state_dir: &Path, node: &str) -> PathBuf {
    running_nodes_dir(state_dir).join(format!("{node}.json"))
}

/// The selection figures behind the recorded states: `<state_dir>/decisions.json`.
pub fn running_decisions_file(state_dir: &Path) -> PathBuf {
    state_dir.join("decisions.json")
}
