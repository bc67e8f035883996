//! The link prober of one node (C-NMA): a thread in the node's network namespace that answers
//! probes on [`PROBE_PORT`] and, every interval, probes the peer at the other end of each of
//! the node's links.
//!
//! One UDP socket does both: probes go out from [`PROBE_PORT`] to the peer's [`PROBE_PORT`],
//! whose prober echoes them back. A probe carries the sender's monotonic send time, so the
//! round trip is measured on one clock, and the echo needs no state on the answering side.
//!
//! Wire format (24 bytes, big endian):
//!
//! ```text
//! 0..4   magic "CATP"
//! 4      version (1)
//! 5      kind: 0 probe, 1 echo
//! 6..8   link: 0-based position of the link in spec.links, as the sender numbers it
//! 8..16  sequence number (per link)
//! 16..24 sender's send time, ns on its monotonic clock
//! ```

use std::{
    io,
    net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tracing::{debug, warn};

use super::{LinkTable, LinkTarget, ProbeConfig};

/// The UDP port every prober listens on and sends from.
pub const PROBE_PORT: u16 = 7843;

const MAGIC: [u8; 4] = *b"CATP";
const VERSION: u8 = 1;
const KIND_PROBE: u8 = 0;
const KIND_ECHO: u8 = 1;
const LEN: usize = 24;

/// The longest the prober blocks before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// One probe or echo on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub echo: bool,
    pub link: u16,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Packet {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = if self.echo { KIND_ECHO } else { KIND_PROBE };
        b[6..8].copy_from_slice(&self.link.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < LEN || b[0..4] != MAGIC || b[4] != VERSION || b[5] > KIND_ECHO {
            return None;
        }
        Some(Packet {
            echo: b[5] == KIND_ECHO,
            link: u16::from_be_bytes(b[6..8].try_into().ok()?),
            seq: u64::from_be_bytes(b[8..16].try_into().ok()?),
            sent_ns: u64::from_be_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// A running prober; dropping it (or setting its stop flag) ends the thread.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the prober of `node` inside `netns` (`None`: the current namespace), probing
    /// `targets` and recording into `table`.
    pub fn spawn(
        node: &str,
        netns: Option<PathBuf>,
        targets: Vec<LinkTarget>,
        table: LinkTable,
        config: ProbeConfig,
    ) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = node.to_string();
        let thread =
            std::thread::Builder::new().name(format!("probe:{node}")).spawn(move || {
                let run = || -> Result<()> {
                    if let Some(ns) = &netns {
                        crate::netns::enter(ns)?;
                    }
                    run(&name, &targets, &table, config, &flag)
                };
                if let Err(e) = run() {
                    warn!(node = %name, error = %format!("{e:#}"), "link prober stopped");
                }
            })?;
        Ok(Prober { stop, thread: Some(thread) })
    }

    /// Whether the thread has ended: it failed to enter its namespace or bind its port, or it
    /// was stopped.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the thread to stop without waiting for it.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.signal_stop();
        // The thread looks at the flag at least every POLL, so this wait is short.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind() -> Result<UdpSocket> {
    let sock =
        UdpSocket::bind(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, PROBE_PORT, 0, 0)))
            .with_context(|| format!("binding the link prober to UDP port {PROBE_PORT}"))?;
    Ok(sock)
}

fn run(
    node: &str,
    targets: &[LinkTarget],
    table: &LinkTable,
    config: ProbeConfig,
    stop: &AtomicBool,
) -> Result<()> {
    let sock = bind()?;
    let epoch = Instant::now();
    let mono_ns = |t: Instant| t.duration_since(epoch).as_nanos() as u64;
    for t in targets {
        table.register(t.link, node, config.stats);
    }
    let mut seq: u64 = 0;
    let mut next = Instant::now();
    let mut buf = [0u8; 256];
    debug!(node, links = targets.len(), "link prober started");
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            for t in targets {
                let p = Packet { echo: false, link: t.link as u16, seq, sent_ns: mono_ns(now) };
                let to = SocketAddr::V6(SocketAddrV6::new(t.peer_address, PROBE_PORT, 0, 0));
                // A probe the kernel refuses (no address or route yet, interface down) is
                // recorded all the same and times out as lost.
                if let Err(e) = sock.send_to(&p.encode(), to) {
                    debug!(node, link = t.link, error = %e, "probe not sent");
                }
                table.with(t.link, node, |s| s.sent(seq, now));
            }
            seq += 1;
            // On schedule, without drift; after a long stall, start again from now.
            next += config.interval;
            if next < now {
                next = now + config.interval;
            }
        }
        let wait =
            next.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), POLL);
        sock.set_read_timeout(Some(wait))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e).context("receiving probes"),
        };
        let at = Instant::now();
        let Some(p) = Packet::decode(&buf[..n]) else { continue };
        if !p.echo {
            let echo = Packet { echo: true, ..p };
            let _ = sock.send_to(&echo.encode(), from);
            continue;
        }
        let link = usize::from(p.link);
        let Some(target) = targets.iter().find(|t| t.link == link) else { continue };
        if from.ip() != std::net::IpAddr::V6(target.peer_address) {
            continue;
        }
        let rtt = Duration::from_nanos(mono_ns(at).saturating_sub(p.sent_ns));
        table.with(link, node, |s| {
            s.echoed(p.seq, rtt, at);
        });
    }
    debug!(node, "link prober stopped");
    Ok(())
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        // ICMP errors reported on the socket by earlier sends: the peer is not there (yet).
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_and_junk_is_refused() {
        let p = Packet { echo: false, link: 3, seq: 77, sent_ns: 123_456_789 };
        let b = p.encode();
        assert_eq!(Packet::decode(&b), Some(p));
        let e = Packet { echo: true, ..p };
        assert_eq!(Packet::decode(&e.encode()), Some(e));
        assert_eq!(Packet::decode(&b[..23]), None, "short");
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Packet::decode(&bad), None, "magic");
        let mut bad = b;
        bad[5] = 2;
        assert_eq!(Packet::decode(&bad), None, "kind");
    }
}
