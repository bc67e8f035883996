//! `--etcd`: how long a change of desired state takes to reach the agents through etcd
//! (issue 7: "time from an intent or metric change to applied state on N agents, p50/p99;
//! goal: p99 under 50 ms at 1,000 agents"). Everything runs against a real etcd
//! (`/usr/bin/etcd`, [`EtcdServer`]: TLS, client-certificate auth, one role per node).
//!
//! Baseline, measured first on the same etcd: one plain put -> watch event round trip (the
//! controller's certificate, one connection writing, one watching, 50 times). Every other
//! figure is also printed as a multiple of its median.
//!
//! Simulated watchers (`--watchers`, default 1,000): nodes `sim-0000`.. each get a client
//! certificate and an etcd role of their own, and each follows its own desired key exactly as
//! a `catsd agent` does ([`follow_desired`], which connects on its own: one TLS connection per
//! watcher), decoding every value into a [`Desired`]. A leader elected with the controller's
//! certificate ([`campaign`]) publishes with [`Leadership::publish`], the fenced
//! transactions of at most 100 puts each that `catsd run --etcd` uses. The states are real: gw's
//! desired state compiled from the example intent, cloned under each simulated node's name,
//! with a change marker in its instance list so that every round differs.
//! - intent change: every node gets a new state; per watcher, the time from just before
//!   `publish` to the moment its follower hands the new value on (p50/p99/max over every
//!   watcher of every round);
//! - metric change: one node's state changes (a different node each round; `publish` is given
//!   every node's state, as the controller does, and writes only the one that changed); the
//!   time until that watcher has it, p50/p99 over the rounds.
//!
//! Writes per round are the nodes `publish` wrote (one put each) and the revisions etcd moved
//! on by (one per transaction).
//!
//! Real agents: the example lab with five more ingress nodes (`gw2`..`gw6`, hung off core
//! like gw: ten nodes), plain veth links (no delay relays: nothing here measures the data
//! path), the emulated instances, one `catsd run --etcd --poll-ms 50` controller and one
//! `catsd agent` process per node, each with its own certificate. A round writes
//! `services.yaml` with `drain: true` on edge2-a (or without it again), which changes the
//! state of every ingress; t0 is taken just before the write. A watch of the desired and
//! report prefixes as root gives, per changed node, when its new state was published and when
//! its agent's report said `applied_generation` reached that state's generation. Between
//! rounds the run waits the policy's hold-down (a weight coming back waits for it; that is
//! dampening, not propagation). The figure includes the controller's poll (up to 50 ms until
//! it notices the file), its compile, and the agent's report (written right after each apply,
//! but at most every 100 ms), so it is an upper bound of "applied".
//!
//! Nothing is asserted on timing; the run fails only if a change never arrives.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cats_controller::{
    compile::{Metrics, compile},
    intent,
    nodes::remote::desired_of,
    store::etcd::{
        EtcdConfig,
        agent::{Desired, follow_desired},
        controller::{Leadership, campaign},
        follow::{Change, follow},
    },
};
use cats_tests::{
    binaries::Running,
    etcd::{ETCD, EtcdServer},
    lab_env::{LabEnv, LabOptions, example_intent_dir},
};
use tokio::{runtime::Runtime, sync::mpsc, sync::watch};

use crate::{flags, system};

const USAGE: &str = "\
usage: cats-bench --etcd [--rounds N] [--watchers N]

  --rounds N    intent changes, metric changes and real-agent changes each (default 5)
  --watchers N  simulated agents following their desired key (default 1000)

Must run as root: the real agents apply into lab namespaces.";

/// Put -> watch round trips of the baseline.
const BASELINE_SAMPLES: usize = 50;
/// The controller's poll period for the real agents.
const POLL: Duration = Duration::from_millis(50);
/// Beyond this, a change that has not arrived is an error.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Ingress nodes added to the example (gw2..): the example's 5 nodes + these = 10 agents.
const EXTRA_INGRESSES: u32 = 5;
const DRAINED: &str = "edge2-a";

pub struct Options {
    rounds: usize,
    watchers: usize,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
        let mut o = Options { rounds: 5, watchers: 1000 };
        let Some(flags) = flags::read(args, &[], &["--rounds", "--watchers"], USAGE)? else {
            return Ok(None);
        };
        for (flag, value) in flags {
            let n: usize = value
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag}: {value:?} is not a positive number"))?;
            match flag.as_str() {
                "--rounds" => o.rounds = n,
                _ => o.watchers = n,
            }
        }
        Ok(Some(o))
    }
}

pub fn run(o: &Options) -> Result<()> {
    if !system::is_root() {
        bail!("must run as root: the real agents apply into lab namespaces");
    }
    system::catch_interrupts()?;
    let started = Instant::now();
    let version = Command::new(ETCD)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_string()))
        .unwrap_or_else(|| "?".into());
    let catsd = catsd_bin()?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let sim = simulated(&rt, o)?;
    // Every follower and connection of the simulation goes with its runtime.
    rt.shutdown_timeout(Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let real = real_agents(&rt, o, &catsd)?;
    rt.shutdown_timeout(Duration::from_secs(2));

    println!();
    println!(
        "etcd propagation (etcd {version}, TLS + client certificates, {} watchers over {} \
         connections, {} rounds)",
        sim.watchers, sim.watchers, o.rounds
    );
    println!("setup: certificates + roles for {} nodes {:.1} s", sim.watchers, sim.setup_s);
    println!("desired state of one node: {} bytes of JSON (gw's, from the example)", sim.bytes);
    let base = median(&sim.baseline);
    row("baseline: one put -> watch event", &sim.baseline, base, false);
    row(&format!("intent change, {} nodes", sim.watchers), &sim.intent, base, true);
    println!(
        "{:<40} publish returned after p50 {}  ({} puts in {} txns per round)",
        "",
        ms(median(&sim.publish)),
        sim.intent_puts,
        sim.intent_txns
    );
    row("metric change, 1 node", &sim.metric, base, true);
    println!(
        "{:<40} publish returned after p50 {}  ({} put in {} txn per round; publish \
         compares all {} states first)",
        "",
        ms(median(&sim.metric_publish)),
        sim.metric_puts,
        sim.metric_txns,
        sim.watchers
    );
    row(&format!("real agents ({}): intent -> applied", real.agents), &real.applied, base, true);
    row("  of which intent -> published", &real.published, base, false);
    println!(
        "  controller poll {} ms; {} nodes changed per round (every ingress); applied = the \
         agent's report (written right after each apply, at most every 100 ms)",
        POLL.as_millis(),
        real.changed
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn row(label: &str, samples: &[Duration], base: Duration, ratio: bool) {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        println!("{label:<40} no samples");
        return;
    }
    let p50 = percentile(&s, 0.5);
    let x = if ratio && !base.is_zero() {
        format!("  (x{:.0} baseline p50)", p50.as_secs_f64() / base.as_secs_f64())
    } else {
        String::new()
    };
    println!(
        "{label:<40} p50 {:>9}  p99 {:>9}  max {:>9}  n={}{x}",
        ms(p50),
        ms(percentile(&s, 0.99)),
        ms(*s.last().expect("not empty")),
        s.len()
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The `q` quantile of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() { Duration::ZERO } else { percentile(&s, 0.5) }
}

/// catsd of this build: next to cats-bench (rebuilt first when run through cargo).
fn catsd_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("cats-bench's directory")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "cats-controller", "--bin", "catsd"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        if !build.status().context("building catsd")?.success() {
            bail!("building catsd failed");
        }
    }
    let catsd = dir.join("catsd");
    if !catsd.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p cats-controller)",
            catsd.display()
        );
    }
    Ok(catsd)
}

// ---------------------------------------------------------------------------------------
// Simulated watchers.

struct Simulated {
    watchers: usize,
    setup_s: f64,
    bytes: usize,
    baseline: Vec<Duration>,
    intent: Vec<Duration>,
    publish: Vec<Duration>,
    intent_puts: usize,
    intent_txns: i64,
    metric: Vec<Duration>,
    metric_publish: Vec<Duration>,
    metric_puts: usize,
    metric_txns: i64,
}

fn sim_name(i: usize) -> String {
    format!("sim-{i:04}")
}

fn simulated(rt: &Runtime, o: &Options) -> Result<Simulated> {
    let names: Vec<String> = (0..o.watchers).map(sim_name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    println!("simulated watchers: minting certificates and roles for {} nodes...", names.len());
    let setup = Instant::now();
    let etcd = rt.block_on(EtcdServer::new(&refs))?;
    let setup_s = setup.elapsed().as_secs_f64();
    println!("  done in {setup_s:.1} s");

    let baseline = rt.block_on(baseline(&etcd))?;

    // gw's real state, the template of every simulated node's.
    let intent = intent::load_dir(&example_intent_dir()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile(&intent, &Metrics::default(), 1)?;
    let template = desired_of(&intent, &compiled, "gw").context("gw has no state")?;
    let state_of = |node: &str, change: u64| {
        let mut d = template.clone();
        d.state.node = node.to_string();
        d.state.generation = change;
        d.instances = vec![format!("bench-{change}")];
        d
    };
    let bytes = serde_json::to_vec(&state_of(&names[0], 1))?.len();

    rt.block_on(async {
        // One follower per node, each on its own connection, as the agents would be.
        let (seen_tx, mut seen) = mpsc::unbounded_channel::<(usize, u64, Instant)>();
        let mut up = Vec::new();
        for (i, node) in names.iter().enumerate() {
            let config = etcd.config(&format!("node-{node}"));
            let connected = Arc::new(AtomicBool::new(false));
            up.push(connected.clone());
            let (tx, mut rx) = watch::channel(None::<Arc<Desired>>);
            tokio::spawn(follow_desired(config, node.clone(), tx, connected));
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let change = rx.borrow_and_update().as_ref().and_then(|d| marker(d));
                    if let Some(change) = change {
                        let _ = seen_tx.send((i, change, Instant::now()));
                    }
                }
            });
            if i % 50 == 49 {
                // Not every TLS handshake at once: a fleet of agents does not start together.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let connecting = Instant::now();
        while !up.iter().all(|u| u.load(Ordering::Relaxed)) {
            system::check_interrupted()?;
            if connecting.elapsed() > GIVE_UP {
                let n = up.iter().filter(|u| u.load(Ordering::Relaxed)).count();
                bail!("only {n} of {} watchers connected in {GIVE_UP:?}", up.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "  {} watchers connected (one TLS connection each) in {:.1} s",
            up.len(),
            connecting.elapsed().as_secs_f64()
        );

        let mut leader = campaign(&etcd.config("controller"), "bench").await?;
        let mut root = etcd.config("root").connect().await?;
        let mut change = 0u64;
        let all = |change: u64| -> BTreeMap<String, Desired> {
            names.iter().map(|n| (n.clone(), state_of(n, change))).collect()
        };

        // Warm-up: every watcher gets its first state (not measured).
        change += 1;
        let first = all(change);
        publish_and_wait(&mut leader, first.clone(), &mut seen, change, names.len()).await?;
        let mut current = first;

        let mut s = Simulated {
            watchers: names.len(),
            setup_s,
            bytes,
            baseline,
            intent: Vec::new(),
            publish: Vec::new(),
            intent_puts: 0,
            intent_txns: 0,
            metric: Vec::new(),
            metric_publish: Vec::new(),
            metric_puts: 0,
            metric_txns: 0,
        };
        println!("  intent changes ({} nodes each)...", names.len());
        for _ in 0..o.rounds {
            system::check_interrupted()?;
            change += 1;
            let states = all(change);
            let before = revision(&mut root).await?;
            let (lat, published, puts) =
                publish_and_wait(&mut leader, states.clone(), &mut seen, change, names.len())
                    .await?;
            s.intent_txns = revision(&mut root).await? - before;
            s.intent.extend(lat);
            s.publish.push(published);
            s.intent_puts = puts;
            current = states;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("  metric changes (1 node each)...");
        for r in 0..o.rounds {
            system::check_interrupted()?;
            change += 1;
            let node = &names[(r * 397 + 11) % names.len()];
            current.insert(node.clone(), state_of(node, change));
            let before = revision(&mut root).await?;
            let (lat, published, puts) =
                publish_and_wait(&mut leader, current.clone(), &mut seen, change, 1).await?;
            s.metric_txns = revision(&mut root).await? - before;
            s.metric.extend(lat);
            s.metric_publish.push(published);
            s.metric_puts = puts;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        leader.resign().await;
        anyhow::Ok(s)
    })
}

/// etcd's current revision (it moves on by one per transaction or put).
async fn revision(client: &mut etcd_client::Client) -> Result<i64> {
    let got = client.get("/cats/v1/bench/none", None).await?;
    Ok(got.header().context("no header")?.revision())
}

/// The change a simulated node's state carries.
fn marker(d: &Desired) -> Option<u64> {
    d.instances.first()?.strip_prefix("bench-")?.parse().ok()
}

/// Publishes `states` and waits until `expect` watchers saw `change`: their times from just
/// before `publish`, the time `publish` took, and the puts it made.
async fn publish_and_wait(
    leader: &mut Leadership,
    states: BTreeMap<String, Desired>,
    seen: &mut mpsc::UnboundedReceiver<(usize, u64, Instant)>,
    change: u64,
    expect: usize,
) -> Result<(Vec<Duration>, Duration, usize)> {
    let t0 = Instant::now();
    let written = leader.publish(states).await?;
    let published = t0.elapsed();
    let mut times = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + GIVE_UP;
    while times.len() < expect {
        let Ok(got) = tokio::time::timeout_at(deadline, seen.recv()).await else {
            bail!("only {} of {expect} watchers saw change {change} in {GIVE_UP:?}", times.len());
        };
        let (i, c, at) = got.context("the watchers are gone")?;
        if c == change {
            times.entry(i).or_insert(at.saturating_duration_since(t0));
        }
    }
    Ok((times.into_values().collect(), published, written.len()))
}

/// Plain put -> watch event round trips on one key, with the controller's certificate.
async fn baseline(etcd: &EtcdServer) -> Result<Vec<Duration>> {
    let config = etcd.config("controller");
    let key = format!("{}bench/baseline", config.keys.all());
    let mut writer = config.connect().await?;
    let mut reader = config.connect().await?;
    let mut stream = reader.watch(key.as_str(), None).await?;
    stream.message().await?.context("the watch ended before it was created")?;
    let mut out = Vec::with_capacity(BASELINE_SAMPLES);
    for i in 0..BASELINE_SAMPLES + 5 {
        let t0 = Instant::now();
        writer.put(key.as_str(), format!("{i}"), None).await?;
        loop {
            let got = tokio::time::timeout(GIVE_UP, stream.message()).await;
            let response = got.context("no watch event")??.context("watch ended")?;
            if !response.events().is_empty() {
                break;
            }
        }
        // The first few warm the connections up.
        if i >= 5 {
            out.push(t0.elapsed());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Real agents.

struct Real {
    agents: usize,
    changed: usize,
    applied: Vec<Duration>,
    published: Vec<Duration>,
}

/// The example intent with [`EXTRA_INGRESSES`] more ingress nodes, each linked to core.
fn ten_nodes(dir: &Path) -> Result<()> {
    let path = dir.join("network.yaml");
    let network = std::fs::read_to_string(&path)?;
    let anchor = "\n  # Point-to-point links.";
    let Some(at) = network.find(anchor) else {
        bail!("the example network.yaml has no links comment any more");
    };
    let mut nodes = String::new();
    let mut links = String::new();
    for k in 1..=EXTRA_INGRESSES {
        let n = k + 1;
        nodes.push_str(&format!(
            "\n    - name: gw{n}\n      index: {}\n      roles: [ingress]\n      \
             prefixes: [fd00:1{k}::/64, 198.18.1{k}.0/24]\n      headendInterfaces: [cams]\n      \
             dataplane: xdp\n",
            5 + k
        ));
        links.push_str(&format!("    - a: gw{n}\n      b: core\n      latencyMs: 1\n"));
    }
    let mut out = String::new();
    out.push_str(&network[..at]);
    out.push_str(&nodes);
    out.push_str(&network[at..]);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&links);
    std::fs::write(&path, out)?;
    Ok(())
}

/// What the root watch saw, in order.
#[derive(Default)]
struct Seen {
    /// (node, generation, when) of every desired state put.
    desired: Vec<(String, u64, Instant)>,
    /// (node, applied generation, when) of every report put.
    applied: Vec<(String, u64, Instant)>,
}

type SharedSeen = Arc<Mutex<Seen>>;

fn spawn_root_watch(rt: &Runtime, config: EtcdConfig) -> SharedSeen {
    let seen: SharedSeen = Arc::default();
    for desired in [true, false] {
        let (config, seen) = (config.clone(), seen.clone());
        rt.spawn(async move {
            let prefix =
                if desired { config.keys.desired_prefix() } else { config.keys.report_prefix() };
            let record = |key: &str, value: &[u8]| {
                let Some(node) = config.keys.node_of(&prefix, key) else { return };
                let at = Instant::now();
                let mut s = seen.lock().expect("seen lock");
                if desired {
                    if let Ok(d) = serde_json::from_slice::<Desired>(value) {
                        s.desired.push((node.to_string(), d.state.generation, at));
                    }
                } else if let Ok(r) = serde_json::from_slice::<serde_json::Value>(value)
                    && let Some(g) = r["status"]["applied_generation"].as_u64()
                {
                    s.applied.push((node.to_string(), g, at));
                }
            };
            follow(
                &config,
                &prefix,
                true,
                |change| match change {
                    Change::Reset(all) => all.iter().for_each(|(k, v)| record(k, v)),
                    Change::Put(k, v) => record(&k, &v),
                    Change::Delete(_) => {}
                },
                |_| {},
            )
            .await
        });
    }
    seen
}

impl Seen {
    /// The newest desired and applied generation of `node`.
    fn latest(&self, node: &str) -> (Option<u64>, Option<u64>) {
        let last = |v: &[(String, u64, Instant)]| {
            v.iter().rev().find(|(n, _, _)| n == node).map(|(_, g, _)| *g)
        };
        (last(&self.desired), last(&self.applied))
    }

    /// Nodes with a desired state put since `t0`, each with when its first one came, its
    /// newest generation, and when the agent first reported it applied (if yet).
    fn since(&self, t0: Instant) -> BTreeMap<String, (Instant, u64, Option<Instant>)> {
        let mut out: BTreeMap<String, (Instant, u64, Option<Instant>)> = BTreeMap::new();
        for (n, g, at) in self.desired.iter().filter(|(_, _, at)| *at >= t0) {
            let e = out.entry(n.clone()).or_insert((*at, *g, None));
            e.1 = e.1.max(*g);
        }
        for (n, (_, g, applied)) in out.iter_mut() {
            *applied = self
                .applied
                .iter()
                .find(|(m, a, at)| m == n && a >= g && *at >= t0)
                .map(|(_, _, at)| *at);
        }
        out
    }
}

fn real_agents(rt: &Runtime, o: &Options, catsd: &Path) -> Result<Real> {
    println!("real agents: building a 10-node lab...");
    let options = LabOptions { delays: false, instances: true, daemon: false };
    let env = LabEnv::start_with(ten_nodes, options)?;
    let nodes: Vec<String> = env.intent.topology.nodes.iter().map(|n| n.name.clone()).collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let etcd = rt.block_on(EtcdServer::new(&refs))?;
    let hold_down = env
        .intent
        .policies
        .iter()
        .map(|p| Duration::from_secs(p.dampening.hold_down_seconds))
        .max()
        .unwrap_or_default();

    let seen = spawn_root_watch(rt, etcd.config("root"));
    let run = &env.run_dir;
    let mut args: Vec<String> = vec!["run".into(), "--name".into(), "ctl".into()];
    args.extend(etcd.cli_args(&etcd.endpoint(), "controller"));
    for (flag, value) in [
        ("--intent", env.intent_dir.clone()),
        ("--status-file", run.join("ctl.json")),
        ("--state-dir", run.join("ctl-state")),
        ("--registry", run.join("pods")),
    ] {
        args.extend([flag.to_string(), value.display().to_string()]);
    }
    args.extend(["--poll-ms".into(), POLL.as_millis().to_string()]);
    // Declared after `env` and `etcd`: killed before the lab and etcd go.
    let controller =
        Running::start(catsd, &args, "warn", run.join("ctl.log")).context("starting catsd")?;
    let mut agents = Vec::new();
    for n in &nodes {
        let mut args: Vec<String> = vec!["agent".into(), "--node".into(), n.clone()];
        args.extend(etcd.cli_args(&etcd.endpoint(), &format!("node-{n}")));
        args.extend(["--netns-prefix".into(), env.lab().prefix().to_string()]);
        for (flag, value) in [
            ("--bpffs", env.bpffs.clone()),
            ("--metrics-dir", run.join("metrics")),
            ("--registry", run.join("pods")),
        ] {
            args.extend([flag.to_string(), value.display().to_string()]);
        }
        agents.push(
            Running::start(catsd, &args, "warn", run.join(format!("agent-{n}.log")))
                .context("starting catsd")?,
        );
    }
    let converged = |s: &Seen| {
        nodes.iter().all(|n| match s.latest(n) {
            (Some(d), Some(a)) => a >= d,
            _ => false,
        })
    };
    let wait = |what: &str, pred: &dyn Fn(&Seen) -> bool| -> Result<()> {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            system::check_interrupted()?;
            if pred(&seen.lock().expect("seen lock")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let agent_logs: Vec<String> = agents
                    .iter()
                    .map(|a: &Running| a.log_tail(15))
                    .filter(|t| !t.is_empty())
                    .collect();
                bail!(
                    "{what}: not within {GIVE_UP:?}\ncontroller log:\n{}\nagent logs:\n{}",
                    controller.log_tail(15),
                    agent_logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let start = Instant::now();
    wait("every agent applied its first state", &converged)?;
    println!(
        "  {} agents applied their first state {:.1} s after start; measuring...",
        nodes.len(),
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(hold_down + Duration::from_millis(500));

    let services = std::fs::read_to_string(env.intent_dir.join("services.yaml"))?;
    let anchor = format!("    - name: {DRAINED}\n");
    if !services.contains(&anchor) {
        bail!("the example services.yaml has no instance {DRAINED} any more");
    }
    let drained = services.replace(&anchor, &format!("{anchor}      drain: true\n"));
    let mut real =
        Real { agents: nodes.len(), changed: 0, applied: Vec::new(), published: Vec::new() };
    for r in 0..o.rounds {
        let text = if r % 2 == 0 { &drained } else { &services };
        let t0 = Instant::now();
        env.write_intent("services.yaml", text)?;
        wait("the change applied on every changed node", &|s: &Seen| {
            let changed = s.since(t0);
            !changed.is_empty() && changed.values().all(|(_, _, applied)| applied.is_some())
        })?;
        let changed = seen.lock().expect("seen lock").since(t0);
        real.changed = real.changed.max(changed.len());
        for (published, _, applied) in changed.values() {
            real.published.push(published.duration_since(t0));
            real.applied.push(applied.expect("waited for").duration_since(t0));
        }
        std::thread::sleep(hold_down + Duration::from_millis(500));
    }
    drop(agents);
    drop(controller);
    drop(etcd);
    drop(env);
    Ok(real)
}
