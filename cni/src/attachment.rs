//! The cats headend on the node's end of a pod's veth: XDP, pinned where the node's agent
//! keeps its links (`<pins>/links/<interface>`), sharing the node's pinned maps.
//!
//! The plugin attaches it itself, so a pod is steered from its first packet, whether or not
//! the daemon runs; the agent later takes the same pin over (replacing the program behind it
//! on upgrades) and keeps it while the pod is registered.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::programs::{XdpMode, links::FdLink, links::PinnedLink};
use cats_common::maps::PROG_HEADEND;
use cats_controller::dataplane::{
    Dataplane,
    program::{ALL_MAPS, Attached, link_pin},
};

/// Attaches the headend to `interface` (of this namespace), sharing the maps pinned under
/// `pins`. `lock` is a directory every plugin run of the node can open (the registry).
pub fn attach(pins: &Path, interface: &str, lock: &Path) -> Result<Attached> {
    // The first pod on a fresh node creates the maps: two plugins doing it at once would both
    // try to pin the same map, so creation is serialised. Later runs only open the pins.
    let _creating = if maps_pinned(pins) { None } else { Some(Lock::exclusive(lock)?) };
    let mut dataplane = Dataplane::load_only(Some(pins), &[PROG_HEADEND])
        .context("loading the cats headend with the node's maps")?;
    dataplane.attach(PROG_HEADEND, interface, XdpMode::default())
}

fn maps_pinned(pins: &Path) -> bool {
    ALL_MAPS.iter().all(|map| pins.join("maps").join(map).exists())
}

/// Removes the pinned attachment of `interface`, which detaches the program (a link nobody
/// else holds). A missing pin is fine: DEL is idempotent.
pub fn detach(pins: &Path, interface: &str) -> Result<()> {
    let pin = link_pin(pins, interface);
    match std::fs::remove_file(&pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", pin.display()))
        }
        _ => Ok(()),
    }
}

/// Checks that the pinned link of `interface` is what runs on it.
pub fn check(pins: &Path, interface: &str) -> Result<()> {
    let pin: PathBuf = link_pin(pins, interface);
    let link: FdLink = PinnedLink::from_pin(&pin)
        .with_context(|| format!("no cats link pinned at {}", pin.display()))?
        .into();
    let pinned = link.info().context("reading the pinned link")?.program_id();
    match crate::pod_link::xdp_program(interface)? {
        Some(running) if running == pinned => Ok(()),
        Some(running) => bail!(
            "{interface} runs XDP program {running}, not the cats headend {pinned} pinned at {}",
            pin.display()
        ),
        None => bail!("{interface} has no XDP program (the pin at {} is stale)", pin.display()),
    }
}

/// An exclusive `flock` on a directory (no lock file to leave behind), released on drop,
/// also when the process dies.
struct Lock {
    _held: File,
}

impl Lock {
    fn exclusive(path: &Path) -> Result<Lock> {
        let file =
            File::open(path).with_context(|| format!("opening {} to lock it", path.display()))?;
        // SAFETY: flock on a descriptor we own; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(Lock { _held: file })
    }
}
