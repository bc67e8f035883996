//! Loading the XDP object, attaching it, and pinning what must outlive the daemon.
//!
//! With a pin directory, every map lives at `<pins>/maps/<NAME>` and every attachment at
//! `<pins>/links/<interface>`. A restarted agent reopens the same maps (flow pins survive) and
//! swaps the program behind each pinned link atomically, so traffic never stops.

use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use cats_common::maps::{
    AFFINITY_TABLE_SIZE, MAP_AFFINITY, MAP_CONFIG, MAP_DROPS, MAP_EVENTS, MAP_FAILOVER, MAP_HEALTH,
    MAP_INSTANCE_STATS, MAP_INTERFACES, MAP_LOOKUP, MAP_SERVICE_STATS, MAP_SERVICES, MAP_SIDS,
    MAP_TARGETS, PROG_ENDPOINT, PROG_HEADEND, PROG_PASS,
};
use tracing::{debug, info};

/// The XDP object built from dataplane-ebpf by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cats-dataplane"));

/// Every map of the object, for pinning.
pub const ALL_MAPS: [&str; 13] = [
    MAP_CONFIG,
    MAP_SERVICES,
    MAP_LOOKUP,
    MAP_TARGETS,
    MAP_FAILOVER,
    MAP_HEALTH,
    MAP_AFFINITY,
    MAP_SERVICE_STATS,
    MAP_INSTANCE_STATS,
    MAP_DROPS,
    MAP_EVENTS,
    MAP_SIDS,
    MAP_INTERFACES,
];

/// How an attachment came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, now pinned.
    New,
    /// A pinned link from an earlier run, whose program was replaced atomically.
    Replaced,
}

/// The loaded programs and maps of one node.
pub struct Dataplane {
    ebpf: Ebpf,
    pins: Option<PathBuf>,
}

impl Dataplane {
    /// Loads and verifies the programs. With `pins`, maps are created at (or reopened from)
    /// `<pins>/maps`; without, they are private to this process (tests, benchmarks).
    pub fn load(pins: Option<&Path>) -> Result<Self> {
        Self::load_sized(pins, AFFINITY_TABLE_SIZE)
    }

    /// [`Dataplane::load`] with an affinity table of `affinity_entries` flows. A table
    /// pinned by an earlier run is reopened whatever its size (its pins are live flows):
    /// [`Dataplane::affinity_table_size`] tells the size in force.
    pub fn load_sized(pins: Option<&Path>, affinity_entries: u32) -> Result<Self> {
        Self::load_logging(pins, affinity_entries, false)
    }

    /// [`Dataplane::load_sized`], with the programs' aya-log events on (`ebpf_log`) or off.
    /// The level is fixed at load time: the verifier removes disabled events, so a program
    /// loaded without them costs what it did before they existed, and a program loaded (and
    /// pinned) by an earlier run keeps the setting it was loaded with. Records reach the
    /// `log` crate once [`Dataplane::forward_log`] runs.
    pub fn load_logging(
        pins: Option<&Path>,
        affinity_entries: u32,
        ebpf_log: bool,
    ) -> Result<Self> {
        Self::load_with(pins, affinity_entries, &[PROG_HEADEND, PROG_ENDPOINT, PROG_PASS], ebpf_log)
    }

    /// [`Dataplane::load`], verifying only `programs`: the CNI plugin attaches the headend
    /// alone, and each program verified costs time on every pod start. Maps it has to create
    /// (before the node's agent did) get the default sizes.
    pub fn load_only(pins: Option<&Path>, programs: &[&str]) -> Result<Self> {
        Self::load_with(pins, AFFINITY_TABLE_SIZE, programs, false)
    }

    fn load_with(
        pins: Option<&Path>,
        affinity_entries: u32,
        programs: &[&str],
        ebpf_log: bool,
    ) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_AFFINITY, affinity_entries);
        // aya-log-ebpf's level defaults to everything on: off unless asked for (see
        // dataplane-ebpf/src/log.rs). `must_exist`: an object without it would log regardless.
        let level: u8 = if ebpf_log { aya_log::Level::Debug as u8 } else { 0 };
        loader.override_global(aya_log::LEVEL, &level, true);
        let map_paths: Vec<(&str, PathBuf)> = match pins {
            Some(dir) => {
                let maps = dir.join("maps");
                std::fs::create_dir_all(&maps)
                    .with_context(|| format!("creating pin directory {}", maps.display()))?;
                std::fs::create_dir_all(dir.join("links"))?;
                ALL_MAPS.iter().map(|m| (*m, maps.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).context("loading the cats XDP object")?;
        for &name in programs {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            prog.load().with_context(|| format!("verifier rejected {name}"))?;
        }
        Ok(Self { ebpf, pins: pins.map(Path::to_path_buf) })
    }

    /// Forwards the programs' aya-log records to the `log` crate (`catsd` bridges it into
    /// `tracing`) from a thread of its own, for the life of the process. Takes the `AYA_LOGS`
    /// ring buffer out of the object: call it once, after [`Dataplane::load_logging`] with
    /// `ebpf_log`.
    pub fn forward_log(&mut self, node: &str) -> Result<()> {
        let mut logger = aya_log::EbpfLogger::init(&mut self.ebpf)
            .context("opening the AYA_LOGS ring buffer")?;
        std::thread::Builder::new().name(format!("ebpf-log:{node}")).spawn(move || {
            loop {
                let mut fd =
                    libc::pollfd { fd: logger.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call; a failed poll only
                // means an early flush.
                unsafe { libc::poll(&mut fd, 1, 1000) };
                logger.flush();
            }
        })?;
        Ok(())
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Flows the affinity table holds: what the kernel says of the map in use.
    pub fn affinity_table_size(&self) -> Result<u32> {
        let map = self.ebpf.map(MAP_AFFINITY).context("no affinity map")?;
        let data = match map {
            aya::maps::Map::LruHashMap(data) => data,
            _ => bail!("{MAP_AFFINITY} is not an LRU hash map"),
        };
        Ok(data.info()?.max_entries())
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// One of the object's XDP programs, by name.
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    fn link_pin(&self, interface: &str) -> Option<PathBuf> {
        self.pins.as_deref().map(|pins| link_pin(pins, interface))
    }

    /// Attaches program `name` to `interface` of the calling thread's network namespace.
    /// A link pinned by an earlier run is reused (program swapped atomically); otherwise a new
    /// link is made and, with a pin directory, pinned so it outlives this process.
    pub fn attach(&mut self, name: &str, interface: &str, mode: XdpMode) -> Result<Attached> {
        let pin = self.link_pin(interface);
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            match reuse_link(self.program(name)?, path) {
                Ok(()) => {
                    debug!(interface, "replaced program behind pinned link");
                    return Ok(Attached::Replaced);
                }
                Err(e) => {
                    // The interface was recreated (link defunct) or the pin is foreign.
                    info!(interface, error = %format!("{e:#}"), "pinned link unusable, attaching anew");
                    std::fs::remove_file(path).ok();
                }
            }
        }
        let prog = self.program(name)?;
        let id = prog
            .attach(interface, mode)
            .with_context(|| format!("attaching {name} to {interface}"))?;
        let link = prog.take_link(id)?;
        match pin {
            Some(path) => {
                let fd: FdLink = link.try_into().with_context(|| {
                    format!(
                        "{interface}: kernel gave a netlink XDP attachment, which cannot be pinned"
                    )
                })?;
                fd.pin(&path).with_context(|| format!("pinning link at {}", path.display()))?;
            }
            // Unpinned: the attachment lives as long as this process holds the link.
            None => std::mem::forget(link),
        }
        Ok(Attached::New)
    }

    /// Removes pinned attachments for interfaces not in `keep` (detaching those programs).
    pub fn detach_others(&self, keep: &[String]) -> Result<Vec<String>> {
        let Some(dir) = self.pins.as_ref().map(|d| d.join("links")) else { return Ok(Vec::new()) };
        let mut removed = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(entry.path())?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

/// Where the attachment to `interface` is pinned: `<pins>/links/<interface>`.
pub fn link_pin(pins: &Path, interface: &str) -> PathBuf {
    pins.join("links").join(interface)
}

fn reuse_link(prog: &mut Xdp, path: &Path) -> Result<()> {
    let pinned = PinnedLink::from_pin(path)?;
    let fd: FdLink = pinned.into();
    let link = XdpLink::try_from(fd)?;
    let id = prog.attach_to_link(link)?;
    // Taken from the program so that dropping the program leaves it alone; dropping our
    // handle only closes its fd (the pin keeps the attachment). Forgetting it instead would
    // leak one fd per interface and apply.
    drop(prog.take_link(id)?);
    Ok(())
}

/// Removes every pin of a node (maps and links): its programs detach and its maps go away.
pub fn remove_pins(pins: &Path) -> Result<()> {
    if pins.exists() {
        std::fs::remove_dir_all(pins).with_context(|| format!("removing {}", pins.display()))?;
    }
    Ok(())
}

/// Ensures `dir` is on a bpffs, mounting one there if not.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_bpffs(dir)? {
        return Ok(());
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc =
        unsafe { libc::mount(c"bpf".as_ptr(), c.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("mounting bpffs at {}: {}", dir.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `dir` is on a bpffs.
pub fn is_bpffs(dir: &Path) -> Result<bool> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!("statfs {}: {}", dir.display(), std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}
