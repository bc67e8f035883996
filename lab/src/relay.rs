//! The lab's one-way delay element, standing in for netem (which this kernel lacks).
//!
//! Two AF_PACKET sockets, one per interface, copy every frame to the other interface after a
//! fixed per-direction delay. Per direction a receiver thread stamps frames with their due time
//! and a sender thread sleeps until the head frame is due: a FIFO with a constant delay stays
//! in order, so the head is always the next one due.
//!
//! Frames are read and written with a virtio-net header (PACKET_VNET_HDR) so that what a local
//! TCP/UDP stack hands a veth is carried faithfully: GSO super-frames (up to 64 KiB) are passed
//! on as such and segmented by the kernel on the way out, and checksums the sender left to
//! "hardware" are filled in here, as a real NIC would, so the frame on the far side is complete
//! even for consumers that only see bytes (XDP).

use std::{
    collections::VecDeque,
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

// From <linux/if_packet.h> and <linux/virtio_net.h>.
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// Largest frame accepted: a 64 KiB GSO frame plus headers (so 9000-byte jumbo frames fit
/// with plenty of room); anything longer is counted as dropped, never truncated.
const MAX_FRAME: usize = 65_536 + 256;
/// Per-direction queue bounds; beyond them frames are dropped (a full link, not a full disk).
const QUEUE_FRAMES: usize = 8192;
const QUEUE_BYTES: usize = 32 << 20;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Forwards frames between interfaces `a` and `b` (in the calling thread's network namespace)
/// in both directions, each delayed by its direction's delay, until `stop` is set.
pub fn run_relay(
    a: &str,
    b: &str,
    delay_a_to_b: Duration,
    delay_b_to_a: Duration,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let sock_a = PacketSocket::open(a)?;
    let sock_b = PacketSocket::open(b)?;
    let a_to_b = DelayLine::new(delay_a_to_b);
    let b_to_a = DelayLine::new(delay_b_to_a);
    let failed = AtomicBool::new(false);
    let quit = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);

    // Scoped threads are cloned from this one, so they stay in its network namespace.
    // A thread that fails stops the others.
    let guarded = |r: Result<()>| {
        if r.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        r
    };
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles = [
            s.spawn(|| guarded(receive(&sock_a, &a_to_b, &quit))),
            s.spawn(|| guarded(receive(&sock_b, &b_to_a, &quit))),
            s.spawn(|| guarded(transmit(&a_to_b, &sock_b, &quit))),
            s.spawn(|| guarded(transmit(&b_to_a, &sock_a, &quit))),
        ];
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("relay thread panicked"))))
            .collect()
    });
    for (name, line) in [(format!("{a}->{b}"), &a_to_b), (format!("{b}->{a}"), &b_to_a)] {
        tracing::info!(
            direction = name,
            forwarded = line.forwarded.load(Ordering::Relaxed),
            dropped = line.dropped.load(Ordering::Relaxed),
            "relay stopped"
        );
    }
    results.into_iter().collect()
}

/// Reads frames from `sock` into `line` until told to quit.
fn receive(sock: &PacketSocket, line: &DelayLine, quit: &dyn Fn() -> bool) -> Result<()> {
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_FRAME];
    while !quit() {
        match sock.recv(&mut buf) {
            Ok(n) if n > buf.len() || n < VNET_HDR_LEN => {
                line.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(n) => {
                let mut frame = buf[..n].to_vec();
                finish_checksum(&mut frame);
                line.push(frame);
            }
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("receiving on {}", sock.ifname)),
        }
    }
    Ok(())
}

/// Sends frames from `line` on `sock` as they come due, until told to quit.
fn transmit(line: &DelayLine, sock: &PacketSocket, quit: &dyn Fn() -> bool) -> Result<()> {
    precise_timers();
    while let Some(frame) = line.pop_due(quit) {
        match sock.send(&frame) {
            Ok(()) => line.forwarded.fetch_add(1, Ordering::Relaxed),
            // A down interface or a full device queue loses the frame, like a real link.
            Err(_) => line.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
    Ok(())
}

/// Lets the calling thread's sleeps end on time: the default 50 µs timer slack would be
/// added to every emulated delay.
pub(crate) fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

fn transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
        // Reported once after the interface went down; the socket keeps working once it is up.
        || e.raw_os_error() == Some(libc::ENETDOWN)
}

/// If the sender left the L4 checksum to the device (NEEDS_CSUM) and the frame is not a GSO
/// frame (which the kernel segments and checksums on the way out), compute it now and clear
/// the header, as a NIC would have before putting the frame on a wire.
fn finish_checksum(buf: &mut [u8]) {
    let (hdr, frame) = buf.split_at_mut(VNET_HDR_LEN);
    if hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 || hdr[1] != VIRTIO_NET_HDR_GSO_NONE {
        return;
    }
    let start = u16::from_ne_bytes([hdr[6], hdr[7]]) as usize;
    let field = start + u16::from_ne_bytes([hdr[8], hdr[9]]) as usize;
    if field + 2 > frame.len() {
        return; // malformed; let the kernel judge it
    }
    // The field holds the pseudo-header sum already; summing over it completes the checksum.
    let mut sum: u64 = 0;
    let mut chunks = frame[start..].chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // 0 and 0xffff are the same in one's complement; UDP reserves 0 for "no checksum".
    let check = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[field..field + 2].copy_from_slice(&check.to_be_bytes());
    hdr.fill(0);
}

/// One direction's FIFO of frames with the instant each is due.
struct DelayLine {
    delay: Duration,
    queue: Mutex<Queue>,
    ready: Condvar,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
}

impl DelayLine {
    fn new(delay: Duration) -> Self {
        DelayLine {
            delay,
            queue: Mutex::default(),
            ready: Condvar::new(),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, frame: Vec<u8>) {
        let due = Instant::now() + self.delay;
        let mut q = self.queue.lock().expect("relay queue poisoned");
        if q.frames.len() >= QUEUE_FRAMES || q.bytes + frame.len() > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.bytes += frame.len();
        let was_empty = q.frames.is_empty();
        q.frames.push_back((due, frame));
        // Only an empty queue has a sender waiting without a deadline of its own.
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Blocks until the head frame is due and returns it; `None` once told to quit.
    fn pop_due(&self, quit: &dyn Fn() -> bool) -> Option<Vec<u8>> {
        let mut q = self.queue.lock().expect("relay queue poisoned");
        loop {
            if quit() {
                return None;
            }
            let now = Instant::now();
            let wait = match q.frames.front() {
                Some((due, _)) if *due <= now => {
                    let (_, frame) = q.frames.pop_front().expect("front exists");
                    q.bytes -= frame.len();
                    return Some(frame);
                }
                Some((due, _)) => (*due - now).min(POLL),
                None => POLL,
            };
            q = self.ready.wait_timeout(q, wait).expect("relay queue poisoned").0;
        }
    }
}

/// An AF_PACKET raw socket bound to one interface, frames prefixed with a virtio-net header.
struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    fn open(ifname: &str) -> Result<Self> {
        let cname = CString::new(ifname).context("interface name")?;
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname} in this network namespace");
        }
        // Protocol 0: the socket receives nothing until bind() names ETH_P_ALL together with the
        // interface, so no frame from another interface is queued in between.
        // SAFETY: plain socket(2) call; the fd is owned by OwnedFd below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening an AF_PACKET socket");
        }
        // SAFETY: fd is fresh and owned by nobody else.
        let sock = PacketSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) }, ifname: ifname.into() };
        // Without this the socket would read back every frame it transmits.
        sock.set(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1).context("PACKET_IGNORE_OUTGOING")?;
        sock.set(libc::SOL_PACKET, PACKET_VNET_HDR, 1).context("PACKET_VNET_HDR")?;
        // Room for a burst while the receiver thread is descheduled; FORCE needs CAP_NET_ADMIN.
        if sock.set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).is_err() {
            let _ = sock.set(libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
        }
        let tv = libc::timeval { tv_sec: 0, tv_usec: POLL.as_micros() as libc::suseconds_t };
        sock.set_raw(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).context("SO_RCVTIMEO")?;

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("binding to {ifname}"));
        }
        Ok(sock)
    }

    fn set(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        self.set_raw(level, name, &value)
    }

    fn set_raw<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: value points to a live T of the given size for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Reads one frame (header included); returns its real length even if it did not fit.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe {
            libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC)
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    /// Sends one frame (header included) out of the bound interface.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid for reads of frame.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_a_partial_checksum() {
        // A 4-byte "L4 header" at offset 2 with the checksum field at offset 2 of it, seeded
        // with 0x0001 (standing in for the pseudo-header sum).
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        buf[6..8].copy_from_slice(&2u16.to_ne_bytes());
        buf[8..10].copy_from_slice(&2u16.to_ne_bytes());
        buf.extend_from_slice(&[0xff, 0xff, 0x12, 0x34, 0x00, 0x01, 0xab]);
        finish_checksum(&mut buf);
        assert!(buf[..VNET_HDR_LEN].iter().all(|&b| b == 0));
        // Sum 0x1234 + 0x0001 + 0xab00 = 0xbd35; complement 0x42ca.
        assert_eq!(&buf[VNET_HDR_LEN + 4..VNET_HDR_LEN + 6], &[0x42, 0xca]);
    }
}
