//! The headend's health prober: BFD-like probing of every instance slot over the segment
//! lists the headend pushes (primary and alternate), marking slots down in `CATS_HEALTH` so
//! the XDP headend fails over by itself, and reporting unreachable instances to the
//! controller, which then stops choosing them.
//!
//! It runs on a thread of its own beside the agent's (inside the node's network namespace)
//! and needs nothing from the controller once it has the headend state: the local decision
//! does not wait for the controller's next poll.

mod packet;
mod session;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use cats_common::{
    health::{PROBE_LEN, Probe, ProbePath},
    maps::{HEALTH_ALTERNATE_DOWN, HEALTH_PRIMARY_DOWN},
};
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::watch};
use tracing::{info, warn};

pub use self::{
    packet::ProbeRoute,
    session::{Session, Transition},
};
use crate::state::HeadendState;

/// Where the prober's verdicts go: the `CATS_HEALTH` map, or a test's table.
pub trait HealthSink {
    fn write(&mut self, slot: u32, bits: u32) -> Result<()>;
    /// What the map holds now (0 when unknown).
    fn read(&self, slot: u32) -> u32;
}

/// How often the prober wakes to send due probes and check detection times.
const TICK: Duration = Duration::from_millis(5);
/// Sent probes remembered per path, to time their echoes.
const REMEMBERED: usize = 64;

/// One probed path, as the status file shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    pub instance: String,
    pub slot: u32,
    pub path: String,
    pub up: bool,
    pub rtt_ms: Option<f64>,
}

/// What the prober last found: per path, and the instances unreachable over all of theirs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub paths: Vec<PathReport>,
    pub unreachable: Vec<String>,
}

/// One path being probed.
struct Probed {
    instance: String,
    route: ProbeRoute,
    session: Session,
    next_send: Instant,
    sent: VecDeque<(u64, Instant)>,
}

/// What to probe for `state`: every instance slot's primary path and, where it has one, its
/// alternate path, to the service's first IPv6 address. Services without an IPv6 address
/// are not probed (the probe's echo comes back to the node's IPv6 router address).
pub fn plan(
    state: &HeadendState,
    source_port: u16,
) -> BTreeMap<(u32, ProbePath), (String, ProbeRoute, Duration, u32)> {
    let mut out = BTreeMap::new();
    for inst in &state.instances {
        let Some(svc) = state.services.iter().find(|s| s.name == inst.service && s.health.enabled)
        else {
            continue;
        };
        let Some(service) = svc.matches.iter().find_map(|m| match m.address {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }) else {
            continue;
        };
        let interval = Duration::from_millis(u64::from(svc.health.interval_ms.max(1)));
        let paths = [
            (ProbePath::Primary, &inst.segments),
            (ProbePath::Alternate, &inst.alternate_segments),
        ];
        for (path, segments) in paths {
            if segments.is_empty() {
                continue;
            }
            let route = ProbeRoute {
                segments: segments.clone(),
                source: state.encap_source,
                source_port,
                service,
                port: svc.health.port,
                cs_id: inst.cs_id,
            };
            out.insert(
                (inst.slot, path),
                (inst.name.clone(), route, interval, svc.health.multiplier),
            );
        }
    }
    out
}

/// The `CATS_HEALTH` word of a slot from its paths' states.
fn bits(primary_up: bool, alternate_up: Option<bool>) -> u32 {
    let mut bits = 0;
    if !primary_up {
        bits |= HEALTH_PRIMARY_DOWN;
    }
    if alternate_up != Some(true) {
        bits |= HEALTH_ALTERNATE_DOWN;
    }
    // A healthy primary needs nothing else: 0 is the map's default and means "healthy".
    if primary_up { 0 } else { bits }
}

/// Probes the paths of the newest headend state until `desired` closes.
pub async fn run(
    mut desired: watch::Receiver<Option<Arc<HeadendState>>>,
    mut sink: impl HealthSink,
    report: impl Fn(HealthReport),
) -> Result<()> {
    let raw = RawSocket::open().context("opening the raw socket for health probes")?;
    let mut socket: Option<(Ipv6Addr, UdpSocket)> = None;
    let mut probed: BTreeMap<(u32, ProbePath), Probed> = BTreeMap::new();
    let mut written: BTreeMap<u32, u32> = BTreeMap::new();
    let mut last_report = HealthReport::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut replan = true;
    let mut first_plan = true;
    let mut bind_again_at = Instant::now();
    loop {
        if replan {
            replan = false;
            let state = desired.borrow_and_update().clone();
            let Some(state) = state else {
                if desired.changed().await.is_err() {
                    return Ok(());
                }
                replan = true;
                continue;
            };
            if socket.as_ref().is_none_or(|(a, _)| *a != state.encap_source) {
                socket = bind(state.encap_source).await;
                // The router address may not be configured yet: try again in a while.
                bind_again_at = Instant::now() + Duration::from_secs(1);
            }
            let port =
                socket.as_ref().and_then(|(_, s)| s.local_addr().ok()).map_or(0, |a| a.port());
            let now = Instant::now();
            let mut next = BTreeMap::new();
            for (key, (instance, route, interval, multiplier)) in plan(&state, port) {
                let kept = probed.remove(&key).filter(|p| {
                    p.route == route && p.session.interval() == interval && p.instance == instance
                });
                let p = kept.unwrap_or_else(|| {
                    // At start, reconcile with what the map says (an earlier agent's verdict)
                    // rather than flush it; a path that is new later starts up.
                    let (slot, path) = key;
                    let found = if first_plan {
                        *written.entry(slot).or_insert_with(|| sink.read(slot))
                    } else {
                        0
                    };
                    let down = match path {
                        ProbePath::Primary => found & HEALTH_PRIMARY_DOWN != 0,
                        ProbePath::Alternate => found & HEALTH_ALTERNATE_DOWN != 0,
                    };
                    let session = if down {
                        Session::new_down(interval, multiplier, now)
                    } else {
                        Session::new(interval, multiplier, now)
                    };
                    Probed { instance, route, session, next_send: now, sent: VecDeque::new() }
                });
                next.insert(key, p);
            }
            probed = next;
            first_plan = false;
        }
        let recv = async {
            let mut buf = [0u8; PROBE_LEN + 1];
            match &socket {
                Some((_, s)) => s.recv_from(&mut buf).await.ok().map(|(n, _)| (buf, n)),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                replan = true;
                continue;
            }
            got = recv => {
                if let Some((buf, n)) = got {
                    take_echo(&mut probed, &buf[..n], Instant::now());
                }
            }
            _ = tick.tick() => {
                // Echoes that came in while this thread was not running are news, not silence:
                // read them all before judging any path.
                if let Some((_, s)) = &socket {
                    let mut buf = [0u8; PROBE_LEN + 1];
                    while let Ok((n, _)) = s.try_recv_from(&mut buf) {
                        take_echo(&mut probed, &buf[..n], Instant::now());
                    }
                }
                let now = Instant::now();
                for (&(slot, path), p) in probed.iter_mut() {
                    if let Some(t) = p.session.tick(now) {
                        log_transition(slot, path, p, t);
                    }
                    if now >= p.next_send {
                        send(&raw, slot, path, p, now);
                        p.next_send = now + p.session.interval();
                    }
                }
            }
        }
        if socket.is_none() && Instant::now() >= bind_again_at {
            replan = true;
        }
        let verdicts = verdicts(&probed);
        for (&slot, &b) in &verdicts {
            if written.get(&slot) != Some(&b) {
                sink.write(slot, b)?;
                written.insert(slot, b);
            }
        }
        // Slots no longer probed are healthy by default again.
        let gone: Vec<u32> =
            written.keys().filter(|s| !verdicts.contains_key(s)).copied().collect();
        for slot in gone {
            sink.write(slot, 0)?;
            written.remove(&slot);
        }
        let now_report = health_report(&probed);
        if now_report != last_report {
            report(now_report.clone());
            last_report = now_report;
        }
    }
}

/// Credits an echo to the path and probe it answers; anything else is ignored.
fn take_echo(probed: &mut BTreeMap<(u32, ProbePath), Probed>, bytes: &[u8], now: Instant) {
    if let Some(probe) = Probe::decode(bytes)
        && let Some(p) = probed.get_mut(&(probe.slot, probe.path))
        && let Some(&(_, sent)) = p.sent.iter().find(|(seq, _)| *seq == probe.seq)
        && let Some(t) = p.session.echo(sent, now)
    {
        log_transition(probe.slot, probe.path, p, t);
    }
}

fn verdicts(probed: &BTreeMap<(u32, ProbePath), Probed>) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let slots: BTreeSet<u32> = probed.keys().map(|(s, _)| *s).collect();
    for slot in slots {
        let up = |path| probed.get(&(slot, path)).map(|p: &Probed| p.session.is_up());
        let primary = up(ProbePath::Primary).unwrap_or(true);
        out.insert(slot, bits(primary, up(ProbePath::Alternate)));
    }
    out
}

fn health_report(probed: &BTreeMap<(u32, ProbePath), Probed>) -> HealthReport {
    let paths: Vec<PathReport> = probed
        .iter()
        .map(|(&(slot, path), p)| PathReport {
            instance: p.instance.clone(),
            slot,
            path: match path {
                ProbePath::Primary => "primary",
                ProbePath::Alternate => "alternate",
            }
            .to_string(),
            up: p.session.is_up(),
            // Rounded so the report changes with the state, not with every echo.
            rtt_ms: p.session.rtt.map(|r| (r.as_secs_f64() * 1e3).round()),
        })
        .collect();
    let mut by_instance: BTreeMap<&str, bool> = BTreeMap::new();
    for p in &paths {
        *by_instance.entry(&p.instance).or_insert(false) |= p.up;
    }
    let unreachable =
        by_instance.into_iter().filter(|(_, up)| !up).map(|(i, _)| i.to_string()).collect();
    HealthReport { paths, unreachable }
}

fn log_transition(slot: u32, path: ProbePath, p: &Probed, t: Transition) {
    let detection_ms = p.session.detection().as_millis();
    match t {
        Transition::WentDown => {
            warn!(instance = %p.instance, slot, ?path, detection_ms, "path down: no echo")
        }
        Transition::CameUp => info!(instance = %p.instance, slot, ?path, "path up again"),
    }
}

fn send(raw: &RawSocket, slot: u32, path: ProbePath, p: &mut Probed, now: Instant) {
    let seq = p.session.next_seq;
    p.session.next_seq += 1;
    let payload = Probe { slot, path, seq }.encode();
    debug_assert_eq!(payload.len(), PROBE_LEN);
    if p.route.source_port == 0 {
        return; // no socket for the echoes yet
    }
    let Some(packet) = packet::build(&p.route, &payload) else { return };
    // A failed send (no route right now, say) is a lost probe: the session notices.
    let _ = raw.send_to(&packet, p.route.segments[0]);
    if p.sent.len() == REMEMBERED {
        p.sent.pop_front();
    }
    p.sent.push_back((seq, now));
}

async fn bind(source: Ipv6Addr) -> Option<(Ipv6Addr, UdpSocket)> {
    match UdpSocket::bind(SocketAddr::new(source.into(), 0)).await {
        Ok(s) => Some((source, s)),
        Err(e) => {
            warn!(%source, error = %e, "cannot bind the probe socket yet");
            None
        }
    }
}

/// A raw IPv6 socket that sends whole packets, headers included (IPPROTO_RAW).
struct RawSocket(OwnedFd);

impl RawSocket {
    fn open() -> Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(RawSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send_to(&self, packet: &[u8], to: Ipv6Addr) -> std::io::Result<()> {
        // SAFETY: sockaddr_in6 is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_addr.s6_addr = to.octets();
        // SAFETY: the buffer and the address outlive the call; lengths are theirs.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_healthy_unless_its_primary_is_down() {
        assert_eq!(bits(true, None), 0);
        assert_eq!(bits(true, Some(false)), 0);
        assert_eq!(bits(false, Some(true)), HEALTH_PRIMARY_DOWN);
        assert_eq!(bits(false, Some(false)), HEALTH_PRIMARY_DOWN | HEALTH_ALTERNATE_DOWN);
        assert_eq!(bits(false, None), HEALTH_PRIMARY_DOWN | HEALTH_ALTERNATE_DOWN);
    }
}
