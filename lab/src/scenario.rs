//! The lab file: which intent to run, the cameras that send requests, and the events that
//! change load or intent while it runs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabFile {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Scenario,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

/// What one lab run does.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// Intent directory, relative to the lab file.
    pub intent: PathBuf,
    /// How long to run; 0 runs until Ctrl-C.
    #[serde(default)]
    pub duration_seconds: u64,
    pub cameras: Vec<Camera>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Links whose real delay differs from their declared `latencyMs`: the lab's delay relay
    /// applies this one, the intent keeps declaring the other, and the controller's link
    /// probes find the real one.
    #[serde(default)]
    pub link_delays: Vec<LinkDelay>,
}

/// The real one-way delay of one link (either way round: `a`/`b` as in the intent or swapped).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkDelay {
    pub a: String,
    pub b: String,
    pub one_way_ms: f64,
}

/// An emulated camera behind an ingress node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Camera {
    pub name: String,
    pub ingress: String,
    /// The service address and port it sends requests to.
    pub target: SocketAddr,
    pub rate_per_second: f64,
    /// A new flow (new source port) after this many requests, so new decisions show.
    pub requests_per_flow: u32,
}

/// Something that happens at a point of the run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Event {
    pub at_seconds: u64,
    /// Printed when the event happens.
    pub say: String,
    /// Extra requests straight to an instance (another tenant's load): its measured
    /// utilisation rises and the controller sees it.
    #[serde(default)]
    pub load: Option<Load>,
    /// A directory of intent files copied over the running intent (relative to the lab file),
    /// as an operator would change it.
    #[serde(default)]
    pub intent: Option<PathBuf>,
    /// An instance whose process dies (its sockets close).
    #[serde(default)]
    pub stop_instance: Option<String>,
    /// A stopped instance that starts again.
    #[serde(default)]
    pub start_instance: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Load {
    pub instance: String,
    pub rate_per_second: f64,
}

/// Reads a lab file; relative paths in it are resolved against its directory.
pub fn load(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: LabFile =
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.api_version != cats_controller::intent::API_VERSION || file.kind != "Lab" {
        bail!(
            "{}: expected apiVersion {} and kind Lab, found {} / {}",
            path.display(),
            cats_controller::intent::API_VERSION,
            file.api_version,
            file.kind
        );
    }
    let _ = file.metadata.name;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut scenario = file.spec;
    scenario.intent = base.join(&scenario.intent);
    for event in &mut scenario.events {
        if let Some(dir) = &event.intent {
            event.intent = Some(base.join(dir));
        }
    }
    Ok(scenario)
}
