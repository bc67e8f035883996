//! The XDP programs' aya-log events (`catsd --ebpf-log`): loaded with logging on, a drop and
//! a new affinity pin each leave one record naming what happened; loaded as always (off), the
//! same packets leave none.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use cats_common::{counters::DropReason, maps::PROG_HEADEND};
use cats_controller::{dataplane::Dataplane, netns, state::HeadendState};
use cats_tests::{
    fixture::{self, PORT, SERVICE6},
    packets::udp6,
    router::router,
    xdp::{self, XDP_DROP, XDP_REDIRECT},
};

const CLIENT6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x21);

/// The `log` target of every record (what `RUST_LOG` filters on).
const TARGET: &str = "cats_dataplane::log";

/// A `log` logger keeping every record's level and message.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        assert_eq!(record.target(), TARGET);
        self.0.lock().unwrap().push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

/// Runs one service frame through a private headend with `state`, loaded with logging
/// `on` or off, and returns its verdict and the records it left.
fn run(state: HeadendState, on: bool) -> (u32, Vec<(log::Level, String)>) {
    let r = router().unwrap();
    netns::run_in(&r.ns.path(), move || {
        let mut dp = Dataplane::load_logging(None, 1024, on)?;
        dp.apply_headend(&state)?;
        let capture = Capture::default();
        let mut logger = aya_log::EbpfLogger::init_with_logger(dp.ebpf_mut(), capture.clone())?;
        let frame = udp6(CLIENT6, SERVICE6, 40000, PORT, 64, b"x");
        let action = xdp::run(&mut dp, PROG_HEADEND, &frame)?.action;
        logger.flush();
        let records = capture.0.lock().unwrap().clone();
        Ok::<_, anyhow::Error>((action, records))
    })
    .unwrap()
}

#[test]
fn a_drop_is_logged_with_its_reason_only_when_logging_is_on() -> Result<()> {
    // No instance with a weight: dropped for `no_instance`.
    let (action, records) = run(fixture::headend("cams", 0, 0), true);
    assert_eq!(action, XDP_DROP);
    let reason = DropReason::NoInstance as u32;
    assert_eq!(records, [(log::Level::Info, format!("headend drop reason={reason}"))]);

    let (action, records) = run(fixture::headend("cams", 0, 0), false);
    assert_eq!(action, XDP_DROP);
    assert_eq!(records, []);
    Ok(())
}

#[test]
fn a_new_pin_is_logged_with_service_and_instance_only_when_logging_is_on() -> Result<()> {
    // All weight on the edge instance (slot 0) of service slot 0.
    let (action, records) = run(fixture::headend("cams", 1, 0), true);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(records, [(log::Level::Debug, "affinity pin service=0 instance=0".to_string())]);

    let (action, records) = run(fixture::headend("cams", 1, 0), false);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(records, []);
    Ok(())
}
