//! The lab's failure tools on the example lab: instances echo health probes, an instance dies
//! and comes back, a link is cut and restored, a node dies and is revived, all watched by a
//! steady request stream from behind gw.
//!
//! The checks hold whether or not the headend fails flows over to a backup: no reply from the
//! unreachable instance arrives while the fault lasts, flows on other instances keep their
//! instance and lose nothing, and once the fault is undone every flow is answered again and
//! nothing is black-holed. The measured times are printed (`--nocapture`).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use cats_common::health::{Probe, ProbePath};
use cats_tests::{
    lab_env::{LabEnv, LabOptions},
    stream::{RequestStream, StreamLog},
};

const FLOWS: usize = 12;
const RATE: f64 = 100.0;
/// Before a fault: every flow answered in time for this long (see [`warm_up`]).
const WARM_UP: Duration = Duration::from_millis(500);
/// How long each fault lasts.
const FAULT: Duration = Duration::from_millis(800);
/// After undoing it: time to answer again. A neighbour entry that failed while its link had
/// no carrier is solicited again only on its 1 s retransmit timer.
const SETTLE: Duration = Duration::from_millis(1000);
const AFTER: Duration = Duration::from_millis(500);
/// Replies that crossed the fault's place before it happened may still arrive this late.
const IN_FLIGHT: Duration = Duration::from_millis(50);

fn service6() -> SocketAddr {
    "[2001:db8:ca75::1]:7000".parse().unwrap()
}

/// What one stream saw around one fault: when the fault was in place, and the log.
struct Watched {
    log: StreamLog,
    /// Flows whose first reply came from the victim.
    victims: Vec<usize>,
    /// The stream had settled at `settled`; the fault was complete at `down` and undone from
    /// `up` (the call returned at `up_done`).
    settled: Instant,
    down: Instant,
    up: Instant,
    up_done: Instant,
}

/// Waits until the stream settled for [`WARM_UP`] ([`RequestStream::settle`]).
fn warm_up(stream: &RequestStream) -> Instant {
    stream.settle(WARM_UP, Duration::from_secs(10)).unwrap()
}

/// Runs a stream, applies `fault` after the warm-up, undoes it with `undo` after [`FAULT`].
fn watch(
    env: &mut LabEnv,
    victim: &str,
    fault: impl FnOnce(&mut LabEnv),
    undo: impl FnOnce(&mut LabEnv),
) -> Watched {
    wait_healthy(env);
    let ns = env.lab().clients("gw").path();
    let stream = RequestStream::start(&ns, service6(), FLOWS, RATE).unwrap();
    let settled = warm_up(&stream);
    fault(env);
    let down = Instant::now();
    std::thread::sleep(FAULT);
    let up = Instant::now();
    undo(env);
    let up_done = Instant::now();
    std::thread::sleep(SETTLE + AFTER);
    let log = stream.stop();
    let victims = log.flows_first_on(victim);
    Watched { log, victims, settled, down, up, up_done }
}

impl Watched {
    /// Per flow, one character per request: the answering instance's site digit (`1` for
    /// edge1-a), `.` lost; `|` marks the fault and its undoing.
    fn timeline(&self) -> String {
        let mut out = String::new();
        for f in 0..self.log.flows {
            out.push_str(&format!("flow {f:2}: "));
            let (mut marked_down, mut marked_up) = (false, false);
            for r in self.log.flow(f) {
                if !marked_down && r.sent >= self.down {
                    out.push('|');
                    marked_down = true;
                }
                if !marked_up && r.sent >= self.up {
                    out.push('|');
                    marked_up = true;
                }
                out.push(match r.instance() {
                    Some(i) => i.chars().find(char::is_ascii_digit).unwrap_or('c'),
                    None => '.',
                });
            }
            out.push('\n');
        }
        out
    }

    /// The checks every fault shares; prints what it measured.
    fn check(&self, what: &str, victim: &str) {
        let log = &self.log;
        eprintln!("{what}:\n{}", self.timeline());
        let firsts = log.instances_per_flow();
        assert!(firsts.iter().all(|f| !f.is_empty()), "{what}: a flow never answered: {firsts:?}");
        assert!(!self.victims.is_empty(), "{what}: no flow on {victim}: {firsts:?}");

        // No reply from the victim arrives while the fault lasts. (Requests sent meanwhile
        // may still be answered after it: the kernel holds packets waiting for a neighbour.)
        let during: Vec<_> = log
            .records
            .iter()
            .filter(|r| r.instance() == Some(victim))
            .filter_map(|r| {
                let at = r.reply.as_ref()?.at;
                (at >= self.down + IN_FLIGHT && at < self.up)
                    .then(|| (r.flow, r.seq, r.sent - self.down, at - self.down))
            })
            .collect();
        assert!(during.is_empty(), "{what}: {victim} answered {during:?} while unreachable");

        // The other flows never noticed (once the stream had settled).
        for f in (0..log.flows).filter(|f| !self.victims.contains(f)) {
            assert_eq!(firsts[f].len(), 1, "{what}: flow {f} changed instance: {:?}", firsts[f]);
            let lost: Vec<u64> = log
                .flow(f)
                .filter(|r| r.sent >= self.settled && r.reply.is_none())
                .map(|r| r.seq)
                .collect();
            assert!(lost.is_empty(), "{what}: flow {f} on {:?} lost {lost:?}", firsts[f]);
        }

        // Once undone, nothing is black-holed.
        let late = log.lost_after(self.up_done + SETTLE);
        let late: Vec<_> = late.iter().map(|r| (r.flow, r.seq)).collect();
        assert!(late.is_empty(), "{what}: lost after recovery: {late:?}");
        for &f in &self.victims {
            assert!(
                log.flow(f).any(|r| r.sent >= self.up_done && r.reply.is_some()),
                "{what}: flow {f} never answered again"
            );
        }

        // What it looked like.
        let late_from_victim = log
            .records
            .iter()
            .filter(|r| r.sent >= self.down && r.sent < self.up)
            .filter(|r| r.instance() == Some(victim))
            .count();
        let outages: Vec<_> =
            log.outages().into_iter().filter(|o| self.victims.contains(&o.flow)).collect();
        let gaps: Vec<Duration> = outages.iter().filter_map(|o| o.duration()).collect();
        let ms = |d: Option<Duration>| d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
        let last = log.last_reply_from(victim, self.down + IN_FLIGHT);
        let back = log.first_reply_from(victim, self.up);
        let moved: BTreeSet<String> =
            self.victims.iter().flat_map(|&f| firsts[f].iter().skip(1).cloned()).collect();
        let failover = log.failover(victim);
        println!(
            "{what}: {} of {} flows on {victim}; fault held {:?} (undoing took {:?}); last \
             reply from {victim} {:?} before the fault was complete, first one {:?} after \
             undoing it; victim flows without an in-order reply for {:?} .. {:?}; {} \
             requests lost; {late_from_victim} sent during the fault answered by {victim} \
             after it; victim flows moved to {moved:?} (median {:?}, worst {:?} from the \
             last reply to the first from another instance)",
            self.victims.len(),
            log.flows,
            ms(Some(self.up - self.down)),
            self.up_done - self.up,
            ms(last.map(|t| self.down.saturating_duration_since(t))),
            ms(back.map(|t| t.saturating_duration_since(self.up))),
            ms(gaps.iter().min().copied()),
            ms(gaps.iter().max().copied()),
            log.lost(),
            ms(failover.median()),
            ms(failover.worst()),
        );
    }
}

/// A probe from inside the instance's own namespace to the service address comes back as is
/// (the client cannot reach an instance without the headend's SRv6 path).
fn probe_echoes(env: &LabEnv, instance: &str) {
    let ns = env.lab().instance(instance);
    for target in [service6(), "198.51.100.1:7000".parse().unwrap()] {
        let any: SocketAddr =
            if target.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let sock = env.socket_in(ns, any, target).unwrap();
        let probe = Probe { slot: 1, path: ProbePath::Primary, seq: 42 }.encode();
        sock.send(&probe).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("{instance} {target}: {e}"));
        assert_eq!(&buf[..n], &probe, "{instance} echoes {target} unchanged");
    }
}

#[test]
fn an_instance_echoes_probes_dies_alone_and_comes_back() {
    let mut env = LabEnv::start(|_| Ok(())).unwrap();
    probe_echoes(&env, "edge1-a");
    probe_echoes(&env, "edge2-a");

    // With 12 new flows over two equal edges, both get some (all on one: 1 in 2048).
    let victim = "edge1-a".to_string();
    let v = victim.clone();
    let watched = watch(
        &mut env,
        &victim,
        |env| {
            env.lab_mut().stop_instance(&v).unwrap();
            assert!(!env.lab().instance_running(&v));
            // Its sockets are closed: the kernel refuses datagrams to the service.
            let sock = env
                .socket_in(env.lab().instance(&v), "[::]:0".parse().unwrap(), service6())
                .unwrap();
            sock.send(b"anyone?").unwrap();
            let err = sock.recv(&mut [0u8; 16]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        },
        |env| env.lab_mut().start_instance(&v).unwrap(),
    );
    watched.check("instance stopped", &victim);
    // Back on the same addresses.
    probe_echoes(&env, &victim);
    assert!(
        env.lab_mut().start_instance(&victim).unwrap_err().to_string().contains("already running")
    );
}

#[test]
fn a_cut_link_and_a_dead_node_stop_their_instance_until_undone() {
    let mut env = LabEnv::start(|_| Ok(())).unwrap();
    let watched = watch(
        &mut env,
        "edge1-a",
        |env| env.lab_mut().cut_link("core", "edge1").unwrap(),
        |env| env.lab_mut().restore_link("edge1", "core").unwrap(),
    );
    watched.check("link core-edge1 cut", "edge1-a");
    assert!(!env.lab().link_is_cut("core", "edge1"));

    let edge2 = env.lab().node("edge2").name().to_string();
    let before = kernel_config(&edge2);
    let watched = watch(
        &mut env,
        "edge2-a",
        |env| {
            env.lab_mut().kill_node("edge2").unwrap();
            assert!(env.lab().node_is_dead("edge2"));
        },
        |env| env.lab_mut().revive_node("edge2").unwrap(),
    );
    watched.check("node edge2 killed", "edge2-a");
    // The agent's addresses, routes and managed neighbours are back as they were.
    assert_eq!(kernel_config(&edge2), before);
    probe_echoes(&env, "edge2-a");

    // Errors name what they are about.
    let lab = env.lab_mut();
    let e = lab.cut_link("gw", "edge1").unwrap_err();
    assert!(format!("{e:#}").contains("no link gw-edge1"), "{e:#}");
    let e = lab.revive_node("edge1").unwrap_err();
    assert!(format!("{e:#}").contains("node edge1 is not dead"), "{e:#}");
    let e = lab.kill_node("nowhere").unwrap_err();
    assert!(format!("{e:#}").contains("no node nowhere"), "{e:#}");
    lab.cut_link("gw", "core").unwrap();
    let e = lab.cut_link("core", "gw").unwrap_err();
    assert!(format!("{e:#}").contains("link gw-core is cut already"), "{e:#}");
    lab.restore_link("gw", "core").unwrap();
}

#[test]
fn a_link_without_relay_is_cut_at_its_veth_ends_and_comes_back_configured() {
    let options = LabOptions { delays: false, instances: true, ..LabOptions::default() };
    let mut env = LabEnv::start_with(|_| Ok(()), options).unwrap();
    let (core, edge1) =
        (env.lab().node("core").name().to_string(), env.lab().node("edge1").name().to_string());
    let before = (kernel_config(&core), kernel_config(&edge1));
    env.lab_mut().cut_link("edge1", "core").unwrap();
    for (ns, iface) in [(&core, "edge1"), (&edge1, "core")] {
        let link = cats_lab::netns::ip(&["-n", ns, "-o", "link", "show", iface]).unwrap();
        assert!(link.contains("state DOWN"), "{ns} {iface}: {link}");
    }
    // The kernel flushed the link's routes and IPv6 addresses on both ends.
    assert_ne!(kernel_config(&edge1), before.1);
    env.lab_mut().restore_link("core", "edge1").unwrap();
    assert_eq!((kernel_config(&core), kernel_config(&edge1)), before);

    wait_healthy(&env);
    let stream =
        RequestStream::start(&env.lab().clients("gw").path(), service6(), FLOWS, RATE).unwrap();
    warm_up(&stream);
    let log = stream.stop();
    let answered: BTreeSet<String> = log.instances_per_flow().into_iter().flatten().collect();
    assert!(answered.contains("edge1-a"), "edge1-a answers again: {answered:?}");
}

/// A node's addresses, main-table routes and lasting neighbour entries, normalised (no
/// carrier flags, sorted) for comparison.
fn kernel_config(ns: &str) -> Vec<String> {
    let run = |args: &[&str]| -> String {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        cats_lab::netns::ip(&full).unwrap()
    };
    let mut lines: Vec<String> = Vec::new();
    for out in [
        run(&["-o", "addr", "show"]),
        run(&["-4", "route", "show"]),
        run(&["-6", "route", "show"]),
        run(&["neigh", "show", "nud", "permanent"]),
    ] {
        // The kernel adds link-local addresses itself, when it pleases (after DAD).
        for l in out.lines().filter(|l| !l.contains(" fe80::")) {
            // Lifetimes and carrier state are not configuration.
            let l = l.split("\\").next().unwrap_or(l).replace(" linkdown", "");
            lines.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    let managed = run(&["neigh", "show"]);
    lines.extend(managed.lines().filter(|l| l.contains("managed")).map(|l| {
        // Resolution state changes; that the entry exists is what counts.
        l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    }));
    lines.sort();
    lines
}

/// Waits until gw's health prober finds every path up and both edges take new flows again
/// (after a fault the controller gives an instance weight again only once it is reachable),
/// so a stream starts on a settled lab. Without a prober in the status, only the weights.
fn wait_healthy(env: &LabEnv) {
    let deadline = Instant::now() + Duration::from_secs(15);
    // Healthy for longer than a detection time (300 ms): a fault undone a moment ago may not
    // have been noticed yet, and would be just after the stream starts.
    let mut healthy_since: Option<Instant> = None;
    loop {
        let status = env.daemon().status().unwrap();
        let health = &status["nodes"]["gw"]["health"];
        let paths = health["paths"].as_array().cloned().unwrap_or_default();
        let unreachable = health["unreachable"].as_array().is_some_and(|u| !u.is_empty());
        let probed = health.is_null()
            || (!paths.is_empty() && paths.iter().all(|p| p["up"] == true) && !unreachable);
        let decisions = status["decisions"][0]["decisions"].as_array().cloned().unwrap_or_default();
        let weighted = |name: &str| {
            decisions.iter().any(|d| d["instance"] == name && d["weight"].as_u64() > Some(0))
        };
        if probed && weighted("edge1-a") && weighted("edge2-a") {
            let since = *healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                return;
            }
        } else {
            healthy_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "lab never settled: {health} {}",
            status["decisions"][0]["decisions"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
