//! `--failover`: how long the flows of a failed target take to reach its backup, and how many
//! requests they lose, for each failure kind, in the example lab (delay relays, emulated
//! instances, the daemon in this process).
//!
//! One run: a stream of 8 flows at 800 requests/s in all (a request every 10 ms per flow,
//! the resolution of the figures) from behind gw; after 1 s the failure (edge1-a's process
//! stops, the core-edge1 link is cut, or the whole edge1 node dies); the stream goes on until
//! the prober reported edge1-a unreachable and 1 s more; then the failure is repaired and the
//! next run waits until the controller gives edge1-a flows again. A flow's failover time is
//! the time from the dead instance's last reply to the first reply from its backup (edge2-a);
//! the median and the worst are over every affected flow of every run. The service is made
//! ten times cheaper (requestCost 0.002) so one edge takes the whole stream after a failure.
//!
//! Each setting gets a fresh lab; the detection time it asks for (interval x multiplier) is
//! the in-run reference the failover times are divided by. Nothing is asserted on timing.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cats_tests::{lab_env::LabEnv, stream::RequestStream};

use crate::flags;

const USAGE: &str = "\
usage: cats-bench --failover [--runs N] [--settings LIST]

  --runs N         failures of each kind per setting (default 5)
  --settings LIST  health settings as INTERVALxMULTIPLIER in ms, comma-separated
                   (default 100x3,30x3: the default 300 ms detection, and a ~100 ms one)";

const DEAD: &str = "edge1-a";
const BACKUP: &str = "edge2-a";

pub struct Options {
    runs: usize,
    settings: Vec<(u32, u32)>,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
        let mut o = Options { runs: 5, settings: vec![(100, 3), (30, 3)] };
        let Some(flags) = flags::read(args, &[], &["--runs", "--settings"], USAGE)? else {
            return Ok(None);
        };
        for (flag, value) in flags {
            match flag.as_str() {
                "--runs" => {
                    o.runs =
                        value.parse().ok().filter(|n| *n > 0).with_context(|| {
                            format!("--runs: {value:?} is not a positive number")
                        })?
                }
                _ => {
                    o.settings = value
                        .split(',')
                        .map(|s| {
                            let (i, m) =
                                s.split_once('x').context("expected INTERVALxMULTIPLIER")?;
                            Ok((i.trim().parse()?, m.trim().parse()?))
                        })
                        .collect::<Result<_>>()
                        .with_context(|| format!("--settings: {value:?}"))?
                }
            }
        }
        Ok(Some(o))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Instance,
    Link,
    Node,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Instance, Kind::Link, Node];

    fn label(self) -> &'static str {
        match self {
            Kind::Instance => "instance process dies",
            Kind::Link => "link core-edge1 cut",
            Kind::Node => "node edge1 dies",
        }
    }

    fn inject(self, env: &mut LabEnv) -> Result<()> {
        let lab = env.lab_mut();
        match self {
            Kind::Instance => lab.stop_instance(DEAD),
            Kind::Link => lab.cut_link("core", "edge1"),
            Kind::Node => lab.kill_node("edge1"),
        }
    }

    fn repair(self, env: &mut LabEnv) -> Result<()> {
        let lab = env.lab_mut();
        match self {
            Kind::Instance => lab.start_instance(DEAD),
            Kind::Link => lab.restore_link("core", "edge1"),
            Kind::Node => lab.revive_node("edge1"),
        }
    }
}
use Kind::Node;

/// What the runs of one failure kind measured.
#[derive(Default)]
struct Figures {
    times: Vec<Duration>,
    lost: Vec<usize>,
    stranded: usize,
}

pub fn run(o: &Options) -> Result<()> {
    if !crate::system::is_root() {
        bail!("must run as root: it builds a lab of network namespaces");
    }
    println!("failover: {} runs per failure kind; stream of 8 flows at 800 req/s from gw", o.runs);
    for &(interval, multiplier) in &o.settings {
        let detection = Duration::from_millis(u64::from(interval * multiplier));
        println!(
            "\nhealth {{intervalMs: {interval}, multiplier: {multiplier}}}: detection {detection:?}"
        );
        let mut env = LabEnv::start(|dir| tune(dir, interval, multiplier))?;
        println!(
            "  {:<24} {:>10} {:>10} {:>12} {:>12} {:>9}",
            "failure", "median", "worst", "median/det", "lost median", "lost max"
        );
        for kind in Kind::ALL {
            let mut f = Figures::default();
            for _ in 0..o.runs {
                one_run(&mut env, kind, &mut f).with_context(|| kind.label())?;
            }
            f.times.sort();
            f.lost.sort();
            let median = f.times.get(f.times.len() / 2).copied();
            let ms = |d: Option<Duration>| {
                d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            };
            let ratio = median.map_or("-".into(), |m| {
                format!("x{:.2}", m.as_secs_f64() / detection.as_secs_f64())
            });
            println!(
                "  {:<24} {:>10} {:>10} {:>12} {:>12} {:>9}{}",
                kind.label(),
                ms(median),
                ms(f.times.last().copied()),
                ratio,
                f.lost.get(f.lost.len() / 2).copied().unwrap_or(0),
                f.lost.last().copied().unwrap_or(0),
                if f.stranded > 0 {
                    format!("  ({} flows never moved)", f.stranded)
                } else {
                    String::new()
                }
            );
        }
    }
    println!(
        "\nfailover time: last reply from {DEAD} to the first from {BACKUP}, per affected flow"
    );
    Ok(())
}

/// The example intent, its service ten times cheaper, with the health setting.
fn tune(dir: &Path, interval: u32, multiplier: u32) -> Result<()> {
    let services = std::fs::read_to_string(dir.join("services.yaml"))?;
    let cheaper = services.replace("requestCost: 0.02\n", "requestCost: 0.002\n");
    if cheaper == services {
        bail!("the example's requestCost is not 0.02 any more");
    }
    std::fs::write(dir.join("services.yaml"), cheaper)?;
    let policy = std::fs::read_to_string(dir.join("policy.yaml"))?;
    let set = policy
        .replace("    intervalMs: 100\n", &format!("    intervalMs: {interval}\n"))
        .replace("    multiplier: 3\n", &format!("    multiplier: {multiplier}\n"));
    if !set.contains("  health:\n") {
        bail!("the example policy has no health section any more");
    }
    std::fs::write(dir.join("policy.yaml"), set)?;
    Ok(())
}

fn one_run(env: &mut LabEnv, kind: Kind, f: &mut Figures) -> Result<()> {
    wait_until(env, "edge1-a chosen and reachable", |s| {
        health_unreachable(s).is_empty() && weight(s, DEAD) > 0
    })?;
    let stream = RequestStream::start(
        &env.lab().clients("gw").path(),
        "[2001:db8:ca75::1]:7000".parse()?,
        8,
        800.0,
    )?;
    stream.settle(Duration::from_millis(500), Duration::from_secs(10))?;
    kind.inject(env)?;
    let waited = wait_until(env, "edge1-a unreachable", |s| health_unreachable(s) == [DEAD]);
    std::thread::sleep(Duration::from_secs(1));
    let log = stream.stop();
    kind.repair(env)?;
    waited?;
    let failover = log.failover(DEAD);
    f.times.extend(failover.flows.iter().filter_map(|fl| fl.time()));
    f.lost.push(failover.lost());
    f.stranded += failover.stranded().len();
    Ok(())
}

fn health_unreachable(status: &serde_json::Value) -> Vec<String> {
    let list = status["nodes"]["gw"]["health"]["unreachable"].as_array().cloned();
    list.unwrap_or_default().iter().filter_map(|v| v.as_str().map(String::from)).collect()
}

fn weight(status: &serde_json::Value, instance: &str) -> u64 {
    let decisions = status["decisions"][0]["decisions"].as_array().cloned().unwrap_or_default();
    let d = decisions.iter().find(|d| d["instance"] == instance);
    d.and_then(|d| d["weight"].as_u64()).unwrap_or(0)
}

fn wait_until(env: &LabEnv, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(status) = env.daemon().status()
            && pred(&status)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what}: not within 30 s")
}
