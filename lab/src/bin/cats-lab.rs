//! `cats-lab`: the lab's building blocks as processes, one subcommand each, all stopping
//! cleanly on SIGINT/SIGTERM.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use cats_lab::{
    client::{ClientConfig, ClientEvent, ClientSummary, run_client},
    instance::{InstanceConfig, run_instance},
    relay::run_relay,
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cats-lab", about = "The emulated cats lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab of a lab file, run cats on it and show where requests go.
    Run {
        /// The lab file, e.g. examples/smart-traffic/lab.yaml.
        file: PathBuf,
    },
    /// Forward frames between two interfaces with a one-way delay per direction.
    Delay(DelayArgs),
    /// Run an emulated compute instance.
    Instance(InstanceArgs),
    /// Run an emulated camera sending requests to a service address.
    Client(ClientArgs),
}

#[derive(Args)]
struct DelayArgs {
    #[arg(long)]
    a: String,
    #[arg(long)]
    b: String,
    /// Delay from a to b, in milliseconds.
    #[arg(long)]
    ms_ab: f64,
    /// Delay from b to a, in milliseconds.
    #[arg(long)]
    ms_ba: f64,
}

#[derive(Args)]
struct InstanceArgs {
    #[arg(long)]
    name: String,
    /// Service addresses to serve on, e.g. [fd00:5::1]:7000 (must be local, e.g. on lo).
    #[arg(long, num_args = 1.., required = true)]
    listen: Vec<SocketAddr>,
    /// Speed in tera-operations per second.
    #[arg(long)]
    tops: f64,
    /// Work per request in tera-operations.
    #[arg(long)]
    request_cost: f64,
    /// Requests served in parallel.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Write metrics JSON here every second.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
}

#[derive(Args)]
struct ClientArgs {
    #[arg(long)]
    name: String,
    /// Service address, e.g. [fd00:5::1]:7000.
    #[arg(long)]
    target: SocketAddr,
    /// Mean requests per second (Poisson arrivals).
    #[arg(long)]
    rate: f64,
    /// Requests per flow; each flow uses a new source port.
    #[arg(long)]
    requests_per_flow: u32,
    /// Stop after this many seconds; default: run until interrupted.
    #[arg(long)]
    duration_s: Option<f64>,
    /// A request without a reply after this many milliseconds counts as lost.
    #[arg(long, default_value_t = 1000.0)]
    timeout_ms: f64,
    /// Print one JSON object per event instead of a summary line per second.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // `run` prints its own table; the daemon's and relays' logs would drown it (RUST_LOG=info
    // brings them back).
    let default_level = if matches!(cli.command, Command::Run { .. }) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let stop = stop_on_signals()?;
    match cli.command {
        Command::Run { file } => cats_lab::run::run(&file, stop),
        Command::Delay(args) => delay(args, stop),
        Command::Instance(args) => instance(args, stop),
        Command::Client(args) => client(args, stop),
    }
}

fn delay(args: DelayArgs, stop: Arc<AtomicBool>) -> Result<()> {
    run_relay(&args.a, &args.b, millis(args.ms_ab)?, millis(args.ms_ba)?, stop)
}

fn instance(args: InstanceArgs, stop: Arc<AtomicBool>) -> Result<()> {
    let cfg = InstanceConfig {
        name: args.name,
        listen: args.listen,
        tops: args.tops,
        request_cost: args.request_cost,
        workers: args.workers,
        metrics_file: args.metrics_file,
    };
    run_instance(cfg, stop)
}

fn client(args: ClientArgs, stop: Arc<AtomicBool>) -> Result<()> {
    let cfg = ClientConfig {
        name: args.name,
        target: args.target,
        rate_per_sec: args.rate,
        requests_per_flow: args.requests_per_flow,
        duration: args.duration_s.map(Duration::try_from_secs_f64).transpose()?,
        timeout: millis(args.timeout_ms)?,
    };
    let summary = if args.json {
        let s = run_client(cfg, stop, |e| println!("{}", event_json(&e)))?;
        println!("{}", summary_json(&s));
        s
    } else {
        let mut window = Window::new();
        let s = run_client(cfg, stop, |e| window.add(e))?;
        window.flush();
        s
    };
    if !args.json {
        print_summary(&summary);
    }
    Ok(())
}

fn millis(ms: f64) -> Result<Duration> {
    Ok(Duration::try_from_secs_f64(ms / 1e3)?)
}

fn event_json(e: &ClientEvent) -> serde_json::Value {
    match e {
        ClientEvent::FlowStarted { flow, local } => {
            serde_json::json!({"event": "flow", "flow": flow, "local": local.to_string()})
        }
        ClientEvent::Reply { flow, seq, instance, rtt, queue_us, service_us } => {
            serde_json::json!({
                "event": "reply", "flow": flow, "seq": seq, "instance": instance,
                "rtt_ms": rtt.as_secs_f64() * 1e3, "queue_us": queue_us, "service_us": service_us,
            })
        }
        ClientEvent::Lost { flow, seq } => {
            serde_json::json!({"event": "lost", "flow": flow, "seq": seq})
        }
    }
}

fn summary_json(s: &ClientSummary) -> serde_json::Value {
    let one = |i: &cats_lab::client::InstanceSummary| {
        serde_json::json!({
            "sent": i.sent, "received": i.received, "lost": i.lost,
            "mean_rtt_ms": i.mean_rtt.as_secs_f64() * 1e3,
            "p99_rtt_ms": i.p99_rtt.as_secs_f64() * 1e3,
        })
    };
    let per: serde_json::Map<_, _> =
        s.per_instance.iter().map(|(k, v)| (k.clone(), one(v))).collect();
    serde_json::json!({"event": "summary", "flows": s.flows, "total": one(&s.total),
        "per_instance": per})
}

fn print_summary(s: &ClientSummary) {
    let t = &s.total;
    println!(
        "total: {} flows, sent {}, received {}, lost {}, mean {:.1} ms, p99 {:.1} ms",
        s.flows,
        t.sent,
        t.received,
        t.lost,
        t.mean_rtt.as_secs_f64() * 1e3,
        t.p99_rtt.as_secs_f64() * 1e3
    );
    for (name, i) in &s.per_instance {
        println!(
            "  {name}: sent {}, received {}, lost {}, mean {:.1} ms, p99 {:.1} ms",
            i.sent,
            i.received,
            i.lost,
            i.mean_rtt.as_secs_f64() * 1e3,
            i.p99_rtt.as_secs_f64() * 1e3
        );
    }
}

/// One readable line per second: replies per instance with their mean RTT, and losses.
struct Window {
    started: Instant,
    printed: Instant,
    replies: std::collections::BTreeMap<String, (u64, Duration)>,
    lost: u64,
    flow: u64,
}

impl Window {
    fn new() -> Self {
        let now = Instant::now();
        Window { started: now, printed: now, replies: Default::default(), lost: 0, flow: 0 }
    }

    fn add(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::FlowStarted { flow, .. } => self.flow = flow,
            ClientEvent::Reply { instance, rtt, .. } => {
                let r = self.replies.entry(instance).or_default();
                r.0 += 1;
                r.1 += rtt;
            }
            ClientEvent::Lost { .. } => self.lost += 1,
        }
        if self.printed.elapsed() >= Duration::from_secs(1) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut line =
            format!("t={:>5.1}s flow={:<4}", self.started.elapsed().as_secs_f64(), self.flow);
        for (name, (n, total)) in &self.replies {
            let mean = total.as_secs_f64() * 1e3 / *n as f64;
            line += &format!(" {name}: {n} @ {mean:.1} ms;");
        }
        line += &format!(" lost {}", self.lost);
        println!("{line}");
        self.replies.clear();
        self.lost = 0;
        self.printed = Instant::now();
    }
}

/// A flag set by SIGINT or SIGTERM; a second signal exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    extern "C" fn on_signal(_: libc::c_int) {
        // Only atomic loads and stores here: async-signal-safe.
        if let Some(stop) = STOP.get()
            && stop.swap(true, Ordering::SeqCst)
        {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    let stop = STOP.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction with a zeroed struct plus a handler that only touches atomics.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
    }
    Ok(stop)
}
