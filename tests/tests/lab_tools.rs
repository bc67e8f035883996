//! The lab's building blocks in real network namespaces: the delay relay, GRO switching, and
//! an emulated instance answering emulated clients. Needs root; every test makes its own
//! uniquely named namespaces, which their guards delete again.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use cats_controller::netns::{run_in, spawn_in};
use cats_lab::{
    client::{ClientConfig, ClientEvent, UNANSWERED, run_client},
    instance::{InstanceConfig, InstanceMetrics, run_instance},
    netns::{Namespace, unique_name},
    offload::{enable_gro, gro_enabled},
    relay::run_relay,
    wire::{Reply, Request},
};

/// Stops and joins a background thread (relay, instance, echo server) when dropped, so it is
/// gone before the namespaces it lives in are deleted.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Background {
    fn start(
        ns: &Namespace,
        f: impl FnOnce(Arc<AtomicBool>) -> Result<()> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = spawn_in(&ns.path(), move || f(s)).expect("thread in namespace");
        Background { stop, handle: Some(handle) }
    }

    /// Stops the thread and returns its result.
    fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("joined once").join().expect("background thread panicked")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// X — R — Y: X's `xa` and Y's `yb` share fd00:1::/64, R relays between `ra` and `rb`.
/// Fields drop in order: the relay stops before the namespaces go.
struct RelayLab {
    relay: Background,
    x: Namespace,
    _r: Namespace,
    y: Namespace,
}

const X_ADDR: &str = "fd00:1::1";
const Y_ADDR: &str = "fd00:1::2";

fn relay_lab(delay: Duration) -> Result<RelayLab> {
    let x = Namespace::create(&unique_name("lx"))?;
    let r = Namespace::create(&unique_name("lr"))?;
    let y = Namespace::create(&unique_name("ly"))?;
    x.veth_to("xa", &r, "ra")?;
    r.veth_to("rb", &y, "yb")?;
    // The relay namespace is a wire: no IPv6 stack of its own chattering on ra/rb.
    r.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
    x.ip(&["addr", "add", &format!("{X_ADDR}/64"), "dev", "xa", "nodad"])?;
    y.ip(&["addr", "add", &format!("{Y_ADDR}/64"), "dev", "yb", "nodad"])?;
    let relay = Background::start(&r, move |stop| run_relay("ra", "rb", delay, delay, stop));
    Ok(RelayLab { relay, x, _r: r, y })
}

/// A UDP socket created inside `ns` (a socket stays in the namespace it was made in).
fn udp_in(ns: &Namespace, addr: &str) -> Result<UdpSocket> {
    let addr: SocketAddr = addr.parse()?;
    run_in(&ns.path(), move || {
        let s = UdpSocket::bind(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(s)
    })
}

/// Echoes datagrams back to their sender until stopped.
fn udp_echo(ns: &Namespace, addr: &'static str) -> Result<Background> {
    let sock = udp_in(ns, addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(Background::start(ns, move |stop| {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                sock.send_to(&buf[..n], peer)?;
            }
        }
        Ok(())
    }))
}

/// Sends `payload` to `to` and waits for it to come back; returns the round-trip time.
fn round_trip(sock: &UdpSocket, to: &str, payload: &[u8]) -> Result<Duration> {
    let mut buf = vec![0u8; 65536];
    let t = Instant::now();
    sock.send_to(payload, to)?;
    let n = sock.recv(&mut buf).context("no echo")?;
    let rtt = t.elapsed();
    ensure!(&buf[..n] == payload, "payload changed in transit ({n} bytes back)");
    Ok(rtt)
}

/// Median and minimum of `n` round trips of a small datagram, after one to resolve neighbours.
fn measure_rtt(lab: &RelayLab, n: usize) -> Result<(Duration, Duration)> {
    let _echo = udp_echo(&lab.y, "[fd00:1::2]:9000")?;
    let sock = udp_in(&lab.x, "[fd00:1::1]:0")?;
    round_trip(&sock, "[fd00:1::2]:9000", b"warm-up")?;
    let mut rtts = (0..n)
        .map(|i| round_trip(&sock, "[fd00:1::2]:9000", format!("probe {i}").as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    rtts.sort();
    println!("rtts: {rtts:?}");
    Ok((rtts[n / 2], rtts[0]))
}

#[test]
fn relay_delays_each_direction() -> Result<()> {
    let lab = relay_lab(Duration::from_millis(20))?;
    let (median, min) = measure_rtt(&lab, 15)?;
    println!("20 ms each way: median RTT {median:?}, min {min:?}");
    ensure!(min >= Duration::from_millis(40), "RTT {min:?} below the 2 x 20 ms configured");
    ensure!(median < Duration::from_millis(60), "RTT {median:?} far above 40 ms");
    lab.relay.finish()
}

#[test]
fn relay_without_delay_is_fast() -> Result<()> {
    let lab = relay_lab(Duration::ZERO)?;
    let (median, _) = measure_rtt(&lab, 15)?;
    println!("0 ms: median RTT {median:?}");
    ensure!(median < Duration::from_millis(5), "RTT {median:?} with no delay configured");
    lab.relay.finish()
}

#[test]
fn relay_carries_payloads_intact() -> Result<()> {
    let lab = relay_lab(Duration::from_millis(1))?;
    let _echo = udp_echo(&lab.y, "[fd00:1::2]:9000")?;
    let sock = udp_in(&lab.x, "[fd00:1::1]:0")?;
    // 1400 bytes fit one frame (and UDP checksums are left to the "device" by the sender, so
    // this also checks the relay completes them); 8000 bytes arrive as IPv6 fragments.
    for len in [1400usize, 8000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        round_trip(&sock, "[fd00:1::2]:9000", &payload)?;
    }

    // A TCP stream: the sender's stack hands the veth 64 KiB GSO frames.
    let listener: TcpListener =
        run_in(&lab.y.path(), || Ok(TcpListener::bind("[fd00:1::2]:9001")?))?;
    let data: Vec<u8> = (0..4 << 20).map(|i: usize| (i * 13 % 253) as u8).collect();
    let expected = data.clone();
    let receiver = std::thread::spawn(move || -> Result<Vec<u8>> {
        let (mut conn, _) = listener.accept()?;
        let mut got = Vec::new();
        conn.read_to_end(&mut got)?;
        Ok(got)
    });
    let mut conn: TcpStream =
        run_in(&lab.x.path(), || Ok(TcpStream::connect("[fd00:1::2]:9001")?))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(&data)?;
    drop(conn);
    let got = receiver.join().expect("receiver panicked")?;
    ensure!(got.len() == expected.len(), "TCP stream: {} of {} bytes", got.len(), expected.len());
    ensure!(got == expected, "TCP stream content changed");
    lab.relay.finish()
}

#[test]
fn enable_gro_turns_gro_on() -> Result<()> {
    let ns = Namespace::create(&unique_name("lg"))?;
    ns.ip(&["link", "add", "g0", "type", "veth", "peer", "name", "g1"])?;
    let (before, after) = run_in(&ns.path(), || {
        let before = gro_enabled("g0")?;
        enable_gro("g0")?;
        Ok((before, gro_enabled("g0")?))
    })?;
    println!("GRO on g0: before {before}, after {after}");
    ensure!(after, "GRO still off after enable_gro");
    ensure!(run_in(&ns.path(), || enable_gro("nosuchif")).is_err(), "bad name accepted");
    Ok(())
}

/// C — I over a plain veth pair; the service addresses live on I's `lo`.
/// Fields drop in order: the instance stops before the namespaces go.
struct ServiceLab {
    instance: Background,
    metrics: TempFile,
    c: Namespace,
    _i: Namespace,
}

const SERVICE: &str = "[fd00:5::1]:7000";
const SERVICE_2: &str = "[fd00:5::2]:7000";

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An instance `name` of `tops` TOPS with one worker and 0.05 TOPs per request.
fn service_lab(name: &str, tops: f64) -> Result<ServiceLab> {
    let c = Namespace::create(&unique_name("lc"))?;
    let i = Namespace::create(&unique_name("li"))?;
    c.veth_to("c0", &i, "i0")?;
    c.ip(&["addr", "add", "fd00:2::1/64", "dev", "c0", "nodad"])?;
    i.ip(&["addr", "add", "fd00:2::2/64", "dev", "i0", "nodad"])?;
    for service in ["fd00:5::1/128", "fd00:5::2/128"] {
        i.ip(&["addr", "add", service, "dev", "lo"])?;
    }
    c.ip(&["route", "add", "fd00:5::/64", "via", "fd00:2::2"])?;
    let metrics = TempFile(std::env::temp_dir().join(format!("{}.json", unique_name("metr"))));
    let cfg = InstanceConfig {
        name: name.into(),
        listen: vec![SERVICE.parse()?, SERVICE_2.parse()?],
        tops,
        request_cost: 0.05,
        workers: 1,
        metrics_file: Some(metrics.0.clone()),
    };
    let instance = Background::start(&i, move |stop| run_instance(cfg, stop));
    // The first metrics file is written once the sockets are bound.
    let t = Instant::now();
    while !metrics.0.exists() {
        ensure!(t.elapsed() < Duration::from_secs(5), "instance did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(ServiceLab { instance, metrics, c, _i: i })
}

fn read_metrics(file: &TempFile) -> Result<InstanceMetrics> {
    Ok(serde_json::from_slice(&std::fs::read(&file.0)?)?)
}

#[test]
fn instance_queues_a_burst_and_replies_from_the_service_address() -> Result<()> {
    let lab = service_lab("edge-a", 10.0)?; // 0.05 / 10 = 5 ms per request
    let sock = udp_in(&lab.c, "[::]:0")?;
    for seq in 0..20 {
        sock.send_to(&Request { flow: 1, seq, sent_ns: seq * 10 }.encode(), SERVICE)?;
    }
    let mut replies = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        let (n, from) = sock.recv_from(&mut buf).context("missing reply")?;
        ensure!(from == SERVICE.parse()?, "reply from {from}, not the service address");
        replies.push(Reply::decode(&buf[..n]).context("malformed reply")?);
    }
    replies.sort_by_key(|r| r.seq);
    for (i, r) in replies.iter().enumerate() {
        ensure!(r.instance == "edge-a" && r.flow == 1 && r.seq == i as u64, "bad reply {r:?}");
        ensure!(r.sent_ns == r.seq * 10, "timestamp not echoed: {r:?}");
        ensure!((4_900..8_000).contains(&r.service_us), "service time {} µs", r.service_us);
    }
    let queue: Vec<u64> = replies.iter().map(|r| r.queue_us).collect();
    println!("queueing delays (µs): {queue:?}");
    ensure!(queue.windows(2).all(|w| w[0] < w[1]), "FIFO queueing delays not increasing");
    let last = queue[19];
    ensure!((85_000..=120_000).contains(&last), "last request queued {last} µs, expected ~95 ms");

    // The second service address answers from itself too.
    sock.send_to(&Request { flow: 2, seq: 0, sent_ns: 0 }.encode(), SERVICE_2)?;
    let (_, from) = sock.recv_from(&mut buf)?;
    ensure!(from == SERVICE_2.parse()?, "reply from {from}, not {SERVICE_2}");
    lab.instance.finish()
}

#[test]
fn client_opens_flows_and_instance_reports_metrics() -> Result<()> {
    let lab = service_lab("edge-b", 20.0)?; // 2.5 ms per request
    let cfg = ClientConfig {
        name: "cam".into(),
        target: SERVICE.parse()?,
        rate_per_sec: 50.0,
        requests_per_flow: 10,
        duration: Some(Duration::from_millis(1500)),
        timeout: Duration::from_secs(1),
    };
    let (summary, events) = run_in(&lab.c.path(), move || {
        let mut events = Vec::new();
        let summary = run_client(cfg, Arc::new(AtomicBool::new(false)), |e| events.push(e))?;
        Ok((summary, events))
    })?;
    println!("{summary:?}");
    let mut ports = Vec::new();
    let mut replies = 0;
    for e in &events {
        match e {
            ClientEvent::FlowStarted { local, .. } => ports.push(local.port()),
            ClientEvent::Reply { instance, rtt, service_us, .. } => {
                ensure!(instance == "edge-b", "reply from {instance}");
                ensure!(*rtt >= Duration::from_micros(*service_us), "RTT {rtt:?} < service");
                replies += 1;
            }
            ClientEvent::Lost { flow, seq } => anyhow::bail!("lost {flow}/{seq} on a clean link"),
        }
    }
    ports.dedup();
    let t = &summary.total;
    ensure!(t.sent >= 40 && t.received == t.sent && t.lost == 0, "summary {t:?}");
    ensure!(replies == t.received, "{replies} reply events, {} counted", t.received);
    ensure!(summary.flows as usize == ports.len() && ports.len() >= 4, "flows/ports {ports:?}");
    ensure!(summary.per_instance.keys().eq(["edge-b"]), "per instance {:?}", summary.per_instance);

    // The metrics file is rewritten every second.
    std::thread::sleep(Duration::from_millis(1100));
    let m = read_metrics(&lab.metrics)?;
    println!("{m:?}");
    ensure!(m.instance == "edge-b" && m.served_total == t.received, "metrics {m:?}");
    ensure!((2.4..4.0).contains(&m.mean_service_ms), "mean service {} ms", m.mean_service_ms);
    ensure!(m.queue_depth == 0 && (0.0..=1.0).contains(&m.utilization), "metrics {m:?}");
    lab.instance.finish()
}

#[test]
fn client_counts_unanswered_requests_as_lost() -> Result<()> {
    let ns = Namespace::create(&unique_name("ll"))?;
    let cfg = ClientConfig {
        name: "cam".into(),
        target: "[::1]:7".parse()?, // nobody listens
        rate_per_sec: 30.0,
        requests_per_flow: 3,
        duration: Some(Duration::from_millis(300)),
        timeout: Duration::from_millis(200),
    };
    let (summary, lost) = run_in(&ns.path(), move || {
        let mut lost = 0;
        let summary = run_client(cfg, Arc::new(AtomicBool::new(false)), |e| {
            lost += matches!(e, ClientEvent::Lost { .. }) as u64
        })?;
        Ok((summary, lost))
    })?;
    let t = &summary.total;
    ensure!(t.sent > 0 && t.lost == t.sent && lost == t.sent && t.received == 0, "{summary:?}");
    ensure!(summary.per_instance.keys().eq([UNANSWERED]), "{summary:?}");
    Ok(())
}
