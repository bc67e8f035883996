//! Running a long-lived child (`lab`, `bench`) in the foreground until it has finished.
//!
//! The child stays in our process group, so a Ctrl-C typed at the terminal reaches it (and its
//! own children) directly, exactly as when it is started from a shell. What we add: we must not
//! die of that same SIGINT while the child is still tearing its namespaces down, so SIGINT and
//! SIGTERM are caught while it runs. One sent by another process (`kill <xtask pid>`, a
//! supervisor) rather than by the terminal did not reach the child, so it is forwarded.

use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result, bail};
use libc::{c_int, c_void, siginfo_t};

use crate::cmd;

/// The running child's pid, 0 when there is none.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The last signal caught while it ran, 0 if none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn forward(sig: c_int, info: *mut siginfo_t, _context: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (checked for null anyway).
    let from_terminal = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    CAUGHT.store(sig, Ordering::Relaxed);
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 && !from_terminal {
        // SAFETY: kill(2) is async-signal-safe; pid is our own, not yet reaped, child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Our handlers while it lives; the previous dispositions come back on drop.
/// (Caught signals are reset to the default across exec, so the child starts with its own.)
struct Handlers {
    previous: Vec<(c_int, libc::sigaction)>,
}

impl Handlers {
    fn install() -> Result<Self> {
        let mut previous = Vec::new();
        for sig in SIGNALS {
            // SAFETY: plain sigaction(2) calls on zero-initialised (valid) structs; the handler
            // only touches an atomic and calls kill(2).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = forward as extern "C" fn(c_int, *mut siginfo_t, *mut c_void)
                    as libc::sighandler_t;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut old) != 0 {
                    return Err(std::io::Error::last_os_error())
                        .context(format!("installing a handler for signal {sig}"));
                }
                previous.push((sig, old));
            }
        }
        Ok(Self { previous })
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores a disposition that sigaction(2) itself returned.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

/// Runs `cmd` with inherited stdio and waits for it, however it is interrupted.
pub fn run(cmd: &mut Command) -> Result<()> {
    let Some(line) = cmd::announce(cmd) else { return Ok(()) };
    let handlers = Handlers::install()?;
    let mut child = cmd.spawn().with_context(|| format!("could not start `{line}`"))?;
    CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::Relaxed);
    let status = child.wait();
    CHILD.store(0, Ordering::Relaxed);
    drop(handlers);
    let status = status.with_context(|| format!("waiting for `{line}`"))?;
    let caught = CAUGHT.swap(0, Ordering::Relaxed);
    if caught != 0 && !status.success() {
        let name = if caught == libc::SIGINT { "SIGINT (Ctrl-C)" } else { "SIGTERM" };
        bail!("`{line}` stopped after {name} ({status})");
    }
    cmd::check(status, &line)
}
