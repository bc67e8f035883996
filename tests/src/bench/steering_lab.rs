//! `cats-bench --steering-lab`: the comparison of `--steering` (cats' selector against
//! nearest-site, least-loaded, random and the seed formula) run for real, in the emulated lab,
//! with far fewer requests than the simulation.
//!
//! A benchmark, not a test: it prints figures and ratios and asserts nothing about them.
//!
//! # The scenario
//!
//! The example topology (`examples/smart-traffic/intent`): cameras behind `gw`; `edge1-a` and
//! `edge2-a` (4 TOPS each) about 6 ms round trip away, `cloud-a` (100 TOPS) about 32 ms away,
//! every link a delay relay. Two things change, written into each run's copy of the intent:
//!
//! - `requestCost` is 0.1 TOPs instead of 0.02, so compute matters: an edge serves 40 req/s
//!   (25 ms each), the cloud 1,000 req/s (1 ms each). Idle, an edge still answers first
//!   (6 + 25 = 31 ms against 32 + 1 = 33 ms), but the edges hold under 8 % of the capacity.
//! - The policy is the selector alone, as in the simulation: `min-completion-time`, slack 0.5,
//!   hysteresis 0.1, hold-down 2 s, and no constraint and no locality group (the baselines
//!   apply none either; the example's would keep the street boxes first).
//!
//! Two cameras in the client LAN of `gw` (one to the IPv6 service address, one to the IPv4
//! one) send Poisson arrivals at half the total rate each, a new flow every
//! [`REQUESTS_PER_FLOW`] requests, so new decisions apply within milliseconds. The total rate is
//! 50, 80 and 95 % of the lab's capacity (Σ TOPS / requestCost).
//!
//! # One run
//!
//! Per load and selector: a fresh [`LabEnv`] (namespaces, relays, instances, the daemon with
//! `DaemonConfig.selector` set, waited for until every node applied), cameras for a warm-up
//! (the instances report, the controller measures the demand and settles), then the measured
//! window: the requests sent during it, `--requests` of them at the offered rate. Every reply's
//! round trip as the camera measured it counts; a request without a reply within [`TIMEOUT`]
//! counts as lost, apart. Then everything is torn down and the run checks that its namespaces
//! are gone. A run that fails says why and the bench goes on with the next.
//!
//! The lab shares the machine's CPUs (two, on the reference machine) between the cameras, the
//! relays, the instances and the daemon, so each run also prints the rate the cameras really
//! sent at during the window, and a load the lab did not reach is said to be so.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    panic::AssertUnwindSafe,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use crate::flags;
use anyhow::{Context, Result, bail};
use cats_controller::{compile::Selector, intent, netns};
use cats_lab::client::{ClientConfig, ClientEvent, run_client};
use cats_tests::lab_env::{LabEnv, LabOptions, example_intent_dir};

use crate::system;

pub const USAGE: &str = "\
usage: cats-bench --steering-lab [--requests N] [--load LIST] [--warmup-s N] [--selector LIST]
                            [--verbose]

  The steering comparison of --steering run for real in the emulated lab (root needed):
  the example topology with requestCost 0.1 (edges 40 req/s, cloud 1,000 req/s), two
  cameras behind gw, a fresh lab per selector and load. Prints mean and p99 completion
  time, losses and the rate the cameras really reached. A few minutes.

  --requests N     requests per run in the measured window (default 3000)
  --load LIST      offered loads in percent of the total capacity (default 50,80,95)
  --warmup-s N     seconds of traffic before the window (default 5)
  --selector LIST  selectors to run, comma-separated (default all: cats, nearest-site,
                   least-loaded, random, seed-formula)
  --verbose        also every weight change of every run, with its time";

/// Work per request, in tera-operations (the example's is 0.02).
const REQUEST_COST_TOPS: f64 = 0.1;
/// Requests per flow (UDP socket): short flows, so the weights apply to new requests quickly.
const REQUESTS_PER_FLOW: u32 = 5;
/// A request without a reply after this long is lost.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The ingress the cameras sit behind, and the cameras' names and targets (IPv6 and IPv4).
const INGRESS: &str = "gw";
const CAMERAS: [(&str, &str); 2] =
    [("cam-v6", "[2001:db8:ca75::1]:7000"), ("cam-v4", "198.51.100.1:7000")];
/// Poisson arrivals vary: the cameras fell behind only if they sent this many standard
/// deviations fewer requests in the window than the offered rate gives.
const BEHIND_SIGMAS: f64 = 3.0;
/// How often the run reads the controller's weights from the daemon's status.
const WEIGHTS_POLL: Duration = Duration::from_millis(250);

/// The bench's policy: the selector alone, as the simulation runs it.
const POLICY: &str = "\
# cats-bench --steering-lab: the selector alone (no constraint, no locality group), as in the
# simulation; the baselines apply none either.
apiVersion: cats.dev/v1alpha1
kind: SteeringPolicy
metadata:
  name: plates
spec:
  service: plate-recognition
  objective: min-completion-time
  slack: 0.5
  affinity:
    flow: five-tuple
    timeoutSeconds: 30
  dampening:
    hysteresis: 0.1
    holdDownSeconds: 2
";

#[derive(Clone, Debug)]
pub struct Options {
    pub requests: usize,
    pub loads: Vec<f64>,
    pub warmup: Duration,
    pub selectors: Vec<Selector>,
    /// Print every weight change of every run.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            requests: 3000,
            loads: vec![0.5, 0.8, 0.95],
            warmup: Duration::from_secs(5),
            selectors: Selector::ALL.to_vec(),
            verbose: false,
        }
    }
}

impl Options {
    /// The arguments after `--steering-lab`; `None` after `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
        let mut o = Options::default();
        let valued = ["--requests", "--load", "--warmup-s", "--selector"];
        let Some(flags) = flags::read(args, &["--verbose"], &valued, USAGE)? else {
            return Ok(None);
        };
        for (flag, value) in flags {
            if flag == "--verbose" {
                o.verbose = true;
                continue;
            }
            match flag.as_str() {
                "--requests" => {
                    o.requests = value.parse().context("--requests: not a whole number")?;
                    if o.requests < 100 {
                        bail!("--requests must be at least 100");
                    }
                }
                "--load" => {
                    o.loads = value
                        .split(',')
                        .map(|v| match v.trim().parse::<f64>() {
                            Ok(x) if x > 0.0 && x < 100.0 => Ok(x / 100.0),
                            _ => bail!("--load: {v:?} is not a percentage in (0, 100)"),
                        })
                        .collect::<Result<_>>()?;
                }
                "--warmup-s" => {
                    let s: f64 = value.parse().context("--warmup-s: not a number")?;
                    if !(0.0..=60.0).contains(&s) {
                        bail!("--warmup-s must be within 0..=60");
                    }
                    o.warmup = Duration::from_secs_f64(s);
                }
                _ => {
                    o.selectors = value
                        .split(',')
                        .map(|v| v.trim().parse::<Selector>().map_err(|e| anyhow::anyhow!(e)))
                        .collect::<Result<_>>()?;
                }
            }
        }
        Ok(Some(o))
    }
}

/// The instances of the example's one service, for the header and the capacity.
struct Scenario {
    /// (instance, node, TOPS)
    instances: Vec<(String, String, f64)>,
}

impl Scenario {
    fn load() -> Result<Scenario> {
        let intent = intent::load_dir(&example_intent_dir()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let [svc] = intent.services.as_slice() else {
            bail!(
                "the example intent has {} services, the bench expects one",
                intent.services.len()
            );
        };
        let instances =
            svc.instances.iter().map(|i| (i.name.clone(), i.node.clone(), i.tops)).collect();
        Ok(Scenario { instances })
    }

    /// Requests/s all instances together serve.
    fn capacity_rps(&self) -> f64 {
        self.instances.iter().map(|(_, _, tops)| tops).sum::<f64>() / REQUEST_COST_TOPS
    }

    fn print(&self, o: &Options) {
        println!(
            "scenario: the example topology with requestCost {REQUEST_COST_TOPS} TOPs, one FIFO \
             worker per instance (fixed service time), every link a delay relay"
        );
        for (name, node, tops) in &self.instances {
            println!(
                "  {name:<8} on {node:<6} {tops:>5.0} TOPS: {:>5.1} ms per request, {:>6.0} req/s",
                REQUEST_COST_TOPS / tops * 1e3,
                tops / REQUEST_COST_TOPS
            );
        }
        println!(
            "  total capacity {:.0} req/s; round trips (declared) 6 ms to the edges, 32 ms to the \
             cloud",
            self.capacity_rps()
        );
        println!(
            "  policy: min-completion-time, slack 0.5, hysteresis 0.1, hold-down 2 s, no \
             constraint, no locality (baselines: none either)"
        );
        println!(
            "  {} cameras behind {INGRESS} (IPv6 and IPv4), Poisson, {REQUESTS_PER_FLOW} \
             requests per flow; per run a fresh lab, {:.0} s warm-up, then {} requests measured; \
             lost = no reply within {:.0} s",
            CAMERAS.len(),
            o.warmup.as_secs_f64(),
            o.requests,
            TIMEOUT.as_secs_f64()
        );
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "  the cameras, relays, instances and daemon share this machine's {cpus} CPUs: \
             'achieved' is the rate the cameras really sent at in the window"
        );
    }
}

/// Writes the bench's changes into a run's copy of the example intent.
fn edit_intent(dir: &Path) -> Result<()> {
    let path = dir.join("services.yaml");
    let text = std::fs::read_to_string(&path)?;
    let anchor = "  requestCost: 0.02\n";
    if !text.contains(anchor) {
        bail!("the example services.yaml no longer has {anchor:?}; update bench/steering_lab.rs");
    }
    std::fs::write(&path, text.replace(anchor, &format!("  requestCost: {REQUEST_COST_TOPS}\n")))?;
    std::fs::write(dir.join("policy.yaml"), POLICY)?;
    Ok(())
}

/// What one run measured in its window.
struct Measured {
    /// Round trips of the replies to the requests sent in the window, ms, sorted.
    rtts_ms: Vec<f64>,
    /// Requests sent in the window without a reply within the timeout.
    lost: u64,
    /// Replies per instance.
    by_instance: BTreeMap<String, u64>,
    window_s: f64,
    /// The controller's weights (in the scenario's instance order) from the cameras' start on:
    /// (seconds since the start, weights) at every change seen.
    weights: Vec<(f64, Vec<u32>)>,
}

/// A completion-time figure; `at_least` when lost requests count as the timeout in it, so the
/// real figure is higher.
#[derive(Clone, Copy)]
struct Figure {
    ms: f64,
    at_least: bool,
}

impl Figure {
    fn show(self) -> String {
        if self.ms.is_nan() {
            return "-".into();
        }
        let v = if self.ms >= 1000.0 {
            format!("{:.2} s", self.ms / 1000.0)
        } else {
            format!("{:.1} ms", self.ms)
        };
        if self.at_least { format!(">={v}") } else { v }
    }

    /// This figure against cats' one.
    fn ratio(self, cats: Option<Figure>) -> String {
        let Some(cats) = cats.filter(|c| c.ms > 0.0 && !self.ms.is_nan()) else {
            return "-".into();
        };
        let r = self.ms / cats.ms;
        match (self.at_least, cats.at_least) {
            (false, false) => format!("x{r:.2}"),
            (true, false) => format!(">=x{r:.2}"),
            (false, true) => format!("<=x{r:.2}"),
            (true, true) => "?".into(),
        }
    }
}

impl Measured {
    fn sent(&self) -> u64 {
        self.rtts_ms.len() as u64 + self.lost
    }

    fn achieved_rps(&self) -> f64 {
        self.sent() as f64 / self.window_s
    }

    /// Mean over every request of the window, a lost one counting as the timeout.
    fn mean(&self) -> Figure {
        let n = self.sent();
        if n == 0 {
            return Figure { ms: f64::NAN, at_least: false };
        }
        let total = self.rtts_ms.iter().sum::<f64>() + self.lost as f64 * timeout_ms();
        Figure { ms: total / n as f64, at_least: self.lost > 0 }
    }

    /// The 99th percentile over every request of the window; lost ones took longer than any
    /// reply, so it is exact unless it falls among them.
    fn p99(&self) -> Figure {
        let n = self.sent() as usize;
        if n == 0 {
            return Figure { ms: f64::NAN, at_least: false };
        }
        match self.rtts_ms.get((n * 99).div_ceil(100) - 1) {
            Some(&ms) => Figure { ms, at_least: false },
            None => Figure { ms: timeout_ms(), at_least: true },
        }
    }

    /// Mean and p99 of the replies alone.
    fn replies(&self) -> (Figure, Figure) {
        let n = self.rtts_ms.len();
        if n == 0 {
            let none = Figure { ms: f64::NAN, at_least: false };
            return (none, none);
        }
        let mean = self.rtts_ms.iter().sum::<f64>() / n as f64;
        let p99 = self.rtts_ms[(n * 99).div_ceil(100) - 1];
        (Figure { ms: mean, at_least: false }, Figure { ms: p99, at_least: false })
    }

    /// The weights in force `at` seconds after the cameras started.
    fn weights_at(&self, at: f64) -> Option<&[u32]> {
        self.weights.iter().take_while(|(t, _)| *t <= at).last().map(|(_, w)| w.as_slice())
    }

    /// Each instance's share of new flows over `from`..`to` seconds after the start: the
    /// weights averaged over the time each was in force (as the status showed them, polled).
    fn mean_shares(&self, from: f64, to: f64) -> Vec<f64> {
        let n = self.weights.first().map_or(0, |(_, w)| w.len());
        let mut shares = vec![0.0; n];
        let mut covered = 0.0;
        for (k, (t, w)) in self.weights.iter().enumerate() {
            let end = self.weights.get(k + 1).map_or(f64::INFINITY, |(next, _)| *next);
            let span = end.min(to) - t.max(from);
            let total: u32 = w.iter().sum();
            if span <= 0.0 || total == 0 {
                continue;
            }
            covered += span;
            for (s, w) in shares.iter_mut().zip(w) {
                *s += span * f64::from(*w) / f64::from(total);
            }
        }
        shares.iter_mut().for_each(|s| *s /= covered.max(f64::MIN_POSITIVE));
        shares
    }

    /// Weight changes during the window (`from`..`to` seconds after the start).
    fn changes_between(&self, from: f64, to: f64) -> usize {
        self.weights.iter().filter(|(t, _)| *t > from && *t <= to).count()
    }
}

fn timeout_ms() -> f64 {
    TIMEOUT.as_secs_f64() * 1e3
}

/// One run: what it measured, and how it went.
struct Outcome {
    measured: Measured,
    /// Seconds to build the lab and apply the first state; the whole run.
    setup_s: f64,
    total_s: f64,
    /// Namespaces of the run still present after its teardown.
    leftover: Vec<String>,
}

/// A reply or loss, with when its request was sent.
struct Seen {
    sent: Instant,
    reply: Option<(String, Duration)>,
}

/// Namespaces whose name starts with `prefix` (the lab names every one `<prefix><node>`).
fn namespaces_of(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// One selector at one rate, on a lab of its own that is gone when this returns.
fn run_one(selector: Selector, rate: f64, names: &[String], o: &Options) -> Result<Outcome> {
    let started = Instant::now();
    let env = LabEnv::start_with_selector(edit_intent, LabOptions::default(), selector)?;
    let namespaces = namespaces_of(env.lab().prefix());
    let setup_s = started.elapsed().as_secs_f64();
    let measured = measure(&env, rate, names, o);
    drop(env);
    let leftover: Vec<String> =
        namespaces.into_iter().filter(|n| Path::new("/run/netns").join(n).exists()).collect();
    Ok(Outcome { measured: measured?, setup_s, total_s: started.elapsed().as_secs_f64(), leftover })
}

/// The weights of the service at the ingress in the daemon's status, in `names` order.
fn weights(env: &LabEnv, names: &[String]) -> Option<Vec<u32>> {
    let status = env.daemon().status().ok()?;
    let sd = status["decisions"]
        .as_array()?
        .iter()
        .find(|sd| sd["ingress"].as_str() == Some(INGRESS))?;
    let ds = sd["decisions"].as_array()?;
    names
        .iter()
        .map(|n| {
            let d = ds.iter().find(|d| d["instance"].as_str() == Some(n.as_str()))?;
            Some(d["weight"].as_u64().unwrap_or(0) as u32)
        })
        .collect()
}

/// Runs the cameras for the warm-up and the window; collects what was sent in the window.
fn measure(env: &LabEnv, rate: f64, names: &[String], o: &Options) -> Result<Measured> {
    let window = Duration::from_secs_f64(o.requests as f64 / rate);
    let (tx, rx) = mpsc::channel::<Seen>();
    let stop = Arc::new(AtomicBool::new(false));
    let ns = env.lab().clients(INGRESS).path();
    let start = Instant::now();
    let mut cameras = Vec::new();
    for (name, target) in CAMERAS {
        let cfg = ClientConfig {
            name: name.to_string(),
            target: target.parse::<SocketAddr>()?,
            rate_per_sec: rate / CAMERAS.len() as f64,
            requests_per_flow: REQUESTS_PER_FLOW,
            duration: Some(o.warmup + window),
            timeout: TIMEOUT,
        };
        let (tx, stop) = (tx.clone(), stop.clone());
        cameras.push(netns::spawn_in(&ns, move || {
            run_client(cfg, stop, |event| {
                let now = Instant::now();
                let seen = match event {
                    ClientEvent::Reply { instance, rtt, .. } => {
                        Seen { sent: now - rtt, reply: Some((instance, rtt)) }
                    }
                    // The client gives up on a request TIMEOUT after sending it.
                    ClientEvent::Lost { .. } => Seen { sent: now - TIMEOUT, reply: None },
                    ClientEvent::FlowStarted { .. } => return,
                };
                let _ = tx.send(seen);
            })
        })?);
    }
    drop(tx);

    let (from, to) = (start + o.warmup, start + o.warmup + window);
    // The cameras end on their own; this is only against a hang.
    let deadline = to + TIMEOUT + Duration::from_secs(10);
    let mut m = Measured {
        rtts_ms: Vec::with_capacity(o.requests),
        lost: 0,
        by_instance: BTreeMap::new(),
        window_s: window.as_secs_f64(),
        weights: Vec::new(),
    };
    let mut next_poll = start;
    let mut interrupted = false;
    loop {
        let now = Instant::now();
        if now >= next_poll {
            next_poll = now + WEIGHTS_POLL;
            if let Some(w) = weights(env, names)
                && m.weights.last().is_none_or(|(_, last)| *last != w)
            {
                m.weights.push((now.duration_since(start).as_secs_f64(), w));
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(seen) => {
                if seen.sent < from || seen.sent >= to {
                    continue;
                }
                match seen.reply {
                    Some((instance, rtt)) => {
                        m.rtts_ms.push(rtt.as_secs_f64() * 1e3);
                        *m.by_instance.entry(instance).or_default() += 1;
                    }
                    None => m.lost += 1,
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if system::check_interrupted().is_err() {
            interrupted = true;
            stop.store(true, Ordering::Relaxed);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
        }
    }
    for camera in cameras {
        match camera.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("a camera failed: {e:#}"),
            Err(_) => bail!("a camera panicked"),
        }
    }
    if interrupted {
        bail!("interrupted");
    }
    m.rtts_ms.sort_by(f64::total_cmp);
    Ok(m)
}

fn show_weights(w: Option<&[u32]>) -> String {
    w.map_or("?".into(), |w| w.iter().map(u32::to_string).collect::<Vec<_>>().join("/"))
}

pub fn run(o: &Options) -> Result<()> {
    if !system::is_root() {
        bail!("must run as root: the lab creates network namespaces and loads XDP programs");
    }
    system::catch_interrupts()?;
    let started = Instant::now();
    let sc = Scenario::load()?;
    println!("== steering quality in the lab (real packets; figures, not pass/fail)");
    sc.print(o);
    let names: Vec<String> = sc.instances.iter().map(|(n, _, _)| n.clone()).collect();
    let mut short_of: Vec<String> = Vec::new();
    let mut failed = 0;
    for &load in &o.loads {
        system::check_interrupted()?;
        let rate = load * sc.capacity_rps();
        let window = o.requests as f64 / rate;
        let warmup = o.warmup.as_secs_f64();
        println!();
        println!(
            "load {:.0} %: {rate:.0} req/s offered ({} cameras x {:.0} req/s), {} requests in \
             {window:.1} s after {warmup:.0} s warm-up",
            load * 100.0,
            CAMERAS.len(),
            rate / CAMERAS.len() as f64,
            o.requests,
        );
        let mut outcomes: Vec<(Selector, Result<Outcome>)> = Vec::new();
        for &selector in &o.selectors {
            system::check_interrupted()?;
            // LabEnv tears the lab down on unwinding too; a panic ends this run, not the bench.
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| run_one(selector, rate, &names, o)))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the run panicked")));
            if let Ok(out) = &result {
                eprintln!(
                    "  ({selector}: lab up in {:.1} s, whole run {:.1} s)",
                    out.setup_s, out.total_s
                );
            }
            outcomes.push((selector, result));
        }
        let cats = outcomes.iter().find_map(|(s, r)| match (s, r) {
            (Selector::Cats, Ok(out)) => Some((out.measured.mean(), out.measured.p99())),
            _ => None,
        });
        let shares: String = names.iter().map(|n| format!("{n:>9}")).collect();
        println!(
            "  {:<14}{:>11}{:>11}{:>11}{:>11}{:>14}{:>12}{:>22}  {shares}",
            "selector",
            "mean",
            "p99",
            "mean/cats",
            "p99/cats",
            "lost",
            "achieved",
            "worst instance"
        );
        for (selector, result) in &outcomes {
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    failed += 1;
                    println!("  {:<14}failed: {e:#}", selector.name());
                    continue;
                }
            };
            let m = &out.measured;
            let sent = m.sent().max(1) as f64;
            let shares: String = names
                .iter()
                .map(|n| {
                    let k = m.by_instance.get(n).copied().unwrap_or(0);
                    format!("{:>8.0}%", k as f64 * 100.0 / m.rtts_ms.len().max(1) as f64)
                })
                .collect();
            // The largest load offered to one instance: rate x its share of new flows / what
            // it serves. From 100 % on its queue grows for the whole run.
            let worst = m
                .mean_shares(warmup, warmup + window)
                .iter()
                .zip(&sc.instances)
                .map(|(share, (name, _, tops))| (rate * share / (tops / REQUEST_COST_TOPS), name))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let worst = match worst {
                Some((load, name)) => format!(
                    "{:.0}% {name}{}",
                    load * 100.0,
                    if load >= 1.0 { " (over)" } else { "" }
                ),
                None => "?".into(),
            };
            let expected = rate * window;
            let keeps_up = m.sent() as f64 >= expected - BEHIND_SIGMAS * expected.sqrt();
            println!(
                "  {:<14}{:>11}{:>11}{:>11}{:>11}{:>14}{:>12}{worst:>22}  {shares}",
                selector.name(),
                m.mean().show(),
                m.p99().show(),
                m.mean().ratio(cats.map(|c| c.0)),
                m.p99().ratio(cats.map(|c| c.1)),
                format!("{} ({:.1}%)", m.lost, m.lost as f64 * 100.0 / sent),
                format!("{:.0}/s{}", m.achieved_rps(), if keeps_up { "" } else { "!" }),
            );
            let mut detail = format!(
                "weights {} at the window's start, {} at its end, {} changes in it",
                show_weights(m.weights_at(warmup)),
                show_weights(m.weights_at(warmup + window)),
                m.changes_between(warmup, warmup + window)
            );
            if m.lost > 0 {
                let (mean, p99) = m.replies();
                detail.push_str(&format!(
                    "; the {} replies alone: mean {}, p99 {}",
                    m.rtts_ms.len(),
                    mean.show(),
                    p99.show()
                ));
            }
            println!("  {:<14}{detail}", "");
            if o.verbose {
                let changes: Vec<String> = m
                    .weights
                    .iter()
                    .map(|(t, w)| format!("{t:.1} s {}", show_weights(Some(w))))
                    .collect();
                println!("  {:<14}weight changes: {}", "", changes.join(", "));
            }
            if !keeps_up {
                short_of.push(format!(
                    "load {:.0} % with {selector}: offered {rate:.0} req/s, the cameras sent {:.0} \
                     ({:.0} % of the capacity)",
                    load * 100.0,
                    m.achieved_rps(),
                    m.achieved_rps() / sc.capacity_rps() * 100.0
                ));
            }
            if !out.leftover.is_empty() {
                println!("    warning: namespaces left behind: {}", out.leftover.join(", "));
            }
        }
    }
    println!();
    println!(
        "  mean, p99: completion time (round trip measured by the camera) of every request sent \
         in the window; a lost one (no reply within {:.0} s) counts as {:.0} s, so a figure with \
         losses is a lower bound (>=) and so is its ratio. Worst instance: the largest load \
         offered to one instance (its share of the weights over the window x the offered rate / \
         what it serves); at 100 % or more ('over') its queue grows for the whole run and the \
         figures grow with the run's length. Instance columns: where the replies came from; \
         weights in the order {}. ! the cameras sent fewer requests than the offered \
         rate gives, by more than {BEHIND_SIGMAS} standard deviations of a Poisson count.",
        TIMEOUT.as_secs_f64(),
        TIMEOUT.as_secs_f64(),
        names.join("/"),
    );
    if short_of.is_empty() {
        println!("  the cameras kept the offered rate in every run");
    } else {
        println!("  the lab did not reach every load:");
        for s in &short_of {
            println!("    {s}");
        }
    }
    if failed > 0 {
        println!("  {failed} run(s) failed (see above)");
    }
    println!("steering lab bench took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
