//! What the CNI specification (1.1.0) fixes: the versions this plugin speaks, and the error
//! result with its well-known codes.

use serde_json::{Value, json};

/// Spec versions accepted in a configuration, oldest first. 0.3.x is where chaining
/// (`prevResult`) began; Calico still emits 0.3.1 results.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version this plugin implements, used when a request names none.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Whether configuration version `version` (a supported one) is at least `least`.
pub fn at_least(version: &str, least: &str) -> bool {
    let rank = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    matches!((rank(version), rank(least)), (Some(v), Some(l)) if v >= l)
}

/// Error codes: 1-99 are the spec's, 100 and up this plugin's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's `cniVersion` (or the command) is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// 3: the container (its network namespace) does not exist.
    UnknownContainer = 3,
    /// 4: a required `CNI_*` variable is missing or malformed.
    InvalidEnvironment = 4,
    /// 5: reading stdin or writing the registry failed.
    Io = 5,
    /// 6: stdin (or `prevResult`) is not the JSON it should be.
    Decode = 6,
    /// 7: the configuration is valid JSON but not a valid cats configuration.
    InvalidConfig = 7,
    /// 50: STATUS: the plugin cannot serve ADD now.
    NotAvailable = 50,
    /// 100: the pod's interface is not (one end of) a veth pair in the container.
    NoVethPair = 100,
    /// 101: loading or attaching the cats program failed.
    AttachFailed = 101,
    /// 102: CHECK found the attachment missing or not as ADD left it.
    CheckFailed = 102,
}

/// A failed command: printed as the spec's error result on stdout.
#[derive(Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    /// Short, for a human reading the runtime's log.
    pub msg: String,
    /// The longer story (the cause chain), possibly empty.
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// An error with `cause` (its whole chain) as the details.
    pub fn caused(code: Code, msg: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        CniError { code, msg: msg.into(), details: format!("{cause:#}") }
    }

    /// The error result, in `version` of the spec.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code as u32)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The VERSION result.
pub fn version_result(version: &str) -> Value {
    json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order() {
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("9.9.9", "0.3.0"));
    }

    #[test]
    fn error_result_has_the_spec_fields() {
        let error = CniError::caused(Code::Decode, "bad stdin", "expected value at line 1");
        assert_eq!(
            error.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 6, "msg": "bad stdin",
                   "details": "expected value at line 1"})
        );
    }
}
