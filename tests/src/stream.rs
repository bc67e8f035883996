//! A steady request stream from a client namespace, for failure tests and benchmarks: `flows`
//! UDP sockets (one flow each, connected to the target) get requests round-robin at a fixed
//! total rate from one sender thread; one receiver thread polls them all and matches replies to
//! requests, timing each reply by the kernel's arrival stamp. [`RequestStream::stop`] hands
//! back the whole log, which [`StreamLog`] analyses: which instance answered each flow when,
//! what was lost, how long a failover took.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use cats_controller::netns;
use cats_lab::wire::{Reply, Request};

/// A request without a reply after this long is lost (a later reply is ignored).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the receiver looks at its stop flag while nothing arrives.
const POLL: Duration = Duration::from_millis(20);

/// One request of the stream and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Index of the flow (socket), 0-based.
    pub flow: usize,
    /// Sequence number within the flow, from 0.
    pub seq: u64,
    pub sent: Instant,
    /// `None`: no reply within [`REPLY_TIMEOUT`] (or the send itself failed).
    pub reply: Option<Answer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub at: Instant,
    pub instance: String,
}

impl StreamRecord {
    pub fn instance(&self) -> Option<&str> {
        self.reply.as_ref().map(|a| a.instance.as_str())
    }
}

/// A running stream. Dropping it without [`RequestStream::stop`] stops it too.
pub struct RequestStream {
    stop_sending: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Vec<StreamRecord>>>>,
    sender: Option<JoinHandle<()>>,
    receiver: Option<JoinHandle<()>>,
    started: Instant,
    flows: usize,
}

impl RequestStream {
    /// Opens `flows` sockets in the namespace at `ns` (the client LAN behind an ingress), each
    /// connected to `target`, and starts sending `rate_per_second` requests in total.
    pub fn start(
        ns: &Path,
        target: SocketAddr,
        flows: usize,
        rate_per_second: f64,
    ) -> Result<RequestStream> {
        if flows == 0 || !(rate_per_second > 0.0 && rate_per_second.is_finite()) {
            bail!("a stream needs at least one flow and a positive rate");
        }
        let sockets: Vec<UdpSocket> = netns::run_in(ns, move || {
            let bind: SocketAddr =
                if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
            (0..flows)
                .map(|_| {
                    let s = UdpSocket::bind(bind)?;
                    s.connect(target)?;
                    s.set_nonblocking(true)?;
                    timestamp_arrivals(&s)?;
                    Ok(s)
                })
                .collect()
        })
        .with_context(|| format!("opening {flows} flows to {target}"))?;
        let sockets = Arc::new(sockets);
        let log = Arc::new(Mutex::new(vec![Vec::new(); flows]));
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_receiving = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate_per_second);

        let receiver = {
            let (sockets, log, stop) = (sockets.clone(), log.clone(), stop_receiving.clone());
            std::thread::Builder::new()
                .name("stream-rx".into())
                .spawn(move || receive(&sockets, &log, &stop))?
        };
        let sender = {
            let (log, stop) = (log.clone(), stop_sending.clone());
            std::thread::Builder::new().name("stream-tx".into()).spawn(move || {
                send(&sockets, &log, &stop, started, interval);
            })?
        };
        Ok(RequestStream {
            stop_sending,
            stop_receiving,
            log,
            sender: Some(sender),
            receiver: Some(receiver),
            started,
            flows,
        })
    }

    /// When the stream started sending.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.log.lock().expect("stream log").iter().map(Vec::len).sum()
    }

    /// The log so far (replies still due show as lost), to wait for a stream to settle.
    pub fn snapshot(&self) -> StreamLog {
        let flows = self.log.lock().expect("stream log").clone();
        let mut records: Vec<StreamRecord> = flows.into_iter().flatten().collect();
        records.sort_by_key(|r| r.sent);
        StreamLog { flows: self.flows, records }
    }

    /// Waits until every flow has answered and, for `quiet`, every request sent in the last
    /// second but more than 100 ms ago has been answered; returns when that was. A fresh lab
    /// sometimes holds the first replies for a second: a neighbour entry on the way back
    /// (seen: core's for gw) whose first solicitation went unanswered waits for the 1 s
    /// retransmit.
    pub fn settle(&self, quiet: Duration, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        let mut settled_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let log = self.snapshot();
            let due = now - Duration::from_millis(100);
            let all_flows = log.instances_per_flow().iter().all(|f| !f.is_empty());
            let window = now.checked_sub(REPLY_TIMEOUT).unwrap_or(now);
            let behind =
                log.records.iter().any(|r| r.sent >= window && r.sent < due && r.reply.is_none());
            if all_flows && !behind {
                let since = *settled_since.get_or_insert(now);
                if now - since >= quiet {
                    return Ok(now);
                }
            } else {
                settled_since = None;
            }
            if now >= deadline {
                bail!("the stream never settled within {within:?}: {:?}", log.instances_per_flow());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending, waits for the replies still due (at most [`REPLY_TIMEOUT`]), and returns
    /// every request with its fate.
    pub fn stop(mut self) -> StreamLog {
        self.halt();
        let flows = std::mem::take(&mut *self.log.lock().expect("stream log"));
        let mut records: Vec<StreamRecord> = flows.into_iter().flatten().collect();
        records.sort_by_key(|r| r.sent);
        StreamLog { flows: self.flows, records }
    }

    fn halt(&mut self) {
        self.stop_sending.store(true, Ordering::Relaxed);
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
        while self.pending() > 0 {
            std::thread::sleep(POLL);
        }
        self.stop_receiving.store(true, Ordering::Relaxed);
        if let Some(t) = self.receiver.take() {
            let _ = t.join();
        }
    }

    /// Unanswered requests whose reply may still come.
    fn pending(&self) -> usize {
        let log = self.log.lock().expect("stream log");
        log.iter()
            .flatten()
            .filter(|r| r.reply.is_none() && r.sent.elapsed() <= REPLY_TIMEOUT)
            .count()
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.stop_sending.store(true, Ordering::Relaxed);
        self.stop_receiving.store(true, Ordering::Relaxed);
        for t in [self.sender.take(), self.receiver.take()].into_iter().flatten() {
            let _ = t.join();
        }
    }
}

/// Sends round-robin on a fixed schedule (request n at `start + n * interval`, so a late
/// wake-up does not slow the stream down).
fn send(
    sockets: &[UdpSocket],
    log: &Mutex<Vec<Vec<StreamRecord>>>,
    stop: &AtomicBool,
    start: Instant,
    interval: Duration,
) {
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + interval * n;
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(POLL));
            continue;
        }
        let flow = n as usize % sockets.len();
        let sent = Instant::now();
        // Logged before sending, so the receiver always finds the request of a reply.
        let seq = {
            let mut log = log.lock().expect("stream log");
            let seq = log[flow].len() as u64;
            log[flow].push(StreamRecord { flow, seq, sent, reply: None });
            seq
        };
        // A failed send (a pending ICMP error, say) is a lost request like any other.
        let _ = sockets[flow].send(&Request { flow: flow as u64, seq, sent_ns: 0 }.encode());
        n = n.wrapping_add(1);
    }
}

/// Polls every socket and records replies arriving within [`REPLY_TIMEOUT`].
fn receive(sockets: &[UdpSocket], log: &Mutex<Vec<Vec<StreamRecord>>>, stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: fds is a valid array of pollfd of the given length for the whole call.
        let n = unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL.as_millis() as i32)
        };
        if n <= 0 {
            continue;
        }
        for (flow, fd) in fds.iter_mut().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            // Drains the socket; an error (ICMP port unreachable) is read and so cleared.
            while let Ok((len, arrived)) = recv_stamped(&sockets[flow], &mut buf) {
                let at = arrival_instant(arrived);
                let Some(reply) = Reply::decode(&buf[..len]) else { continue };
                if reply.flow != flow as u64 {
                    continue;
                }
                let mut log = log.lock().expect("stream log");
                if let Some(r) = log[flow].get_mut(reply.seq as usize)
                    && r.reply.is_none()
                    && at.duration_since(r.sent) <= REPLY_TIMEOUT
                {
                    r.reply = Some(Answer { at, instance: reply.instance });
                }
            }
        }
    }
}

/// Asks the kernel to stamp each datagram with its arrival time, so a reply's time does not
/// depend on when the receiver thread gets to run.
fn timestamp_arrivals(sock: &UdpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Receives one datagram with its kernel arrival time (wall clock), if the kernel gave one.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64s: aligned for cmsghdr; room for one timespec message and more.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points at the iovec and control buffer above, alive for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the CMSG_*
    // macros stay within them, and the timespec is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// The monotonic instant of a wall-clock arrival stamp (now, without one).
fn arrival_instant(stamp: Option<SystemTime>) -> Instant {
    let (now, wall) = (Instant::now(), SystemTime::now());
    stamp
        .and_then(|s| wall.duration_since(s).ok())
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// Every request of a stream, in the order sent.
#[derive(Clone, Debug, Default)]
pub struct StreamLog {
    pub flows: usize,
    pub records: Vec<StreamRecord>,
}

/// Answered and lost requests of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub answered: usize,
    /// Lost requests of flows this instance answered last before the loss.
    pub lost: usize,
}

/// Lost requests of a flow before any reply on it are counted under this name.
pub const UNKNOWN: &str = "?";

/// On one flow, a run of requests that got no reply in time: lost ones, and late ones whose
/// reply came only after a reply to a request sent later (held somewhere, say in a neighbour
/// queue while a link was down). Bounded by in-order replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage {
    pub flow: usize,
    /// The in-order reply before the run (`None` if the flow's first requests are in it).
    pub last_before: Option<Answer>,
    /// The in-order reply after the run (`None` if the flow never answered in order again).
    pub first_after: Option<Answer>,
    pub lost: usize,
    pub late: usize,
    /// When the run's first request was sent.
    pub first_sent: Instant,
}

impl Outage {
    /// From the in-order reply before the run to the one after: how long the flow had no
    /// answer to count on.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.first_after.as_ref()?.at.duration_since(self.last_before.as_ref()?.at))
    }
}

/// One flow's move away from a dead instance, over its in-order replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFailover {
    pub flow: usize,
    /// The dead instance's last in-order reply before the flow moved (its last one at all
    /// if it never did).
    pub last_dead_reply: Instant,
    /// The next in-order reply, from another instance, and which instance.
    pub first_other: Option<Answer>,
    /// Requests sent in between without a reply.
    pub lost: usize,
    /// Requests sent in between answered late (by anyone).
    pub late: usize,
}

impl FlowFailover {
    /// Time from the dead instance's last reply to the first reply from another: the flow's
    /// failover time. `None` if the flow never moved.
    pub fn time(&self) -> Option<Duration> {
        self.first_other.as_ref().map(|a| a.at.duration_since(self.last_dead_reply))
    }
}

/// What became of a request, seen from its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate<'a> {
    /// Answered before any request sent after it.
    InOrder(&'a Answer),
    /// Answered, but after a request sent later was.
    Late,
    Lost,
}

/// The failover of every flow that was on a dead instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub flows: Vec<FlowFailover>,
}

impl Failover {
    /// Flows that never got a reply from another instance.
    pub fn stranded(&self) -> Vec<usize> {
        self.flows.iter().filter(|f| f.first_other.is_none()).map(|f| f.flow).collect()
    }

    /// Median failover time over the flows that moved (the upper median for an even count).
    pub fn median(&self) -> Option<Duration> {
        let mut t: Vec<Duration> = self.flows.iter().filter_map(FlowFailover::time).collect();
        t.sort();
        t.get(t.len() / 2).copied()
    }

    /// Longest failover time over the flows that moved.
    pub fn worst(&self) -> Option<Duration> {
        self.flows.iter().filter_map(FlowFailover::time).max()
    }

    /// Requests lost during the failovers, all flows together.
    pub fn lost(&self) -> usize {
        self.flows.iter().map(|f| f.lost).sum()
    }
}

impl StreamLog {
    /// The records of one flow, in sequence order.
    pub fn flow(&self, flow: usize) -> impl Iterator<Item = &StreamRecord> {
        self.records.iter().filter(move |r| r.flow == flow)
    }

    /// For each flow, the instances that answered it in order, each run of replies from one
    /// instance listed once: `[a]` never moved, `[a, b]` moved once, `[a, b, a]` came back.
    pub fn instances_per_flow(&self) -> Vec<Vec<String>> {
        (0..self.flows)
            .map(|f| {
                let mut seq: Vec<String> = Vec::new();
                for name in self.flow(f).filter_map(StreamRecord::instance) {
                    if seq.last().map(String::as_str) != Some(name) {
                        seq.push(name.to_string());
                    }
                }
                seq
            })
            .collect()
    }

    /// Flows whose first reply came from `instance`: those pinned to it at the start.
    pub fn flows_first_on(&self, instance: &str) -> Vec<usize> {
        let firsts = self.instances_per_flow();
        (0..self.flows)
            .filter(|&f| firsts[f].first().map(String::as_str) == Some(instance))
            .collect()
    }

    /// One flow's requests in the order sent, each with its fate.
    fn fates(&self, flow: usize) -> Vec<(&StreamRecord, Fate<'_>)> {
        let records: Vec<&StreamRecord> = self.flow(flow).collect();
        // Earliest reply to any request sent after each one.
        let mut earliest_later: Vec<Option<Instant>> = vec![None; records.len()];
        let mut min: Option<Instant> = None;
        for (i, r) in records.iter().enumerate().rev() {
            earliest_later[i] = min;
            if let Some(a) = &r.reply {
                min = Some(min.map_or(a.at, |m| m.min(a.at)));
            }
        }
        records
            .into_iter()
            .zip(earliest_later)
            .map(|(r, later)| {
                let fate = match &r.reply {
                    None => Fate::Lost,
                    Some(a) if later.is_some_and(|l| l < a.at) => Fate::Late,
                    Some(a) => Fate::InOrder(a),
                };
                (r, fate)
            })
            .collect()
    }

    /// For every flow `dead` answered in order: from its last in-order reply before the flow
    /// moved to the next in-order reply (from another instance), with the requests lost or
    /// late in between. A late reply from `dead` (a request it got after the flow had moved)
    /// does not count as the flow being back.
    pub fn failover(&self, dead: &str) -> Failover {
        let mut flows = Vec::new();
        for f in 0..self.flows {
            let fates = self.fates(f);
            let answers: Vec<(usize, &Answer)> = fates
                .iter()
                .enumerate()
                .filter_map(|(i, (_, fate))| match fate {
                    Fate::InOrder(a) => Some((i, *a)),
                    _ => None,
                })
                .collect();
            let moved = answers
                .windows(2)
                .find(|w| w[0].1.instance == dead && w[1].1.instance != dead)
                .map(|w| (w[0], Some(w[1])));
            let last_dead = answers.iter().rev().find(|(_, a)| a.instance == dead);
            let Some(((from, last), next)) = moved.or(last_dead.map(|l| (*l, None))) else {
                continue;
            };
            let to = next.map_or(fates.len(), |(i, _)| i);
            let between = &fates[from + 1..to];
            flows.push(FlowFailover {
                flow: f,
                last_dead_reply: last.at,
                first_other: next.map(|(_, a)| a.clone()),
                lost: between.iter().filter(|(_, fate)| *fate == Fate::Lost).count(),
                late: between.iter().filter(|(_, fate)| *fate == Fate::Late).count(),
            });
        }
        Failover { flows }
    }

    /// Every run of lost or late requests on every flow, in flow order then time order.
    pub fn outages(&self) -> Vec<Outage> {
        let mut out = Vec::new();
        for f in 0..self.flows {
            let mut last: Option<Answer> = None;
            let mut open: Option<Outage> = None;
            for (r, fate) in self.fates(f) {
                match fate {
                    Fate::InOrder(a) => {
                        if let Some(mut o) = open.take() {
                            o.first_after = Some(a.clone());
                            out.push(o);
                        }
                        last = Some(a.clone());
                    }
                    Fate::Lost | Fate::Late => {
                        let o = open.get_or_insert_with(|| Outage {
                            flow: f,
                            last_before: last.clone(),
                            first_after: None,
                            lost: 0,
                            late: 0,
                            first_sent: r.sent,
                        });
                        if fate == Fate::Lost {
                            o.lost += 1;
                        } else {
                            o.late += 1;
                        }
                    }
                }
            }
            out.extend(open);
        }
        out
    }

    /// Requests sent at or after `t` that got no reply.
    pub fn lost_after(&self, t: Instant) -> Vec<&StreamRecord> {
        self.records.iter().filter(|r| r.sent >= t && r.reply.is_none()).collect()
    }

    /// Requests sent in `[from, to)` that got no reply.
    pub fn lost_between(&self, from: Instant, to: Instant) -> Vec<&StreamRecord> {
        self.records.iter().filter(|r| r.sent >= from && r.sent < to && r.reply.is_none()).collect()
    }

    /// The last reply `instance` sent before `t` (by arrival), if any.
    pub fn last_reply_from(&self, instance: &str, before: Instant) -> Option<Instant> {
        self.answers(instance).filter(|a| a.at < before).map(|a| a.at).max()
    }

    /// The first reply from `instance` arriving at or after `t`, if any.
    pub fn first_reply_from(&self, instance: &str, after: Instant) -> Option<Instant> {
        self.answers(instance).filter(|a| a.at >= after).map(|a| a.at).min()
    }

    fn answers<'a>(&'a self, instance: &'a str) -> impl Iterator<Item = &'a Answer> {
        self.records.iter().filter_map(|r| r.reply.as_ref()).filter(move |a| a.instance == instance)
    }

    /// Answered and lost requests per instance; a lost request counts against the instance
    /// that last answered its flow ([`UNKNOWN`] if none had yet).
    pub fn per_instance(&self) -> BTreeMap<String, Counts> {
        let mut out: BTreeMap<String, Counts> = BTreeMap::new();
        for f in 0..self.flows {
            let mut current = UNKNOWN.to_string();
            for r in self.flow(f) {
                match r.instance() {
                    Some(name) => {
                        current = name.to_string();
                        out.entry(current.clone()).or_default().answered += 1;
                    }
                    None => out.entry(current.clone()).or_default().lost += 1,
                }
            }
        }
        out
    }

    pub fn answered(&self) -> usize {
        self.records.iter().filter(|r| r.reply.is_some()).count()
    }

    pub fn lost(&self) -> usize {
        self.records.len() - self.answered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log from a compact script: per flow, one entry per request, 10 ms apart per flow,
    /// `Some(name)` answered 2 ms later by `name`, `None` lost.
    fn log(t0: Instant, flows: &[&[Option<&str>]]) -> StreamLog {
        let mut records = Vec::new();
        for (f, script) in flows.iter().enumerate() {
            for (seq, who) in script.iter().enumerate() {
                let sent = t0 + Duration::from_millis(10 * seq as u64 + f as u64);
                records.push(StreamRecord {
                    flow: f,
                    seq: seq as u64,
                    sent,
                    reply: who.map(|w| Answer {
                        at: sent + Duration::from_millis(2),
                        instance: w.to_string(),
                    }),
                });
            }
        }
        records.sort_by_key(|r| r.sent);
        StreamLog { flows: flows.len(), records }
    }

    const A: Option<&str> = Some("a");
    const B: Option<&str> = Some("b");
    const C: Option<&str> = Some("c");

    #[test]
    fn instances_per_flow_lists_each_run_once() {
        let t0 = Instant::now();
        let l = log(t0, &[&[A, A, None, A], &[A, None, B, B], &[B, A, B], &[None, None]]);
        assert_eq!(
            l.instances_per_flow(),
            vec![vec!["a"], vec!["a", "b"], vec!["b", "a", "b"], Vec::<&str>::new()]
        );
        assert_eq!(l.flows_first_on("a"), vec![0, 1]);
        assert_eq!(l.flows_first_on("b"), vec![2]);
    }

    #[test]
    fn failover_times_and_losses_of_the_flows_that_were_on_the_dead_instance() {
        let t0 = Instant::now();
        let l = log(
            t0,
            &[
                &[A, A, None, None, B, B], // moved after 2 lost: 30 ms from last a to first b
                &[A, None, C],             // moved after 1 lost: 20 ms
                &[B, B, B],                // never on a
                &[A, A, None],             // stranded
            ],
        );
        let f = l.failover("a");
        assert_eq!(f.flows.iter().map(|x| x.flow).collect::<Vec<_>>(), vec![0, 1, 3]);
        assert_eq!(f.flows[0].time(), Some(Duration::from_millis(30)));
        assert_eq!(f.flows[0].first_other.as_ref().unwrap().instance, "b");
        assert_eq!(f.flows[1].time(), Some(Duration::from_millis(20)));
        assert_eq!(f.flows[1].lost, 1);
        assert_eq!(f.stranded(), vec![3]);
        assert_eq!(f.lost(), 2 + 1 + 1);
        assert_eq!(f.flows[2].last_dead_reply, t0 + Duration::from_millis(10 + 3 + 2));
        assert_eq!(f.median(), Some(Duration::from_millis(30)));
        assert_eq!(f.worst(), Some(Duration::from_millis(30)));
        assert!(l.failover("nobody").flows.is_empty());
    }

    #[test]
    fn a_reply_held_during_the_failover_and_delivered_later_is_late_not_a_way_back() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let rec = |seq: u64, sent: u64, reply: Option<(u64, &str)>| StreamRecord {
            flow: 0,
            seq,
            sent: ms(sent),
            reply: reply.map(|(at, w)| Answer { at: ms(at), instance: w.into() }),
        };
        // a answers 0 and 1; 2 is lost; 3 is held and a answers it at 500 ms, after b has
        // answered 4 and 5 (the flow moved at 402 ms).
        let l = StreamLog {
            flows: 1,
            records: vec![
                rec(0, 0, Some((2, "a"))),
                rec(1, 100, Some((102, "a"))),
                rec(2, 200, None),
                rec(3, 300, Some((500, "a"))),
                rec(4, 400, Some((402, "b"))),
                rec(5, 510, Some((512, "b"))),
            ],
        };
        let f = l.failover("a");
        assert_eq!(f.flows.len(), 1);
        let x = &f.flows[0];
        assert_eq!((x.last_dead_reply, x.lost, x.late), (ms(102), 1, 1));
        assert_eq!(
            x.first_other.as_ref().map(|a| (a.at, a.instance.as_str())),
            Some((ms(402), "b"))
        );
        assert_eq!(x.time(), Some(Duration::from_millis(300)));
        assert!(f.stranded().is_empty());

        let o = l.outages();
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].lost, o[0].late, o[0].first_sent), (1, 1, ms(200)));
        assert_eq!(o[0].duration(), Some(Duration::from_millis(300)));
        assert_eq!(l.lost(), 1);
    }

    #[test]
    fn outages_losses_and_counts() {
        let t0 = Instant::now();
        let l = log(t0, &[&[A, None, None, A, None], &[None, B, B, B, B]]);
        let o = l.outages();
        assert_eq!(o.len(), 3);
        // Flow 0: lost seq 1 and 2 between replies to seq 0 (at 2 ms) and seq 3 (at 32 ms).
        assert_eq!((o[0].flow, o[0].lost), (0, 2));
        assert_eq!(o[0].duration(), Some(Duration::from_millis(30)));
        assert_eq!(o[0].first_sent, t0 + Duration::from_millis(10));
        // Flow 0's last request: lost, never answered again.
        assert_eq!((o[1].lost, o[1].first_after.is_none(), o[1].duration()), (1, true, None));
        // Flow 1's first request: no reply before it.
        assert_eq!((o[2].flow, o[2].last_before.is_none()), (1, true));

        assert_eq!(l.lost(), 4);
        assert_eq!(l.answered(), 6);
        // Sent at or after 20 ms: flow 0 seq 2 (20 ms) and seq 4 (40 ms).
        let late = l.lost_after(t0 + Duration::from_millis(20));
        assert_eq!(late.iter().map(|r| (r.flow, r.seq)).collect::<Vec<_>>(), vec![(0, 2), (0, 4)]);
        assert_eq!(l.lost_between(t0, t0 + Duration::from_millis(20)).len(), 2);

        let counts = l.per_instance();
        assert_eq!(counts["a"], Counts { answered: 2, lost: 3 });
        assert_eq!(counts["b"], Counts { answered: 4, lost: 0 });
        assert_eq!(counts[UNKNOWN], Counts { answered: 0, lost: 1 });

        assert_eq!(
            l.last_reply_from("a", t0 + Duration::from_millis(40)),
            Some(t0 + Duration::from_millis(32))
        );
        assert_eq!(
            l.first_reply_from("b", t0 + Duration::from_millis(20)),
            Some(t0 + Duration::from_millis(23))
        );
        assert_eq!(l.first_reply_from("a", t0 + Duration::from_millis(33)), None);
    }
}
