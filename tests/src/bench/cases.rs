//! The measured cases, the counter checks that keep them honest, and the report.

use std::{net::Ipv6Addr, time::Duration};

use anyhow::{Result, bail, ensure};
use aya::programs::{TestRun, TestRunOptions};
use cats_common::{
    counters::{DropReason, Event},
    maps::{PROG_ENDPOINT, PROG_HEADEND, PROG_PASS},
};
use cats_controller::dataplane::Dataplane;
use cats_tests::{
    endpoint_fixture as node4,
    fixture::{self, PORT, SERVICE6},
    packets::udp6,
    router::NEXT_HOP_MAC,
    xdp::{self, XDP_PASS, XDP_REDIRECT},
};

use crate::{
    Args,
    endpoint::{self, Behaviour},
    system,
};

/// In the client prefix fd00:10::/64, which the endpoint's End.DT6 routes replies to.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x21);
/// Not a service address: the pass-through case.
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
pub const SPORT: u16 = 40000;
/// UDP payload bytes of every frame (Ethernet + IPv6 + UDP + this = 126 bytes), and of the
/// packets inside the endpoint's SRv6 frames.
pub const PAYLOAD: usize = 64;
/// Runs of the one-call checks of what the kernel's repeat loop does to a frame the program
/// rewrites.
const REPEAT_CHECK: u32 = 1000;
/// Runs (or calls) of the untimed warm-up of every case.
const WARMUP: u32 = 10_000;

/// How a case is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One BPF_PROG_TEST_RUN call, `--repeat` runs inside the kernel; the kernel's mean.
    Loop,
    /// `--calls` calls of one run each; the kernel's per-call durations summed.
    PerCall,
}

/// A block of the report: its cases share a method and a `cats_pass` baseline, measured in the
/// same rounds, which their ratios are taken against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Headend frames the program leaves unchanged, in-kernel loop.
    Loop,
    /// Headend frames, one run per call.
    PerCall,
    /// Endpoint frames, one run per call: every behaviour rewrites the frame.
    Endpoint,
}

impl Section {
    pub fn method(self) -> Method {
        match self {
            Section::Loop => Method::Loop,
            Section::PerCall | Section::Endpoint => Method::PerCall,
        }
    }
}

/// Which of the three dataplanes a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    /// The fixture's headend state: pins live for 30 s.
    Pinning,
    /// The same state with `affinity_timeout_ms: 0`: every pin is expired by the next packet.
    Expiring,
    /// Node 4's endpoint state and SIDs (`cats_tests::endpoint_fixture`).
    Endpoint,
}

/// Event and drop counters of one dataplane, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    events: [u64; Event::COUNT as usize],
    drops: [u64; DropReason::COUNT as usize],
}

impl Counts {
    fn read(dp: &Dataplane) -> Result<Self> {
        let mut c = Counts::default();
        for e in Event::ALL {
            c.events[*e as usize] = dp.events(*e)?;
        }
        for d in DropReason::ALL {
            c.drops[*d as usize] = dp.drops(*d)?;
        }
        Ok(c)
    }

    fn since(mut self, before: &Counts) -> Counts {
        for (now, then) in self.events.iter_mut().zip(before.events) {
            *now = now.wrapping_sub(then);
        }
        for (now, then) in self.drops.iter_mut().zip(before.drops) {
            *now = now.wrapping_sub(then);
        }
        self
    }

    fn add(&mut self, other: &Counts) {
        for (a, b) in self.events.iter_mut().zip(other.events) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
    }

    pub fn event(&self, e: Event) -> u64 {
        self.events[e as usize]
    }

    /// `affinity_hit 5, affinity_miss 0, ...`: the events in `always`, and every other event
    /// and drop that moved.
    fn describe(&self, always: &[Event]) -> String {
        let mut parts = Vec::new();
        for e in Event::ALL {
            let n = self.event(*e);
            if n != 0 || always.contains(e) {
                parts.push(format!("{} {n}", e.label()));
            }
        }
        for d in DropReason::ALL {
            let n = self.drops[*d as usize];
            if n != 0 {
                parts.push(format!("drop {} {n}", d.label()));
            }
        }
        parts.join(", ")
    }
}

/// One measured line of the report.
pub struct Case {
    pub name: &'static str,
    pub section: Section,
    plane: Plane,
    prog: &'static str,
    frame: Vec<u8>,
    /// The verdict every run must return.
    action: u32,
    /// Events every packet must count exactly once; every other event and every drop must
    /// stay at zero.
    events: &'static [Event],
    /// ns per packet, one per round.
    pub samples: Vec<f64>,
    /// Packets timed, over all rounds.
    pub packets: u64,
    /// Counter movements of the timed runs, over all rounds.
    pub counts: Counts,
}

impl Case {
    fn is_baseline(&self) -> bool {
        self.prog == PROG_PASS
    }

    pub fn method(&self) -> Method {
        self.section.method()
    }

    /// The events a report line always shows for this case.
    fn shown(&self) -> &'static [Event] {
        match self.plane {
            Plane::Pinning | Plane::Expiring => AFFINITY,
            Plane::Endpoint => self.events,
        }
    }
}

/// The headend's two affinity events, shown even at zero.
const AFFINITY: &[Event] = &[Event::AffinityHit, Event::AffinityMiss];

/// What the namespace thread hands back for printing.
pub struct Report {
    pub args: Args,
    pub cases: Vec<Case>,
    /// Counter movements of one call with repeat=REPEAT_CHECK on a pinned service frame.
    pub repeat_check: Counts,
    /// Counter movements of one call with repeat=REPEAT_CHECK on the endpoint's End frame.
    pub repeat_check_endpoint: Counts,
    /// The endpoint's frames, for the report.
    behaviours: Vec<Behaviour>,
    router_mac: [u8; 6],
}

/// The loaded dataplanes and the cases, inside the router namespace.
pub struct Bench {
    args: Args,
    pinning: Dataplane,
    expiring: Dataplane,
    endpoint: Dataplane,
    router_mac: [u8; 6],
    service: Vec<u8>,
    other: Vec<u8>,
    behaviours: Vec<Behaviour>,
}

impl Bench {
    /// Loads the three dataplanes; must run inside `endpoint_fixture::router`'s namespace.
    pub fn new(args: Args, router_mac: [u8; 6]) -> Result<Self> {
        let state = fixture::headend("cams", 1, 0);
        let mut pinning = Dataplane::load(None)?;
        pinning.apply_headend(&state)?;
        let mut expiring_state = state.clone();
        expiring_state.services[0].affinity_timeout_ms = 0;
        let mut expiring = Dataplane::load(None)?;
        expiring.apply_headend(&expiring_state)?;
        let endpoint = node4::load(&node4::state(false, false, &[]))?;
        let payload = [0x5a; PAYLOAD];
        Ok(Bench {
            args,
            pinning,
            expiring,
            endpoint,
            router_mac,
            service: udp6(CLIENT6, SERVICE6, SPORT, PORT, 64, &payload),
            other: udp6(CLIENT6, OTHER6, SPORT, PORT, 64, &payload),
            behaviours: endpoint::behaviours(router_mac),
        })
    }

    fn dp(&mut self, plane: Plane) -> &mut Dataplane {
        match plane {
            Plane::Pinning => &mut self.pinning,
            Plane::Expiring => &mut self.expiring,
            Plane::Endpoint => &mut self.endpoint,
        }
    }

    fn cases(&self) -> Vec<Case> {
        let case = |name, section, plane, prog, frame: &Vec<u8>, action, events| Case {
            name,
            section,
            plane,
            prog,
            frame: frame.clone(),
            action,
            events,
            samples: Vec::new(),
            packets: 0,
            counts: Counts::default(),
        };
        use Plane::*;
        use Section::*;
        let hit: &[Event] = &[Event::AffinityHit, Event::Redirected];
        let miss: &[Event] = &[Event::AffinityMiss, Event::Redirected];
        let mut cases = vec![
            case("baseline: cats_pass", Loop, Pinning, PROG_PASS, &self.service, XDP_PASS, &[]),
            case(
                "headend, not a service (pass)",
                Loop,
                Pinning,
                PROG_HEADEND,
                &self.other,
                XDP_PASS,
                &[Event::NotService],
            ),
            case("baseline: cats_pass", PerCall, Pinning, PROG_PASS, &self.service, XDP_PASS, &[]),
            case(
                "headend, not a service (pass)",
                PerCall,
                Pinning,
                PROG_HEADEND,
                &self.other,
                XDP_PASS,
                &[Event::NotService],
            ),
            case(
                "headend, affinity hit",
                PerCall,
                Pinning,
                PROG_HEADEND,
                &self.service,
                XDP_REDIRECT,
                hit,
            ),
            case(
                "headend, affinity miss",
                PerCall,
                Expiring,
                PROG_HEADEND,
                &self.service,
                XDP_REDIRECT,
                miss,
            ),
            // The endpoint's baseline runs on the End frame, the longest of its frames.
            case(
                "baseline: cats_pass",
                Section::Endpoint,
                Plane::Endpoint,
                PROG_PASS,
                &self.behaviours[0].frame,
                XDP_PASS,
                &[],
            ),
        ];
        for b in &self.behaviours {
            cases.push(case(
                b.name,
                Section::Endpoint,
                Plane::Endpoint,
                PROG_ENDPOINT,
                &b.frame,
                XDP_REDIRECT,
                b.events,
            ));
        }
        cases
    }

    /// Checks the paths once, pins the flow, runs the repeat check, warms up, then measures
    /// `rounds` interleaved rounds.
    pub fn run(mut self) -> Result<Report> {
        self.check_paths()?;
        self.check_endpoint()?;
        let repeat_check = self.repeat_check()?;
        let repeat_check_endpoint = self.repeat_check_endpoint()?;
        let mut cases = self.cases();
        for case in &mut cases {
            let packets = match case.method() {
                Method::Loop => self.args.repeat,
                Method::PerCall => self.args.calls,
            };
            self.measure(case, WARMUP.min(packets))?;
        }
        for round in 0..self.args.rounds {
            // Rotate the order so no case always runs right after the same neighbour.
            let n = cases.len();
            for i in 0..n {
                let case = &mut cases[(i + round) % n];
                let packets = match case.method() {
                    Method::Loop => self.args.repeat,
                    Method::PerCall => self.args.calls,
                };
                let (ns, counts) = self.measure(case, packets)?;
                case.samples.push(ns);
                case.packets += u64::from(packets);
                case.counts.add(&counts);
            }
        }
        Ok(Report {
            args: self.args,
            cases,
            repeat_check,
            repeat_check_endpoint,
            behaviours: self.behaviours,
            router_mac: self.router_mac,
        })
    }

    /// One run of each path, checked byte-level where it matters; leaves the flow pinned in
    /// the pinning dataplane and an (expiring) pin in the other.
    fn check_paths(&mut self) -> Result<()> {
        let service = self.service.clone();
        let other = self.other.clone();
        let out = xdp::run(&mut self.pinning, PROG_PASS, &service)?;
        ensure!(out.action == XDP_PASS && out.frame == service, "cats_pass changed the frame");
        let out = xdp::run(&mut self.pinning, PROG_HEADEND, &other)?;
        ensure!(
            out.action == XDP_PASS && out.frame == other,
            "cats_headend did not pass a non-service frame untouched (verdict {})",
            out.action
        );
        for plane in [Plane::Pinning, Plane::Expiring] {
            for run in 0..2 {
                let mac = self.router_mac;
                let dp = self.dp(plane);
                let before = Counts::read(dp)?;
                let out = xdp::run(dp, PROG_HEADEND, &service)?;
                let moved = Counts::read(dp)?.since(&before);
                ensure!(
                    out.action == XDP_REDIRECT,
                    "{plane:?} run {run}: verdict {} instead of XDP_REDIRECT ({})",
                    out.action,
                    moved.describe(AFFINITY)
                );
                let f = &out.frame;
                ensure!(
                    f.len() > 54
                        && f[..6] == NEXT_HOP_MAC
                        && f[6..12] == mac
                        && f[38..54] == fixture::edge_sid().octets(),
                    "{plane:?} run {run}: not encapsulated towards the edge instance"
                );
                // The first packet of a flow always misses; the second hits only if pins live.
                let hit = run == 1 && plane == Plane::Pinning;
                let want = if hit { Event::AffinityHit } else { Event::AffinityMiss };
                ensure!(
                    moved.event(want) == 1 && moved.event(Event::Redirected) == 1,
                    "{plane:?} run {run}: expected {}, counters moved: {}",
                    want.label(),
                    moved.describe(AFFINITY)
                );
            }
        }
        Ok(())
    }

    /// One run of each endpoint frame: the exact output frame, the verdict and exactly its
    /// event. `cats_pass` leaves the baseline's frame as it is.
    fn check_endpoint(&mut self) -> Result<()> {
        let dp = &mut self.endpoint;
        let frame = &self.behaviours[0].frame;
        let out = xdp::run(dp, PROG_PASS, frame)?;
        ensure!(out.action == XDP_PASS && out.frame == *frame, "cats_pass changed the frame");
        for b in &self.behaviours {
            let before = Counts::read(dp)?;
            let out = xdp::run(dp, PROG_ENDPOINT, &b.frame)?;
            let moved = Counts::read(dp)?.since(&before);
            ensure!(
                out.action == XDP_REDIRECT,
                "endpoint {}: verdict {} instead of XDP_REDIRECT ({})",
                b.name,
                out.action,
                moved.describe(b.events)
            );
            ensure!(
                out.frame == b.expected,
                "endpoint {}: the output frame differs from the expected one\n  got      {}\n  \
                 expected {}",
                b.name,
                hex(&out.frame),
                hex(&b.expected)
            );
            let mut expected = Counts::default();
            for e in b.events {
                expected.events[*e as usize] = 1;
            }
            ensure!(
                moved == expected,
                "endpoint {}: one packet should have counted only [{}], counters moved: {}",
                b.name,
                b.events.iter().map(|e| e.label()).collect::<Vec<_>>().join(", "),
                moved.describe(b.events)
            );
        }
        Ok(())
    }

    /// What the kernel's repeat loop does to the End frame: the endpoint's counterpart of
    /// `repeat_check`.
    fn repeat_check_endpoint(&mut self) -> Result<Counts> {
        let frame = self.behaviours[0].frame.clone();
        let before = Counts::read(&self.endpoint)?;
        xdp::time(&mut self.endpoint, PROG_ENDPOINT, &frame, REPEAT_CHECK)?;
        Ok(Counts::read(&self.endpoint)?.since(&before))
    }

    /// What the kernel's repeat loop does to a frame the headend encapsulates.
    fn repeat_check(&mut self) -> Result<Counts> {
        let service = self.service.clone();
        let before = Counts::read(&self.pinning)?;
        xdp::time(&mut self.pinning, PROG_HEADEND, &service, REPEAT_CHECK)?;
        Ok(Counts::read(&self.pinning)?.since(&before))
    }

    /// Times `case` over `packets` packets and checks the counters moved exactly as its path
    /// says. Returns ns per packet and the counter movement.
    fn measure(&mut self, case: &Case, packets: u32) -> Result<(f64, Counts)> {
        system::check_interrupted()?;
        let dp = self.dp(case.plane);
        let before = Counts::read(dp)?;
        let timed = match case.method() {
            Method::Loop => xdp::time(dp, case.prog, &case.frame, packets),
            Method::PerCall => per_call(dp, case.prog, &case.frame, packets, case.action),
        };
        let ns = match timed {
            Ok(ns) => ns,
            Err(e) => {
                system::check_interrupted()?;
                return Err(e.context(format!("timing {} ({:?})", case.name, case.section)));
            }
        };
        let moved = Counts::read(dp)?.since(&before);
        let mut expected = Counts::default();
        for e in case.events {
            expected.events[*e as usize] = u64::from(packets);
        }
        if moved != expected {
            let wanted: Vec<_> = case.events.iter().map(|e| e.label()).collect();
            bail!(
                "{} ({:?}): {packets} packets should each have counted [{}] and nothing else, \
                 but the counters moved: {}",
                case.name,
                case.section,
                wanted.join(", "),
                moved.describe(case.shown())
            );
        }
        Ok((ns, moved))
    }
}

/// `calls` BPF_PROG_TEST_RUN calls of one run each; mean of the kernel-measured durations.
fn per_call(dp: &mut Dataplane, name: &str, frame: &[u8], calls: u32, action: u32) -> Result<f64> {
    let prog = dp.program(name)?;
    let mut total = Duration::ZERO;
    for i in 0..calls {
        if i % 4096 == 0 {
            system::check_interrupted()?;
        }
        let r = prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() })?;
        if r.return_value != action {
            bail!("{name}: call {i} returned verdict {} instead of {action}", r.return_value);
        }
        total += r.duration;
    }
    Ok(total.as_nanos() as f64 / f64::from(calls))
}

/// `frame` as hex, for failure messages.
fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// Median, min and max of the rounds.
fn spread(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    (median, s[0], s[n - 1])
}

impl Report {
    fn baseline(&self, section: Section) -> f64 {
        self.cases
            .iter()
            .find(|c| c.section == section && c.is_baseline())
            .map_or(f64::NAN, |c| spread(&c.samples).0)
    }

    fn print_section(&self, section: Section) {
        let base = self.baseline(section);
        // The loop's means are whole ns (see note 4): no decimals that are not there.
        let digits = if section.method() == Method::Loop { 0 } else { 1 };
        for case in self.cases.iter().filter(|c| c.section == section) {
            let (median, min, max) = spread(&case.samples);
            let value = format!("{median:.digits$} ns/pkt");
            let range = format!("({min:.digits$} .. {max:.digits$})");
            let ratio = if case.is_baseline() {
                "x1.0".to_string()
            } else {
                format!("x{:.1} vs baseline  (+{:.digits$} ns)", median / base, median - base)
            };
            println!("  {:<30}{value:>13}  {range:<18}  {ratio}", case.name);
        }
    }

    pub fn print(&self) {
        let a = &self.args;
        let frame = 14 + 40 + 8 + PAYLOAD;
        println!(
            "frame       Ethernet/IPv6/UDP, {frame} bytes, hop limit 64, from [{CLIENT6}]:{SPORT}"
        );
        println!(
            "            service [{SERVICE6}]:{PORT} -> edge instance {} via {} (resolved)",
            fixture::edge_sid(),
            NEXT_HOP_MAC.map(|b| format!("{b:02x}")).join(":")
        );
        println!("            not a service [{OTHER6}]:{PORT}");
        println!(
            "endpoint    node 4 of fc00::/32: SRv6 frames from {} (full SRH, hop limit 64)\n            \
             carrying the service packet above, its IPv4 twin or its reply [5]",
            fixture::ENCAP_SOURCE
        );
        println!();
        println!("ns per packet: median of {} rounds (min .. max)", a.rounds);
        println!();
        println!(
            "in-kernel loop: 1 call x {} runs (frames the program leaves unchanged) [4]",
            a.repeat
        );
        self.print_section(Section::Loop);
        println!();
        println!(
            "one run per call: {} calls x 1 run, kernel-timed (frames the headend encapsulates) \
             [2]",
            a.calls
        );
        self.print_section(Section::PerCall);
        println!();
        println!(
            "endpoint, one run per call: {} calls x 1 run, kernel-timed (every behaviour rewrites \
             the frame) [2] [5]",
            a.calls
        );
        self.print_section(Section::Endpoint);

        println!();
        println!("counters moved by the timed packets, all rounds (each checked exactly):");
        for case in self.cases.iter().filter(|c| !c.is_baseline()) {
            let method = match case.method() {
                Method::Loop => "loop",
                Method::PerCall => "per call",
            };
            println!(
                "  {:<40}{:>8} pkts: {}",
                format!("{}, {method}", case.name),
                case.packets,
                case.counts.describe(case.shown())
            );
        }

        let rc = &self.repeat_check;
        let explanation = if rc.event(Event::AffinityHit) == u64::from(REPEAT_CHECK) {
            "This kernel\n    reran the program on the original frame; per-call timing is \
             kept for comparability."
        } else {
            "From run 2 on,\n    the program sees the packet it encapsulated itself, \
             addressed to a SID, not the service.\n    So encapsulated frames are timed one run \
             per call."
        };
        let rce = &self.repeat_check_endpoint;
        let end = &self.behaviours[0];
        let endpoint_explanation = if rce.event(Event::SegmentAdvanced) == u64::from(REPEAT_CHECK) {
            "This kernel reran the program on the\n    original frame; per-call timing is \
             kept for comparability."
        } else {
            "After run 1 the frame\n    is addressed to node 3's SID with SL 0 (transit) \
             until its hop limit runs out, then\n    goes to the kernel. Every endpoint \
             behaviour rewrites the frame (SL, destination,\n    decapsulation), so all \
             endpoint rows are timed one run per call, against the\n    cats_pass baseline \
             run the same way in the same rounds."
        };
        let per_call_overhead = self.baseline(Section::PerCall) - self.baseline(Section::Loop);
        println!();
        println!("notes:");
        println!(
            "[1] BPF_PROG_TEST_RUN does not execute the redirect: bpf_redirect() only records \
             the target\n    and the run ends with the XDP_REDIRECT verdict (no \
             xdp_do_redirect, no transmit). The\n    hit/miss rows are parsing, classification, \
             pin lookup, FIB lookup and SRv6 encapsulation,\n    the endpoint rows parsing, \
             the SRH checks, SID lookup, FIB lookup and the rewrite; not\n    forwarding."
        );
        println!(
            "[2] The kernel's repeat loop reruns the program on the frame the previous run left \
             behind.\n    Checked this run: one call with repeat={REPEAT_CHECK} on the pinned \
             service frame counted\n    {}. {explanation}\n    One call with \
             repeat={REPEAT_CHECK} on the endpoint's End frame counted\n    {}. \
             {endpoint_explanation}\n    A call's time includes a clock read and softirq \
             disable/enable around the run, which\n    the per-call baselines pay too (here \
             ~{per_call_overhead:.0} ns: per-call minus loop baseline). Compare\n    within a \
             section; +ns is the cost above the trivial program.",
            rc.describe(AFFINITY),
            rce.describe(end.events),
        );
        println!(
            "[3] Affinity miss: the fixture's state with affinity_timeout_ms 0, so the flow's \
             pin is\n    always expired and every packet takes the miss path (pin lookup, \
             Maglev table pick,\n    LRU update). Affinity hit: the same state with 30 s \
             pins, the flow pinned before timing."
        );
        println!(
            "[4] The kernel reports the loop's mean in whole ns (truncated); per-call times \
             are summed\n    exactly."
        );
        let mac = self.router_mac.map(|b| format!("{b:02x}")).join(":");
        println!(
            "[5] Endpoint: node 4 of tests/src/endpoint_fixture.rs (locator fc00:0:4::/48, no \
             PSP/USD),\n    next hops resolved in its namespace; forwarded frames leave from \
             {mac}. Each frame\n    was checked byte for byte after one run before timing. \
             The baseline runs cats_pass on\n    the End frame."
        );
        for b in &self.behaviours {
            let name = b.name.trim_start_matches("endpoint, ");
            println!("    {name:<8}{:>4} bytes  {}", b.frame.len(), b.detail);
        }
    }
}
