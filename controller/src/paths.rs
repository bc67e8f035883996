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
