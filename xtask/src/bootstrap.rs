//! Makes a fresh machine (Debian 12, root) ready to build and test the project, idempotently.
//! Each step checks first and prints one line: `[bootstrap] <what> ... already installed` or
//! `... installing`. See shared/toolchain.md for why the steps are what they are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The toolchain aya-build compiles the eBPF crate with (`rustup run nightly cargo ...`).
const NIGHTLY: &str = "nightly";

const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker must use the same LLVM as the nightly rustc; it links rustc's own libLLVM.
const LLVM_MAJOR: u32 = 22;

/// Debian packages, and who needs each. (Only `ip`, `sysctl`, `ping` and the CNI plugins are
/// called by code today; the rest are the tools for looking into a lab that misbehaves.)
const DEBIAN_PACKAGES: &[&str] = &[
    // `ip`: the lab's namespaces, veths, addresses and seg6/seg6local routes (lab/src/netns.rs).
    "iproute2",
    // `ping`: reachability across namespaces in the kernel-SRv6 tests (tests/tests/kernel_routes.rs).
    "iputils-ping",
    // `tshark`: decoding captured SRv6 packets (SRH and its segments) when debugging a lab.
    "tshark",
    // `tcpdump`: capturing on lab links.
    "tcpdump",
    // `bpftool`: inspecting the loaded XDP programs and their maps.
    "bpftool",
    // `ethtool`: offload settings and driver counters of the lab's veths.
    "ethtool",
    // `sysctl`: forwarding and seg6_enabled inside each namespace (lab/src/netns.rs, tests).
    "procps",
    // `ptp`, `bridge`, `host-local` (in /usr/lib/cni): the interface plugins the CNI tests
    // chain cats-cni after, standing in for Calico's (tests/tests/cni_*.rs).
    "containernetworking-plugins",
    // `etcd`: the multi-node store the etcd tests and the propagation bench start on loopback
    // (tests/src/etcd.rs); `etcdctl` for looking into it.
    "etcd-server",
    "etcd-client",
    // `dot`: `catsctl graph` renders the topology and the chosen paths as SVG.
    "graphviz",
];

/// Debian packages the build itself needs: `protoc` compiles etcd's gRPC protocol for the
/// `etcd-client` crate.
const BUILD_PACKAGES: &[&str] = &["protobuf-compiler"];

/// What a command needs before it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The nightly toolchain, rust-src and bpf-linker: enough to compile (clippy, build).
    Toolchain,
    /// Also Debian packages and bpffs: enough to run the lab and the tests (needs root).
    All,
}

pub fn run(scope: Scope) -> Result<()> {
    let start = Instant::now();
    nightly()?;
    rust_src()?;
    bpf_linker()?;
    debian_packages("Debian build packages", BUILD_PACKAGES)?;
    if scope == Scope::All {
        debian_packages("Debian packages", DEBIAN_PACKAGES)?;
        bpffs()?;
    }
    println!("[bootstrap] done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn step(what: &str, status: &str) {
    println!("[bootstrap] {what} ... {status}");
    let _ = std::io::stdout().flush();
}

/// Runs an install step's command, saying which step failed and what to do if it does.
fn install(what: &str, cmd: &mut Command, advice: &str) -> Result<()> {
    let start = Instant::now();
    cmd::run(cmd).with_context(|| format!("[bootstrap] {what}: install failed. {advice}"))?;
    if !cmd::dry_run() {
        step(what, &format!("installed in {:.0} s", start.elapsed().as_secs_f64()));
    }
    Ok(())
}

fn nightly() -> Result<()> {
    let what = "Rust toolchain `nightly`";
    let list = cmd::output(Command::new("rustup").args(["toolchain", "list"])).context(
        "rustup is needed (the project builds its eBPF code with a nightly toolchain): \
         install it from your distribution or rustup.rs, then re-run",
    )?;
    // Lines look like `nightly-x86_64-unknown-linux-gnu (default)`; dated nightlies
    // (`nightly-2026-05-19-...`) are other toolchains.
    let present = list.lines().any(|l| {
        l.strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    if present {
        step(what, "already installed");
        return Ok(());
    }
    step(what, "installing");
    install(
        what,
        Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]),
        "Check that the Rust distribution server is reachable, then re-run `cargo xtask bootstrap`.",
    )
}

fn rust_src() -> Result<()> {
    let what = "rust-src for nightly";
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        step(what, "already installed");
        return Ok(());
    }
    step(what, "installing");
    install(
        what,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]),
        "It is needed for `-Z build-std=core` (eBPF has no prebuilt std). Check that the Rust \
         distribution server is reachable, then re-run `cargo xtask bootstrap`.",
    )
}

/// The LLVM major version of `rustc +nightly`, from `LLVM version: 22.1.4`.
fn nightly_llvm_major() -> Result<u32> {
    let info = cmd::output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .context("`rustc +nightly -vV` printed no `LLVM version:` line")?;
    let major = version.trim().split('.').next().unwrap_or_default();
    major
        .parse()
        .with_context(|| format!("cannot read the LLVM major version from `{}`", version.trim()))
}

/// rustc's own libLLVM in `lib` (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`). The sysroot may
/// also hold a small linker script named `libLLVM-22-...so`: the real library is the largest.
fn find_libllvm(lib: &Path) -> Result<String> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    let mut best: Option<(u64, String)> = None;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("libLLVM") && name.contains(".so")) {
            continue;
        }
        let size = entry.metadata()?.len();
        if best.as_ref().is_none_or(|(s, _)| size > *s) {
            best = Some((size, name));
        }
    }
    best.map(|(_, name)| name).with_context(|| {
        format!(
            "no libLLVM*.so* in {}: this nightly does not ship its LLVM as a shared library, \
             so bpf-linker cannot be linked against it",
            lib.display()
        )
    })
}

fn cargo_bin_dir() -> PathBuf {
    let root = std::env::var_os("CARGO_INSTALL_ROOT")
        .or_else(|| std::env::var_os("CARGO_HOME"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    root.join("bin")
}

fn bpf_linker() -> Result<()> {
    let what = format!("bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})");
    let major = nightly_llvm_major()?;
    if major != LLVM_MAJOR {
        bail!(
            "[bootstrap] {what}: the `nightly` toolchain uses LLVM {major}, but this project \
             builds bpf-linker for LLVM {LLVM_MAJOR} (feature llvm-{LLVM_MAJOR}), and the two \
             must match. Either install a nightly with LLVM {LLVM_MAJOR} as `nightly` (e.g. \
             `rustup toolchain install nightly-2026-05-19` and link it with `rustup toolchain \
             link`), or change LLVM_MAJOR in xtask/src/bootstrap.rs to a version bpf-linker \
             {BPF_LINKER_VERSION} has a feature for (llvm-21, llvm-22, llvm-23) and test it."
        );
    }
    let reports = |out: &str| out.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION);
    if cmd::probe(Command::new("bpf-linker").arg("--version")).is_some_and(|out| reports(&out)) {
        step(&what, "already installed");
        return Ok(());
    }
    step(&what, "installing (about 80 s on 2 cores)");
    let sysroot =
        cmd::output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let lib = Path::new(&sysroot).join("lib");
    let libllvm = find_libllvm(&lib)?;
    let lib = lib.display();
    let mut install_cmd = Command::new("cargo");
    install_cmd
        .args([&format!("+{NIGHTLY}"), "install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        // --force: a same-version bpf-linker that no longer starts (its libLLVM went away with
        // an old nightly) must be rebuilt, not reported as "already installed".
        .args(["--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{LLVM_MAJOR},no-llvm-linking"))
        .env("RUSTFLAGS", format!("-L {lib} -C link-arg=-l:{libllvm} -C link-arg=-Wl,-rpath,{lib}"))
        // Would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    install(
        &what,
        &mut install_cmd,
        "It needs gcc and network access to crates.io; the nightly's libLLVM is linked \
         dynamically, so no Debian LLVM is needed.",
    )?;
    if cmd::dry_run() {
        return Ok(());
    }
    let on_path = cmd::probe(Command::new("bpf-linker").arg("--version"));
    if !on_path.as_deref().is_some_and(reports) {
        bail!(
            "[bootstrap] {what}: installed into {}, but `bpf-linker --version` run from PATH \
             reports {:?}: put {} first on PATH and re-run",
            cargo_bin_dir().display(),
            on_path.unwrap_or_else(|| "nothing (not found or does not start)".into()),
            cargo_bin_dir().display(),
        );
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status == "install ok installed")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn debian_packages(label: &str, packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    let what = format!("{label} ({})", packages.join(" "));
    if missing.is_empty() {
        step(&what, "already installed");
        return Ok(());
    }
    step(&what, &format!("installing {}", missing.join(" ")));
    if !is_root() && !cmd::dry_run() {
        bail!(
            "[bootstrap] {what}: {} missing, and installing needs root: run \
             `sudo apt-get install {}` or re-run as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    let advice = "Check that Debian's package mirror is reachable and that no other apt/dpkg \
                  process holds its lock, then re-run `cargo xtask bootstrap`.";
    if missing.contains(&"tshark") {
        // Answer tshark's one question (may non-root users capture?) before it is asked.
        preseed("wireshark-common wireshark-common/install-setuid boolean false\n")
            .with_context(|| format!("[bootstrap] {what}: install failed. {advice}"))?;
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            // Wait for, rather than fail on, an apt run that a fresh machine starts at boot.
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .stdin(Stdio::null());
        c
    };
    cmd::run(&mut apt(&["update", "-q"]))
        .with_context(|| format!("[bootstrap] {what}: install failed. {advice}"))?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    install(&what, &mut apt(&args), advice)
}

fn preseed(selections: &str) -> Result<()> {
    let mut c = Command::new("debconf-set-selections");
    let line = cmd::line(&c);
    if cmd::dry_run() {
        println!("[dry-run] echo {:?} | {line}", selections.trim());
        return Ok(());
    }
    let mut child =
        c.stdin(Stdio::piped()).spawn().with_context(|| format!("could not start `{line}`"))?;
    child.stdin.take().context("stdin")?.write_all(selections.as_bytes())?;
    cmd::check(child.wait()?, &line)
}

/// Whether /sys/fs/bpf is a bpf mount (the last mount on that point is what is seen there).
fn bpffs_mounted() -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let fstype = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (_, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (point == "/sys/fs/bpf").then_some(fstype)
        })
        .next_back();
    Ok(fstype == Some("bpf"))
}

fn bpffs() -> Result<()> {
    let what = "bpffs on /sys/fs/bpf";
    if bpffs_mounted()? {
        step(what, "already mounted");
        return Ok(());
    }
    step(what, "mounting");
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"])).with_context(|| {
        format!(
            "[bootstrap] {what}: mount failed. It needs root (CAP_SYS_ADMIN) and a kernel with \
             CONFIG_BPF_SYSCALL; in a container, run it privileged or mount bpffs from the host."
        )
    })
}
