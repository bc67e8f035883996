//! Network namespaces the lab (or a test) creates and always removes again.

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};

/// A network namespace made with `ip netns add`, deleted on drop (also when a test panics).
/// Deleting the namespace also deletes every veth end inside it.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test or lab run on this machine uses: `<prefix>-<pid>-<n>`, at most 15
/// characters so it can double as an interface name prefix.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let prefix: String = prefix.chars().take(4).collect();
    format!("{prefix}{pid}x{n}")
}

impl Namespace {
    /// Creates namespace `name` with `lo` up. Fails if it exists already.
    pub fn create(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Namespace { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `setns`.
    pub fn path(&self) -> PathBuf {
        cats_controller::netns::path_of(&self.name)
    }

    /// Runs `ip ARGS` inside the namespace; fails with ip's own message.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a program inside the namespace and returns its output whatever the exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// Runs a program inside the namespace and fails unless it exits 0.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.exec(program, args)?;
        if !out.status.success() {
            bail!(
                "`{program} {}` in {} failed: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a sysctl inside the namespace (`net.ipv6.conf.all.forwarding=1` style).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// Creates a veth pair with one end here and the other in `peer_ns`, both up.
    pub fn veth_to(&self, ifname: &str, peer_ns: &Namespace, peer_ifname: &str) -> Result<()> {
        self.ip(&[
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            &peer_ns.name,
        ])?;
        self.ip(&["link", "set", ifname, "up"])?;
        peer_ns.ip(&["link", "set", peer_ifname, "up"])?;
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete network namespace {}: {e:#}", self.name);
        }
    }
}

/// Runs `ip ARGS` and returns stdout, or an error carrying ip's stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
