//! An emulated compute instance: a FIFO queue in front of `workers` parallel servers, each
//! request taking `request_cost / tops` seconds.
//!
//! Service is emulated by sleeping, not by burning CPU, so many instances fit on a small
//! machine. Each server keeps a virtual clock: a request starts at the later of its arrival and
//! the end of the server's previous request, so late thread wake-ups do not add up into drift
//! and the queueing delay is that of an ideal FIFO multi-server queue.

use std::{
    collections::VecDeque,
    io,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use cats_common::health::is_probe;

use crate::wire::{Reply, Request};

#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Carried in every reply and in the metrics.
    pub name: String,
    /// The service addresses (on the instance namespace's `lo`) to serve on.
    pub listen: Vec<SocketAddr>,
    /// Speed, in tera-operations per second.
    pub tops: f64,
    /// Work per request, in tera-operations.
    pub request_cost: f64,
    /// Requests served in parallel.
    pub workers: usize,
    /// Where to write the metrics JSON every second, if anywhere.
    pub metrics_file: Option<PathBuf>,
}

impl InstanceConfig {
    /// How long one request occupies a worker.
    pub fn service_time(&self) -> Duration {
        Duration::from_secs_f64(self.request_cost / self.tops)
    }
}

/// The metrics file's content (one JSON object, replaced atomically every second).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceMetrics {
    pub instance: String,
    /// Fraction of worker time spent serving over the last second, 0..=1.
    pub utilization: f64,
    /// Requests waiting for a worker (not counting those being served).
    pub queue_depth: usize,
    pub served_total: u64,
    /// Mean service time over all requests served so far; the configured one before any.
    pub mean_service_ms: f64,
    /// Requests received over the network per second over the last report period (queued,
    /// served or dropped); requests from the instance's own host (another tenant) are left out.
    #[serde(default)]
    pub request_rate: f64,
    /// The instance's speed in TOPS, as configured.
    #[serde(default)]
    pub capacity_tops: Option<f64>,
    pub updated_unix_ms: u64,
}

/// Requests beyond this many waiting are dropped (the client sees them lost).
const MAX_QUEUE: usize = 100_000;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
const METRICS_PERIOD: Duration = Duration::from_secs(1);

/// Serves requests on every address in `cfg.listen` until `stop` is set.
pub fn run_instance(cfg: InstanceConfig, stop: Arc<AtomicBool>) -> Result<()> {
    BoundInstance::bind(cfg)?.serve(|| stop.load(Ordering::Relaxed))
}

/// An instance whose sockets are bound: datagrams sent to it from now on wait for it (the
/// kernel no longer refuses them), so a starter can tell when the instance is reachable.
pub struct BoundInstance {
    cfg: InstanceConfig,
    sockets: Vec<UdpSocket>,
}

impl BoundInstance {
    pub fn bind(cfg: InstanceConfig) -> Result<Self> {
        if cfg.listen.is_empty() {
            bail!("instance {}: no listen address", cfg.name);
        }
        if !(cfg.tops > 0.0 && cfg.request_cost >= 0.0 && cfg.workers > 0) {
            bail!("instance {}: need tops > 0, request_cost >= 0 and workers > 0", cfg.name);
        }
        // Bound to the specific address, so replies leave from the anycast address they were
        // sent to (a wildcard socket would pick a source address by route).
        let sockets = cfg
            .listen
            .iter()
            .map(|addr| {
                let s = UdpSocket::bind(addr).with_context(|| {
                    format!("instance {}: binding {addr} (is the address on lo?)", cfg.name)
                })?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BoundInstance { cfg, sockets })
    }

    /// Serves until `stopped()` returns true (asked every [`POLL`]); the sockets close on
    /// return.
    pub fn serve(self, stopped: impl Fn() -> bool) -> Result<()> {
        let BoundInstance { cfg, sockets } = self;
        let state = Shared::new(cfg.workers);
        let service = cfg.service_time();

        // Ends this instance's threads: set when `stopped()`, or when a receiver fails.
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let mut threads = Vec::new();
            for (i, sock) in sockets.iter().enumerate() {
                let (state, done) = (&state, &done);
                threads.push(s.spawn(move || {
                    let r = receive(i, sock, state, done);
                    done.store(true, Ordering::Relaxed);
                    r
                }));
            }
            for w in 0..cfg.workers {
                let (state, done, sockets, name) = (&state, &done, &sockets, &cfg.name);
                threads.push(s.spawn(move || serve(w, name, service, sockets, state, done)));
            }
            let metrics = report_metrics(&cfg, &state, &stopped, &done);
            done.store(true, Ordering::Relaxed);
            let mut result = metrics;
            for t in threads {
                let r =
                    t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("instance thread panicked")));
                result = result.and(r);
            }
            let st = state.lock();
            tracing::info!(
                instance = cfg.name,
                served = st.served,
                dropped = st.dropped,
                "stopped"
            );
            result
        })
    }
}

/// A request waiting for a worker.
struct Job {
    socket: usize,
    peer: SocketAddr,
    req: Request,
    arrived: Instant,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    /// When each worker's current request started, if it is serving one.
    busy_since: Vec<Option<Instant>>,
    /// Busy time of finished requests, all workers together.
    busy_done: Duration,
    /// Requests that arrived, whatever became of them.
    received: u64,
    served: u64,
    dropped: u64,
}

impl Shared {
    fn new(workers: usize) -> Self {
        Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                busy_since: vec![None; workers],
                busy_done: Duration::ZERO,
                received: 0,
                served: 0,
                dropped: 0,
            }),
            work: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("instance state poisoned")
    }
}

/// Reads requests from one socket into the queue.
fn receive(socket: usize, sock: &UdpSocket, shared: &Shared, stop: &AtomicBool) -> Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiving requests"),
        };
        // A dead process answers nothing, probes included, from the moment it dies.
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let arrived = Instant::now();
        // A health probe is answered here, ahead of the queue: it asks whether the path and the
        // process are alive, not how loaded the instance is, and it is nobody's demand.
        if is_probe(&buf[..n]) {
            let _ = sock.send_to(&buf[..n], peer);
            continue;
        }
        let Some(req) = Request::decode(&buf[..n]) else { continue };
        // Requests from this host itself are another tenant's load (the lab's load events):
        // they use the compute, so they show in the utilisation, but they are not this
        // service's demand, which arrives over the network.
        let from_here =
            peer.ip().is_loopback() || sock.local_addr().is_ok_and(|l| l.ip() == peer.ip());
        let mut st = shared.lock();
        if !from_here {
            st.received += 1;
        }
        if st.queue.len() >= MAX_QUEUE {
            st.dropped += 1;
            continue;
        }
        st.queue.push_back(Job { socket, peer, req, arrived });
        drop(st);
        shared.work.notify_one();
    }
    Ok(())
}

/// One server: takes the oldest waiting request, "works" on it, replies.
fn serve(
    worker: usize,
    name: &str,
    service: Duration,
    sockets: &[UdpSocket],
    shared: &Shared,
    stop: &AtomicBool,
) -> Result<()> {
    crate::relay::precise_timers();
    // End of the previous request on this worker's virtual clock.
    let mut free_at = Instant::now();
    loop {
        let mut st = shared.lock();
        let job = loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Some(job) = st.queue.pop_front() {
                break job;
            }
            st = shared.work.wait_timeout(st, POLL).expect("instance state poisoned").0;
        };
        let start = job.arrived.max(free_at);
        st.busy_since[worker] = Some(start);
        drop(st);

        let end = start + service;
        sleep_until(end, stop);
        if stop.load(Ordering::Relaxed) {
            // A stopped instance is a dead process: the request in service gets no reply.
            return Ok(());
        }
        let done = Instant::now();
        let reply = Reply::to(
            &job.req,
            name,
            micros(start - job.arrived),
            micros(done.saturating_duration_since(start)),
        );
        // A vanished client is not the instance's problem.
        let _ = sockets[job.socket].send_to(&reply.encode(), job.peer);

        let mut st = shared.lock();
        st.busy_since[worker] = None;
        st.busy_done += done.saturating_duration_since(start);
        st.served += 1;
        free_at = end;
    }
}

/// Sleeps until `t`, in slices short enough to notice `stop` for long requests.
fn sleep_until(t: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= t || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((t - now).min(POLL));
    }
}

/// Writes the metrics file every second until `stop()` or `done`; just waits if there is no file.
fn report_metrics(
    cfg: &InstanceConfig,
    shared: &Shared,
    stop: &dyn Fn() -> bool,
    done: &AtomicBool,
) -> Result<()> {
    let mut last = Sample { at: Instant::now(), busy: Duration::ZERO, received: 0 };
    let mut next = Instant::now();
    while !stop() && !done.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let (m, now) = snapshot(cfg, shared, &mut last);
            if let Some(path) = &cfg.metrics_file {
                cats_controller::atomic_file::write(path, &serde_json::to_vec(&m)?)
                    .with_context(|| format!("writing metrics to {}", path.display()))?;
            }
            next = now + METRICS_PERIOD;
        }
        std::thread::sleep(POLL.min(next.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// Cumulative counters at one report.
struct Sample {
    at: Instant,
    busy: Duration,
    received: u64,
}

/// The metrics now; `last` is the previous report's sample, replaced by this one's.
fn snapshot(
    cfg: &InstanceConfig,
    shared: &Shared,
    last: &mut Sample,
) -> (InstanceMetrics, Instant) {
    let st = shared.lock();
    let now = Instant::now();
    let busy: Duration = st.busy_done
        + st.busy_since
            .iter()
            .flatten()
            .map(|s| now.saturating_duration_since(*s))
            .sum::<Duration>();
    let elapsed = now.duration_since(last.at).as_secs_f64();
    let window = elapsed * cfg.workers as f64;
    let utilization = if window > 0.0 {
        (busy.saturating_sub(last.busy).as_secs_f64() / window).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let request_rate = if elapsed > 0.0 {
        st.received.saturating_sub(last.received) as f64 / elapsed
    } else {
        0.0
    };
    *last = Sample { at: now, busy, received: st.received };
    let mean_service_ms = if st.served > 0 {
        st.busy_done.as_secs_f64() * 1e3 / st.served as f64
    } else {
        cfg.service_time().as_secs_f64() * 1e3
    };
    let m = InstanceMetrics {
        instance: cfg.name.clone(),
        utilization,
        queue_depth: st.queue.len(),
        served_total: st.served,
        mean_service_ms,
        request_rate,
        capacity_tops: Some(cfg.tops),
        updated_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    (m, now)
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use cats_common::health::{Probe, ProbePath};

    use super::*;
    use crate::netns::{Namespace, unique_name};

    fn probe(seq: u64) -> [u8; cats_common::health::PROBE_LEN] {
        Probe { slot: 3, path: ProbePath::Alternate, seq }.encode()
    }

    #[test]
    fn a_probe_is_echoed_at_once_even_while_the_worker_is_busy() {
        // A port the kernel just handed out is free for the instance (UDP has no TIME_WAIT).
        let addr = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let cfg = InstanceConfig {
            name: "slow".into(),
            listen: vec![addr],
            tops: 1.0,
            request_cost: 0.5, // 500 ms per request
            workers: 1,
            metrics_file: None,
        };
        let instance = BoundInstance::bind(cfg).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let server = std::thread::spawn(move || instance.serve(|| flag.load(Ordering::Relaxed)));

        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let req = Request { flow: 1, seq: 9, sent_ns: 0 };
        client.send(&req.encode()).unwrap();
        // Almost a probe (one byte short): neither echoed nor a request.
        client.send(&probe(1)[..23]).unwrap();
        let sent = Instant::now();
        client.send(&probe(2)).unwrap();

        let mut buf = [0u8; 512];
        let n = client.recv(&mut buf).unwrap();
        let echoed = sent.elapsed();
        assert_eq!(&buf[..n], &probe(2), "the probe comes back byte for byte");
        assert!(echoed < Duration::from_millis(200), "echo took {echoed:?} behind a request");
        let n = client.recv(&mut buf).unwrap();
        let reply = Reply::decode(&buf[..n]).expect("then the request's reply");
        assert_eq!((reply.flow, reply.seq, reply.instance.as_str()), (1, 9, "slow"));
        client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        assert!(client.recv(&mut buf).is_err(), "nothing else comes back");

        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().unwrap();
    }

    #[test]
    fn probes_are_neither_queued_nor_counted_as_demand() {
        // Two addresses of one namespace: the instance counts requests from any address but
        // its own and loopback ones as demand, so the client needs one of each.
        let ns = Namespace::create(&unique_name("inst")).unwrap();
        ns.ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]).unwrap();
        ns.ip(&["addr", "add", "10.77.0.2/32", "dev", "lo"]).unwrap();
        let (server, client) = cats_controller::netns::run_in(&ns.path(), || {
            let server = UdpSocket::bind("10.77.0.1:7000")?;
            server.set_read_timeout(Some(POLL))?;
            let client = UdpSocket::bind("10.77.0.2:0")?;
            client.connect("10.77.0.1:7000")?;
            client.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok((server, client))
        })
        .unwrap();
        let shared = Shared::new(1);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let receiver = s.spawn(|| receive(0, &server, &shared, &done));
            let mut buf = [0u8; 512];
            for seq in 0..3 {
                client.send(&probe(seq)).unwrap();
                let n = client.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &probe(seq));
            }
            client.send(&Request { flow: 4, seq: 0, sent_ns: 0 }.encode()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            while shared.lock().queue.is_empty() {
                assert!(Instant::now() < deadline, "the request never got queued");
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::Relaxed);
            receiver.join().unwrap().unwrap();
        });
        let st = shared.lock();
        assert_eq!(st.received, 1, "only the request is demand");
        assert_eq!(st.queue.len(), 1);
        assert_eq!(st.queue[0].req.flow, 4);
    }

    #[test]
    fn report_counts_requests_received_per_second_and_the_capacity() {
        let cfg = InstanceConfig {
            name: "x".into(),
            listen: Vec::new(),
            tops: 4.0,
            request_cost: 0.02,
            workers: 1,
            metrics_file: None,
        };
        let shared = Shared::new(1);
        let start = Instant::now() - Duration::from_secs(2);
        let mut last = Sample { at: start, busy: Duration::ZERO, received: 0 };
        shared.lock().received = 50;
        let (m, _) = snapshot(&cfg, &shared, &mut last);
        // 50 requests over the 2 s since the previous sample.
        assert!((m.request_rate - 25.0).abs() < 0.5, "{m:?}");
        assert_eq!(m.capacity_tops, Some(4.0));
        assert_eq!(last.received, 50);
        let (m, _) = snapshot(&cfg, &shared, &mut last);
        assert_eq!(m.request_rate, 0.0, "nothing new arrived");
        // Older reports without the new fields still parse.
        let old = r#"{"instance":"x","utilization":0.5,"queue_depth":0,"served_total":1,
            "mean_service_ms":5.0,"updated_unix_ms":1}"#;
        let m: InstanceMetrics = serde_json::from_str(old).unwrap();
        assert_eq!((m.request_rate, m.capacity_tops), (0.0, None));
    }
}
