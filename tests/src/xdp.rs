//! Running an XDP program on one frame with BPF_PROG_TEST_RUN.

use anyhow::Result;
use aya::programs::{TestRun, TestRunOptions};
use cats_controller::dataplane::Dataplane;

/// Verdict and output frame of one run.
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
}

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Runs program `name` once on `frame`.
pub fn run(dp: &mut Dataplane, name: &str, frame: &[u8]) -> Result<Outcome> {
    let mut out = vec![0u8; frame.len() + 512];
    let prog = dp.program(name)?;
    let result = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(Outcome { action: result.return_value, frame: out })
}

/// Runs program `name` `repeat` times on `frame` in the kernel; returns ns per run.
pub fn time(dp: &mut Dataplane, name: &str, frame: &[u8], repeat: u32) -> Result<f64> {
    let prog = dp.program(name)?;
    let result =
        prog.test_run(TestRunOptions { data_in: Some(frame), repeat, ..Default::default() })?;
    Ok(result.duration.as_nanos() as f64)
}
