//! A whole cats lab for one test: the example intent (copied so the test can change it), the
//! emulated network, the instances, and the daemon. Everything is torn down on drop, also when
//! the test panics: daemon, pins, namespaces, the private bpffs and the run directory.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use cats_controller::{
    compile::Selector,
    dataplane::{program::ensure_bpffs, stats::PinnedCounters},
    intent::{self, Intent},
    netns, paths,
};
use cats_lab::{
    control::{Daemon, daemon_config, remove_lab_pins, start_instances},
    netns::unique_name,
    network::LabNetwork,
    wire::{Reply, Request},
};

/// One lab at a time in a process: on two cores, two labs' delay relays starve each other
/// enough to delay health-probe echoes past a 300 ms detection time, which is then a true
/// reading of paths that slow, not of what a test does. Every [`LabEnv`] holds this.
fn one_lab_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn example_intent_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smart-traffic/intent")
}

pub struct LabEnv {
    pub intent: Intent,
    pub intent_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bpffs: PathBuf,
    // Fields drop in order: daemon first, then the network, then the turn of the next lab.
    pub daemon: Option<Daemon>,
    pub lab: Option<LabNetwork>,
    _one_lab: std::sync::MutexGuard<'static, ()>,
}

impl LabEnv {
    /// A lab of `intent` with nothing built yet, for callers that build the network their
    /// own way; from here on Drop cleans up (daemon, pins, namespaces, bpffs, run directory).
    /// It waits for this process's other labs to end.
    pub fn empty(intent: Intent, intent_dir: PathBuf, run_dir: PathBuf, bpffs: PathBuf) -> Self {
        Self::unbuilt(intent, intent_dir, run_dir, bpffs, one_lab_at_a_time())
    }

    fn unbuilt(
        intent: Intent,
        intent_dir: PathBuf,
        run_dir: PathBuf,
        bpffs: PathBuf,
        one_lab: std::sync::MutexGuard<'static, ()>,
    ) -> Self {
        LabEnv { intent, intent_dir, run_dir, bpffs, daemon: None, lab: None, _one_lab: one_lab }
    }

    /// Copies the example intent, lets `edit` change the copy, then builds and starts it all:
    /// delay relays on every link and the emulated instances.
    pub fn start(edit: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        Self::start_with(edit, LabOptions::default())
    }

    pub fn lab(&self) -> &LabNetwork {
        self.lab.as_ref().expect("lab is up")
    }

    /// The network, for what changes it: instances stopped and started, faults injected.
    pub fn lab_mut(&mut self) -> &mut LabNetwork {
        self.lab.as_mut().expect("lab is up")
    }

    pub fn start_daemon(&mut self) -> Result<()> {
        self.start_daemon_with(Selector::Cats)
    }

    /// Starts the daemon with `selector` choosing the instances instead of cats' own (a
    /// baseline, for comparisons on the same dataplane), and waits until every node applied.
    pub fn start_daemon_with(&mut self, selector: Selector) -> Result<()> {
        let mut config = daemon_config(self.lab(), &self.intent_dir, &self.bpffs, &self.run_dir);
        config.selector = selector;
        let daemon = Daemon::start(config)?;
        daemon.wait_applied(Duration::from_secs(30))?;
        self.daemon = Some(daemon);
        Ok(())
    }

    pub fn stop_daemon(&mut self) -> Result<()> {
        self.daemon.take().context("daemon not running")?.stop()
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon is running")
    }

    /// Replaces one intent file, as an operator would.
    pub fn write_intent(&self, file: &str, text: &str) -> Result<()> {
        let tmp = self.intent_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.intent_dir.join(file))?;
        Ok(())
    }

    pub fn counters(&self, node: &str) -> Result<PinnedCounters> {
        PinnedCounters::open(&paths::node_pins(&self.bpffs, self.lab().prefix(), node))
    }

    /// A UDP socket in the client LAN behind `ingress`, connected to `target`: one flow.
    pub fn flow(&self, ingress: &str, target: SocketAddr) -> Result<UdpSocket> {
        let ns = self.lab().clients(ingress).path();
        netns::run_in(&ns, move || {
            let bind: SocketAddr =
                if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
            let sock = UdpSocket::bind(bind)?;
            sock.connect(target)?;
            sock.set_read_timeout(Some(Duration::from_millis(500)))?;
            Ok(sock)
        })
    }
}

/// Sends one request on `sock` and returns the name of the instance that answered, retrying a
/// few times (the first packet of a flow may wait for neighbour resolution).
pub fn ask(sock: &UdpSocket, flow: u64, seq: u64) -> Result<(String, Duration)> {
    let mut buf = [0u8; 512];
    for _ in 0..6 {
        let sent = std::time::Instant::now();
        sock.send(&Request { flow, seq, sent_ns: 0 }.encode())?;
        while let Ok(n) = sock.recv(&mut buf) {
            match Reply::decode(&buf[..n]) {
                Some(r) if r.flow == flow && r.seq == seq => {
                    return Ok((r.instance, sent.elapsed()));
                }
                _ => continue,
            }
        }
    }
    bail!("no reply to flow {flow} seq {seq}")
}

impl Drop for LabEnv {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.stop();
        }
        if let Some(lab) = &self.lab {
            let _ = remove_lab_pins(&self.intent, &self.bpffs, lab.prefix());
        }
        self.lab = None;
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; detaching a mount touches no memory of ours.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// The example's services.yaml with a declared utilisation for some instances.
pub fn services_with_load(loads: &[(&str, f64)]) -> String {
    let text = std::fs::read_to_string(example_intent_dir().join("services.yaml"))
        .expect("example services.yaml");
    loads.iter().fold(text, |text, (instance, load)| {
        let anchor = format!("    - name: {instance}\n");
        assert!(text.contains(&anchor), "no instance {instance} in the example");
        text.replace(&anchor, &format!("{anchor}      utilization: {load}\n"))
    })
}

/// The example's network.yaml with every node on `dataplane` ("xdp" or "kernel").
pub fn network_with_dataplane(dataplane: &str) -> String {
    let text = std::fs::read_to_string(example_intent_dir().join("network.yaml"))
        .expect("example network.yaml");
    let nodes = text.matches("      dataplane: xdp\n").count();
    assert_eq!(nodes, 5, "the example sets the dataplane of its five nodes");
    text.replace("      dataplane: xdp\n", &format!("      dataplane: {dataplane}\n"))
}

impl LabEnv {
    /// A UDP socket inside namespace `ns`, bound to `source`, connected to `target`.
    pub fn socket_in(
        &self,
        ns: &cats_lab::netns::Namespace,
        source: SocketAddr,
        target: SocketAddr,
    ) -> Result<UdpSocket> {
        netns::run_in(&ns.path(), move || {
            let sock = UdpSocket::bind(source)?;
            sock.connect(target)?;
            sock.set_read_timeout(Some(Duration::from_millis(500)))?;
            Ok(sock)
        })
    }
}

/// How [`LabEnv::start_with`] builds the lab.
#[derive(Clone, Copy, Debug)]
pub struct LabOptions {
    /// A delay relay on every link (the topology's latencies). Without, links are plain veth
    /// pairs: no userspace element on the path, for throughput measurements.
    pub delays: bool,
    /// Start the emulated compute instances. Without, the instance namespaces hold their
    /// addresses (and the service addresses on `lo`) but nothing listens: the caller runs
    /// its own server there.
    pub instances: bool,
    /// Start the daemon (controller and every agent, in this process). Without, the caller
    /// runs cats its own way (e.g. processes over etcd).
    pub daemon: bool,
}

impl Default for LabOptions {
    /// What [`LabEnv::start`] builds: delays, instances and the daemon.
    fn default() -> Self {
        LabOptions { delays: true, instances: true, daemon: true }
    }
}

impl LabEnv {
    /// Like [`LabEnv::start`], with the delay relays and the emulated instances optional.
    pub fn start_with(edit: impl FnOnce(&Path) -> Result<()>, options: LabOptions) -> Result<Self> {
        Self::start_with_selector(edit, options, Selector::Cats)
    }

    /// Like [`LabEnv::start_with`], with `selector` choosing the instances (cats' own or a
    /// baseline). A later [`LabEnv::start_daemon`] goes back to cats' own.
    pub fn start_with_selector(
        edit: impl FnOnce(&Path) -> Result<()>,
        options: LabOptions,
        selector: Selector,
    ) -> Result<Self> {
        // This lab's turn before its namespaces exist.
        let one_lab = one_lab_at_a_time();
        let prefix = unique_name("lab");
        let run_dir = std::env::temp_dir().join(format!("cats-test-{prefix}"));
        let intent_dir = run_dir.join("intent");
        std::fs::create_dir_all(&intent_dir)?;
        for entry in std::fs::read_dir(example_intent_dir())? {
            let entry = entry?;
            std::fs::copy(entry.path(), intent_dir.join(entry.file_name()))?;
        }
        edit(&intent_dir)?;
        let intent = intent::load_dir(&intent_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let bpffs = run_dir.join("bpffs");
        let mut env = LabEnv::unbuilt(intent, intent_dir, run_dir, bpffs, one_lab);
        ensure_bpffs(&env.bpffs)?;
        let mut lab = LabNetwork::build(&env.intent, &prefix, options.delays)?;
        if options.instances {
            start_instances(&mut lab, &env.intent, &env.run_dir)?;
        } else {
            // No instance reports metrics: the controller uses the declared utilisation.
            std::fs::create_dir_all(env.run_dir.join("metrics"))?;
        }
        env.lab = Some(lab);
        if options.daemon {
            env.start_daemon_with(selector)?;
            if options.instances {
                env.wait_probed_paths_up(Duration::from_secs(10));
            }
        }
        Ok(env)
    }

    /// Waits (at most `timeout`) until every path the headends probe has answered: a fresh
    /// lab may hold its first echoes for a second or more (a neighbour entry waiting for its
    /// retransmit, agents still verifying programs), and a headend that finds an instance
    /// unreachable pins new flows to its backup, which is not what a test about steering
    /// means to see. Returns whether they all answered; a test about health checks itself.
    pub fn wait_probed_paths_up(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let up = self.daemon().status().is_ok_and(|s| {
                s["nodes"].as_object().is_some_and(|nodes| {
                    nodes.values().all(|n| {
                        n["health"]["paths"].as_array().is_none_or(|paths| {
                            paths.iter().all(|p| p["up"] == true && p["rtt_ms"].is_number())
                        })
                    })
                })
            });
            if up || std::time::Instant::now() > deadline {
                return up;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `policy` (the text of a policy.yaml with the example's health section) with health
/// probing off: for tests that count every packet a transit or egress node handles.
pub fn without_health_probes(policy: &str) -> String {
    let probing = "  health:\n    intervalMs: 100\n";
    assert!(policy.contains(probing), "the policy has the example's health section");
    policy.replace(probing, "  health:\n    enabled: false\n    intervalMs: 100\n")
}

/// The example's policy.yaml with the path forced through the core's End SID.
pub fn policy_via_core() -> String {
    let text = std::fs::read_to_string(example_intent_dir().join("policy.yaml"))
        .expect("example policy.yaml");
    assert!(text.contains("    maxLatencyMs: 100\n"), "the example policy has constraints");
    text.replace("    maxLatencyMs: 100\n", "    maxLatencyMs: 100\n    waypoints: [core]\n")
}
