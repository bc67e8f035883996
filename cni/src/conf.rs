//! The network configuration on stdin: the spec's fields, cats' own, and what the runtime
//! adds (`prevResult`, GC's valid attachments). Fields this plugin does not know are left
//! alone: runtimes add their own (`runtimeConfig`, `args`, ...).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use cats_controller::{paths, registry::DEFAULT_REGISTRY_DIR};
use serde_json::{Map, Value};

use crate::spec::{CniError, Code, SUPPORTED_VERSIONS};

#[derive(Debug)]
pub struct NetConf {
    pub cni_version: String,
    /// The network's name (GC is per network).
    pub name: String,
    /// The topology node this host is, as the daemon's intent names it: `node`, or else the
    /// first line of `nodeFile` (one configuration for every node, as a Multus
    /// NetworkAttachmentDefinition is).
    pub node: String,
    /// Where pods are registered for the daemon.
    pub registry: PathBuf,
    /// The bpffs the daemon pins under (`catsd run --bpffs`).
    pub bpffs: PathBuf,
    /// Pin scope: empty on a real node, the lab's namespace prefix in a lab.
    pub scope: String,
    /// The previous plugin's result, as it came (passed on unchanged).
    pub prev_result: Option<Map<String, Value>>,
    /// GC: the attachments to keep, as (container id, interface name).
    pub valid_attachments: Option<BTreeSet<(String, String)>>,
}

impl NetConf {
    /// The node's pin directory, the same one its agent uses.
    pub fn pins(&self) -> PathBuf {
        paths::node_pins(&self.bpffs, &self.scope, &self.node)
    }

    /// Parses stdin. The version is checked first, so an error in the rest is reported in a
    /// version the runtime reads.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, (CniError, Option<String>)> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            (CniError::caused(Code::Decode, "the network configuration is not JSON", e), None)
        })?;
        let Value::Object(conf) = value else {
            let error = CniError::new(Code::Decode, "the network configuration is not an object");
            return Err((error, None));
        };
        let version = cni_version(&conf).map_err(|e| (e, None))?;
        Self::fields(&conf, version.clone()).map_err(|e| (e, Some(version)))
    }

    fn fields(conf: &Map<String, Value>, cni_version: String) -> Result<NetConf, CniError> {
        let name = required_string(conf, "name")?;
        required_string(conf, "type")?;
        let node = match optional_string(conf, "node")? {
            Some(node) => node,
            None => node_from_file(&absolute_path(conf, "nodeFile", DEFAULT_NODE_FILE)?)?,
        };
        let node_ok = (1..=12).contains(&node.len())
            && node.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !node_ok {
            return Err(invalid(format!(
                "node {node:?} is not a node name: 1 to 12 lowercase letters, digits or '-', as \
                 in the intent's topology"
            )));
        }
        let registry = absolute_path(conf, "registry", DEFAULT_REGISTRY_DIR)?;
        let bpffs = absolute_path(conf, "bpffs", paths::DEFAULT_BPFFS)?;
        let scope = optional_string(conf, "scope")?.unwrap_or_default();
        if scope.contains('/') || scope.starts_with('.') {
            return Err(invalid(format!("scope {scope:?} must not contain '/' or start with '.'")));
        }
        let prev_result = match conf.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(Value::Object(result)) => Some(result.clone()),
            Some(_) => return Err(CniError::new(Code::Decode, "prevResult is not an object")),
        };
        // Spec 1.1.0 names the key `cni.dev/valid-attachments`; libcni also sends the name an
        // earlier draft used.
        let valid =
            conf.get("cni.dev/valid-attachments").or_else(|| conf.get("cni.dev/attachments"));
        let valid_attachments = valid.map(attachments).transpose()?;
        Ok(NetConf {
            cni_version,
            name,
            node,
            registry,
            bpffs,
            scope,
            prev_result,
            valid_attachments,
        })
    }
}

/// Where a node's name is kept when the configuration does not say it.
pub const DEFAULT_NODE_FILE: &str = "/etc/cats/node";

fn node_from_file(path: &Path) -> Result<String, CniError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::caused(
            Code::InvalidConfig,
            format!("node is missing, and {} (nodeFile) cannot be read", path.display()),
            e,
        )
    })?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

fn cni_version(conf: &Map<String, Value>) -> Result<String, CniError> {
    let version = match conf.get("cniVersion") {
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(CniError::new(Code::Decode, "cniVersion is not a string")),
        None => return Err(invalid("cniVersion is missing".into())),
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "cniVersion {version:?} is not supported; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    Ok(version)
}

fn invalid(msg: String) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn optional_string(conf: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match conf.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key} must be a string, found {other}"))),
    }
}

fn required_string(conf: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    match optional_string(conf, key)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!("{key} is missing"))),
    }
}

fn absolute_path(conf: &Map<String, Value>, key: &str, default: &str) -> Result<PathBuf, CniError> {
    let path = PathBuf::from(optional_string(conf, key)?.unwrap_or_else(|| default.to_owned()));
    if !path.is_absolute() || path == Path::new("/") {
        return Err(invalid(format!("{key} {} must be an absolute directory", path.display())));
    }
    Ok(path)
}

fn attachments(value: &Value) -> Result<BTreeSet<(String, String)>, CniError> {
    let bad = || {
        CniError::new(
            Code::Decode,
            "cni.dev/valid-attachments is not a list of {containerID, ifname}",
        )
    };
    let Value::Array(list) = value else { return Err(bad()) };
    list.iter()
        .map(|item| {
            let id = item.get("containerID").and_then(Value::as_str).ok_or_else(bad)?;
            let ifname = item.get("ifname").and_then(Value::as_str).ok_or_else(bad)?;
            Ok((id.to_owned(), ifname.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetConf, (CniError, Option<String>)> {
        NetConf::parse(text.as_bytes())
    }

    #[test]
    fn defaults_and_pins() {
        let conf = parse(
            r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","type":"cats-cni","node":"edge1"}"#,
        )
        .unwrap();
        assert_eq!(conf.registry, Path::new("/run/cats/pods"));
        assert_eq!(conf.pins(), Path::new("/sys/fs/bpf/cats/edge1"));
        assert!(conf.prev_result.is_none() && conf.valid_attachments.is_none());
    }

    #[test]
    fn errors_carry_the_spec_codes() {
        let cases = [
            ("{", Code::Decode),
            ("[]", Code::Decode),
            (r#"{"name":"n","type":"cats-cni","node":"gw"}"#, Code::InvalidConfig),
            (
                r#"{"cniVersion":"2.0.0","name":"n","type":"t","node":"gw"}"#,
                Code::IncompatibleVersion,
            ),
            (r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#, Code::InvalidConfig),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","node":"Edge_1"}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","node":"gw","registry":"pods"}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","node":"gw","prevResult":1}"#,
                Code::Decode,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","node":"gw","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#,
                Code::Decode,
            ),
        ];
        for (text, code) in cases {
            let (error, _) = parse(text).unwrap_err();
            assert_eq!(error.code, code, "{text}: {error}");
        }
    }

    #[test]
    fn node_from_a_file_when_the_configuration_has_none() {
        let file = std::env::temp_dir().join(format!("cats-cni-node-{}", std::process::id()));
        std::fs::write(&file, "edge2\n").unwrap();
        let text = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"t","nodeFile":"{}"}}"#,
            file.display()
        );
        let conf = parse(&text);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(conf.unwrap().node, "edge2");
    }

    #[test]
    fn valid_attachments_are_read() {
        let conf = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"t","node":"gw",
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            conf.valid_attachments.unwrap().into_iter().collect::<Vec<_>>(),
            [("a".into(), "eth0".into())]
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The cats entry of a list, as a runtime hands it to the plugin.
    fn cats_entry(list: &Value) -> String {
        let mut conf = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == "cats-cni")
            .unwrap()
            .clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf.to_string()
    }

    fn example(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cni").join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn calico_conflist_configures_cats() {
        let list: Value = serde_json::from_str(&example("10-calico-cats.conflist")).unwrap();
        // Calico's installer replaces the node name placeholder; here a real name stands in.
        let text = cats_entry(&list).replace("__KUBERNETES_NODE_NAME__", "edge1");
        let conf = NetConf::parse(text.as_bytes()).unwrap();
        assert_eq!((conf.cni_version.as_str(), conf.node.as_str()), ("0.3.1", "edge1"));
        assert_eq!(conf.registry, Path::new("/run/cats/pods"));
    }

    #[test]
    fn multus_attachment_configures_cats() {
        let yaml = example("multus-network-attachment.yaml");
        let config: String = yaml
            .split_once("config: |\n")
            .unwrap()
            .1
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let list: Value = serde_json::from_str(&config).unwrap();
        let node_file = std::env::temp_dir().join(format!("cats-cni-nad-{}", std::process::id()));
        std::fs::write(&node_file, "edge1\n").unwrap();
        let text = cats_entry(&list).replace("/etc/cats/node", &node_file.to_string_lossy());
        let conf = NetConf::parse(text.as_bytes());
        std::fs::remove_file(&node_file).unwrap();
        assert_eq!(conf.unwrap().node, "edge1");
    }
}
