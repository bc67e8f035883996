//! `--propagation`: the time from a metric change to the new map entries on a node, in the
//! example lab (`LabEnv`: the smart-traffic intent, delay relays, emulated instances, the daemon
//! in this process).
//!
//! One sample: edge1-a's report in the daemon's metrics directory says utilisation 0.95 (the
//! policy's `minFreeTops: 1` then excludes a 4-TOPS box), the controller drains it, and gw's
//! agent rewrites the Maglev lookup table of plate-recognition. t0 is taken right after the
//! report is written, t1 when no slot of the pinned table points at edge1-a's instance slot
//! any more ("drain"). Then edge1-a's own report goes back and t1 is when edge1-a has a slot
//! again ("restore").
//!
//! Holding the metric: the lab's instances rewrite their reports every second, so here they
//! report into a directory of their own and a relay thread copies each new report into the
//! daemon's metrics directory within 10 ms, except edge1-a's while it is overridden: then the
//! relay rewrites the override every second with a fresh timestamp, as an instance would. The
//! daemon sees exactly one report per instance, and nothing can sneak the real one back in.
//!
//! Reading the map: gw's `CATS_LOOKUP` is opened from its pin (bpffs paths are not per network
//! namespace) and its 4,099 entries for the service are read every millisecond with one
//! BPF_MAP_LOOKUP_BATCH call (checked once against element-by-element reads).
//!
//! The breakdown comes from inotify: the daemon opening its metrics directory (its poll reads
//! the reports), and the daemon recording gw's new state (`state/nodes/gw.json`, written right
//! after the states go to the agents). Then the agent (kernel reconcile, then the maps) until
//! the first table entry changes, and the table rewrite itself until the last one.
//!
//! The policy's hold-down (2 s in the example) delays a weight coming back, not a drain: each
//! restore starts once the hold-down since the drain has passed, so it measures propagation.
//! The waits before each change step through the poll period so that t0 lands at every phase
//! of the daemon's poll. Nothing is asserted on timing; the run fails only if a change never
//! reaches the map.

use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData};
use cats_common::maps::{LOOKUP_TABLE_SIZE, MAP_LOOKUP};
use cats_controller::{paths, running};
use cats_lab::{
    control::{Daemon, daemon_config, start_instances},
    instance::InstanceMetrics,
};
use cats_tests::lab_env::{LabEnv, LabOptions};

use crate::system;

const INGRESS: &str = "gw";
const SERVICE: &str = "plate-recognition";
const INSTANCE: &str = "edge1-a";
/// The overriding report's utilisation: 4 TOPS x 0.05 free is below the policy's minFreeTops.
const BUSY: f64 = 0.95;
/// Samples per direction and poll setting.
const SAMPLES: usize = 10;
/// The second poll setting, besides the lab's own.
const FAST_POLL: Duration = Duration::from_millis(50);
const MAP_POLL: Duration = Duration::from_millis(1);
const RELAY_PERIOD: Duration = Duration::from_millis(10);
/// How often a held report is rewritten (the instances' own period).
const REPORT_PERIOD: Duration = Duration::from_secs(1);
/// A sample ends when the table has not changed for this long after reaching its goal.
const QUIET: Duration = Duration::from_millis(100);
/// Beyond this, a change that has not reached the map is an error.
const GIVE_UP: Duration = Duration::from_secs(20);

pub fn run() -> Result<()> {
    if !system::is_root() {
        bail!("must run as root: it creates network namespaces and loads XDP programs");
    }
    system::catch_interrupts()?;
    let started = Instant::now();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("cats-bench --propagation: a metric change -> the new map entries on a node");
    println!("kernel      Linux {} ({cpus} CPUs online)", kernel.trim());

    // The instances start below, reporting into a directory of their own.
    let options = LabOptions { delays: true, instances: false, ..LabOptions::default() };
    let mut env = LabEnv::start_with(|_| Ok(()), options)?;
    let prefix = env.lab().prefix().to_string();
    let run_dir = env.run_dir.clone();
    let reports = env.run_dir.join("instances");
    start_instances(env.lab.as_mut().expect("lab is up"), &env.intent, &reports)?;
    let lab_config = daemon_config(env.lab(), &env.intent_dir, &env.bpffs, &env.run_dir);
    let daemon_metrics = lab_config.metrics_dir.clone().context("the lab has a metrics dir")?;
    let state_dir = lab_config.state_dir.clone().context("the lab records its state")?;
    let hold_down = env
        .intent
        .policies
        .iter()
        .find(|p| p.service == SERVICE)
        .map_or(Duration::ZERO, |p| Duration::from_secs(p.dampening.hold_down_seconds));

    // Declared after `env`, so dropped before it, also on the way out of an error.
    let relay = Relay::start(reports.join("metrics"), daemon_metrics.clone())?;
    let marks = Marks::watch(&daemon_metrics, &paths::running_nodes_dir(&state_dir))?;
    let pins = paths::node_pins(&env.bpffs, &prefix, INGRESS);
    let mut runs = Vec::new();
    for (k, poll) in [lab_config.poll, FAST_POLL].into_iter().enumerate() {
        if k > 0 {
            env.stop_daemon()?;
            let config = daemon_config(env.lab(), &env.intent_dir, &env.bpffs, &env.run_dir);
            let daemon = Daemon::start(cats_controller::daemon::DaemonConfig { poll, ..config })?;
            daemon.wait_applied(Duration::from_secs(30))?;
            env.daemon = Some(daemon);
        }
        let what = if k == 0 { "the lab's setting" } else { "the same lab, daemon restarted" };
        println!("daemon poll {} ms ({what}): measuring...", poll.as_millis());
        runs.push(measure(&env, &relay, &marks, &pins, &state_dir, poll, hold_down)?);
    }
    drop(marks);
    drop(relay);
    drop(env);
    print(&runs, hold_down);
    println!("{}", leftovers(&prefix, &run_dir));
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One poll setting's samples.
struct Run {
    poll: Duration,
    instance_slot: u32,
    /// Table entries edge1-a held before the first drain.
    share: usize,
    drain: Vec<Sample>,
    restore: Vec<Sample>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Drain,
    Restore,
}

/// One change, from t0 (the report written).
#[derive(Clone, Copy)]
struct Sample {
    /// Until the goal: no entry left for the instance (drain), its first entry (restore).
    total: Duration,
    /// Until the last entry of this change was written.
    complete: Duration,
    /// t0 until the daemon's poll read the reports (0 when a poll already under way read it).
    poll_wait: Option<Duration>,
    /// That poll until gw's new state was recorded: read, compile, publish.
    compile: Option<Duration>,
    /// Recorded until the first table entry changed: the agent's kernel reconcile and map
    /// writes up to that entry.
    agent: Option<Duration>,
    /// First changed entry until the last.
    write: Duration,
}

fn measure(
    env: &LabEnv,
    relay: &Relay,
    marks: &Marks,
    pins: &Path,
    state_dir: &Path,
    poll: Duration,
    hold_down: Duration,
) -> Result<Run> {
    let (service_slot, instance_slot) = slots(state_dir)?;
    let mut table = LookupTable::open(pins, service_slot)?;
    table.check()?;
    let owned = |t: &[u32]| t.iter().filter(|s| **s == instance_slot).count();
    // Every instance reporting, and edge1-a in the table, before the first change.
    wait_until(GIVE_UP, "every instance reported and edge1-a had table entries", || {
        Ok(reports_fresh(env)? && owned(table.read()?) > 0)
    })?;
    std::thread::sleep(hold_down + Duration::from_millis(500));
    let share = owned(table.read()?);
    let mut run = Run { poll, instance_slot, share, drain: Vec::new(), restore: Vec::new() };
    for k in 0..SAMPLES {
        // Step t0 through the poll period (the daemon's ticks are periodic, our waits too).
        let phase = poll.mul_f64((k as f64 + 0.5) / SAMPLES as f64);
        std::thread::sleep(phase);
        run.drain.push(sample(Direction::Drain, relay, marks, &mut table, instance_slot)?);
        // A weight coming back waits for the hold-down since the drain's compile.
        std::thread::sleep(hold_down + Duration::from_millis(500) + phase);
        run.restore.push(sample(Direction::Restore, relay, marks, &mut table, instance_slot)?);
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(run)
}

fn sample(
    direction: Direction,
    relay: &Relay,
    marks: &Marks,
    table: &mut LookupTable,
    slot: u32,
) -> Result<Sample> {
    system::check_interrupted()?;
    let owned = |t: &[u32]| t.iter().filter(|s| **s == slot).count();
    let goal = |t: &[u32]| match direction {
        Direction::Drain => owned(t) == 0,
        Direction::Restore => owned(t) > 0,
    };
    let mut previous = table.read()?.to_vec();
    if goal(&previous) {
        bail!("{INSTANCE} is already where this change should take it");
    }
    let t0 = match direction {
        Direction::Drain => relay.hold(BUSY)?,
        Direction::Restore => relay.release()?,
    };
    let (mut first, mut last, mut reached) = (None, None, None);
    loop {
        std::thread::sleep(MAP_POLL);
        let now = table.read()?;
        let at = Instant::now();
        if now != previous.as_slice() {
            first.get_or_insert(at);
            last = Some(at);
            previous.copy_from_slice(now);
        }
        if reached.is_none() && goal(&previous) {
            reached = Some(at);
        }
        if let (Some(_), Some(l)) = (reached, last)
            && at.duration_since(l) >= QUIET
        {
            break;
        }
        if at.duration_since(t0) > GIVE_UP {
            let what = if direction == Direction::Drain { "drain" } else { "restore" };
            bail!("the {what} of {INSTANCE} did not reach gw's table within {GIVE_UP:?}");
        }
        system::check_interrupted()?;
    }
    let (first, last, reached) =
        (first.expect("changed"), last.expect("changed"), reached.expect("reached"));
    let (polled, published) = marks.poll_and_publish(t0);
    let published = published.filter(|p| *p <= last);
    let polled = polled.filter(|_| published.is_some());
    Ok(Sample {
        total: reached - t0,
        complete: last - t0,
        poll_wait: polled.map(|p| p.saturating_duration_since(t0)),
        compile: polled.zip(published).map(|(p, r)| r.saturating_duration_since(p.max(t0))),
        agent: published.map(|p| first.saturating_duration_since(p)),
        write: last - first,
    })
}

/// The slots of plate-recognition and of edge1-a in gw's recorded desired state.
fn slots(state_dir: &Path) -> Result<(u32, u32)> {
    let states = running::load_running(state_dir)?;
    let headend = states
        .get(INGRESS)
        .and_then(|s| s.headend.as_ref())
        .with_context(|| format!("no recorded headend state of {INGRESS}"))?;
    let service = headend.services.iter().find(|s| s.name == SERVICE).context("no service")?;
    let instance = headend
        .instances
        .iter()
        .find(|i| i.name == INSTANCE && i.service == SERVICE)
        .with_context(|| format!("no instance {INSTANCE} at {INGRESS}"))?;
    Ok((service.slot, instance.slot))
}

/// Whether the daemon's status shows a fresh report of every instance.
fn reports_fresh(env: &LabEnv) -> Result<bool> {
    let Ok(status) = env.daemon().status() else { return Ok(false) };
    let reports = status["metrics"]["instances"].as_array().cloned().unwrap_or_default();
    let fresh = |name: &str| {
        reports.iter().any(|r| r["instance"] == name && r["stale"] == serde_json::json!(false))
    };
    Ok(env.intent.services.iter().flat_map(|s| &s.instances).all(|i| fresh(&i.name)))
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        system::check_interrupted()?;
        if Instant::now() > deadline {
            bail!("not within {timeout:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One service's Maglev table in a headend's pinned lookup map.
struct LookupTable {
    map: MapData,
    path: PathBuf,
    base: u32,
    keys: Vec<u32>,
    values: Vec<u32>,
}

/// `union bpf_attr` for the BPF_MAP_*_BATCH commands (<linux/bpf.h>).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

impl LookupTable {
    fn open(pins: &Path, service_slot: u32) -> Result<Self> {
        let path = pins.join("maps").join(MAP_LOOKUP);
        let map =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let n = LOOKUP_TABLE_SIZE as usize;
        let base = service_slot * LOOKUP_TABLE_SIZE;
        Ok(Self { map, path, base, keys: vec![0; n], values: vec![0; n] })
    }

    /// The table now, in one syscall.
    fn read(&mut self) -> Result<&[u32]> {
        // The kernel starts after the key `in_batch` points at; none means from key 0.
        let previous: u32 = self.base.wrapping_sub(1);
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if self.base == 0 { 0 } else { &previous as *const u32 as u64 },
            out_batch: &mut next as *mut u32 as u64,
            keys: self.keys.as_mut_ptr() as u64,
            values: self.values.as_mut_ptr() as u64,
            count: LOOKUP_TABLE_SIZE,
            map_fd: self.map.fd().as_fd().as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the attribute points at live buffers of `count` keys and values (u32 each,
        // the map's key and value size), and at two u32 batch cursors; all outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(e).with_context(|| format!("batch lookup in {}", self.path.display()));
        }
        if attr.count != LOOKUP_TABLE_SIZE || self.keys[0] != self.base {
            bail!("batch lookup returned {} entries from key {}", attr.count, self.keys[0]);
        }
        Ok(&self.values)
    }

    /// The batch read agrees with aya's element-by-element reads.
    fn check(&mut self) -> Result<()> {
        let array: Array<MapData, u32> =
            Array::try_from(Map::Array(MapData::from_pin(&self.path)?))?;
        let single: Vec<u32> = (0..LOOKUP_TABLE_SIZE)
            .map(|i| array.get(&(self.base + i), 0))
            .collect::<Result<_, _>>()?;
        // The table may change between the reads; a quiet table agrees on the second try.
        for _ in 0..3 {
            if self.read()? == single.as_slice() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the batch read of {} disagrees with single lookups", self.path.display())
    }
}

/// Copies the instances' reports into the daemon's metrics directory, except edge1-a's while
/// it is overridden. Stops (and joins) on drop.
struct Relay {
    shared: Arc<RelayShared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct RelayShared {
    from: PathBuf,
    to: PathBuf,
    /// The overriding utilisation of edge1-a, if any, and when it was last written. Held
    /// while edge1-a's report is copied or written, so the relay and a change never interleave.
    held: Mutex<Option<(f64, Instant)>>,
}

impl Relay {
    fn start(from: PathBuf, to: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&from)?;
        std::fs::create_dir_all(&to)?;
        let shared = Arc::new(RelayShared { from, to, held: Mutex::new(None) });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("report-relay".into()).spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Err(e) = s.pass_on() {
                    eprintln!("propagation: report relay: {e:#}");
                }
                std::thread::sleep(RELAY_PERIOD);
            }
        })?;
        Ok(Relay { shared, stop, thread: Some(thread) })
    }

    /// Overrides edge1-a's report with `utilization`; returns the time right after the write.
    fn hold(&self, utilization: f64) -> Result<Instant> {
        let mut held = self.shared.lock();
        self.shared.write_override(utilization)?;
        let t0 = Instant::now();
        *held = Some((utilization, t0));
        Ok(t0)
    }

    /// Puts edge1-a's own latest report back; returns the time right after the write.
    fn release(&self) -> Result<Instant> {
        let mut held = self.shared.lock();
        *held = None;
        self.shared.copy(&format!("{INSTANCE}.json"), true)?;
        Ok(Instant::now())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RelayShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(f64, Instant)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round: every new report copied, a held override kept fresh.
    fn pass_on(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.from)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            if name == format!("{INSTANCE}.json") {
                let mut held = self.lock();
                match *held {
                    Some((u, written)) if written.elapsed() >= REPORT_PERIOD => {
                        self.write_override(u)?;
                        *held = Some((u, Instant::now()));
                    }
                    Some(_) => {}
                    None => self.copy(&name, false)?,
                }
            } else {
                self.copy(&name, false)?;
            }
        }
        Ok(())
    }

    /// Copies report `name` unless the daemon's copy is the same already (or `always`).
    fn copy(&self, name: &str, always: bool) -> Result<()> {
        let bytes = std::fs::read(self.from.join(name))?;
        let target = self.to.join(name);
        if always || std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
            write_report(&target, &bytes)?;
        }
        Ok(())
    }

    /// edge1-a's latest own report with `utilization` and a fresh timestamp.
    fn write_override(&self, utilization: f64) -> Result<()> {
        let name = format!("{INSTANCE}.json");
        let own = std::fs::read(self.from.join(&name))
            .with_context(|| format!("{INSTANCE} has not reported yet"))?;
        let mut report: InstanceMetrics = serde_json::from_slice(&own)?;
        report.utilization = utilization;
        report.updated_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        write_report(&self.to.join(&name), &serde_json::to_vec(&report)?)
    }
}

/// Replaces a report whole, as instances do.
fn write_report(path: &Path, bytes: &[u8]) -> Result<()> {
    cats_controller::atomic_file::write(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// The daemon opened its metrics directory: a poll reading the reports.
    Polled,
    /// The daemon recorded gw's desired state: just after publishing it to the agents.
    Published,
}

/// inotify marks of the daemon's steps, timestamped by a thread that waits for them.
struct Marks {
    seen: Arc<Mutex<Vec<(Instant, Mark)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Marks {
    fn watch(metrics_dir: &Path, nodes_dir: &Path) -> Result<Self> {
        // SAFETY: plain syscall; the fd is owned right away.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let add = |dir: &Path, mask: u32| -> Result<i32> {
            let c = CString::new(dir.as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid fd and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                return Err(e).with_context(|| format!("watching {}", dir.display()));
            }
            Ok(wd)
        };
        let polls = add(metrics_dir, libc::IN_OPEN)?;
        let records = add(nodes_dir, libc::IN_MOVED_TO)?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let recorded = format!("{INGRESS}.json");
        let thread = std::thread::Builder::new().name("inotify-marks".into()).spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !st.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                // SAFETY: reads into our buffer, at most its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                let at = Instant::now();
                let Ok(n) = usize::try_from(n) else { continue };
                let mut found = Vec::new();
                let mut off = 0;
                let head = std::mem::size_of::<libc::inotify_event>();
                while off + head <= n {
                    // SAFETY: the kernel wrote a whole event header here (unaligned read).
                    let ev: libc::inotify_event =
                        unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                    let name = &buf[off + head..(off + head + ev.len as usize).min(n)];
                    let name = name.split(|b| *b == 0).next().unwrap_or_default();
                    if ev.wd == polls && ev.mask & libc::IN_OPEN != 0 && name.is_empty() {
                        found.push((at, Mark::Polled));
                    }
                    if ev.wd == records && name == recorded.as_bytes() {
                        found.push((at, Mark::Published));
                    }
                    off += head + ev.len as usize;
                }
                s.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
            }
        })?;
        Ok(Marks { seen, stop, thread: Some(thread) })
    }

    /// The first publish at or after `t0`, and the last poll before it (in the order the
    /// kernel queued them: marks read together share one timestamp).
    fn poll_and_publish(&self, t0: Instant) -> (Option<Instant>, Option<Instant>) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = seen.iter().position(|(at, m)| *m == Mark::Published && *at >= t0) else {
            return (None, None);
        };
        let polled = seen[..i].iter().rev().find(|(_, m)| *m == Mark::Polled).map(|(at, _)| *at);
        (polled, Some(seen[i].0))
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Median of the samples that have a value, or "-".
fn median(values: impl Iterator<Item = Option<Duration>>) -> String {
    let mut v: Vec<Duration> = values.flatten().collect();
    v.sort();
    if v.is_empty() { "-".into() } else { ms(percentile(&v, 0.5)) }
}

fn print(runs: &[Run], hold_down: Duration) {
    println!();
    println!(
        "Report written (t0) -> {INGRESS}'s Maglev table for {SERVICE} ({LOOKUP_TABLE_SIZE} \
         entries, read every {} ms)",
        MAP_POLL.as_millis()
    );
    println!(
        "drain: {INSTANCE} reports utilisation {BUSY} until no entry points at it; restore: its \
         own report again until it has an entry"
    );
    println!(
        "{SAMPLES} samples each, t0 stepped through the poll period; each restore waits out the \
         {} s hold-down since the drain",
        hold_down.as_secs()
    );
    println!("times in ms; p99 of {SAMPLES} samples is their maximum");
    for run in runs {
        println!();
        println!(
            "daemon poll {} ms ({INSTANCE} = instance slot {}, {} of {LOOKUP_TABLE_SIZE} entries \
             before the drain)",
            run.poll.as_millis(),
            run.instance_slot,
            run.share
        );
        println!(
            "  {:<8} {:>7} {:>7} {:>7} {:>9} | medians: {:>9} {:>9} {:>7} {:>7}",
            "", "p50", "p99", "max", "all done", "poll wait", "compile", "agent", "write"
        );
        for (name, samples) in [("drain", &run.drain), ("restore", &run.restore)] {
            let mut total: Vec<Duration> = samples.iter().map(|s| s.total).collect();
            total.sort();
            let mut complete: Vec<Duration> = samples.iter().map(|s| s.complete).collect();
            complete.sort();
            println!(
                "  {:<8} {:>7} {:>7} {:>7} {:>9} | {:>18} {:>9} {:>7} {:>7}",
                name,
                ms(percentile(&total, 0.5)),
                ms(percentile(&total, 0.99)),
                ms(*total.last().expect("samples")),
                ms(percentile(&complete, 0.5)),
                median(samples.iter().map(|s| s.poll_wait)),
                median(samples.iter().map(|s| s.compile)),
                median(samples.iter().map(|s| s.agent)),
                median(samples.iter().map(|s| Some(s.write))),
            );
        }
        for (name, samples) in [("drain", &run.drain), ("restore", &run.restore)] {
            let each: Vec<String> = samples.iter().map(|s| ms(s.total)).collect();
            println!("  {name:<8} each: {}", each.join(" "));
        }
    }
    println!();
    println!("all done: t0 until the change's last table entry (p50). poll wait: t0 until the");
    println!("daemon's poll opened the reports; compile: reading them, compiling and publishing");
    println!("until gw's state was recorded; agent: until its first table entry changed (kernel");
    println!("reconcile first, then the maps); write: first to last changed entry. The poll");
    println!("wait is spread over the whole poll period: the poll is the floor of the worst case.");
}

/// What the run left behind: namespaces named with its prefix, its bpffs mount (the pins),
/// its run directory.
fn leftovers(prefix: &str, run_dir: &Path) -> String {
    let namespaces = cats_lab::netns::ip(&["netns", "list"]).unwrap_or_default();
    let left = namespaces.lines().filter(|l| l.starts_with(prefix)).count();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = run_dir.to_string_lossy();
    let mounted = mounts.lines().filter(|l| l.contains(dir.as_ref())).count();
    let gone = |there: bool| if there { "still there" } else { "removed" };
    format!(
        "cleanup: {left} namespaces named {prefix}* left, bpffs with the pins {}, run \
         directory {}",
        gone(mounted > 0),
        gone(run_dir.exists())
    )
}
