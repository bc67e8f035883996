//! The XDP programs' aya-log events (`catsd --ebpf-log`): loaded with logging on, a drop, a
//! new affinity pin and each failover decision leave one record naming what happened; loaded
//! as always (off), the same packets leave none.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use cats_common::{
    counters::DropReason,
    maps::{HEALTH_ALTERNATE_DOWN, HEALTH_PRIMARY_DOWN, PROG_HEADEND},
};
use cats_controller::{
    dataplane::{Dataplane, health::HealthMap},
    netns,
    state::HeadendState,
};
use cats_tests::{
    fixture::{self, PORT, SERVICE6},
    packets::udp6,
    router::router,
    xdp::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
};

const CLIENT6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x21);
const DOWN: u32 = HEALTH_PRIMARY_DOWN | HEALTH_ALTERNATE_DOWN;

/// The `log` target of every record (what `RUST_LOG` filters on).
const TARGET: &str = "cats_dataplane::log";

/// A `log` logger keeping the level and message of every record of [`TARGET`]; others (aya's
/// own, to the global logger) are not ours.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() == TARGET {
            self.0.lock().unwrap().push((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// Loads a private headend with `state`, logging `on` or off, and runs `f` on it (with the
/// prober's health map) in the router namespace: the records its packets left.
fn logged(
    state: HeadendState,
    on: bool,
    f: impl FnOnce(&mut Dataplane, &mut HealthMap) -> Result<()> + Send + 'static,
) -> Vec<(log::Level, String)> {
    let r = router().unwrap();
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load_logging(None, 1024, on)?;
        dp.apply_headend(&state)?;
        let mut health = HealthMap::take(&mut dp)?;
        let capture = Capture::default();
        let mut logger = aya_log::EbpfLogger::init_with_logger(dp.ebpf_mut(), capture.clone())?;
        f(&mut dp, &mut health)?;
        logger.flush();
        let records = capture.0.lock().unwrap().clone();
        Ok(records)
    })
    .unwrap()
}

/// Sends one request of flow `sport` through the headend and checks its verdict.
fn send(dp: &mut Dataplane, sport: u16, verdict: u32) -> Result<()> {
    let frame = udp6(CLIENT6, SERVICE6, sport, PORT, 64, b"x");
    assert_eq!(xdp::run(dp, PROG_HEADEND, &frame)?.action, verdict, "flow {sport}");
    Ok(())
}

/// Runs one service frame through a private headend with `state`, loaded with logging
/// `on` or off, and returns the records it left after checking its verdict.
fn run(state: HeadendState, on: bool, verdict: u32) -> Vec<(log::Level, String)> {
    logged(state, on, move |dp, _| send(dp, 40000, verdict))
}

#[test]
fn a_drop_is_logged_with_its_reason_only_when_logging_is_on() -> Result<()> {
    // No instance with a weight: dropped for `no_instance`.
    let records = run(fixture::headend("cams", 0, 0), true, XDP_DROP);
    let reason = DropReason::NoInstance as u32;
    assert_eq!(records, [(log::Level::Info, format!("headend drop reason={reason}"))]);

    let records = run(fixture::headend("cams", 0, 0), false, XDP_DROP);
    assert_eq!(records, []);
    Ok(())
}

#[test]
fn a_new_pin_is_logged_with_service_and_instance_only_when_logging_is_on() -> Result<()> {
    // All weight on the edge instance (slot 0) of service slot 0.
    let records = run(fixture::headend("cams", 1, 0), true, XDP_REDIRECT);
    assert_eq!(records, [(log::Level::Debug, "affinity pin service=0 instance=0".to_string())]);

    let records = run(fixture::headend("cams", 1, 0), false, XDP_REDIRECT);
    assert_eq!(records, []);
    Ok(())
}

/// `fixture::headend_with_failover`: new flows pick edge1-a (slot 0), whose alternate path
/// goes through the core (an unresolved neighbour: to the stack) and whose backup is edge1-b
/// (slot 2, on the edge: redirected).
#[test]
fn failover_decisions_are_logged_with_their_slots_only_when_logging_is_on() -> Result<()> {
    let scenario = |dp: &mut Dataplane, health: &mut HealthMap| {
        // Primary path down: the alternate.
        health.set(0, HEALTH_PRIMARY_DOWN)?;
        send(dp, 41000, XDP_PASS)?;
        // Both paths down: re-pinned to the backup, whose next packet is a plain hit.
        health.set(0, DOWN)?;
        send(dp, 41001, XDP_REDIRECT)?;
        send(dp, 41001, XDP_REDIRECT)?;
        // The backup down too: the primary path anyway.
        health.set(2, DOWN)?;
        send(dp, 41002, XDP_REDIRECT)?;
        Ok(())
    };
    let info = |m: &str| (log::Level::Info, m.to_string());
    let pin = (log::Level::Debug, "affinity pin service=0 instance=0".to_string());
    let records = logged(fixture::headend_with_failover("cams"), true, scenario);
    assert_eq!(
        records,
        [
            pin.clone(),
            info("failover alternate instance=0"),
            pin.clone(),
            info("failover repinned instance=0 backup=2"),
            pin,
            info("failover unavailable instance=0"),
        ]
    );

    let records = logged(fixture::headend_with_failover("cams"), false, scenario);
    assert_eq!(records, []);
    Ok(())
}

/// What `catsd --ebpf-log` does: `Dataplane::forward_log` hands the records to the process's
/// `log` logger from a thread of its own.
#[test]
fn forwarded_records_reach_the_global_logger() -> Result<()> {
    static GLOBAL: std::sync::LazyLock<Capture> = std::sync::LazyLock::new(Capture::default);
    log::set_logger(&*GLOBAL).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let r = router().unwrap();
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load_logging(None, 1024, true)?;
        dp.apply_headend(&fixture::headend("cams", 0, 0))?;
        dp.forward_log("test")?;
        send(&mut dp, 40000, XDP_DROP)
    })?;
    let expected =
        (log::Level::Info, format!("headend drop reason={}", DropReason::NoInstance as u32));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while GLOBAL.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(*GLOBAL.0.lock().unwrap(), [expected]);
    Ok(())
}
