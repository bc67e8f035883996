//! The pod registry: how the CNI plugin (`cats-cni`) tells the node's daemon about pods.
//!
//! The plugin writes one JSON file per attachment (container id + interface name) into the
//! registry directory, atomically, and removes it on DEL or GC. The daemon reads the
//! directory on every poll (its fingerprint is part of what triggers a recompile) and merges
//! the pods into the intent it compiles ([`crate::intent::with_pods`]). Files are the whole
//! protocol, so DEL works while the daemon is down, and a restarted daemon finds every pod.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::intent::{self, Intent, IntentErrors};

/// Where the plugin registers pods and the daemon reads them, by default.
pub const DEFAULT_REGISTRY_DIR: &str = "/run/cats/pods";

/// One pod attachment, as the plugin found it on ADD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registration {
    /// CNI network name: GC removes only the attachments of its own network.
    pub network: String,
    pub container_id: String,
    /// The interface inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// The topology node the pod runs on.
    pub node: String,
    /// The node's end of the pod's veth pair: where the pod's traffic enters the node, and the
    /// name of its link pin (`<pins>/links/<hostInterface>`).
    pub host_interface: String,
    /// The pod's network namespace; a registration whose namespace is gone is stale.
    pub netns: PathBuf,
    /// Kubernetes namespace and pod name, from `CNI_ARGS`; empty outside Kubernetes (such a
    /// pod is steered but never selected as an instance).
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    /// The pod's addresses (from the previous plugin's result).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

impl Registration {
    /// The registry file of this attachment.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        file_of(dir, &self.container_id, &self.ifname)
    }
}

/// The registry file of attachment (`container_id`, `ifname`): `<dir>/<id>@<ifname>.json`.
/// A container id never holds `@` (CNI allows alphanumerics, `_`, `.` and `-`), so the name
/// is unambiguous.
pub fn file_of(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{container_id}@{ifname}.json"))
}

/// Writes (or replaces) a registration atomically.
pub fn write(dir: &Path, registration: &Registration) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec_pretty(registration).map_err(std::io::Error::other)?;
    crate::atomic_file::write(&registration.path_in(dir), &bytes)
}

/// Reads the registration of one attachment; `None` when there is none.
pub fn read(dir: &Path, container_id: &str, ifname: &str) -> Result<Option<Registration>, String> {
    let path = file_of(dir, container_id, ifname);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Removes one registration; a missing one is not an error (DEL is idempotent).
pub fn remove(dir: &Path, container_id: &str, ifname: &str) -> std::io::Result<()> {
    match std::fs::remove_file(file_of(dir, container_id, ifname)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every registration file of `dir`, by file name, with what could not be read. A missing
/// directory holds no registrations.
pub struct Listing {
    pub registrations: Vec<(String, Registration)>,
    /// One line per file that is not a registration (`file: why`).
    pub problems: Vec<String>,
}

pub fn list(dir: &Path) -> Listing {
    let mut listing = Listing { registrations: Vec::new(), problems: Vec::new() };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return listing,
        Err(e) => {
            listing.problems.push(format!("{}: {e}", dir.display()));
            return listing;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temporary files of atomic writes start with a dot.
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let parsed = std::fs::read(entry.path())
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(registration) => listing.registrations.push((name, registration)),
            Err(e) => listing.problems.push(format!("{name}: not a pod registration: {e}")),
        }
    }
    listing.registrations.sort_by(|a, b| a.0.cmp(&b.0));
    listing.problems.sort();
    listing
}

/// The host interfaces registered on `node`: the agent keeps their link pins even before the
/// daemon has compiled them in (the plugin attaches first, see `cats-cni`).
pub fn host_interfaces(dir: &Path, node: &str) -> Vec<String> {
    list(dir)
        .registrations
        .into_iter()
        .filter(|(_, r)| r.node == node)
        .map(|(_, r)| r.host_interface)
        .collect()
}

/// Modification times and sizes of the registry's files: a cheap change detector. Dot files
/// (temporaries of atomic writes, the plugin's lock) are not registrations.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.modified().ok()?, m.len()))
        })
        .collect();
    out.sort();
    out
}

/// The intent the daemon compiles: the documents of `intent_dir`, with the pods of
/// `registry` merged in. Bad or stale registrations are returned as problems and left out;
/// they never make the intent fail.
pub fn load_intent(
    intent_dir: &Path,
    registry: Option<&Path>,
) -> Result<(Intent, Vec<String>), IntentErrors> {
    let declared = intent::load_dir(intent_dir)?;
    let Some(registry) = registry else { return Ok((declared, Vec::new())) };
    let Listing { registrations, mut problems } = list(registry);
    let live: Vec<(String, Registration)> = registrations
        .into_iter()
        .filter(|(name, r)| {
            // The runtime deletes the namespace after DEL, or without one when a node loses
            // a pod: either way the attachment is gone, and GC will remove the file.
            let alive = r.netns.exists();
            if !alive {
                problems.push(format!(
                    "{name}: stale: the pod's network namespace {} is gone",
                    r.netns.display()
                ));
            }
            alive
        })
        .collect();
    let (merged, merge_problems) = intent::with_pods(&declared, &live);
    problems.extend(merge_problems);
    Ok((merged, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(container_id: &str, netns: &Path) -> Registration {
        Registration {
            network: "pods".into(),
            container_id: container_id.into(),
            ifname: "eth0".into(),
            node: "gw".into(),
            host_interface: format!("veth{container_id}"),
            netns: netns.to_path_buf(),
            namespace: String::new(),
            pod: String::new(),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn files_round_trip_and_bad_ones_are_reported() {
        let dir = std::env::temp_dir().join(format!("cats-registry-{}", std::process::id()));
        let alive = std::env::temp_dir();
        write(&dir, &registration("c1", &alive)).unwrap();
        write(&dir, &registration("c2", &alive)).unwrap();
        std::fs::write(dir.join("junk.json"), b"{").unwrap();
        let listing = list(&dir);
        let names: Vec<&str> = listing.registrations.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["c1@eth0.json", "c2@eth0.json"]);
        assert_eq!(listing.problems.len(), 1);
        assert!(listing.problems[0].starts_with("junk.json: not a pod registration"));
        assert_eq!(read(&dir, "c1", "eth0").unwrap(), Some(registration("c1", &alive)));
        assert_eq!(host_interfaces(&dir, "gw"), ["vethc1", "vethc2"]);
        assert!(host_interfaces(&dir, "edge").is_empty());
        remove(&dir, "c1", "eth0").unwrap();
        remove(&dir, "c1", "eth0").unwrap();
        assert_eq!(read(&dir, "c1", "eth0").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(list(&dir).registrations.is_empty());
    }

    #[test]
    fn stale_registrations_are_left_out_of_the_intent() {
        let dir = std::env::temp_dir().join(format!("cats-registry-stale-{}", std::process::id()));
        write(&dir, &registration("gone", Path::new("/run/netns/cats-no-such-netns"))).unwrap();
        write(&dir, &registration("here", &std::env::temp_dir())).unwrap();
        let intent_dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smart-traffic/intent");
        let (intent, problems) = load_intent(&intent_dir, Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            problems,
            ["gone@eth0.json: stale: the pod's network namespace \
              /run/netns/cats-no-such-netns is gone"]
        );
        assert_eq!(intent.node("gw").unwrap().headend_interfaces, ["cams", "vethhere"]);
    }
}
