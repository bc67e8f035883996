//! The `CNI_*` environment variables: which command, for which attachment.

use std::path::PathBuf;

use crate::spec::{CniError, Code};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    /// What the variable says, or the error the spec wants for it (code 4).
    fn parse(value: Option<&str>) -> Result<Command, CniError> {
        Ok(match value {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!(
                        "CNI_COMMAND={other:?} is not a CNI command (ADD, DEL, CHECK, STATUS, GC, \
                         VERSION)"
                    ),
                ));
            }
            None => return Err(CniError::new(Code::InvalidEnvironment, "CNI_COMMAND is not set")),
        })
    }

    /// Whether the command names one attachment (container id and interface).
    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Whether the command needs the container's network namespace (DEL cleans up without).
    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// One attachment: the primary key of everything this plugin stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// `None` only for DEL, where the runtime may have lost the namespace already.
    pub netns: Option<PathBuf>,
    /// From `CNI_ARGS`; empty outside Kubernetes.
    pub pod_namespace: String,
    pub pod_name: String,
}

#[derive(Debug)]
pub struct Invocation {
    pub command: Command,
    /// Present for ADD, DEL and CHECK.
    pub attachment: Option<Attachment>,
}

impl Invocation {
    /// Reads the variables through `var` (the process environment in the binary).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        // An empty variable counts as unset, as in libcni.
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let command = Command::parse(get("CNI_COMMAND").as_deref())?;
        if !command.needs_attachment() {
            return Ok(Invocation { command, attachment: None });
        }
        let mut required = vec!["CNI_CONTAINERID", "CNI_IFNAME"];
        if command.needs_netns() {
            required.insert(1, "CNI_NETNS");
        }
        let missing: Vec<&str> = required.into_iter().filter(|n| get(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("missing environment variables: {}", missing.join(", ")),
            ));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        check_container_id(&container_id)?;
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        check_ifname(&ifname)?;
        let (pod_namespace, pod_name) = pod_identity(get("CNI_ARGS").as_deref().unwrap_or(""))?;
        let attachment = Attachment {
            container_id,
            ifname,
            netns: get("CNI_NETNS").map(PathBuf::from),
            pod_namespace,
            pod_name,
        };
        Ok(Invocation { command, attachment: Some(attachment) })
    }
}

/// The spec: alphanumeric first, then alphanumerics, `_`, `.` or `-`. It also makes the id
/// safe in a file name.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnvironment,
            format!(
                "CNI_CONTAINERID={id:?} is not a container id: it starts with a letter or digit, \
                 followed by letters, digits, '_', '.' or '-'"
            ),
        ))
    }
}

/// Linux interface names, as the spec words them.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnvironment,
            format!(
                "CNI_IFNAME={name:?} is not an interface name: 1 to 15 characters, not \".\" or \
                 \"..\", without '/', ':' or whitespace"
            ),
        ))
    }
}

/// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` of `CNI_ARGS` (`KEY=VALUE;...`); other keys are the
/// runtime's business and ignored.
fn pod_identity(args: &str) -> Result<(String, String), CniError> {
    let (mut namespace, mut name) = (String::new(), String::new());
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            ));
        };
        match key {
            "K8S_POD_NAMESPACE" => namespace = value.to_owned(),
            "K8S_POD_NAME" => name = value.to_owned(),
            _ => {}
        }
    }
    Ok((namespace, name))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn invoke(vars: &[(&str, &str)]) -> Result<Invocation, CniError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Invocation::from_env(|name| vars.get(name).cloned())
    }

    const ADD: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn add_reads_the_attachment_and_pod_identity() {
        let mut vars = ADD.to_vec();
        vars.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=echo-0"));
        let invocation = invoke(&vars).unwrap();
        assert_eq!(invocation.command, Command::Add);
        let attachment = invocation.attachment.unwrap();
        assert_eq!(attachment.container_id, "abc-1");
        assert_eq!(attachment.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(
            (attachment.pod_namespace.as_str(), attachment.pod_name.as_str()),
            ("shop", "echo-0")
        );
    }

    #[test]
    fn missing_and_malformed_variables_are_code_4_and_named() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[], "CNI_COMMAND is not set"),
            (&[("CNI_COMMAND", "LIST")], "CNI_COMMAND=\"LIST\" is not a CNI command"),
            (&ADD[..1], "missing environment variables: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME"),
            (&[ADD[0], ADD[1], ADD[3]], "missing environment variables: CNI_NETNS"),
            (
                &[ADD[0], ("CNI_CONTAINERID", "-x"), ADD[2], ADD[3]],
                "CNI_CONTAINERID=\"-x\" is not a container id",
            ),
            (
                &[ADD[0], ADD[1], ADD[2], ("CNI_IFNAME", "eth0:1")],
                "CNI_IFNAME=\"eth0:1\" is not an interface name",
            ),
        ];
        for (vars, message) in cases {
            let error = invoke(vars).unwrap_err();
            assert_eq!(error.code, Code::InvalidEnvironment, "{vars:?}");
            assert!(error.msg.starts_with(message), "{} does not start with {message}", error.msg);
        }
        let mut bad_args = ADD.to_vec();
        bad_args.push(("CNI_ARGS", "K8S_POD_NAME"));
        assert_eq!(invoke(&bad_args).unwrap_err().code, Code::InvalidEnvironment);
    }

    #[test]
    fn del_needs_no_netns_and_version_nothing() {
        let del = invoke(&[("CNI_COMMAND", "DEL"), ADD[1], ADD[3]]).unwrap();
        assert_eq!(del.attachment.unwrap().netns, None);
        let version = invoke(&[("CNI_COMMAND", "VERSION")]).unwrap();
        assert!(version.attachment.is_none());
    }
}
