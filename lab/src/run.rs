//! `cats-lab run`: builds the lab of a scenario, runs cats on it, sends camera traffic, fires
//! the scenario's events, and prints per second which instance answered and how fast.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use cats_controller::{dataplane::program::ensure_bpffs, intent, netns, paths};
use serde_json::Value;

use crate::{
    client::{ClientConfig, ClientEvent, run_client},
    control::{Daemon, daemon_config, lab_api_socket, remove_lab_pins, start_instances},
    netns::unique_name,
    network::LabNetwork,
    scenario::{self, Event, Scenario},
};

/// One reply or loss, tagged with the camera that saw it.
struct Seen {
    camera: String,
    event: ClientEvent,
}

/// Per-instance figures of one reporting window (or the whole run).
#[derive(Default)]
struct Window {
    rtts_ms: BTreeMap<String, Vec<f64>>,
    new_flows: BTreeMap<String, u32>,
    lost: u64,
}

impl Window {
    fn add(&mut self, e: &ClientEvent, first_reply_of_flow: bool) {
        match e {
            ClientEvent::Reply { instance, rtt, .. } => {
                self.rtts_ms.entry(instance.clone()).or_default().push(rtt.as_secs_f64() * 1e3);
                if first_reply_of_flow {
                    *self.new_flows.entry(instance.clone()).or_default() += 1;
                }
            }
            ClientEvent::Lost { .. } => self.lost += 1,
            ClientEvent::FlowStarted { .. } => {}
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn p99(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0)
}

/// Runs the lab of `lab_file` until its duration ends or `stop` is set (Ctrl-C).
pub fn run(lab_file: &Path, stop: Arc<AtomicBool>) -> Result<()> {
    let scenario = scenario::load(lab_file)?;
    let prefix = unique_name("cats");
    let run_dir = std::env::temp_dir().join(format!("cats-lab-{prefix}"));
    let intent_dir = run_dir.join("intent");
    copy_yaml(&scenario.intent, &intent_dir)?;
    let intent = intent::load_dir(&intent_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bpffs = PathBuf::from(paths::DEFAULT_BPFFS);
    ensure_bpffs(&bpffs)?;

    println!(
        "cats lab: {} nodes, {} links, {} services; namespaces {prefix}*",
        intent.topology.nodes.len(),
        intent.topology.links.len(),
        intent.services.len()
    );
    for link in &intent.topology.links {
        println!(
            "  link {:>6} - {:<6} {:>5.1} ms one way (delay relay)",
            link.a, link.b, link.latency_ms
        );
    }
    let mut lab = LabNetwork::build_with(&intent, &prefix, true, &scenario.link_delays)?;
    let cleanup = Cleanup {
        intent: intent.clone(),
        bpffs: bpffs.clone(),
        prefix: prefix.clone(),
        run_dir: run_dir.clone(),
    };
    start_instances(&mut lab, &intent, &run_dir)?;
    for svc in &intent.services {
        for i in &svc.instances {
            println!(
                "  instance {:<8} on {:<6} {:>6.1} TOPS -> {:.1} ms per request when idle",
                i.name,
                i.node,
                i.tops,
                svc.request_cost / i.tops * 1e3
            );
        }
    }
    let daemon = Daemon::start(daemon_config(&lab, &intent_dir, &bpffs, &run_dir))?;
    let status = daemon.wait_applied(Duration::from_secs(30))?;
    println!("controller: every node applied generation {}", status["generation"]);
    print_decisions(&status);
    // Where the picture goes: kept after the teardown, unlike the run directory.
    let graph_dir = std::env::temp_dir().join("cats-lab-graph");
    print_how_to_observe(&lab_api_socket(&run_dir), &graph_dir);

    let (tx, rx) = mpsc::channel::<Seen>();
    let camera_stop = Arc::new(AtomicBool::new(false));
    let mut cameras: Vec<JoinHandle<()>> = Vec::new();
    for cam in &scenario.cameras {
        let cfg = ClientConfig {
            name: cam.name.clone(),
            target: cam.target,
            rate_per_sec: cam.rate_per_second,
            requests_per_flow: cam.requests_per_flow,
            duration: None,
            timeout: Duration::from_secs(1),
        };
        let (tx, stop, name) = (tx.clone(), camera_stop.clone(), cam.name.clone());
        let ns = lab.clients(&cam.ingress).path();
        let h = netns::spawn_in(&ns, move || {
            run_client(cfg, stop, |event| {
                let _ = tx.send(Seen { camera: name.clone(), event });
            })
            .map(drop)
        })?;
        cameras.push(std::thread::spawn(move || {
            if let Ok(Err(e)) = h.join() {
                eprintln!("lab: camera stopped: {e:#}");
            }
        }));
    }
    drop(tx);
    println!(
        "cameras: {}",
        scenario
            .cameras
            .iter()
            .map(|c| format!("{} ({} req/s to {})", c.name, c.rate_per_second, c.target))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{}",
        if scenario.duration_seconds == 0 {
            "running until Ctrl-C".to_string()
        } else {
            format!("running {} s (Ctrl-C ends earlier)", scenario.duration_seconds)
        }
    );

    let names: Vec<String> =
        intent.services.iter().flat_map(|s| s.instances.iter().map(|i| i.name.clone())).collect();
    let result = observe(&scenario, &names, &rx, &stop, &daemon, &mut lab, &intent_dir);
    // The picture of how the run ended.
    match write_graph(&lab_api_socket(&run_dir), &graph_dir) {
        Ok(svg) => println!("picture of the network as the run ended: {}", svg.display()),
        Err(e) => eprintln!("lab: drawing the network: {e:#}"),
    }

    camera_stop.store(true, Ordering::Relaxed);
    for cam in cameras {
        let _ = cam.join();
    }
    drop(daemon);
    drop(lab);
    drop(cleanup);
    println!("lab torn down: namespaces, pinned programs and maps removed");
    result
}

/// The per-second loop: prints a line a second, new controller decisions, and fires events.
fn observe(
    scenario: &Scenario,
    names: &[String],
    rx: &mpsc::Receiver<Seen>,
    stop: &AtomicBool,
    daemon: &Daemon,
    lab: &mut LabNetwork,
    intent_dir: &Path,
) -> Result<()> {
    let start = Instant::now();
    let mut second = 1u64;
    let mut window = Window::default();
    let mut total = Window::default();
    let mut answered = std::collections::HashSet::new();
    let mut generation = daemon.status()?["generation"].clone();
    let mut reported_error = Value::Null;
    let mut unreachable = std::collections::BTreeMap::new();
    let mut pending: Vec<&Event> = scenario.events.iter().collect();
    print_header(names);
    loop {
        if stop.load(Ordering::Relaxed) {
            println!("interrupted");
            break;
        }
        if scenario.duration_seconds > 0
            && start.elapsed() >= Duration::from_secs(scenario.duration_seconds)
        {
            break;
        }
        while let Ok(seen) = rx.recv_timeout(Duration::from_millis(20)) {
            let first = match &seen.event {
                ClientEvent::Reply { flow, .. } => answered.insert((seen.camera.clone(), *flow)),
                _ => false,
            };
            window.add(&seen.event, first);
            total.add(&seen.event, first);
            if start.elapsed() >= Duration::from_secs(second) {
                break;
            }
        }
        if start.elapsed() < Duration::from_secs(second) {
            continue;
        }
        print_window(second, names, &window);
        window = Window::default();
        second += 1;

        let status = daemon.status()?;
        print_health(&status, &mut unreachable);
        if status["generation"] != generation {
            generation = status["generation"].clone();
            print_weights(&generation, &status);
        }
        if status["intent_error"] != reported_error {
            reported_error = status["intent_error"].clone();
            if let Some(e) = reported_error.as_str() {
                println!("controller: intent rejected, running state unchanged:\n{e}");
            }
        }
        let now = start.elapsed().as_secs();
        let (due, later): (Vec<&Event>, Vec<&Event>) =
            pending.into_iter().partition(|e| e.at_seconds <= now);
        pending = later;
        for event in due {
            println!("== t={}s: {}", event.at_seconds, event.say);
            fire(event, lab, intent_dir)?;
            print_header(names);
        }
    }
    println!("\nwhole run:");
    for name in names {
        let v = total.rtts_ms.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let flows = total.new_flows.get(name).unwrap_or(&0);
        if v.is_empty() {
            println!("  {name:<10} {:>6} replies", 0);
        } else {
            println!(
                "  {name:<10} {:>6} replies  mean {:>6.1} ms  p99 {:>6.1} ms  new flows {flows}",
                v.len(),
                mean(v),
                p99(v)
            );
        }
    }
    println!("  lost       {:>6}", total.lost);
    Ok(())
}

fn fire(event: &Event, lab: &mut LabNetwork, intent_dir: &Path) -> Result<()> {
    if let Some(load) = &event.load {
        let intent = intent::load_dir(intent_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let svc = intent
            .services
            .iter()
            .find(|s| s.instances.iter().any(|i| i.name == load.instance))
            .with_context(|| format!("no instance {} in the intent", load.instance))?;
        let port = svc.ports.first().map(|p| p.port).unwrap_or(crate::control::DEFAULT_PORT);
        let target = std::net::SocketAddr::new(svc.addresses[0], port);
        let cfg = ClientConfig {
            name: format!("load-{}", load.instance),
            target,
            rate_per_sec: load.rate_per_second,
            requests_per_flow: u32::MAX,
            duration: None,
            timeout: Duration::from_secs(2),
        };
        // Sent inside the instance's own namespace: it reaches that instance and no other.
        let ns = lab.instance(&load.instance).path();
        lab.spawn_in(&ns, "load", move |stop| run_client(cfg, stop, |_| {}).map(drop))?;
        println!(
            "   {} extra req/s straight to {} ({target})",
            load.rate_per_second, load.instance
        );
    }
    if let Some(dir) = &event.intent {
        copy_yaml(dir, intent_dir)?;
        println!("   intent files from {} copied over the running intent", dir.display());
    }
    if let Some(name) = &event.stop_instance {
        lab.stop_instance(name)?;
        println!("   {name} stopped: its sockets are closed, nothing answers there");
    }
    if let Some(name) = &event.start_instance {
        lab.start_instance(name)?;
        println!("   {name} started again");
    }
    Ok(())
}

fn print_header(names: &[String]) {
    let cols: Vec<String> = names.iter().map(|n| format!("{n:>22}")).collect();
    println!("{:>5} {} {:>6}  new flows went to", "t", cols.join(""), "lost");
}

fn print_window(second: u64, names: &[String], w: &Window) {
    let cols: Vec<String> = names
        .iter()
        .map(|n| match w.rtts_ms.get(n) {
            Some(v) if !v.is_empty() => {
                format!("{:>22}", format!("{:>3} req {:>6.1} ms", v.len(), mean(v)))
            }
            _ => format!("{:>22}", "-"),
        })
        .collect();
    let flows: Vec<String> = w.new_flows.iter().map(|(n, c)| format!("{n} x{c}")).collect();
    println!("{:>4}s {} {:>6}  {}", second, cols.join(""), w.lost, flows.join(", "));
}

/// One line per service and ingress: the new weights and the predictions behind them.
/// Prints what each headend's prober newly finds unreachable or reachable again.
fn print_health(status: &Value, seen: &mut std::collections::BTreeMap<String, Value>) {
    for (node, report) in status["nodes"].as_object().into_iter().flatten() {
        let now = &report["health"]["unreachable"];
        let before = seen.get(node).cloned().unwrap_or(Value::Array(Vec::new()));
        if now.is_array() && *now != before {
            let names = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            };
            let (now_names, before_names) = (names(now), names(&before));
            for gone in now_names.iter().filter(|n| !before_names.contains(n)) {
                println!(
                    "{node}: {gone} does not answer its health probes: its flows go to their backup"
                );
            }
            for back in before_names.iter().filter(|n| !now_names.contains(n)) {
                println!("{node}: {back} answers its health probes again");
            }
            seen.insert(node.clone(), now.clone());
        }
    }
}

fn print_weights(generation: &Value, status: &Value) {
    for sd in status["decisions"].as_array().into_iter().flatten() {
        let parts: Vec<String> = sd["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{} {} ({:.1} ms, util {:.2})",
                    d["instance"].as_str().unwrap_or("?"),
                    d["weight"],
                    d["predictedMs"].as_f64().unwrap_or(0.0),
                    d["utilization"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        println!("controller gen {generation}: weights {}", parts.join(", "));
    }
}

fn print_decisions(status: &Value) {
    for sd in status["decisions"].as_array().into_iter().flatten() {
        println!(
            "  {} at {}:",
            sd["service"].as_str().unwrap_or("?"),
            sd["ingress"].as_str().unwrap_or("?")
        );
        for d in sd["decisions"].as_array().into_iter().flatten() {
            let why = d["excluded"].as_str().map(|e| format!("  ({e})")).unwrap_or_default();
            println!(
                "    {:<10} weight {:>4}  network {:>5.1} ms + compute {:>6.1} ms (utilisation {:.2}) = {:>6.1} ms{why}",
                d["instance"].as_str().unwrap_or("?"),
                d["weight"],
                d["networkMs"].as_f64().unwrap_or(0.0),
                d["serviceMs"].as_f64().unwrap_or(0.0),
                d["utilization"].as_f64().unwrap_or(0.0),
                d["predictedMs"].as_f64().unwrap_or(0.0),
            );
        }
    }
}

/// Where catsctl is: next to this binary when it was built with it, else on the `PATH`.
fn catsctl_command() -> String {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("catsctl"))
        .filter(|p| p.exists())
        .map_or_else(|| "catsctl".to_string(), |p| p.display().to_string())
}

/// Says once how to look at the running lab: catsctl on its socket, the metrics endpoint.
fn print_how_to_observe(socket: &Path, graph_dir: &Path) {
    let get = |path| cats_controller::api::http::get_unix(socket, path, Duration::from_secs(5));
    let status: Option<cats_controller::api::views::StatusView> =
        get("/v1/status").ok().and_then(|b| serde_json::from_slice(&b).ok());
    let catsctl = format!("{} --socket {}", catsctl_command(), socket.display());
    println!("observe it while it runs (another terminal):");
    println!(
        "  {catsctl} instances      (also: status, nodes, services, paths, flows, explain SERVICE)"
    );
    println!(
        "  {catsctl} graph --out {}   (topology.svg: paths in use, latencies, site load)",
        graph_dir.display()
    );
    if let Some(addr) = status.and_then(|s| s.metrics_listen) {
        println!("  curl http://{addr}/metrics");
    }
}

/// Draws the network through the daemon's API into `dir`; returns the SVG's path.
fn write_graph(socket: &Path, dir: &Path) -> Result<PathBuf> {
    let body =
        cats_controller::api::http::get_unix(socket, "/v1/topology", Duration::from_secs(5))?;
    let topology = serde_json::from_slice(&body)?;
    let (_, svg) = cats_controller::graph::write(dir, &topology)?;
    Ok(svg)
}

/// Copies the YAML files of `from` into `to` (created if needed).
fn copy_yaml(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let name = path.file_name().context("file name")?;
            // Write then rename, so the daemon never reads a half-copied file.
            let tmp = to.join(format!(".{}.tmp", name.to_string_lossy()));
            std::fs::copy(&path, &tmp)?;
            std::fs::rename(&tmp, to.join(name))?;
        }
    }
    Ok(())
}

/// Removes the pins and run directory of the lab, also when the run fails half-way.
struct Cleanup {
    intent: intent::Intent,
    bpffs: PathBuf,
    prefix: String,
    run_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = remove_lab_pins(&self.intent, &self.bpffs, &self.prefix) {
            eprintln!("lab: removing pins: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
