//! `cats-cni`: a chained CNI plugin (spec 1.1.0; configurations from 0.3.0 on).
//!
//! It runs after the plugin that gives a pod its interface (Calico, or `ptp`/`bridge` with
//! `host-local`), like Cilium's generic-veth chaining: it finds the pod's veth pair, attaches
//! the cats headend (XDP) to the node's end, where the pod's traffic enters the node, and
//! registers the pod for the node's daemon ([`cats_controller::registry`]), which makes the
//! pod's interface a headend interface and a selected pod an instance. DEL undoes both.
//!
//! The protocol is small enough to own: environment in, JSON on stdin, the (unchanged)
//! previous result or a spec error on stdout, logs on stderr.

mod attachment;
mod commands;
mod conf;
mod env;
mod pod_link;
mod prev_result;
mod spec;

use std::{io::Read, process::ExitCode};

use serde_json::Value;

use crate::{
    conf::NetConf,
    env::{Command, Invocation},
    spec::{CURRENT_VERSION, CniError, Code},
};

pub use spec::SUPPORTED_VERSIONS;

/// What a run prints and how it exits.
#[derive(Debug)]
pub struct Outcome {
    /// The JSON for stdout, if any (DEL, CHECK, STATUS and GC print nothing on success).
    pub stdout: Option<Value>,
    pub success: bool,
}

/// The plugin, from the process's environment and stdin to stdout and the exit code.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin).map(|_| stdin);
    let outcome = run(|name| std::env::var(name).ok(), read);
    if let Some(json) = &outcome.stdout {
        println!("{json}");
    }
    if outcome.success { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// One invocation: `var` reads the `CNI_*` variables, `stdin` is what the runtime sent.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: std::io::Result<Vec<u8>>) -> Outcome {
    let stdin = match stdin {
        Ok(bytes) => bytes,
        Err(e) => return failed(CniError::caused(Code::Io, "reading stdin", e), CURRENT_VERSION),
    };
    // The version errors are reported in: the configuration's, when it has a usable one.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_owned());
    let invocation = match Invocation::from_env(&var) {
        Ok(invocation) => invocation,
        Err(e) => return failed(e, &version),
    };
    if invocation.command == Command::Version {
        return Outcome { stdout: Some(spec::version_result(&version)), success: true };
    }
    let conf = match NetConf::parse(&stdin) {
        Ok(conf) => conf,
        Err((e, parsed_version)) => {
            return failed(e, parsed_version.as_deref().unwrap_or(&version));
        }
    };
    let attachment = invocation.attachment.as_ref();
    let result = match invocation.command {
        Command::Add => {
            commands::add(&conf, attachment.expect("ADD names an attachment")).map(Some)
        }
        Command::Del => {
            commands::del(&conf, attachment.expect("DEL names an attachment")).map(|()| None)
        }
        Command::Check => {
            commands::check(&conf, attachment.expect("CHECK names an attachment")).map(|()| None)
        }
        Command::Status => commands::status(&conf).map(|()| None),
        Command::Gc => commands::gc(&conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    };
    match result {
        Ok(stdout) => Outcome { stdout, success: true },
        Err(e) => {
            log(&format!("{:?} failed: {e}", invocation.command));
            failed(e, &conf.cni_version)
        }
    }
}

fn failed(error: CniError, version: &str) -> Outcome {
    Outcome { stdout: Some(error.to_json(version)), success: false }
}

/// Logs go to stderr; stdout is the runtime's.
fn log(line: &str) {
    eprintln!("cats-cni: {line}");
}
