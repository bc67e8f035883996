//! An emulated camera: sends requests to the service address and records who answered, how
//! fast, and what was lost.
//!
//! Requests arrive as a Poisson process (exponential gaps with mean `1 / rate_per_sec`), the
//! usual model for many independent sources and the one that makes queueing at instances
//! realistic. Every `requests_per_flow` requests the client opens a new UDP socket, so the new
//! flow has a new source port and the network makes a fresh steering decision for it; older
//! flows stay open until their last request is answered or timed out.
//!
//! Sequence numbers count from 0 within each flow; flow ids count from 0 within the client.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::wire::{Reply, Request};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    /// The service (anycast) address.
    pub target: SocketAddr,
    pub rate_per_sec: f64,
    pub requests_per_flow: u32,
    /// Stop sending after this long; `None` runs until `stop`.
    pub duration: Option<Duration>,
    /// A request without a reply after this long is lost.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A new flow (socket) was opened; `local` is its source address and port.
    FlowStarted {
        flow: u64,
        local: SocketAddr,
    },
    Reply {
        flow: u64,
        seq: u64,
        instance: String,
        rtt: Duration,
        queue_us: u64,
        service_us: u64,
    },
    Lost {
        flow: u64,
        seq: u64,
    },
}

/// Totals for the run. Losses and requests are attributed to the instance that answered the
/// flow they belong to (steering is per flow); flows nobody answered count under
/// [`UNANSWERED`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSummary {
    pub flows: u64,
    pub total: InstanceSummary,
    pub per_instance: BTreeMap<String, InstanceSummary>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceSummary {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub mean_rtt: Duration,
    pub p99_rtt: Duration,
}

/// The `per_instance` key for flows that got no reply at all.
pub const UNANSWERED: &str = "(unanswered)";

/// How long the loop sleeps at most, so it notices `stop`.
const POLL: Duration = Duration::from_millis(100);

/// Sends requests until `cfg.duration` has passed or `stop` is set, then waits for the
/// outstanding ones (at most `cfg.timeout`). Calls `out` for every event as it happens.
pub fn run_client(
    cfg: ClientConfig,
    stop: Arc<AtomicBool>,
    mut out: impl FnMut(ClientEvent),
) -> Result<ClientSummary> {
    if !(cfg.rate_per_sec > 0.0 && cfg.rate_per_sec.is_finite()) || cfg.requests_per_flow == 0 {
        bail!("client {}: need rate_per_sec > 0 and requests_per_flow > 0", cfg.name);
    }
    let epoch = Instant::now();
    let end = cfg.duration.map(|d| epoch + d);
    let mut rng = Rng::new(&cfg.name);
    let mut flows: Vec<Flow> = Vec::new(); // open flows, the current one last
    let mut pending: HashMap<(u64, u64), Instant> = HashMap::new();
    let mut in_order: VecDeque<(u64, u64, Instant)> = VecDeque::new(); // for timeouts
    let mut stats = Stats::default();
    let mut next_flow = 0u64;
    let mut next_send = epoch;
    let mut buf = [0u8; 2048];

    loop {
        let now = Instant::now();
        let sending = !stop.load(Ordering::Relaxed) && end.is_none_or(|e| now < e);
        if !sending && pending.is_empty() {
            break;
        }

        if sending && now >= next_send {
            if flows.last().is_none_or(|f| f.next_seq >= cfg.requests_per_flow as u64) {
                let flow = Flow::open(next_flow, cfg.target)?;
                out(ClientEvent::FlowStarted { flow: flow.id, local: flow.sock.local_addr()? });
                if let Some(prev) = flows.last_mut() {
                    prev.current = false;
                }
                flows.push(flow);
                next_flow += 1;
            }
            let flow = flows.last_mut().expect("a current flow");
            let seq = flow.next_seq;
            let sent_ns = now.duration_since(epoch).as_nanos() as u64;
            // A failed send (no route yet, say) is simply never answered: it times out.
            let _ = flow.sock.send(&Request { flow: flow.id, seq, sent_ns }.encode());
            flow.next_seq += 1;
            flow.outstanding += 1;
            stats.sent_on(flow.id);
            pending.insert((flow.id, seq), now);
            in_order.push_back((flow.id, seq, now));
            // After a long stall, start afresh instead of firing a burst to catch up.
            next_send =
                next_send.max(now.checked_sub(POLL).unwrap_or(now)) + rng.exp_gap(cfg.rate_per_sec);
            continue;
        }

        while let Some(&(flow, seq, sent)) = in_order.front() {
            if now.duration_since(sent) < cfg.timeout {
                break;
            }
            in_order.pop_front();
            if pending.remove(&(flow, seq)).is_some() {
                if let Some(f) = flows.iter_mut().find(|f| f.id == flow) {
                    f.outstanding -= 1;
                }
                stats.lost(flow);
                out(ClientEvent::Lost { flow, seq });
            }
        }
        flows.retain(|f| f.current || f.outstanding > 0);

        let mut wake = now + POLL;
        if sending {
            wake = wake.min(next_send);
        }
        if let Some(&(_, _, sent)) = in_order.front() {
            wake = wake.min(sent + cfg.timeout);
        }
        let readable = wait_readable(&flows, wake.saturating_duration_since(now))?;
        for i in readable {
            let flow = &mut flows[i];
            loop {
                let n = match flow.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // ICMP errors (port unreachable) surface here; the request just times out.
                    Err(_) => continue,
                };
                let received = Instant::now();
                let Some(reply) = Reply::decode(&buf[..n]) else { continue };
                if reply.flow != flow.id {
                    continue;
                }
                let Some(sent) = pending.remove(&(reply.flow, reply.seq)) else { continue };
                flow.outstanding -= 1;
                let rtt = received.duration_since(sent);
                stats.received(flow.id, &reply.instance, rtt);
                out(ClientEvent::Reply {
                    flow: reply.flow,
                    seq: reply.seq,
                    instance: reply.instance,
                    rtt,
                    queue_us: reply.queue_us,
                    service_us: reply.service_us,
                });
            }
        }
    }
    Ok(stats.summary(next_flow))
}

/// One flow: its own connected socket, hence its own source port.
struct Flow {
    id: u64,
    sock: UdpSocket,
    next_seq: u64,
    outstanding: u32,
    current: bool,
}

impl Flow {
    fn open(id: u64, target: SocketAddr) -> Result<Self> {
        let any: SocketAddr =
            if target.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
        let sock = UdpSocket::bind(any).context("opening a flow socket")?;
        // Connected: the kernel hands us only replies from the service address itself.
        sock.connect(target).with_context(|| format!("connecting to {target}"))?;
        sock.set_nonblocking(true)?;
        Ok(Flow { id, sock, next_seq: 0, outstanding: 0, current: true })
    }
}

/// Waits up to `timeout` for any flow socket to become readable; returns their indices.
fn wait_readable(flows: &[Flow], timeout: Duration) -> Result<Vec<usize>> {
    let mut fds: Vec<libc::pollfd> = flows
        .iter()
        .map(|f| libc::pollfd { fd: f.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    // ppoll, not poll: sends are scheduled with sub-millisecond precision.
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a valid array of fds.len() pollfds and ts a valid timespec; no sigmask.
    let rc =
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Vec::new());
        }
        return Err(e).context("waiting for replies");
    }
    Ok(fds.iter().enumerate().filter(|(_, p)| p.revents != 0).map(|(i, _)| i).collect())
}

/// Per-flow and per-instance tallies.
#[derive(Default)]
struct Stats {
    /// flow -> (requests sent, losses, instance that answered it)
    flows: HashMap<u64, (u64, u64, Option<String>)>,
    rtts: BTreeMap<String, Vec<Duration>>,
}

impl Stats {
    fn sent_on(&mut self, flow: u64) {
        self.flows.entry(flow).or_default().0 += 1;
    }

    fn lost(&mut self, flow: u64) {
        self.flows.entry(flow).or_default().1 += 1;
    }

    fn received(&mut self, flow: u64, instance: &str, rtt: Duration) {
        self.flows.entry(flow).or_default().2 = Some(instance.to_string());
        self.rtts.entry(instance.to_string()).or_default().push(rtt);
    }

    fn summary(mut self, flows: u64) -> ClientSummary {
        let mut per_instance: BTreeMap<String, InstanceSummary> = BTreeMap::new();
        for (sent, lost, instance) in self.flows.into_values() {
            let s = per_instance.entry(instance.unwrap_or_else(|| UNANSWERED.into())).or_default();
            s.sent += sent;
            s.lost += lost;
        }
        let mut all = Vec::new();
        for (instance, rtts) in &mut self.rtts {
            let s = per_instance.entry(instance.clone()).or_default();
            (s.received, s.mean_rtt, s.p99_rtt) = rtt_stats(rtts);
            all.extend_from_slice(rtts);
        }
        let mut total = InstanceSummary::default();
        for s in per_instance.values() {
            total.sent += s.sent;
            total.lost += s.lost;
        }
        (total.received, total.mean_rtt, total.p99_rtt) = rtt_stats(&mut all);
        ClientSummary { flows, total, per_instance }
    }
}

/// (count, mean, 99th percentile); sorts `rtts`.
fn rtt_stats(rtts: &mut [Duration]) -> (u64, Duration, Duration) {
    if rtts.is_empty() {
        return (0, Duration::ZERO, Duration::ZERO);
    }
    rtts.sort_unstable();
    let n = rtts.len();
    let mean = rtts.iter().sum::<Duration>() / n as u32;
    let p99 = rtts[(n * 99).div_ceil(100) - 1];
    (n as u64, mean, p99)
}

/// xorshift64*: plenty for arrival times, and no dependency.
struct Rng(u64);

impl Rng {
    /// Seeded from the clock and the client's name, so clients started together differ.
    fn new(name: &str) -> Self {
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        for b in name.bytes() {
            seed = (seed ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(seed | 1)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// An exponentially distributed gap for a Poisson process of `rate` per second.
    fn exp_gap(&mut self, rate: f64) -> Duration {
        Duration::from_secs_f64(-self.unit().ln() / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_have_the_right_mean() {
        let mut rng = Rng::new("t");
        let n = 20_000;
        let total: f64 = (0..n).map(|_| rng.exp_gap(100.0).as_secs_f64()).sum();
        let mean = total / n as f64;
        assert!((mean - 0.01).abs() < 0.0005, "mean gap {mean}");
    }

    #[test]
    fn p99_of_a_hundred() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let (n, mean, p99) = rtt_stats(&mut v);
        assert_eq!((n, p99), (100, Duration::from_millis(99)));
        assert_eq!(mean, Duration::from_micros(50_500));
    }
}
