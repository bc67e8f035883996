//! Runs `cargo test` and closes with one line that adds up every test binary's result
//! (`summary: N passed, N failed, N skipped`), so the outcome is the last thing printed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd;

#[derive(Default, Debug, PartialEq)]
struct Totals {
    binaries: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds a libtest line such as
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        self.binaries += 1;
        let words: Vec<&str> = rest
            .split(|c: char| c.is_whitespace() || c == ';' || c == '.' || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            let Ok(n) = pair[0].parse::<u64>() else {
                continue;
            };
            match pair[1] {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd` (a `cargo test`), passing its output through as it comes.
pub fn run(cmd: &mut Command) -> Result<()> {
    let Some(line) = cmd::announce(cmd) else { return Ok(()) };
    let mut child =
        cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("could not start `{line}`"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let totals = Arc::new(Mutex::new(Totals::default()));
    let (done_tx, done_rx) = mpsc::channel();
    let reader_totals = Arc::clone(&totals);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf);
            let _ = out.flush();
            reader_totals.lock().unwrap().add(&String::from_utf8_lossy(&buf));
            buf.clear();
        }
        let _ = done_tx.send(());
    });
    let status = child.wait().with_context(|| format!("waiting for `{line}`"))?;
    // A process a test left running may still hold the pipe open: don't wait for it forever.
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        eprintln!(
            "xtask: test output still open after cargo exited (a test left a process running?)"
        );
    }
    let t = totals.lock().unwrap();
    if t.binaries == 0 {
        println!("summary: cargo test reported no test results ({status})");
    } else {
        println!("({} test binaries)", t.binaries);
        println!("summary: {} passed, {} failed, {} skipped", t.passed, t.failed, t.ignored);
    }
    cmd::check(status, &line)
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn adds_up_libtest_results() {
        let mut t = Totals::default();
        t.add("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n");
        t.add("running 2 tests");
        t.add("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 12.30s");
        let expected = Totals { binaries: 2, passed: 4, failed: 1, ignored: 1 };
        assert_eq!(t, expected);
    }
}
