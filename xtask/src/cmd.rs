//! Running child commands: inherited stdio, the command line echoed, and named in every error.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

static DRY_RUN: AtomicBool = AtomicBool::new(false);

/// In a dry run, commands that change something are printed instead of run;
/// read-only queries (`probe`, `output`) still run.
pub fn set_dry_run(on: bool) {
    DRY_RUN.store(on, Ordering::Relaxed);
}

pub fn dry_run() -> bool {
    DRY_RUN.load(Ordering::Relaxed)
}

/// The command line as a shell would take it: variables set on the command, program, arguments.
pub fn line(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Shows the command line about to run (`+ ...`) and returns it; with --dry-run only shows it
/// and returns `None`: the caller then runs nothing.
pub fn announce(cmd: &Command) -> Option<String> {
    let line = line(cmd);
    if dry_run() {
        println!("[dry-run] {line}");
        return None;
    }
    eprintln!("+ {line}");
    Some(line)
}

/// Runs `cmd` with inherited stdio; fails, naming the command line, unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let Some(line) = announce(cmd) else { return Ok(()) };
    let status = cmd.status().with_context(|| format!("could not start `{line}`"))?;
    check(status, &line)
}

/// Fails, naming the command line, unless `status` is a success.
pub fn check(status: ExitStatus, line: &str) -> Result<()> {
    if status.success() { Ok(()) } else { bail!("`{line}` failed ({status})") }
}

/// Runs a read-only query and returns its trimmed stdout; fails with its stderr otherwise.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = line(cmd);
    let out =
        cmd.stdin(Stdio::null()).output().with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Like `output`, but a command that is missing or fails is just `None`.
pub fn probe(cmd: &mut Command) -> Option<String> {
    output(cmd).ok()
}
