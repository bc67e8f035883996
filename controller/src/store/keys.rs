//! Where everything lives in etcd, under one prefix (default [`DEFAULT_PREFIX`]):
//!
//! ```text
//! <prefix>/desired/<node>   the node's desired state (JSON), written by the leading controller
//! <prefix>/report/<node>    what the node's agent applied and measured (JSON), written by it
//! <prefix>/alive/<node>     present while the node's agent holds its lease
//! <prefix>/leader           election of the controllers (one key per candidate, by lease)
//! ```
//!
//! Access follows the layout: node N's etcd user (the CN of its client certificate,
//! [`node_user`]) may read only `desired/N` and write only `report/N` and `alive/N`; the
//! controllers' user may read and write everything under the prefix.

pub const DEFAULT_PREFIX: &str = "/cats/v1";

/// The etcd user (and client certificate CN) of a node's agent.
pub fn node_user(node: &str) -> String {
    format!("cats-node-{node}")
}

/// The etcd user (and client certificate CN) of the controllers.
pub const CONTROLLER_USER: &str = "cats-controller";

/// etcd's administrator (client certificate CN), used only to set up users and roles.
pub const ROOT_USER: &str = "root";

/// The keys of one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.trim_end_matches('/').to_string() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything of this deployment (a range prefix: ends with `/`).
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn desired_prefix(&self) -> String {
        format!("{}/desired/", self.prefix)
    }

    pub fn desired(&self, node: &str) -> String {
        format!("{}{node}", self.desired_prefix())
    }

    pub fn report_prefix(&self) -> String {
        format!("{}/report/", self.prefix)
    }

    pub fn report(&self, node: &str) -> String {
        format!("{}{node}", self.report_prefix())
    }

    pub fn alive_prefix(&self) -> String {
        format!("{}/alive/", self.prefix)
    }

    pub fn alive(&self, node: &str) -> String {
        format!("{}{node}", self.alive_prefix())
    }

    /// The name the controllers campaign under.
    pub fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The node a key of `prefix` (one of the `*_prefix` keys) belongs to.
    pub fn node_of<'k>(&self, prefix: &str, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(prefix).filter(|n| !n.is_empty() && !n.contains('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("/cats/v1/");
        assert_eq!(k.desired("gw"), "/cats/v1/desired/gw");
        assert_eq!(k.report("gw"), "/cats/v1/report/gw");
        assert_eq!(k.alive("gw"), "/cats/v1/alive/gw");
        assert_eq!(k.election(), "/cats/v1/leader");
        assert_eq!(k.node_of(&k.report_prefix(), "/cats/v1/report/edge1"), Some("edge1"));
        assert_eq!(k.node_of(&k.report_prefix(), "/cats/v1/report/"), None);
        assert_eq!(k.node_of(&k.report_prefix(), "/cats/v1/desired/edge1"), None);
    }
}
