//! Steering quality: how long requests take under each instance-selection policy, in a seeded
//! discrete-event simulation. No root, no namespaces, no packets: `cats-bench --steering`.
//!
//! A benchmark, not a test: it prints figures and ratios and asserts nothing about them.
//!
//! # The model
//!
//! - **Topology** (from the seed): 8 ingress sites and 12 compute sites. The one-way latency
//!   from each ingress to each site is uniform in 2.5..100 ms (round trips 5..200 ms), except
//!   that sites 0..7 are the edge of ingress 0..7: 2.5..5 ms one way from it. Sites 8..11 are
//!   nobody's edge. Capacity per site is log-uniform in 1..100 TOPS.
//! - **Requests**: one service; every request costs 0.05 TOPs. Each site is one FIFO server
//!   (M/G/1-like, one request at a time at the site's full TOPS), so a request's service time
//!   is exponential with mean `cost / tops` (50 ms at 1 TOPS, 0.5 ms at 100 TOPS).
//! - **Arrivals**: Poisson at every ingress, rates unequal (shares log-uniform over a factor
//!   of 4), their sum set so that `offered load = Σ rate × cost / Σ tops` is 50 %, 80 % or 95 %.
//!   Arrival times, ingresses, request sizes (the exponential variate that scales the service
//!   time) and the uniform variate a random choice uses are drawn once per load and replayed
//!   for every policy and report period (common random numbers).
//! - **Completion time** = one-way latency to the site + wait in its queue + service time +
//!   one-way latency back. Every request is a new flow (no affinity pinning).
//! - **Reports**: every period T (1 s and 100 ms by default) each site reports what it measured
//!   over the last period: utilisation (busy time / T), queue depth at the report instant
//!   (waiting + in service), mean service time of the requests completed in the period (the
//!   previous value if none completed; none until the first completes) and its request rate.
//!   Each ingress also knows its own request rate over the last period. Policies decide from
//!   the last report only; none sees the true, instantaneous queue.
//! - The first 10 % of the run (by arrival time) is warm-up and not counted. Requests still
//!   queued when arrivals stop are served to the end and counted.
//!
//! # The policies
//!
//! 1. `nearest`: lowest round trip (anycast).
//! 2. `least-loaded`: lowest reported utilisation (ties: lowest round trip), all new requests
//!    of the period.
//! 3. `random`: uniform over the sites.
//! 4. `seed-formula`: the first in ascending `latency_ms × 0.6 + compute_tops × 0.4`, as the
//!    seed document proposes, with `latency_ms` the round trip. It prefers the weakest
//!    compute; reproduced as written.
//! 5. `cats`: the controller's own selector, `cats_controller::compile::select::decide`,
//!    called once per ingress and period with the reported metrics, the ingresses planned one
//!    after another (largest demand first) against one ledger of what the earlier ones send
//!    to each site, as the controller's compiler does; requests are split by its
//!    integer weights, at random in proportion, as the headend's Maglev table does for new
//!    flows.
//!
//! And, for reference only (no part of the goal), `capacity-split`: static, random in
//! proportion to TOPS, blind to latency and reports.
//!
//! `--what-if` adds two rows that call the same selector with other inputs, to show what it
//! would take (no part of the goal either):
//! - `cats/own-rate`: each candidate's `request_rate` is this ingress's own rate to it over the
//!   last period (what its headend sent there), not the site's total, so the selector's
//!   background utilisation is everybody else's load.
//! - `cats/joint`: the ingresses are planned one after another (largest demand first) against
//!   one capacity ledger: each candidate's utilisation is what the ingresses planned before
//!   have taken of it (`Σ demand × weight share × service time`), with no reported metric at
//!   all; only the ingresses' measured demands drive it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use crate::flags;
use anyhow::{Context, Result, bail};
use cats_controller::compile::select;
use cats_controller::intent::{Objective, Scoring};

pub const USAGE: &str = "\
usage: cats-bench --steering [--seed N] [--requests N] [--period-ms LIST] [--load LIST]
                           [--what-if]

  Steering quality: a seeded discrete-event simulation of requests over a generated topology
  (8 ingresses, 12 compute sites), comparing instance-selection policies by request
  completion time (round trip + queueing + service). Needs neither root nor namespaces.

  --seed N          topology and arrivals (default 1)
  --requests N      requests per load (default 200000)
  --period-ms LIST  metric report periods in ms, comma-separated (default 1000,100)
  --load LIST       offered loads in percent of the total capacity (default 50,80,95)
  --what-if         also the selector with other inputs: its request rate per ingress
                    (cats/own-rate), and all ingresses planned on one capacity ledger
                    (cats/joint); see bench/steering.rs";

const INGRESSES: usize = 8;
const SITES: usize = 12;
/// Tera-operations one request costs.
const REQUEST_COST_TOPS: f64 = 0.05;
/// Share of the run, by arrival time, left out of the figures.
const WARMUP: f64 = 0.1;
/// The goal: cats' p99 at this load at least `GOAL_PERCENT` below the best baseline.
const GOAL_LOAD: f64 = 0.8;
const GOAL_PERCENT: f64 = 30.0;

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub requests: usize,
    pub periods_ms: Vec<f64>,
    pub loads: Vec<f64>,
    pub what_if: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            requests: 200_000,
            periods_ms: vec![1000.0, 100.0],
            loads: vec![0.5, 0.8, 0.95],
            what_if: false,
        }
    }
}

impl Options {
    /// The arguments after `--steering`; `None` after `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
        let mut o = Options::default();
        let valued = ["--seed", "--requests", "--period-ms", "--load"];
        let Some(flags) = flags::read(args, &["--what-if"], &valued, USAGE)? else {
            return Ok(None);
        };
        for (flag, value) in flags {
            if flag == "--what-if" {
                o.what_if = true;
                continue;
            }
            let list = || -> Result<Vec<f64>> {
                value
                    .split(',')
                    .map(|v| match v.trim().parse::<f64>() {
                        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
                        _ => bail!("{flag}: {v:?} is not a positive number"),
                    })
                    .collect()
            };
            match flag.as_str() {
                "--seed" => o.seed = value.parse().context("--seed: not a whole number")?,
                "--requests" => {
                    o.requests = value.parse().context("--requests: not a whole number")?;
                    if o.requests < 1000 {
                        bail!("--requests must be at least 1000");
                    }
                }
                "--period-ms" => o.periods_ms = list()?,
                _ => {
                    o.loads = list()?.into_iter().map(|p| p / 100.0).collect();
                    if o.loads.iter().any(|l| *l >= 1.0) {
                        bail!("--load must be below 100 (percent)");
                    }
                }
            }
        }
        Ok(Some(o))
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers: splitmix64 seeds xorshift64*, one stream per purpose.

struct Rng(u64);

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut state = seed ^ splitmix64(&mut stream.clone());
        let x = splitmix64(&mut state);
        Rng(if x == 0 { 1 } else { x })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    fn log_range(&mut self, low: f64, high: f64) -> f64 {
        self.range(low.ln(), high.ln()).exp()
    }

    /// Exponential with mean 1, by inverse transform.
    fn exp(&mut self) -> f64 {
        -(1.0 - self.uniform()).ln()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario and arrivals.

struct Scenario {
    one_way_ms: [[f64; SITES]; INGRESSES],
    tops: [f64; SITES],
    /// Share of all requests arriving at each ingress; sums to 1.
    share: [f64; INGRESSES],
}

impl Scenario {
    fn generate(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed, 0);
        let mut one_way_ms = [[0.0; SITES]; INGRESSES];
        for row in &mut one_way_ms {
            for ms in row.iter_mut() {
                *ms = rng.range(2.5, 100.0);
            }
        }
        for (i, row) in one_way_ms.iter_mut().enumerate() {
            row[i] = rng.range(2.5, 5.0);
        }
        let mut tops = [0.0; SITES];
        for t in &mut tops {
            *t = rng.log_range(1.0, 100.0);
        }
        let mut share = [0.0; INGRESSES];
        for s in &mut share {
            *s = rng.log_range(1.0, 4.0);
        }
        let sum: f64 = share.iter().sum();
        share.iter_mut().for_each(|s| *s /= sum);
        Scenario { one_way_ms, tops, share }
    }

    fn mean_service_ms(&self, site: usize) -> f64 {
        REQUEST_COST_TOPS / self.tops[site] * 1000.0
    }

    /// Requests/s all sites together can serve.
    fn capacity_rps(&self) -> f64 {
        self.tops.iter().sum::<f64>() / REQUEST_COST_TOPS
    }

    fn print(&self, seed: u64) {
        println!(
            "scenario (seed {seed}): {INGRESSES} ingresses, {SITES} compute sites, one FIFO server \
             per site, request cost {REQUEST_COST_TOPS} TOPs (exponential service, mean cost/tops)"
        );
        println!(
            "  total capacity {:.1} TOPS = {:.0} req/s; site i < {INGRESSES} is the edge of \
             ingress i",
            self.tops.iter().sum::<f64>(),
            self.capacity_rps()
        );
        let mut head = String::from("  site                   ");
        let mut tops = String::from("  TOPS                   ");
        let mut svc = String::from("  mean service ms        ");
        for s in 0..SITES {
            head.push_str(&format!("{:>7}", format!("s{s}")));
            tops.push_str(&format!("{:>7.1}", self.tops[s]));
            svc.push_str(&format!("{:>7.2}", self.mean_service_ms(s)));
        }
        println!("{head}\n{tops}\n{svc}");
        println!("  round trip ms from (share of requests):");
        for i in 0..INGRESSES {
            let mut line = format!("    in{i} ({:>4.1} %)         ", self.share[i] * 100.0);
            for s in 0..SITES {
                line.push_str(&format!("{:>7.1}", 2.0 * self.one_way_ms[i][s]));
            }
            println!("{line}");
        }
    }
}

#[derive(Clone, Copy)]
struct Request {
    at_ms: f64,
    ingress: usize,
    /// Exponential, mean 1: the service time is `work × cost / tops` wherever it goes.
    work: f64,
    /// Uniform in [0, 1): the draw of any random choice about this request.
    pick: f64,
}

fn arrivals(sc: &Scenario, seed: u64, load: f64, n: usize) -> Vec<Request> {
    // One stream per load value, so a load's arrivals do not depend on which others run.
    let mut rng = Rng::new(seed, 1 + (load * 1e4).round() as u64);
    let mean_gap_ms = 1000.0 / (load * sc.capacity_rps());
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += rng.exp() * mean_gap_ms;
            let u = rng.uniform();
            let mut acc = 0.0;
            let mut ingress = INGRESSES - 1;
            for (i, s) in sc.share.iter().enumerate() {
                acc += s;
                if u < acc {
                    ingress = i;
                    break;
                }
            }
            Request { at_ms: t, ingress, work: rng.exp(), pick: rng.uniform() }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sites: one FIFO server each, advanced in site-arrival order (Lindley's recursion).

/// What a site reports at the end of a period.
#[derive(Clone, Copy, Debug, Default)]
struct Report {
    utilization: f64,
    queue_depth: f64,
    service_ms: Option<f64>,
    request_rate: f64,
}

struct Site {
    mean_service_ms: f64,
    /// When the server has finished everything admitted so far.
    free_at: f64,
    /// Idle time before `free_at`.
    idle: f64,
    /// Busy time up to the previous report.
    busy_reported: f64,
    /// (finish, service time) of the requests admitted and not finished at the last report.
    in_system: VecDeque<(f64, f64)>,
    /// Requests on their way: (arrival time as bits, request index), earliest first.
    pending: BinaryHeap<Reverse<(u64, u32)>>,
    arrivals_in_period: u32,
    service_ms: Option<f64>,
    /// Service time of everything sent here, for the offered load.
    work_ms: f64,
}

impl Site {
    fn new(mean_service_ms: f64) -> Site {
        Site {
            mean_service_ms,
            free_at: 0.0,
            idle: 0.0,
            busy_reported: 0.0,
            in_system: VecDeque::new(),
            pending: BinaryHeap::new(),
            arrivals_in_period: 0,
            service_ms: None,
            work_ms: 0.0,
        }
    }

    fn send(&mut self, arrive_ms: f64, index: usize, work: f64) {
        // Non-negative floats order as their bit patterns do.
        self.pending.push(Reverse((arrive_ms.to_bits(), index as u32)));
        self.work_ms += work * self.mean_service_ms;
    }

    /// Admits every request arriving before `until`; writes each one's completion time.
    fn admit_until(&mut self, until: f64, reqs: &[Request], back_ms: &[f64], done: &mut [f64]) {
        while let Some(&Reverse((bits, index))) = self.pending.peek() {
            let arrive = f64::from_bits(bits);
            if arrive >= until {
                break;
            }
            self.pending.pop();
            let r = &reqs[index as usize];
            let service = r.work * self.mean_service_ms;
            if arrive > self.free_at {
                self.idle += arrive - self.free_at;
                self.free_at = arrive;
            }
            self.free_at += service;
            self.in_system.push_back((self.free_at, service));
            self.arrivals_in_period += 1;
            done[index as usize] = self.free_at + back_ms[r.ingress] - r.at_ms;
        }
    }

    fn report(&mut self, now: f64, period_ms: f64) -> Report {
        let busy = now - self.idle - (now - self.free_at).max(0.0);
        let utilization = ((busy - self.busy_reported) / period_ms).clamp(0.0, 1.0);
        self.busy_reported = busy;
        let (mut sum, mut count) = (0.0, 0u32);
        while let Some(&(finish, service)) = self.in_system.front() {
            if finish > now {
                break;
            }
            sum += service;
            count += 1;
            self.in_system.pop_front();
        }
        if count > 0 {
            self.service_ms = Some(sum / f64::from(count));
        }
        let request_rate = f64::from(self.arrivals_in_period) * 1000.0 / period_ms;
        self.arrivals_in_period = 0;
        Report {
            utilization,
            queue_depth: self.in_system.len() as f64,
            service_ms: self.service_ms,
            request_rate,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Policies.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Nearest,
    LeastLoaded,
    Random,
    SeedFormula,
    Cats,
    CapacitySplit,
    CatsOwnRate,
    CatsJoint,
}

const POLICIES: [Policy; 6] = [
    Policy::Nearest,
    Policy::LeastLoaded,
    Policy::Random,
    Policy::SeedFormula,
    Policy::Cats,
    Policy::CapacitySplit,
];
const WHAT_IF: [Policy; 2] = [Policy::CatsOwnRate, Policy::CatsJoint];

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Nearest => "nearest",
            Policy::LeastLoaded => "least-loaded",
            Policy::Random => "random",
            Policy::SeedFormula => "seed-formula",
            Policy::Cats => "cats",
            Policy::CapacitySplit => "capacity-split",
            Policy::CatsOwnRate => "cats/own-rate",
            Policy::CatsJoint => "cats/joint",
        }
    }

    /// One of the baselines the goal compares cats with.
    fn is_baseline(self) -> bool {
        matches!(self, Policy::Nearest | Policy::LeastLoaded | Policy::Random | Policy::SeedFormula)
    }
}

/// Where each ingress sends new requests until the next report.
struct Chooser {
    policy: Policy,
    /// One site per ingress (nearest, least-loaded, seed-formula).
    fixed: [usize; INGRESSES],
    /// Cumulative integer weights per ingress (cats, capacity-split).
    cumulative: [[u32; SITES]; INGRESSES],
    /// The selector's last decisions per ingress, for its hysteresis.
    previous: Vec<Option<Vec<select::Decision>>>,
}

fn argmin(values: impl Iterator<Item = f64>) -> usize {
    values.enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).map_or(0, |(i, _)| i)
}

fn cumulate(weights: &[u32; SITES]) -> [u32; SITES] {
    let mut acc = 0;
    weights.map(|w| {
        acc += w;
        acc
    })
}

impl Chooser {
    fn new(policy: Policy, sc: &Scenario) -> Chooser {
        let nearest = |i: usize| argmin(sc.one_way_ms[i].iter().copied());
        let fixed: [usize; INGRESSES] = std::array::from_fn(|i| match policy {
            Policy::SeedFormula => {
                argmin((0..SITES).map(|s| 2.0 * sc.one_way_ms[i][s] * 0.6 + sc.tops[s] * 0.4))
            }
            _ => nearest(i),
        });
        let by_tops = cumulate(&sc.tops.map(|t| (t * 100.0).round() as u32));
        Chooser { policy, fixed, cumulative: [by_tops; INGRESSES], previous: vec![None; INGRESSES] }
    }

    /// A new report. Over the last period: `demand_rps`, each ingress's request rate;
    /// `own_rps`, each ingress's rate to each site.
    fn on_report(
        &mut self,
        sc: &Scenario,
        reports: &[Report; SITES],
        demand_rps: &[f64; INGRESSES],
        own_rps: &[[f64; SITES]; INGRESSES],
    ) {
        match self.policy {
            Policy::LeastLoaded => {
                for i in 0..INGRESSES {
                    // Utilisation first, round trip breaks ties.
                    self.fixed[i] = (0..SITES)
                        .min_by(|&a, &b| {
                            reports[a]
                                .utilization
                                .total_cmp(&reports[b].utilization)
                                .then(sc.one_way_ms[i][a].total_cmp(&sc.one_way_ms[i][b]))
                        })
                        .unwrap_or(0);
                }
            }
            Policy::Cats | Policy::CatsOwnRate | Policy::CatsJoint => {
                self.plan_cats(sc, reports, demand_rps, own_rps);
            }
            _ => {}
        }
    }

    /// The selector's weights for every ingress, from the inputs this variant gives it.
    fn plan_cats(
        &mut self,
        sc: &Scenario,
        reports: &[Report; SITES],
        demand_rps: &[f64; INGRESSES],
        own_rps: &[[f64; SITES]; INGRESSES],
    ) {
        // The controller plans a service's ingresses one after another on one ledger.
        let mut order: [usize; INGRESSES] = std::array::from_fn(|i| i);
        order.sort_by(|a, b| demand_rps[*b].total_cmp(&demand_rps[*a]));
        // Requests/s the ingresses planned so far send to each site (cats/joint's ledger).
        let mut planned_rps = [0.0; SITES];
        for i in order {
            let inputs: [Report; SITES] = std::array::from_fn(|s| match self.policy {
                Policy::CatsOwnRate => Report { request_rate: own_rps[i][s], ..reports[s] },
                Policy::CatsJoint => Report {
                    utilization: (planned_rps[s] * sc.mean_service_ms(s) / 1000.0).min(1.0),
                    ..Report::default()
                },
                _ => reports[s],
            });
            let elsewhere =
                if self.policy == Policy::CatsJoint { [0.0; SITES] } else { planned_rps };
            let weights =
                cats_weights(sc, i, &inputs, &elsewhere, demand_rps[i], &mut self.previous[i]);
            let total: u32 = weights.iter().sum();
            if total > 0 {
                for (planned, w) in planned_rps.iter_mut().zip(weights) {
                    *planned += demand_rps[i] * f64::from(w) / f64::from(total);
                }
            }
            self.cumulative[i] = cumulate(&weights);
        }
    }

    fn choose(&self, r: &Request) -> usize {
        match self.policy {
            Policy::Random => ((r.pick * SITES as f64) as usize).min(SITES - 1),
            Policy::Cats | Policy::CapacitySplit | Policy::CatsOwnRate | Policy::CatsJoint => {
                let cumulative = &self.cumulative[r.ingress];
                let total = cumulative[SITES - 1];
                if total == 0 {
                    return self.fixed[r.ingress];
                }
                let target = r.pick * f64::from(total);
                cumulative.iter().position(|&c| f64::from(c) > target).unwrap_or(SITES - 1)
            }
            _ => self.fixed[r.ingress],
        }
    }
}

const SITE_NAMES: [&str; SITES] =
    ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11"];

/// The one call into the controller's selector: every site is a candidate instance of the
/// service, seen from ingress `ingress` with the last reported metrics.
fn cats_weights(
    sc: &Scenario,
    ingress: usize,
    reports: &[Report],
    planned_elsewhere_rps: &[f64; SITES],
    demand_rps: f64,
    previous: &mut Option<Vec<select::Decision>>,
) -> [u32; SITES] {
    let candidates: Vec<select::Candidate> = (0..SITES)
        .map(|s| select::Candidate {
            instance: SITE_NAMES[s].to_string(),
            site: SITE_NAMES[s].to_string(),
            group: 0,
            path_one_way_ms: sc.one_way_ms[ingress][s],
            jitter_ms: 0.0,
            loss: 0.0,
            request_cost: REQUEST_COST_TOPS,
            tops: sc.tops[s],
            utilization: reports[s].utilization,
            queue_depth: reports[s].queue_depth,
            service_time_ms: reports[s].service_ms,
            request_rate: reports[s].request_rate,
            planned_elsewhere_rps: planned_elsewhere_rps[s],
        })
        .collect();
    let policy = select::Policy {
        objective: Objective::MinCompletionTime,
        max_network_ms: None,
        min_free_tops: None,
        slack: 0.5,
        hysteresis: 0.1,
        demand_rps,
        scoring: Scoring::default(),
    };
    let decisions = select::decide(&candidates, &policy, previous.as_deref());
    let mut weights = [0; SITES];
    for d in &decisions {
        if let Some(s) = SITE_NAMES.iter().position(|n| *n == d.instance) {
            weights[s] = d.weight;
        }
    }
    *previous = Some(decisions);
    weights
}

// ---------------------------------------------------------------------------------------------
// One run: a policy over one arrival sequence.

struct Outcome {
    mean_ms: f64,
    p99_ms: f64,
    /// The largest offered load of any site: work sent there / the run's duration.
    worst_site_load: f64,
}

fn simulate(sc: &Scenario, reqs: &[Request], period_ms: f64, policy: Policy) -> Outcome {
    let mut sites: Vec<Site> = (0..SITES).map(|s| Site::new(sc.mean_service_ms(s))).collect();
    // Per site, the one-way latency back to each ingress.
    let back_ms: Vec<Vec<f64>> =
        (0..SITES).map(|s| (0..INGRESSES).map(|i| sc.one_way_ms[i][s]).collect()).collect();
    let mut done = vec![f64::NAN; reqs.len()];
    let mut chooser = Chooser::new(policy, sc);
    let mut sent = [[0u32; SITES]; INGRESSES];
    let mut next = 0;
    let mut period = 0u64;
    while next < reqs.len() {
        let now = period as f64 * period_ms;
        let reports: [Report; SITES] = std::array::from_fn(|s| {
            sites[s].admit_until(now, reqs, &back_ms[s], &mut done);
            sites[s].report(now, period_ms)
        });
        let own = sent.map(|row| row.map(|n| f64::from(n) * 1000.0 / period_ms));
        let demand = own.map(|row| row.iter().sum());
        sent = [[0; SITES]; INGRESSES];
        chooser.on_report(sc, &reports, &demand, &own);
        let end = now + period_ms;
        while next < reqs.len() && reqs[next].at_ms < end {
            let r = &reqs[next];
            let s = chooser.choose(r);
            sites[s].send(r.at_ms + sc.one_way_ms[r.ingress][s], next, r.work);
            sent[r.ingress][s] += 1;
            next += 1;
        }
        period += 1;
    }
    for (s, site) in sites.iter_mut().enumerate() {
        site.admit_until(f64::INFINITY, reqs, &back_ms[s], &mut done);
    }

    let horizon = reqs.last().map_or(1.0, |r| r.at_ms);
    let warmup = WARMUP * horizon;
    let mut counted: Vec<f64> =
        reqs.iter().zip(&done).filter(|(r, _)| r.at_ms >= warmup).map(|(_, d)| *d).collect();
    counted.sort_by(f64::total_cmp);
    let mean_ms = counted.iter().sum::<f64>() / counted.len() as f64;
    let p99_index = ((counted.len() as f64 * 0.99).ceil() as usize).clamp(1, counted.len()) - 1;
    let worst_site_load = sites.iter().map(|s| s.work_ms / horizon).fold(0.0, f64::max);
    Outcome { mean_ms, p99_ms: counted[p99_index], worst_site_load }
}

// ---------------------------------------------------------------------------------------------
// The report.

/// A duration with its unit: ms below a second, s above.
fn ms(v: f64) -> String {
    if v >= 1000.0 { format!("{:.2} s", v / 1000.0) } else { format!("{v:.1} ms") }
}

fn ratio(v: f64, cats: f64) -> String {
    let r = v / cats;
    if r >= 1000.0 { format!("x{r:.0}") } else { format!("x{r:.2}") }
}

pub fn run(o: &Options) -> Result<()> {
    let started = Instant::now();
    let sc = Scenario::generate(o.seed);
    println!("== steering quality (simulation; figures, not pass/fail)");
    sc.print(o.seed);
    println!(
        "  {} requests per load, first {:.0} % of each run is warm-up; report periods {} ms",
        o.requests,
        WARMUP * 100.0,
        o.periods_ms.iter().map(|p| format!("{p}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  cats = select::decide per ingress and period, ingresses planned in turn (largest \
         demand first) on one ledger as the compiler does (min-completion-time, slack 0.5, \
         hysteresis 0.1, demand = the ingress's measured rate, candidates' metrics = the sites' \
         last reports), new requests split at random by its weights"
    );
    if o.what_if {
        println!(
            "  what-if: cats/own-rate = the same, but request_rate = this ingress's own rate to \
             the site; cats/joint = ingresses planned in turn on one capacity ledger, demands only"
        );
    }
    let loads: Vec<(f64, Vec<Request>)> =
        o.loads.iter().map(|&l| (l, arrivals(&sc, o.seed, l, o.requests))).collect();
    for &period_ms in &o.periods_ms {
        let mut goal = None;
        for (load, reqs) in &loads {
            let horizon_s = reqs.last().map_or(0.0, |r| r.at_ms) / 1000.0;
            println!();
            println!(
                "load {:.0} % ({:.0} req/s offered, {horizon_s:.1} s simulated), report period \
                 {period_ms} ms",
                load * 100.0,
                load * sc.capacity_rps()
            );
            let what_if: &[Policy] = if o.what_if { &WHAT_IF } else { &[] };
            let outcomes: Vec<(Policy, Outcome)> = POLICIES
                .iter()
                .chain(what_if)
                .map(|&p| (p, simulate(&sc, reqs, period_ms, p)))
                .collect();
            let cats = &outcomes.iter().find(|(p, _)| *p == Policy::Cats).expect("cats runs").1;
            println!(
                "  {:<16}{:>12}{:>12}{:>11}{:>11}{:>13}",
                "policy", "mean", "p99", "mean/cats", "p99/cats", "worst site"
            );
            for (p, out) in &outcomes {
                let note = match p {
                    Policy::CapacitySplit => "  (reference)",
                    Policy::CatsOwnRate | Policy::CatsJoint => "  (what-if)",
                    _ => "",
                };
                let unstable = if out.worst_site_load >= 1.0 { " (over)" } else { "" };
                println!(
                    "  {:<16}{:>12}{:>12}{:>11}{:>11}{:>7.0} %{unstable}{note}",
                    p.name(),
                    ms(out.mean_ms),
                    ms(out.p99_ms),
                    ratio(out.mean_ms, cats.mean_ms),
                    ratio(out.p99_ms, cats.p99_ms),
                    out.worst_site_load * 100.0,
                );
            }
            if (load - GOAL_LOAD).abs() < 1e-9 {
                let best = outcomes
                    .iter()
                    .filter(|(p, _)| p.is_baseline())
                    .min_by(|a, b| a.1.p99_ms.total_cmp(&b.1.p99_ms))
                    .map(|(p, out)| (*p, out.p99_ms, out.worst_site_load))
                    .expect("baselines run");
                goal = Some((cats.p99_ms, cats.worst_site_load, best));
            }
        }
        println!(
            "  (worst site: the largest load offered to one site over the run; at 100 % or more \
             ('over') its queue grows for the whole run and the figures grow with --requests)"
        );
        if let Some((cats, cats_worst, (best, best_p99, best_worst))) = goal {
            let below = (1.0 - cats / best_p99) * 100.0;
            let verdict = if below >= GOAL_PERCENT { "met" } else { "NOT met" };
            let how = if below >= 0.0 {
                format!("{below:.0}% below")
            } else {
                format!("{:.0}% above", -below)
            };
            println!(
                "cats p99 at {:.0}% load is {how} the best baseline (goal: >= {GOAL_PERCENT:.0}%): \
                 {verdict} [period {period_ms} ms; best baseline {}, p99 {}; cats p99 {}]",
                GOAL_LOAD * 100.0,
                best.name(),
                ms(best_p99),
                ms(cats),
            );
            if cats_worst >= 1.0 || best_worst >= 1.0 {
                println!(
                    "  caution: {} sent some site more than its capacity: the p99 then grows \
                     with the run's length (--requests) and there is no steady state to compare",
                    if cats_worst >= 1.0 && best_worst >= 1.0 {
                        format!("cats and {}", best.name())
                    } else if cats_worst >= 1.0 {
                        "cats".to_string()
                    } else {
                        best.name().to_string()
                    }
                );
            }
        }
    }
    println!("\nsteering simulation took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The simulator's own arithmetic, against queueing theory; nothing about any policy.

    use super::*;

    /// Poisson arrivals at `rate_per_ms` into one site with mean service `service_ms`.
    fn single_queue(rate_per_ms: f64, service_ms: f64, n: usize) -> (Vec<Request>, Site) {
        let mut rng = Rng::new(7, 99);
        let mut t = 0.0;
        let reqs: Vec<Request> = (0..n)
            .map(|_| {
                t += rng.exp() / rate_per_ms;
                Request { at_ms: t, ingress: 0, work: rng.exp(), pick: 0.0 }
            })
            .collect();
        let mut site = Site::new(service_ms);
        for (i, r) in reqs.iter().enumerate() {
            site.send(r.at_ms, i, r.work);
        }
        (reqs, site)
    }

    #[test]
    fn exponential_variates_have_mean_one() {
        let mut rng = Rng::new(3, 4);
        let n = 1_000_000;
        let mean = (0..n).map(|_| rng.exp()).sum::<f64>() / f64::from(n);
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
    }

    #[test]
    fn fifo_server_matches_mm1_sojourn() {
        // rho = 0.8: mean time in system = S / (1 - rho) = 5 S.
        let (reqs, mut site) = single_queue(0.08, 10.0, 400_000);
        let mut done = vec![f64::NAN; reqs.len()];
        site.admit_until(f64::INFINITY, &reqs, &[0.0], &mut done);
        let mean = done.iter().sum::<f64>() / done.len() as f64;
        assert!((mean / 50.0 - 1.0).abs() < 0.05, "mean sojourn {mean} ms, theory 50 ms");
    }

    #[test]
    fn reports_add_up_to_the_offered_load() {
        let (reqs, mut site) = single_queue(0.06, 10.0, 100_000);
        let mut done = vec![f64::NAN; reqs.len()];
        let period = 100.0;
        let (mut utilization, mut arrivals, mut service, mut periods) = (0.0, 0.0, 0.0, 0);
        let end = reqs.last().unwrap().at_ms;
        let mut now = period;
        while now < end {
            site.admit_until(now, &reqs, &[0.0], &mut done);
            let r = site.report(now, period);
            utilization += r.utilization;
            arrivals += r.request_rate * period / 1000.0;
            service += r.service_ms.unwrap_or(0.0);
            periods += 1;
            now += period;
        }
        let mean_utilization = utilization / f64::from(periods);
        assert!((mean_utilization - 0.6).abs() < 0.02, "{mean_utilization}");
        let admitted = reqs.iter().filter(|r| r.at_ms < now - period).count() as f64;
        assert!((arrivals - admitted).abs() < 0.5, "{arrivals} reported, {admitted} admitted");
        let service = service / f64::from(periods);
        assert!((service / 10.0 - 1.0).abs() < 0.05, "mean reported service {service} ms");
    }
}
