//! `--throughput`: UDP through the whole lab chain, client -> gw -> core -> edge1 -> instance,
//! once with cats' XDP at every node and once with the kernel's seg6/seg6local at core and
//! edge1 (the gateway runs cats' XDP headend in both), interleaved in one run.
//!
//! Both labs are built from the example intent without delay relays and without the emulated
//! compute; edge2 and the cloud are declared busy, so every flow is steered to edge1, where a
//! counting sink listens on the service address. One thread sends from the client LAN as fast
//! as it can (sendmmsg, several flows); delivered packets are counted at the sink.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cats_common::counters::{DropReason, Event};
use cats_controller::{dataplane::stats::PinnedCounters, netns};
use cats_tests::lab_env::{LabEnv, LabOptions, network_with_dataplane, services_with_load};

use crate::system;

const SERVICE: &str = "[2001:db8:ca75::1]:7000";
/// The instance every flow is steered to, and its slot in the headend's instance counters.
const INSTANCE: &str = "edge1-a";
const INSTANCE_SLOT: u32 = 0;
/// The other instances' slots (edge2-a, cloud-a): they must get nothing.
const OTHER_SLOTS: [u32; 2] = [1, 2];
/// UDP sockets (source ports) the sender cycles through.
const FLOWS: usize = 16;
/// Datagrams per sendmmsg / recvmmsg call.
const BATCH: usize = 32;
const WARMUP: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_secs(3);
/// UDP payload bytes: small, and the largest round size whose encapsulation (inner IPv6 + UDP,
/// outer IPv6 and an SRH with one segment: 112 bytes) fits the links' 1500-byte MTU; bigger
/// ones the headend drops as frag_needed.
const PAYLOADS: [usize; 2] = [64, 1380];
const SENDER_CPU: usize = 0;
const SINK_CPU: usize = 1;

/// Interleaved rounds: every (dataplane, payload) is measured this often; ratios use medians.
const ROUNDS: usize = 3;
/// The two dataplanes compared, in print order.
const PLANES: [&str; 2] = ["xdp", "kernel"];

/// One measured window.
struct Measurement {
    round: usize,
    plane: &'static str,
    payload: usize,
    secs: f64,
    /// Datagrams sendmmsg accepted.
    offered: u64,
    /// sendmmsg calls that failed (ENOBUFS and the like).
    send_errors: u64,
    delivered: u64,
    delivered_bytes: u64,
    /// cats' XDP events in the window: core transit, edge1 decapsulation.
    transit: u64,
    decapsulated: u64,
    /// Headend: packets steered to edge1-a, and to any other instance.
    steered: u64,
    steered_elsewhere: u64,
    /// Non-zero XDP drop counters in the window, "node:reason=n".
    drops: Vec<String>,
    /// The instance namespace's stack in the window: IPv6 packets received, UDP datagrams
    /// dropped for a full socket buffer.
    instance_in: u64,
    rcvbuf_errors: u64,
}

impl Measurement {
    fn pps(&self) -> f64 {
        self.delivered as f64 / self.secs
    }
    fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.secs
    }
    fn gbps(&self) -> f64 {
        self.delivered_bytes as f64 * 8.0 / self.secs / 1e9
    }
}

/// A lab for one dataplane, built and the daemon stopped again (the pinned programs and maps
/// keep forwarding), so no agent polls during the measurement.
struct Lab {
    plane: &'static str,
    env: LabEnv,
    gw: PinnedCounters,
    core: Option<PinnedCounters>,
    edge1: Option<PinnedCounters>,
}

impl Lab {
    fn build(plane: &'static str) -> Result<Self> {
        let started = Instant::now();
        let mut env = LabEnv::start_with(
            |dir| {
                std::fs::write(dir.join("network.yaml"), network_with_dataplane(plane))?;
                let busy = services_with_load(&[("edge2-a", 0.9), ("cloud-a", 0.9)]);
                std::fs::write(dir.join("services.yaml"), busy)?;
                Ok(())
            },
            LabOptions { delays: false, instances: false, ..LabOptions::default() },
        )
        .with_context(|| format!("building the {plane} lab"))?;
        env.stop_daemon()?;
        let gw = env.counters("gw")?;
        // A node on the kernel dataplane may have no cats maps at all: then nothing of cats ran.
        let core = env.counters("core").ok();
        let edge1 = env.counters("edge1").ok();
        println!(
            "lab {plane:<6}     built in {:.1} s (prefix {}), daemon stopped after applying",
            started.elapsed().as_secs_f64(),
            env.lab().prefix()
        );
        Ok(Lab { plane, env, gw, core, edge1 })
    }

    /// Every non-zero event and drop counter of gw, core and edge1, for error messages.
    fn nonzero(&self) -> String {
        let mut out = Vec::new();
        let nodes =
            [("gw", Some(&self.gw)), ("core", self.core.as_ref()), ("edge1", self.edge1.as_ref())];
        for (node, c) in nodes {
            let Some(c) = c else {
                out.push(format!("{node}: no cats maps"));
                continue;
            };
            let events = Event::ALL.iter().map(|e| (e.label(), c.events(*e).unwrap_or(0)));
            let drops = DropReason::ALL.iter().map(|d| (d.label(), c.drops(*d).unwrap_or(0)));
            let nonzero: Vec<String> = events
                .chain(drops)
                .filter(|(_, v)| *v > 0)
                .map(|(l, v)| format!("{l}={v}"))
                .collect();
            out.push(format!("{node}: {}", nonzero.join(" ")));
        }
        out.join("; ")
    }

    fn snapshot(&self) -> Result<Counters> {
        let event = |c: &Option<PinnedCounters>, e| c.as_ref().map_or(Ok(0), |c| c.events(e));
        let mut drops = Vec::new();
        for (node, c) in [("gw", Some(&self.gw)), ("core", self.core.as_ref())] {
            push_drops(&mut drops, node, c)?;
        }
        push_drops(&mut drops, "edge1", self.edge1.as_ref())?;
        Ok(Counters {
            transit: event(&self.core, Event::TransitForwarded)?,
            decapsulated: event(&self.edge1, Event::Decapsulated)?,
            steered: self.gw.instance_counter(INSTANCE_SLOT)?.packets,
            steered_elsewhere: OTHER_SLOTS
                .iter()
                .map(|s| self.gw.instance_counter(*s).map(|c| c.packets))
                .sum::<Result<u64>>()?,
            drops,
        })
    }

    fn measure(&self, round: usize, payload: usize) -> Result<Measurement> {
        let service: SocketAddr = SERVICE.parse()?;
        let sink = Sink::start(&self.env, service)?;
        let sockets = (0..FLOWS).map(|_| self.env.flow("gw", service)).collect::<Result<_>>()?;
        let sender = Sender::start(sockets, payload)?;
        // The first packets of a path wait for neighbour resolution.
        let deadline = Instant::now() + Duration::from_secs(3);
        while sink.packets.load(Ordering::Relaxed) == 0 {
            system::check_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "{}: no datagram reached the sink within 3 s; counters: {}",
                    self.plane,
                    self.nonzero()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(WARMUP);

        let ns = self.env.lab().instance(INSTANCE).path();
        let n0 = snmp6(&ns)?;
        let (t0, c0) = (Instant::now(), self.snapshot()?);
        let (s0, e0) = (sender.sent.load(Ordering::Relaxed), sender.errors.load(Ordering::Relaxed));
        let (p0, b0) = (sink.packets.load(Ordering::Relaxed), sink.bytes.load(Ordering::Relaxed));
        while t0.elapsed() < WINDOW {
            system::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let (p1, b1) = (sink.packets.load(Ordering::Relaxed), sink.bytes.load(Ordering::Relaxed));
        let (s1, e1) = (sender.sent.load(Ordering::Relaxed), sender.errors.load(Ordering::Relaxed));
        let (secs, c1) = (t0.elapsed().as_secs_f64(), self.snapshot()?);
        let n1 = snmp6(&ns)?;
        sender.stop()?;
        sink.stop()?;

        let drops = c1
            .drops
            .iter()
            .filter_map(|(k, v1)| {
                let v0 = c0.drops.iter().find(|(k0, _)| k0 == k).map_or(0, |(_, v)| *v);
                (v1 > &v0).then(|| format!("{k}={}", v1 - v0))
            })
            .collect();
        Ok(Measurement {
            round,
            plane: self.plane,
            payload,
            secs,
            offered: s1 - s0,
            send_errors: e1 - e0,
            delivered: p1 - p0,
            delivered_bytes: b1 - b0,
            transit: c1.transit - c0.transit,
            decapsulated: c1.decapsulated - c0.decapsulated,
            steered: c1.steered - c0.steered,
            steered_elsewhere: c1.steered_elsewhere - c0.steered_elsewhere,
            drops,
            instance_in: n1.0 - n0.0,
            rcvbuf_errors: n1.1 - n0.1,
        })
    }
}

/// Ip6InReceives and Udp6RcvbufErrors of the namespace at `ns`.
fn snmp6(ns: &std::path::Path) -> Result<(u64, u64)> {
    let text = netns::run_in(ns, || Ok(std::fs::read_to_string("/proc/thread-self/net/snmp6")?))?;
    let get = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    Ok((get("Ip6InReceives "), get("Udp6RcvbufErrors ")))
}

struct Counters {
    transit: u64,
    decapsulated: u64,
    steered: u64,
    steered_elsewhere: u64,
    drops: Vec<(String, u64)>,
}

fn push_drops(out: &mut Vec<(String, u64)>, node: &str, c: Option<&PinnedCounters>) -> Result<()> {
    if let Some(c) = c {
        for d in DropReason::ALL {
            out.push((format!("{node}:{}", d.label()), c.drops(*d)?));
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpu`, when the machine has it.
fn pin_to(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpu >= cpus {
        return;
    }
    // SAFETY: the set is a plain bitmap, fully initialised by CPU_ZERO before use; pid 0 is
    // the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A worker thread with its stop flag; stopped and joined on drop as well.
struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Worker {
    fn spawn(name: &str, f: impl FnOnce(Arc<AtomicBool>) -> Result<()> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(flag))
            .expect("spawning a thread");
        Worker { stop, handle: Some(handle) }
    }

    fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Counts the datagrams (and their UDP payload bytes) arriving at the service address in the
/// instance's namespace.
struct Sink {
    packets: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    worker: Worker,
}

impl Sink {
    fn start(env: &LabEnv, service: SocketAddr) -> Result<Self> {
        let ns = env.lab().instance(INSTANCE).path();
        let sock = netns::run_in(&ns, move || {
            let sock = UdpSocket::bind(service)?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let size: libc::c_int = 16 << 20;
            // SAFETY: a valid socket and a pointer to an int of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                bail!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
            }
            Ok(sock)
        })
        .with_context(|| format!("binding the sink to {service} in {}", ns.display()))?;
        let packets = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (p, b) = (packets.clone(), bytes.clone());
        let worker = Worker::spawn("sink", move |stop| receive(sock, &p, &b, &stop));
        Ok(Sink { packets, bytes, worker })
    }

    fn stop(self) -> Result<()> {
        self.worker.stop()
    }
}

fn receive(
    sock: UdpSocket,
    packets: &AtomicU64,
    bytes: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    pin_to(SINK_CPU);
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every header points at one live iovec over a live 2048-byte buffer; no
        // address or control buffers; `msgs` has BATCH entries.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => bail!("recvmmsg: {e}"),
            }
        }
        let n = n as usize;
        let got: u64 = msgs[..n].iter().map(|m| u64::from(m.msg_len)).sum();
        packets.fetch_add(n as u64, Ordering::Relaxed);
        bytes.fetch_add(got, Ordering::Relaxed);
    }
    Ok(())
}

/// Sends `payload`-byte datagrams round-robin on connected sockets, BATCH per call.
struct Sender {
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    worker: Worker,
}

impl Sender {
    fn start(sockets: Vec<UdpSocket>, payload: usize) -> Result<Self> {
        let sent = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let (s, e) = (sent.clone(), errors.clone());
        let worker = Worker::spawn("sender", move |stop| send(&sockets, payload, &s, &e, &stop));
        Ok(Sender { sent, errors, worker })
    }

    fn stop(self) -> Result<()> {
        self.worker.stop()
    }
}

fn send(
    sockets: &[UdpSocket],
    payload: usize,
    sent: &AtomicU64,
    errors: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    pin_to(SENDER_CPU);
    let buf = vec![0x5au8; payload];
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        for sock in sockets {
            // SAFETY: every header points at the one live iovec over `buf`, which the kernel
            // only reads; the sockets are connected, so no address; `msgs` has BATCH entries.
            let n = unsafe {
                libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0)
            };
            if n > 0 {
                sent.fetch_add(n as u64, Ordering::Relaxed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

fn print_header() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = read_trimmed("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("cats-bench --throughput: UDP through the lab chain, cats XDP vs kernel seg6local");
    println!("kernel      Linux {}", read_trimmed("/proc/sys/kernel/osrelease"));
    println!(
        "cpus        {cpus} online; sender pinned to CPU {SENDER_CPU}, sink to CPU {SINK_CPU}"
    );
    println!("load        {} (1/5/15 min, at start)", load.join(" "));
    println!(
        "path        client -> gw (cats XDP headend, both runs) -> core -> edge1 -> sink \
         [{SERVICE}] in {INSTANCE}'s namespace"
    );
    println!(
        "            xdp: cats XDP transit at core, End.DX6 at edge1; kernel: seg6 forwarding \
         and seg6local End.DX6 in the kernel's stack"
    );
    println!(
        "traffic     {FLOWS} UDP flows, one sender thread, sendmmsg x{BATCH}; {:.1} s warm-up, \
         {:.1} s measured; payloads {PAYLOADS:?} B; {ROUNDS} interleaved rounds",
        WARMUP.as_secs_f64(),
        WINDOW.as_secs_f64()
    );
}

/// Builds both labs, measures every payload on both, prints the table and the checks. Fails
/// when a check fails (after printing everything).
pub fn run() -> Result<()> {
    let started = Instant::now();
    print_header();
    let mut labs = Vec::new();
    for plane in PLANES {
        system::check_interrupted()?;
        labs.push(Lab::build(plane)?);
    }
    let mut results = Vec::new();
    for round in 1..=ROUNDS {
        for payload in PAYLOADS {
            for lab in &labs {
                system::check_interrupted()?;
                results.push(lab.measure(round, payload)?);
            }
        }
    }
    drop(labs);

    println!();
    println!(
        "{:<5} {:<7} {:>7} {:>12} {:>14} {:>10} {:>7} {:>11}",
        "round",
        "plane",
        "payload",
        "offered Mpps",
        "delivered Mpps",
        "Gbit/s",
        "lost",
        "send errors"
    );
    for m in &results {
        let lost = (1.0 - m.delivered as f64 / m.offered.max(1) as f64).max(0.0);
        println!(
            "{:<5} {:<7} {:>5} B {:>12.3} {:>14.3} {:>10.3} {:>6.1}% {:>11}",
            m.round,
            m.plane,
            m.payload,
            m.offered_pps() / 1e6,
            m.pps() / 1e6,
            m.gbps(),
            lost * 100.0,
            m.send_errors
        );
    }
    println!("(Gbit/s: UDP payload delivered to the sink; 'lost' = offered but not delivered)");

    println!();
    for payload in PAYLOADS {
        // Median, min and max of the delivered packets/s over the rounds.
        let of = |plane| {
            let mut v: Vec<f64> = results
                .iter()
                .filter(|m| m.plane == plane && m.payload == payload)
                .map(Measurement::pps)
                .collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (x, k) = (of("xdp"), of("kernel"));
        println!(
            "ratio xdp/kernel, {payload:>4} B: {:.2}x delivered packets/s (medians of {ROUNDS}: \
             xdp {:.3} Mpps [{:.3}..{:.3}], kernel {:.3} Mpps [{:.3}..{:.3}])",
            x.0 / k.0.max(1e-9),
            x.0 / 1e6,
            x.1 / 1e6,
            x.2 / 1e6,
            k.0 / 1e6,
            k.1 / 1e6,
            k.2 / 1e6
        );
    }

    println!();
    let mut ok = true;
    for m in &results {
        let share = |n: u64| n as f64 / m.delivered.max(1) as f64;
        let (path_ok, expect) = if m.plane == "xdp" {
            // Every delivered packet crossed core and edge1 in XDP (XDP may count a few more:
            // packets dropped after it, or in flight at the window's edges).
            (share(m.transit) >= 0.98 && share(m.decapsulated) >= 0.98, "~delivered")
        } else {
            (m.transit == 0 && m.decapsulated == 0, "0")
        };
        let steer_ok = m.steered_elsewhere == 0 && m.delivered > 0;
        ok &= path_ok && steer_ok;
        println!(
            "check {} {:<6} {:>4} B: core transit_forwarded {} ({:.3} of delivered), edge1 \
             decapsulated {} ({:.3}), expected {expect}: {}; headend steered {} to {INSTANCE}, \
             {} elsewhere: {}",
            m.round,
            m.plane,
            m.payload,
            m.transit,
            share(m.transit),
            m.decapsulated,
            share(m.decapsulated),
            if path_ok { "ok" } else { "FAILED" },
            m.steered,
            m.steered_elsewhere,
            if steer_ok { "ok" } else { "FAILED" },
        );
        println!(
            "      {INSTANCE}'s namespace received {} IPv6 packets ({:.3} of delivered), {} \
             dropped for a full socket buffer",
            m.instance_in,
            share(m.instance_in),
            m.rcvbuf_errors
        );
        if !m.drops.is_empty() {
            println!("      XDP drop counters in the window: {}", m.drops.join(" "));
        }
    }

    println!();
    println!(
        "notes: sender, every forwarding hop (softirq) and the sink share this machine's CPUs, \
         so this compares per-packet cost under saturation, not line rate. Links are veth pairs \
         with GRO on (veth NAPI), and XDP forwards with native XDP_REDIRECT between veths; the \
         kernel run's packets go through the full stack at core and edge1. UDP checksums are \
         computed in software by the client (tx offload off). A veth schedules the receiver's \
         NAPI on the sending CPU, so most hops run in softirq on the sender's CPU: the \
         sender's own per-packet cost (syscall, UDP/IPv6 output, checksum, the gateway's \
         headend) is common to both planes and dilutes the ratio of the core/edge1 part."
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    if !ok {
        bail!("a path check failed: the measured traffic did not take the intended path");
    }
    Ok(())
}
