//! The operator's view of a running lab: the daemon's Prometheus endpoint (scraped and parsed
//! with a real exposition parser) against the packets sent, and `catsctl` (the built binary,
//! on the daemon's API socket) against golden tables, its JSON, and the picture.
//!
//! Golden files are in `tests/golden/catsctl/`. Tables are compared cell by cell: each line
//! is split on whitespace, and every cell that is a decimal number (has a `.`: latencies,
//! utilisations, predictions, ages) is masked as `#`. So is what the test names as volatile:
//! the generation (a row of `status`, by its first cell), which depends on when the first
//! measurements came; the metrics port, picked by the kernel; and the weights (the `WEIGHT`
//! column; in `explain`, whose headers hold spaces, every integer), which follow the measured
//! latencies of the two edges and are checked from the JSON instead. Other integers (indexes,
//! CS-IDs, applied generations of `nodes` aside) and text (names, SIDs, behaviours, health,
//! exclusion reasons) must match exactly.
//! `CATS_UPDATE_GOLDEN=1` rewrites the files from the run (check the diff before committing).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use cats_controller::api::{
    http::get_unix,
    views::{InstanceView, PathView, StatusView},
};
use cats_lab::{
    control::lab_api_socket,
    wire::{Reply, Request},
};
use cats_tests::{
    binaries,
    lab_env::{LabEnv, without_health_probes},
};
use prometheus_parse::{Scrape, Value};

const SERVICE: &str = "plate-recognition";

fn service6() -> SocketAddr {
    "[2001:db8:ca75::1]:7000".parse().unwrap()
}
fn service4() -> SocketAddr {
    "198.51.100.1:7000".parse().unwrap()
}

fn api<T: serde::de::DeserializeOwned>(env: &LabEnv, path: &str) -> T {
    let body = get_unix(&lab_api_socket(&env.run_dir), path, Duration::from_secs(5)).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// `GET /metrics` with `accept`; returns the content type and the body.
fn scrape(addr: &str, accept: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let content_type =
        head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_string();
    (content_type, body.to_string())
}

/// The Prometheus text format, parsed.
fn parsed(addr: &str) -> Scrape {
    let (content_type, body) = scrape(addr, "text/plain; version=0.0.4");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample `name` with `labels` (all of them), if there is one.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    match found.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        _ => None,
    }
}

/// Sends `requests` requests on `sock` (one flow), each until answered, counting every
/// datagram sent (a retransmission is a packet too). Returns (instance, datagrams sent).
fn send_flow(sock: &UdpSocket, flow: u64, requests: u64) -> (String, u64) {
    let mut sent = 0;
    let mut instance = None;
    let mut buf = [0u8; 512];
    for seq in 0..requests {
        let answered = (0..6).find_map(|_| {
            sock.send(&Request { flow, seq, sent_ns: 0 }.encode()).unwrap();
            sent += 1;
            while let Ok(n) = sock.recv(&mut buf) {
                match Reply::decode(&buf[..n]) {
                    Some(r) if r.flow == flow && r.seq == seq => return Some(r.instance),
                    _ => continue,
                }
            }
            None
        });
        let answered = answered.unwrap_or_else(|| panic!("no reply to flow {flow} seq {seq}"));
        assert!(
            instance.get_or_insert_with(|| answered.clone()) == &answered,
            "flow {flow} changed instance"
        );
    }
    (instance.unwrap(), sent)
}

#[test]
fn metrics_account_for_every_packet_sent_per_service_and_instance() {
    // What the headend counts: packets that enter its interface (`cams`, the client LAN) for
    // a service and leave encapsulated. The test's requests are the only such packets: link
    // probes go between routers, and health probes are built whole by gw's agent and sent on
    // a raw socket, past the headend. They are off all the same, so that nothing else
    // reaches the instances either. Each datagram sent counts, retransmissions included (a
    // lost first request was steered too); a steered packet's bytes are its inner IP length.
    let env = LabEnv::start(|dir| {
        let policy = std::fs::read_to_string(dir.join("policy.yaml"))?;
        std::fs::write(dir.join("policy.yaml"), without_health_probes(&policy))?;
        Ok(())
    })
    .unwrap();
    let status: StatusView = api(&env, "/v1/status");
    let addr = status.metrics_listen.expect("the lab's daemon serves metrics");

    let before = parsed(&addr);
    let instances = ["edge1-a", "edge2-a", "cloud-a"];
    let count = |s: &Scrape, name: &str, instance: &str| {
        value(s, name, &[("node", "gw"), ("service", SERVICE), ("instance", instance)])
            .unwrap_or_else(|| panic!("no {name} for {instance}"))
    };
    // 10 IPv6 flows of 3 requests, 6 IPv4 flows of 2.
    let mut sent: BTreeMap<String, (u64, u64)> = BTreeMap::new(); // instance -> (packets, bytes)
    for (target, flows, requests, ip_len) in
        [(service6(), 10u64, 3u64, 40u64 + 8), (service4(), 6, 2, 20 + 8)]
    {
        for f in 0..flows {
            let sock = env.flow("gw", target).unwrap();
            let (instance, packets) = send_flow(&sock, 100 * ip_len + f, requests);
            let e = sent.entry(instance).or_default();
            e.0 += packets;
            e.1 += packets * (ip_len + Request::LEN as u64);
        }
    }
    // Read at scrape time: no waiting for the daemon's poll.
    let started = Instant::now();
    let after = parsed(&addr);
    let scrape_time = started.elapsed();
    eprintln!("scrape with the lab running: {scrape_time:?}");
    assert!(scrape_time < Duration::from_secs(2), "scrape took {scrape_time:?}");

    let total: u64 = sent.values().map(|(p, _)| p).sum();
    assert!(total >= 42, "{sent:?}");
    for instance in instances {
        let (packets, bytes) = sent.get(instance).copied().unwrap_or_default();
        let dp = count(&after, "cats_instance_packets_total", instance)
            - count(&before, "cats_instance_packets_total", instance);
        let db = count(&after, "cats_instance_bytes_total", instance)
            - count(&before, "cats_instance_bytes_total", instance);
        assert_eq!(dp as u64, packets, "{instance}: packets steered vs sent ({sent:?})");
        assert_eq!(db as u64, bytes, "{instance}: bytes steered vs sent");
    }
    let service =
        |s: &Scrape, name| value(s, name, &[("node", "gw"), ("service", SERVICE)]).unwrap();
    let dp = service(&after, "cats_service_packets_total")
        - service(&before, "cats_service_packets_total");
    assert_eq!(dp as u64, total);
    let db =
        service(&after, "cats_service_bytes_total") - service(&before, "cats_service_bytes_total");
    assert_eq!(db as u64, sent.values().map(|(_, b)| b).sum::<u64>());

    // Types as declared, never untyped; only bounded labels.
    let allowed: BTreeSet<&str> =
        ["node", "service", "instance", "reason", "event", "kind", "path", "link"].into();
    for s in &after.samples {
        assert!(s.metric.starts_with("cats_"), "{}", s.metric);
        match s.value {
            Value::Counter(_) => assert!(s.metric.ends_with("_total"), "{}", s.metric),
            Value::Gauge(_) => assert!(!s.metric.ends_with("_total"), "{}", s.metric),
            ref other => panic!("{}: {other:?}", s.metric),
        }
        for (k, _) in s.labels.iter() {
            assert!(allowed.contains(k.as_str()), "{}: label {k}", s.metric);
        }
    }
    // Every drop reason of every node, zero here; the weights; the measured links.
    for reason in cats_common::counters::DropReason::ALL {
        for node in ["gw", "core", "edge1"] {
            let v =
                value(&after, "cats_drops_total", &[("node", node), ("reason", reason.label())]);
            assert_eq!(v, Some(0.0), "{node} {}", reason.label());
        }
    }
    let weights: f64 = instances
        .iter()
        .map(|i| value(&after, "cats_instance_weight", &[("node", "gw"), ("instance", i)]).unwrap())
        .sum();
    assert_eq!(weights, 1000.0);
    let declared = value(&after, "cats_link_declared_latency_seconds", &[("link", "core-cloud")]);
    assert_eq!(declared, Some(0.015));
    let affinity = value(&after, "cats_affinity_pins_total", &[("node", "gw")]).unwrap()
        - value(&before, "cats_affinity_pins_total", &[("node", "gw")]).unwrap();
    assert_eq!(affinity, 16.0, "one pin per flow");
    for kind in ["alternate", "repinned", "unavailable"] {
        assert_eq!(
            value(&after, "cats_failovers_total", &[("node", "gw"), ("kind", kind)]),
            Some(0.0)
        );
    }

    // The OpenMetrics text (the default) holds the same series, with units and an EOF.
    let (content_type, open) = scrape(&addr, "*/*");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(open.ends_with("# EOF\n"));
    assert!(open.contains("# TYPE cats_instance_packets counter\n"));
    assert!(
        open.contains("# TYPE cats_instance_bytes counter\n# UNIT cats_instance_bytes bytes\n")
    );
    assert!(open.contains("# UNIT cats_link_rtt_seconds seconds\n"));
    let series = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect()
    };
    let (_, prometheus) = scrape(&addr, "text/plain; version=0.0.4");
    assert_eq!(series(&open), series(&prometheus), "both formats hold the same series");
}

fn catsctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(binaries::catsctl())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running catsctl");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("catsctl writes UTF-8");
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}

fn ok(socket: &Path, args: &[&str]) -> String {
    let (code, out, err) = catsctl(socket, args);
    assert_eq!(code, 0, "catsctl {args:?}: {err}");
    out
}

/// As a volatile column: every integer cell below the header.
const INTEGERS: &str = "<integers>";

/// A table as compared with its golden file (see the module doc): cells, decimals masked,
/// and the `volatile` columns (by header) and rows (by first cell) masked too.
fn masked(table: &str, volatile: &[&str]) -> Vec<Vec<String>> {
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    let columns: Vec<usize> =
        (0..header.len()).filter(|i| volatile.contains(&header[*i])).collect();
    let all_integers = volatile.contains(&INTEGERS);
    table
        .lines()
        .enumerate()
        .map(|(row, line)| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let volatile_row = cells.first().is_some_and(|c| volatile.contains(c));
            cells
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let decimal = cell.contains('.') && cell.parse::<f64>().is_ok();
                    let column = row > 0 && columns.contains(&i);
                    let integer = row > 0 && all_integers && cell.parse::<u64>().is_ok();
                    if decimal || column || integer || (volatile_row && i > 0) {
                        "#".to_string()
                    } else {
                        cell.to_string()
                    }
                })
                .collect()
        })
        .collect()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/catsctl")
}

/// Compares `table` with `golden/catsctl/<name>.txt` cell by cell (masked).
fn check_golden(name: &str, table: &str, volatile: &[&str]) {
    let file = golden_dir().join(format!("{name}.txt"));
    if std::env::var_os("CATS_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&file, table).unwrap();
    }
    let golden = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (CATS_UPDATE_GOLDEN=1 writes it)", file.display()));
    assert_eq!(
        masked(table, volatile),
        masked(&golden, volatile),
        "catsctl {name} differs from {}:\n{table}",
        file.display()
    );
}

#[test]
fn catsctl_explains_a_running_lab_in_tables_json_yaml_and_a_picture() {
    let env = LabEnv::start(|_| Ok(())).unwrap();
    let socket = lab_api_socket(&env.run_dir);

    // The edges answer their probes, and the daemon has counted gw's affinity table (it
    // reads it every 5 s), before the tables are taken.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<InstanceView> = api(&env, "/v1/instances");
        let counted = env.daemon().status().is_ok_and(|s| s["nodes"]["gw"]["affinity"].is_object());
        if rows.iter().all(|r| r.health == "up") && counted {
            break;
        }
        assert!(Instant::now() < deadline, "instances never all up: {rows:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    check_golden("status", &ok(&socket, &["status"]), &["generation", "metrics"]);
    check_golden("nodes", &ok(&socket, &["nodes"]), &["APPLIED"]);
    // Every node applied its newest generation.
    let nodes: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&socket, &["nodes", "-o", "json"])).unwrap();
    assert!(nodes.iter().all(|n| n["appliedGeneration"] == n["desiredGeneration"]), "{nodes:?}");
    check_golden("services", &ok(&socket, &["services"]), &[]);
    // Weights are checked below from the JSON: a jitter spike on a shared machine may move
    // the split between the edges (never to the cloud, the second locality group).
    check_golden("instances", &ok(&socket, &["instances", "--service", SERVICE]), &["WEIGHT"]);
    check_golden("paths", &ok(&socket, &["paths"]), &["WEIGHT"]);
    // Its headers hold spaces: its weights are masked as integers (so is the locality group).
    check_golden("explain", &ok(&socket, &["explain", SERVICE]), &[INTEGERS]);

    // JSON: one row per ingress and instance, the weights of an ingress add up to 1000.
    let json: Vec<InstanceView> =
        serde_json::from_str(&ok(&socket, &["instances", "-o", "json"])).unwrap();
    assert_eq!(json.len(), 3);
    assert_eq!(json.iter().map(|r| r.weight).sum::<u32>(), 1000);
    let cloud = json.iter().find(|r| r.instance == "cloud-a").unwrap();
    assert_eq!(cloud.weight, 0, "the cloud waits while an edge can take the flows");
    assert!(json.iter().all(|r| r.probe_rtt_ms.is_some_and(|ms| ms > 0.0)), "{json:?}");
    // The RTT of the probes crosses the delay relays: about 6 ms to an edge, 32 to the cloud.
    let rtt = |name: &str| json.iter().find(|r| r.instance == name).unwrap().probe_rtt_ms.unwrap();
    assert!(rtt("edge1-a") >= 5.0 && rtt("cloud-a") >= 30.0, "{json:?}");
    // Paths: every used instance's last SID decodes to the service and itself.
    let paths: Vec<PathView> =
        serde_json::from_str(&ok(&socket, &["paths", "-o", "json"])).unwrap();
    for p in &paths {
        let last = p.segments.last().unwrap();
        assert_eq!(last.target.as_deref(), Some(format!("{SERVICE}/{}", p.instance).as_str()));
        assert_eq!(last.behavior, "End.DX6");
    }
    // YAML holds the same documents.
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&ok(&socket, &["services", "-o", "yaml"])).unwrap();
    assert_eq!(yaml[0]["name"], SERVICE);
    assert_eq!(yaml[0]["instances"].as_array().unwrap().len(), 3);

    // Flows: 4 new flows, each pinned; the filters and the limit hold.
    let mut answered = Vec::new();
    for f in 0..4 {
        let sock = env.flow("gw", service6()).unwrap();
        answered.push(send_flow(&sock, 500 + f, 1).0);
    }
    let flows: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&socket, &["flows", "-o", "json"])).unwrap();
    assert_eq!(flows.len(), 4, "{flows:?}");
    assert!(
        flows
            .iter()
            .all(|f| f["node"] == "gw" && f["service"] == SERVICE && f["protocol"] == "udp")
    );
    let to = answered[0].as_str();
    let mine: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&socket, &["flows", "--instance", to, "-o", "json"])).unwrap();
    assert_eq!(mine.len(), answered.iter().filter(|a| *a == to).count());
    assert!(mine.iter().all(|f| f["instance"] == to));
    let one: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&socket, &["flows", "--limit", "1", "-o", "json"])).unwrap();
    assert_eq!(one.len(), 1);
    let table = ok(&socket, &["flows", "--node", "gw"]);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.starts_with("NODE  SERVICE"), "{table}");

    // Mistakes say what is wrong.
    let (code, _, err) = catsctl(&socket, &["instances", "--service", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no service nope (services: plate-recognition)"), "{err}");
    let (code, _, err) = catsctl(&socket, &["flows", "--node", "core"]);
    assert_eq!(code, 1);
    assert!(err.contains("core is not an ingress node"), "{err}");

    // The picture: every node, and the paths in use as edges of their own.
    let out = env.run_dir.join("graph");
    let said = ok(&socket, &["graph", "--out", out.to_str().unwrap()]);
    assert!(said.contains("topology.svg"), "{said}");
    let svg = std::fs::read_to_string(out.join("topology.svg")).unwrap();
    assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("<svg"));
    for node in env.intent.topology.nodes.iter().map(|n| &n.name) {
        assert!(svg.contains(&svg_text(&format!("id=\"node-{node}\""))), "node {node}");
        assert!(svg.contains(&svg_text(&format!(">{node}</text>"))), "label of {node}");
    }
    let used: Vec<&PathView> =
        paths.iter().filter(|p| p.kind == "primary" && p.weight > 0).collect();
    assert!(!used.is_empty());
    for p in used {
        for hop in p.nodes.windows(2) {
            let id =
                svg_text(&format!("id=\"path-{SERVICE}-{}-{}-{}\"", p.instance, hop[0], hop[1]));
            assert!(svg.contains(&id), "{id}");
        }
    }
    let dot = std::fs::read_to_string(out.join("topology.dot")).unwrap();
    assert!(dot.contains(" ms\""), "links labelled with latency: {dot}");
}

/// `text` as Graphviz writes it into SVG (it escapes `-`).
fn svg_text(text: &str) -> String {
    text.replace('-', "&#45;")
}

#[test]
fn catsctl_says_which_socket_and_how_to_start_the_daemon_when_none_runs() {
    let socket = std::env::temp_dir().join(format!("cats-no-daemon-{}.sock", std::process::id()));
    let (code, out, err) = catsctl(&socket, &["status"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains(&format!("cannot reach catsd at {}", socket.display())), "{err}");
    assert!(err.contains("catsd run --intent DIR --api-socket"), "{err}");
}
