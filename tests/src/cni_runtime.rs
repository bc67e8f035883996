//! A container runtime, as far as CNI plugins can tell: it sets the `CNI_*` variables, feeds
//! each plugin its configuration on stdin, reads stdout, and runs a configuration list in
//! order for ADD and CHECK (passing each plugin the previous one's result) and in reverse
//! for DEL (passing the cached result of ADD), like libcni.
//!
//! Plugins run in the network namespace of the "node" they serve (a lab node, or a plain test
//! namespace): the runtime enters it between fork and exec. Plugin types are looked up in a
//! private `CNI_PATH` holding `cats-cni` (the binary under test) and Debian's
//! containernetworking-plugins.

use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use cats_controller::{dataplane::program::ensure_bpffs, paths};
use cats_lab::netns::{Namespace, unique_name};
use serde_json::{Map, Value, json};

/// Where Debian's containernetworking-plugins package installs the plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// What one plugin run gave back.
#[derive(Debug)]
pub struct Exec {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    /// stdout as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// The error code of a failed run's error result.
    pub fn code(&self) -> Option<u64> {
        (!self.success).then(|| self.json()["code"].as_u64()).flatten()
    }
}

/// A failed step of a list: which plugin, and what it said.
#[derive(Debug)]
pub struct Failure {
    pub plugin: String,
    pub exec: Exec,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {} {}", self.plugin, self.exec.stdout.trim(), self.exec.stderr.trim())
    }
}

/// One attachment of a pod to a network: what identifies it to plugins.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
}

impl Attachment {
    /// The attachment of `eth0` of `pod`, a Kubernetes pod `namespace`/`name`.
    pub fn kubernetes(pod: &Namespace, namespace: &str, name: &str) -> Attachment {
        Attachment {
            container_id: format!("{}-sandbox", pod.name()),
            netns: pod.path(),
            ifname: "eth0".into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
                 K8S_POD_INFRA_CONTAINER_ID={}-sandbox",
                pod.name()
            ),
        }
    }
}

pub struct CniRuntime {
    /// The private `CNI_PATH`.
    bin: PathBuf,
    /// The namespace plugins run in; `None` for this process's.
    node_netns: Option<PathBuf>,
}

impl CniRuntime {
    /// A runtime whose `CNI_PATH` (made in `dir`) holds `cats_cni` and Debian's plugins.
    pub fn new(cats_cni: &Path, dir: &Path, node_netns: Option<PathBuf>) -> Result<CniRuntime> {
        let bin = dir.join("cni-bin");
        std::fs::create_dir_all(&bin)?;
        let link = |target: &Path, name: &str| -> Result<()> {
            let at = bin.join(name);
            if !at.exists() {
                std::os::unix::fs::symlink(target, &at)
                    .with_context(|| format!("linking {}", at.display()))?;
            }
            Ok(())
        };
        link(cats_cni, "cats-cni")?;
        let debian = std::fs::read_dir(DEBIAN_CNI_DIR).with_context(|| {
            format!("{DEBIAN_CNI_DIR} is missing: install containernetworking-plugins")
        })?;
        for entry in debian {
            let entry = entry?;
            link(&entry.path(), &entry.file_name().to_string_lossy())?;
        }
        Ok(CniRuntime { bin, node_netns })
    }

    pub fn cni_path(&self) -> &Path {
        &self.bin
    }

    /// Runs plugin `plugin` with `vars` (the `CNI_PATH` is added) and `stdin`.
    pub fn exec(&self, plugin: &str, vars: &[(&str, &str)], stdin: &[u8]) -> Result<Exec> {
        let mut command = Command::new(self.bin.join(plugin));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_PATH", &self.bin)
            .envs(vars.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Kept open until the child has started.
        let netns = self.node_netns.as_ref().map(File::open).transpose()?;
        if let Some(file) = &netns {
            let fd = file.as_raw_fd();
            // SAFETY: between fork and exec only setns(2) runs, which is async-signal-safe
            // and touches no memory of the parent.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().with_context(|| format!("starting plugin {plugin}"))?;
        drop(netns);
        child.stdin.take().expect("piped").write_all(stdin)?;
        let out = child.wait_with_output()?;
        Ok(Exec {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// One plugin of `list` for `command` on `attachment`, with `prev` as `prevResult`.
    fn step(
        &self,
        list: &Value,
        plugin: &Value,
        command: &str,
        attachment: &Attachment,
        prev: Option<&Value>,
    ) -> Result<Result<Value, Failure>> {
        let conf = plugin_conf(list, plugin, prev);
        let kind = plugin["type"].as_str().context("a plugin without type")?;
        let vars = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", attachment.container_id.as_str()),
            ("CNI_NETNS", attachment.netns.to_str().context("netns path")?),
            ("CNI_IFNAME", attachment.ifname.as_str()),
            ("CNI_ARGS", attachment.args.as_str()),
        ];
        let exec = self.exec(kind, &vars, conf.to_string().as_bytes())?;
        Ok(if exec.success { Ok(exec.json()) } else { Err(Failure { plugin: kind.into(), exec }) })
    }

    /// ADD through the list, in order; the final result (what a runtime caches).
    pub fn add(&self, list: &Value, attachment: &Attachment) -> Result<Result<Value, Failure>> {
        let mut result: Option<Value> = None;
        for plugin in plugins(list)? {
            match self.step(list, plugin, "ADD", attachment, result.as_ref())? {
                Ok(out) => result = Some(out),
                Err(failure) => return Ok(Err(failure)),
            }
        }
        result.map(Ok).context("an empty list")
    }

    /// CHECK through the list, in order, each plugin given the cached ADD result.
    pub fn check(
        &self,
        list: &Value,
        attachment: &Attachment,
        cached: &Value,
    ) -> Result<Result<(), Failure>> {
        for plugin in plugins(list)? {
            if let Err(failure) = self.step(list, plugin, "CHECK", attachment, Some(cached))? {
                return Ok(Err(failure));
            }
        }
        Ok(Ok(()))
    }

    /// DEL through the list, in reverse, each plugin given the cached ADD result.
    pub fn del(
        &self,
        list: &Value,
        attachment: &Attachment,
        cached: Option<&Value>,
    ) -> Result<Result<(), Failure>> {
        for plugin in plugins(list)?.iter().rev() {
            if let Err(failure) = self.step(list, plugin, "DEL", attachment, cached)? {
                return Ok(Err(failure));
            }
        }
        Ok(Ok(()))
    }
}

fn plugins(list: &Value) -> Result<&Vec<Value>> {
    list["plugins"].as_array().context("a configuration list has plugins")
}

/// The configuration one plugin of a list gets: its own object plus the list's name and
/// version, and the previous result.
fn plugin_conf(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), list["name"].clone());
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

/// A node for plugin tests without a lab: a network namespace, a private bpffs and a run
/// directory (registry, IPAM state), all removed on drop, also when a test panics.
pub struct TestNode {
    /// The topology node name plugins are told.
    pub name: String,
    /// Pin scope, unique to this node (as a lab's prefix is).
    pub scope: String,
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub ns: Namespace,
}

impl TestNode {
    pub fn new(name: &str) -> Result<TestNode> {
        let scope = unique_name("cni");
        let dir = std::env::temp_dir().join(format!("cats-test-{scope}"));
        std::fs::create_dir_all(&dir)?;
        let bpffs = dir.join("bpffs");
        ensure_bpffs(&bpffs)?;
        let ns = Namespace::create(&format!("{scope}n"))?;
        Ok(TestNode { name: name.into(), scope, dir, bpffs, ns })
    }

    pub fn registry(&self) -> PathBuf {
        self.dir.join("pods")
    }

    pub fn pins(&self) -> PathBuf {
        paths::node_pins(&self.bpffs, &self.scope, &self.name)
    }

    /// cats' entry of a list for this node.
    pub fn cats_conf(&self) -> Value {
        cats_conf(&self.name, &self.registry(), &self.bpffs, &self.scope)
    }

    /// A runtime whose plugins run in this node's namespace.
    pub fn runtime(&self, cats_cni: &Path) -> Result<CniRuntime> {
        CniRuntime::new(cats_cni, &self.dir, Some(self.ns.path()))
    }

    /// A new pod namespace, deleted on drop.
    pub fn pod(&self) -> Result<Namespace> {
        Namespace::create(&unique_name("pod"))
    }

    /// Everything a pod attachment can leave on this node, one line each: registrations,
    /// link pins, veths, XDP programs on interfaces, IP allocations.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        out.extend(files(&self.registry())?.into_iter().map(|f| format!("registration {f}")));
        out.extend(files(&self.pins().join("links"))?.into_iter().map(|f| format!("link pin {f}")));
        let links = self.ns.ip(&["-o", "link", "show"])?;
        for line in links.lines().filter(|l| !l.contains(": lo:")) {
            out.push(format!("interface {}", line.split_whitespace().nth(1).unwrap_or(line)));
        }
        out.extend(
            ip_allocations(&self.dir.join("ipam"))?.into_iter().map(|a| format!("address {a}")),
        );
        Ok(out)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; detaching a mount touches no memory of ours.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// cats' entry of a configuration list.
pub fn cats_conf(node: &str, registry: &Path, bpffs: &Path, scope: &str) -> Value {
    json!({
        "type": "cats-cni",
        "node": node,
        "registry": registry,
        "bpffs": bpffs,
        "scope": scope,
    })
}

/// A configuration list: `plugins` under `name`, in spec `version`.
pub fn conflist(version: &str, name: &str, plugins: Vec<Value>) -> Value {
    json!({ "cniVersion": version, "name": name, "plugins": plugins })
}

/// `ptp` with `host-local`, handing out addresses of `subnets` (each `[subnet, gateway]`),
/// keeping its state under `dir`.
pub fn ptp(subnets: &[(&str, &str)], dir: &Path) -> Value {
    json!({ "type": "ptp", "ipam": host_local(subnets, dir) })
}

/// `bridge` (named `bridge`) with `host-local`.
pub fn bridge(bridge: &str, subnets: &[(&str, &str)], dir: &Path) -> Value {
    json!({ "type": "bridge", "bridge": bridge, "isGateway": true, "ipam": host_local(subnets, dir) })
}

/// `host-local` over `subnets`, with a default route (through the gateway) per family.
fn host_local(subnets: &[(&str, &str)], dir: &Path) -> Value {
    let ranges: Vec<Value> = subnets
        .iter()
        .map(|(subnet, gateway)| json!([{ "subnet": subnet, "gateway": gateway }]))
        .collect();
    let routes: Vec<Value> = subnets
        .iter()
        .map(
            |(subnet, _)| json!({ "dst": if subnet.contains(':') { "::/0" } else { "0.0.0.0/0" } }),
        )
        .collect();
    json!({ "type": "host-local", "ranges": ranges, "routes": routes, "dataDir": dir.join("ipam") })
}

/// Names of the regular files of `dir` not starting with a dot (none when it is missing).
fn files(dir: &Path) -> Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => bail!("listing {}: {e}", dir.display()),
    }
}

/// Addresses host-local still holds: files named like an address in its network directories.
fn ip_allocations(ipam: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for network in files(ipam)? {
        for file in files(&ipam.join(&network))? {
            if file.parse::<std::net::IpAddr>().is_ok() {
                out.push(format!("{network}/{file}"));
            }
        }
    }
    Ok(out)
}
