//! cats-bench: what the headend and endpoint XDP programs cost per packet, measured with
//! BPF_PROG_TEST_RUN against the trivial `cats_pass` program in the same run.
//!
//! Runs as root. It builds its own pair of network namespaces (the router of the headend
//! tests with the endpoint tests' additions, `cats_tests::endpoint_fixture::router`: the FIB
//! knows the edge's locator, the client prefix and the instance through resolved neighbours),
//! loads three private dataplanes there (headend with long pins, headend with expiring pins,
//! endpoint of node 4) and deletes everything again on exit, Ctrl-C included. The host's
//! interfaces and routes are never touched.
//!
//! Two ways of timing, because the kernel's repeat loop does not restore the frame between
//! runs (checked on every run, see `repeat_check`):
//! - frames the program leaves as they are (`cats_pass`, traffic that is not for a service)
//!   run `--repeat` times inside one BPF_PROG_TEST_RUN call;
//! - frames the headend encapsulates, and every endpoint frame (End and End.X change SL and
//!   destination, End.DX6/DX4/DT6 decapsulate, transit lowers the hop limit), run once per
//!   call, `--calls` calls, and the kernel's per-call durations are summed. The same-method
//!   baseline of the section, measured in the same rounds, pays the same fixed cost per call,
//!   so ratios and differences are taken within a section.
//!
//! Every measurement is checked against the event and drop counters: a case whose packets did
//! not all take the intended path (affinity hit, affinity miss, not a service; segment
//! advanced, decapsulated, transit forwarded) fails the run.
//!
//! `--throughput` instead measures UDP throughput through the example lab's whole chain, with
//! cats' XDP at core and edge against the kernel's seg6/seg6local (see `bench/throughput.rs`).
//!
//! `--steering` instead runs the steering-quality simulation: instance-selection policies,
//! the controller's own selector among them, compared by request completion time over a
//! generated topology (see `bench/steering.rs`). It needs neither root nor namespaces.
//!
//! `--propagation` instead times a metric change on its way into a node's maps: an instance
//! report in the example lab until the gateway's pinned Maglev table has changed, per daemon
//! poll setting (see `bench/propagation.rs`).
//!
//! `--steering-lab` instead runs the comparison of `--steering` for real: the example lab
//! with a fresh daemon per selector (cats' and the baselines) and load, cameras sending at 50,
//! 80 and 95 % of the instances' capacity (see `bench/steering_lab.rs`).
//!
//! `--etcd` instead times desired states on their way through a real etcd: to 1,000 simulated
//! watchers (one TLS connection each), and from an intent change to the applied state of 10
//! real `catsd agent` processes in a lab (see `bench/etcd_propagation.rs`).

#[path = "../bench/cases.rs"]
mod cases;
#[path = "../bench/compile_scale.rs"]
mod compile_scale;
#[path = "../bench/endpoint.rs"]
mod endpoint;
#[path = "../bench/etcd_propagation.rs"]
mod etcd_propagation;
#[path = "../bench/failover.rs"]
mod failover;
#[path = "../bench/flags.rs"]
mod flags;
#[path = "../bench/propagation.rs"]
mod propagation;
#[path = "../bench/steering.rs"]
mod steering;
#[path = "../bench/steering_lab.rs"]
mod steering_lab;
#[path = "../bench/system.rs"]
mod system;
#[path = "../bench/throughput.rs"]
mod throughput;

use std::{process::ExitCode, time::Instant};

use anyhow::{Result, bail};
use cats_controller::netns;
use cats_tests::endpoint_fixture;

use crate::cases::Bench;

const USAGE: &str = "\
usage: cats-bench [--repeat N] [--calls N] [--rounds N]
       cats-bench --throughput
       cats-bench --compile
       cats-bench --propagation
       cats-bench --steering [--seed N] [--requests N] [--period-ms LIST] [--load LIST] [--what-if]
       cats-bench --steering-lab [--requests N] [--load LIST] [--warmup-s N] [--selector LIST]
                                 [--verbose]
       cats-bench --failover [--runs N] [--settings LIST]
       cats-bench --etcd [--rounds N] [--watchers N]

  --repeat N   runs per BPF_PROG_TEST_RUN call for frames the program leaves unchanged
               (default 1000000)
  --calls N    BPF_PROG_TEST_RUN calls of one run each for frames the program rewrites:
               the headend's encapsulated ones and every endpoint frame (default 100000)
  --rounds N   interleaved rounds; the median and min..max are printed (default 5)
  --throughput instead of the per-packet costs: UDP packets/s through the example lab
               (client -> gw -> core -> edge1 -> sink), cats XDP at core and edge1 against
               the kernel's seg6/seg6local there, as ratios (about 40 s)
  --compile    instead: the controller's compile time for 100, 1,000 and 10,000 nodes,
               from scratch and after one metric change (no root needed)
  --propagation instead: in the example lab, the time from an instance's report (edge1-a
               busy, then idle again) to the new entries in gw's pinned Maglev table, with
               the daemon polling every 200 ms (the lab's) and every 50 ms (about 90 s)
  --steering   instead: the steering-quality simulation (no root needed, a few seconds):
               mean and p99 request completion time per instance-selection policy, cats'
               selector among them; `cats-bench --steering --help` for its options
  --steering-lab instead: the same comparison run for real in the emulated lab, a fresh lab
               per selector and load (a few minutes); `cats-bench --steering-lab --help`
  --failover   instead: in the example lab, failover time and lost requests when an
               instance, a link or a node fails, per health setting (about 3 minutes);
               `cats-bench --failover --help`
  --etcd       instead: through a real etcd (TLS, client certificates), the time from a
               published change to 1,000 simulated watchers (one node's, and all of them),
               and from an intent change to the applied state of 10 real agents in a lab,
               against one plain put -> watch round trip (about 2 minutes);
               `cats-bench --etcd --help`

Must run as root (except --steering): it creates (and removes) its own network namespaces.";

/// Command line settings.
#[derive(Clone, Copy, Debug)]
pub struct Args {
    pub repeat: u32,
    pub calls: u32,
    pub rounds: usize,
    pub throughput: bool,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args { repeat: 1_000_000, calls: 100_000, rounds: 5, throughput: false };
    let valued = ["--repeat", "--calls", "--rounds"];
    let argv = std::env::args().skip(1);
    let Some(flags) = flags::read(argv, &["--throughput"], &valued, USAGE)? else {
        return Ok(None);
    };
    for (flag, value) in flags {
        if flag == "--throughput" {
            args.throughput = true;
            continue;
        }
        let n: u32 = value
            .parse()
            .map_err(|_| anyhow::anyhow!("{flag}: {value:?} is not a positive number"))?;
        if n == 0 {
            bail!("{flag} must be at least 1");
        }
        match flag.as_str() {
            "--repeat" => args.repeat = n,
            "--calls" => args.calls = n,
            _ => args.rounds = n as usize,
        }
    }
    Ok(Some(args))
}

fn run(args: Args) -> Result<()> {
    if !system::is_root() {
        bail!("must run as root: it creates network namespaces and loads XDP programs");
    }
    system::catch_interrupts()?;
    if args.throughput {
        return throughput::run();
    }
    let started = Instant::now();
    system::print_header(&args);
    for (flag, n) in [("--repeat", args.repeat), ("--calls", args.calls)] {
        if n < 100_000 {
            println!("warning: {flag} {n} is below 100000: expect noisy numbers");
        }
    }

    // Both namespaces are deleted when `r` is dropped: below, or on the way out of an error.
    let r = endpoint_fixture::router()?;
    let mac = r.mac;
    let report = netns::run_in(&r.ns.path(), move || Bench::new(args, mac)?.run())?;
    drop(r);
    report.print();
    let secs = started.elapsed().as_secs_f64();
    println!("total time {secs:.1} s (namespaces, loading, checks and measurements)");
    Ok(())
}

/// `--steering` anywhere: the simulation, with the other arguments as its options.
fn steering_main(argv: Vec<String>) -> ExitCode {
    let options = match steering::Options::parse(argv.into_iter().filter(|a| a != "--steering")) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cats-bench --steering: {e:#}");
            return ExitCode::from(2);
        }
    };
    match steering::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cats-bench --steering: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--steering-lab` anywhere: the comparison in the lab, with the other arguments as its options.
fn steering_lab_main(argv: Vec<String>) -> ExitCode {
    let args = argv.into_iter().filter(|a| a != "--steering-lab");
    let options = match steering_lab::Options::parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cats-bench --steering-lab: {e:#}");
            return ExitCode::from(2);
        }
    };
    match steering_lab::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cats-bench --steering-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--steering-lab") {
        return steering_lab_main(argv);
    }
    if argv.iter().any(|a| a == "--steering") {
        return steering_main(argv);
    }
    if argv.iter().any(|a| a == "--failover") {
        let args = argv.into_iter().filter(|a| a != "--failover");
        let options = match failover::Options::parse(args) {
            Ok(Some(options)) => options,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cats-bench --failover: {e:#}");
                return ExitCode::from(2);
            }
        };
        return match failover::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cats-bench --failover: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if argv.iter().any(|a| a == "--etcd") {
        let args = argv.into_iter().filter(|a| a != "--etcd");
        let options = match etcd_propagation::Options::parse(args) {
            Ok(Some(options)) => options,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cats-bench --etcd: {e:#}");
                return ExitCode::from(2);
            }
        };
        return match etcd_propagation::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cats-bench --etcd: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if argv.iter().any(|a| a == "--propagation") {
        return match propagation::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cats-bench --propagation: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if argv.iter().any(|a| a == "--compile") {
        return match compile_scale::run(&[100, 1_000, 10_000], 3) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cats-bench --compile: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cats-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cats-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
