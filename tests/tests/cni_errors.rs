//! Every bad input gets the CNI error code the spec (1.1.0) gives it, as an error result on
//! stdout, and leaves nothing behind: no registration, no pin, no XDP program. The pod
//! exists (made by `ptp`), so every failure is about the input alone.

use std::path::Path;

use cats_tests::cni_runtime::{Attachment, CniRuntime, Exec, TestNode, conflist, ptp};
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_cats-cni-under-test");

struct Fixture {
    node: TestNode,
    runtime: CniRuntime,
    attachment: Attachment,
    /// ptp's result for the pod: what a runtime passes cats as prevResult.
    prev: Value,
    _pod: cats_lab::netns::Namespace,
}

impl Fixture {
    fn new() -> Fixture {
        let node = TestNode::new("gw").unwrap();
        let runtime = node.runtime(Path::new(PLUGIN)).unwrap();
        let pod = node.pod().unwrap();
        let attachment = Attachment::kubernetes(&pod, "shop", "web-0");
        let interface_only =
            conflist("1.0.0", "pods", vec![ptp(&[("198.18.10.0/24", "198.18.10.1")], &node.dir)]);
        let prev = runtime.add(&interface_only, &attachment).unwrap().unwrap();
        Fixture { node, runtime, attachment, prev, _pod: pod }
    }

    /// A valid cats configuration for the pod.
    fn conf(&self) -> Value {
        let mut conf = self.node.cats_conf();
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("pods");
        conf["prevResult"] = self.prev.clone();
        conf
    }

    /// The attachment's variables for `command`.
    fn vars(&self, command: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", self.attachment.container_id.clone()),
            ("CNI_NETNS", self.attachment.netns.to_string_lossy().into_owned()),
            ("CNI_IFNAME", "eth0".to_owned()),
            ("CNI_ARGS", self.attachment.args.clone()),
        ]
    }

    fn run(&self, vars: &[(&'static str, String)], stdin: &[u8]) -> Exec {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.runtime.exec("cats-cni", &vars, stdin).unwrap()
    }

    /// Runs, expects failure with `code` and a message containing `message`, and nothing
    /// left behind.
    fn fails(
        &self,
        what: &str,
        vars: &[(&'static str, String)],
        stdin: &[u8],
        code: u64,
        message: &str,
    ) {
        let exec = self.run(vars, stdin);
        assert!(!exec.success, "{what}: succeeded: {exec:?}");
        let error = exec.json();
        assert_eq!(error["code"], code, "{what}: {error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(msg.contains(message), "{what}: {msg:?} does not contain {message:?}");
        assert!(error["cniVersion"].is_string(), "{what}: {error}");
        self.nothing_left(what);
    }

    fn nothing_left(&self, what: &str) {
        let left: Vec<String> = self
            .node
            .leftovers()
            .unwrap()
            .into_iter()
            .filter(|l| !l.starts_with("interface ") && !l.starts_with("address "))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{what}");
        let links = self.node.ns.ip(&["-o", "link", "show"]).unwrap();
        assert!(!links.contains(" xdp"), "{what}: an XDP program stayed: {links}");
    }
}

fn without(vars: &[(&'static str, String)], name: &str) -> Vec<(&'static str, String)> {
    vars.iter().filter(|(k, _)| *k != name).cloned().collect()
}

fn with(
    vars: &[(&'static str, String)],
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut vars = without(vars, name);
    vars.push((name, value.to_owned()));
    vars
}

#[test]
fn environment_errors_are_code_4() {
    let f = Fixture::new();
    let conf = f.conf().to_string();
    let add = f.vars("ADD");
    f.fails("no command", &without(&add, "CNI_COMMAND"), conf.as_bytes(), 4, "CNI_COMMAND");
    f.fails("unknown command", &with(&add, "CNI_COMMAND", "UPDATE"), conf.as_bytes(), 4, "UPDATE");
    for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        f.fails(name, &without(&add, name), conf.as_bytes(), 4, name);
    }
    f.fails(
        "bad id",
        &with(&add, "CNI_CONTAINERID", "../x"),
        conf.as_bytes(),
        4,
        "CNI_CONTAINERID",
    );
    f.fails("bad ifname", &with(&add, "CNI_IFNAME", "a/b"), conf.as_bytes(), 4, "CNI_IFNAME");
    f.fails("bad args", &with(&add, "CNI_ARGS", "K8S_POD_NAME"), conf.as_bytes(), 4, "CNI_ARGS");
    let del = f.vars("DEL");
    f.fails(
        "DEL without id",
        &without(&del, "CNI_CONTAINERID"),
        conf.as_bytes(),
        4,
        "CNI_CONTAINERID",
    );
}

#[test]
fn configuration_errors_have_their_codes() {
    let f = Fixture::new();
    let add = f.vars("ADD");
    f.fails("bad JSON", &add, b"{\"cniVersion\": ", 6, "not JSON");
    f.fails("not an object", &add, b"[1, 2]", 6, "not an object");
    let mut conf = f.conf();
    conf["cniVersion"] = json!("9.9.9");
    f.fails("unknown version", &add, conf.to_string().as_bytes(), 1, "9.9.9");
    let mut conf = f.conf();
    conf.as_object_mut().unwrap().remove("cniVersion");
    f.fails("no version", &add, conf.to_string().as_bytes(), 7, "cniVersion");
    let mut conf = f.conf();
    conf.as_object_mut().unwrap().remove("node");
    f.fails("no node", &add, conf.to_string().as_bytes(), 7, "node");
    let mut conf = f.conf();
    conf["registry"] = json!("relative/pods");
    f.fails("relative registry", &add, conf.to_string().as_bytes(), 7, "registry");
    let mut conf = f.conf();
    conf.as_object_mut().unwrap().remove("prevResult");
    f.fails("ADD without prevResult", &add, conf.to_string().as_bytes(), 7, "prevResult");
    let mut conf = f.conf();
    conf["prevResult"]["ips"] = json!([{"address": "not-an-address/24"}]);
    f.fails("bad prevResult", &add, conf.to_string().as_bytes(), 6, "prevResult.ips[0].address");
    // The error result speaks the configuration's version.
    let mut conf = f.conf();
    conf["cniVersion"] = json!("0.4.0");
    conf.as_object_mut().unwrap().remove("node");
    let exec = f.run(&add, conf.to_string().as_bytes());
    assert_eq!(exec.json()["cniVersion"], "0.4.0");
}

#[test]
fn container_errors_are_code_3_and_missing_pairs_100() {
    let f = Fixture::new();
    let conf = f.conf().to_string();
    let add = f.vars("ADD");
    let missing = "/run/netns/cats-test-no-such-namespace";
    f.fails("missing netns", &with(&add, "CNI_NETNS", missing), conf.as_bytes(), 3, missing);
    f.fails(
        "CHECK, missing netns",
        &with(&f.vars("CHECK"), "CNI_NETNS", missing),
        conf.as_bytes(),
        3,
        missing,
    );
    f.fails(
        "no such interface",
        &with(&add, "CNI_IFNAME", "net9"),
        conf.as_bytes(),
        100,
        "no interface net9",
    );
    // The pod's loopback is no veth.
    f.fails("not a veth", &with(&add, "CNI_IFNAME", "lo"), conf.as_bytes(), 100, "not a veth");
}

#[test]
fn commands_against_state_that_is_not_there() {
    let f = Fixture::new();
    let conf = f.conf().to_string();
    // CHECK of an attachment never added.
    f.fails("CHECK before ADD", &f.vars("CHECK"), conf.as_bytes(), 102, "not registered");
    // DEL of an attachment never added, also without its namespace: success, nothing printed.
    for vars in [f.vars("DEL"), without(&f.vars("DEL"), "CNI_NETNS")] {
        let exec = f.run(&vars, conf.as_bytes());
        assert!(exec.success && exec.stdout.trim().is_empty(), "{exec:?}");
    }
    f.nothing_left("DEL");
    // STATUS and GC are 1.1.0 commands.
    let status = [("CNI_COMMAND", "STATUS".to_owned())];
    f.fails("STATUS in 1.0.0", &status, conf.as_bytes(), 1, "1.1.0");
    let mut conf = f.conf();
    conf["cniVersion"] = json!("1.1.0");
    let ok = f.run(&status, conf.to_string().as_bytes());
    assert!(ok.success && ok.stdout.trim().is_empty(), "{ok:?}");
    let gc = [("CNI_COMMAND", "GC".to_owned())];
    f.fails(
        "GC without its list",
        &gc,
        conf.to_string().as_bytes(),
        7,
        "cni.dev/valid-attachments",
    );
    // STATUS: not available without a bpffs to pin on.
    conf["bpffs"] = json!(f.node.dir.join("not-bpffs"));
    std::fs::create_dir_all(f.node.dir.join("not-bpffs")).unwrap();
    f.fails("STATUS without bpffs", &status, conf.to_string().as_bytes(), 50, "no bpffs");
}

#[test]
fn version_lists_what_is_supported() {
    let f = Fixture::new();
    let exec = f.run(&[("CNI_COMMAND", "VERSION".to_owned())], br#"{"cniVersion": "0.3.1"}"#);
    assert!(exec.success, "{exec:?}");
    assert_eq!(
        exec.json(),
        json!({"cniVersion": "0.3.1", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

/// A failure after the registration was written (here: the bpffs is not writable as one)
/// removes it again, and the pod's neighbour entries.
#[test]
fn a_failed_attach_leaves_no_registration() {
    let f = Fixture::new();
    let mut conf = f.conf();
    // A regular file where the bpffs should be: it can be neither mounted nor pinned on.
    let file = f.node.dir.join("bpffs-file");
    std::fs::write(&file, b"").unwrap();
    conf["bpffs"] = json!(file);
    f.fails(
        "attach",
        &f.vars("ADD"),
        conf.to_string().as_bytes(),
        101,
        "attaching the cats headend",
    );
    // Nor the neighbour entries made before the attach failed.
    let neighbours = f.node.ns.ip(&["neigh", "show", "nud", "permanent"]).unwrap();
    assert!(neighbours.trim().is_empty(), "neighbour entries stayed: {neighbours}");
}
