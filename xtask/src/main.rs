//! Project tasks, run as `cargo xtask <task>` (an alias in .cargo/config.toml).
//! Every task runs from the workspace root; child commands inherit stdio, and an error names
//! the command line that failed.

mod bootstrap;
mod cmd;
mod foreground;
mod test;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use bootstrap::Scope;

/// The eBPF crate builds only for bpfel-unknown-none (nightly, build-std): controller/build.rs
/// builds it through aya-build. Built for the host it fails ("unwinding panics are not supported
/// without std"), so host builds and tests leave it out. Clippy checks it for the host, which works.
const EBPF_PACKAGE: &str = "cats-dataplane-ebpf";
const DEFAULT_LAB: &str = "examples/smart-traffic/lab.yaml";

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Project tasks for cats")]
struct Cli {
    /// Print the commands that would change something (installs, builds, runs) instead of
    /// running them; checks still run.
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine ready (idempotent): nightly toolchain, rust-src, bpf-linker, Debian
    /// packages, bpffs. Installing packages and mounting bpffs need root.
    Bootstrap,
    /// Bootstrap, then `cargo build --release` of the workspace (the eBPF programs included,
    /// through controller/build.rs).
    Build,
    /// Bootstrap, then every test in release mode. Needs root. Arguments after `--` go to
    /// `cargo test` (e.g. `-- -p cats-tests -- --nocapture`).
    Test {
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Bootstrap and build, then run a lab in the foreground until Ctrl-C (needs root).
    /// Arguments after `--` go to `cats-lab run`.
    Lab {
        /// The lab description [default: examples/smart-traffic/lab.yaml]
        file: Option<PathBuf>,
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Bootstrap and build, then run target/release/cats-bench with these arguments (as root),
    /// then the steering-quality simulation (`cats-bench --steering`, no root needed) and, as
    /// root, the metric-to-map propagation in the lab (`cats-bench --propagation`) and the
    /// steering comparison in the lab (`cats-bench --steering-lab`, a few minutes) and the
    /// failover times (`cats-bench --failover`, a few minutes) and the propagation of desired
    /// states through etcd (`cats-bench --etcd`, about 2 minutes), unless the arguments
    /// already ask for one of them.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// `cargo fmt --all --check`.
    FmtCheck,
    /// clippy with `-D warnings` on the host crates and on the eBPF crate for its BPF target (bootstraps the toolchain first:
    /// the controller's build script compiles the eBPF programs).
    Lint,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain on one line, without a backtrace (RUST_BACKTRACE is often set).
            eprintln!("xtask error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    cmd::set_dry_run(cli.dry_run);
    let invoked_from = std::env::current_dir().context("reading the current directory")?;
    let root = workspace_root();
    std::env::set_current_dir(&root)
        .with_context(|| format!("entering the workspace root {}", root.display()))?;

    match cli.task {
        Task::Bootstrap => bootstrap::run(Scope::All),
        Task::Build => build(),
        Task::Test { args } => {
            require_root("the tests create network namespaces and load XDP programs")?;
            bootstrap::run(Scope::All)?;
            test::run(&mut cargo_test(&args))
        }
        Task::Lab { file, args } => {
            require_root("the lab creates network namespaces and loads XDP programs")?;
            let file = match file {
                Some(file) => relative_to(&root, &invoked_from.join(file)),
                None => PathBuf::from(DEFAULT_LAB),
            };
            build()?;
            foreground::run(
                Command::new(release_bin(&root, "cats-lab")).arg("run").arg(file).args(args),
            )
        }
        Task::Bench { args } => {
            build()?;
            let bench = release_bin(&root, "cats-bench");
            foreground::run(Command::new(&bench).args(&args))?;
            let asked = |flag: &str| args.iter().any(|a| a == flag);
            let modes = [
                "--steering",
                "--propagation",
                "--steering-lab",
                "--failover",
                "--etcd",
                "--help",
                "-h",
            ];
            if modes.into_iter().any(asked) {
                return Ok(());
            }
            foreground::run(Command::new(&bench).arg("--steering"))?;
            // A metric change on its way into the maps, in the lab: needs root.
            if bootstrap::is_root() {
                foreground::run(Command::new(&bench).arg("--propagation"))?;
                // The steering comparison for real, a fresh lab per selector and load.
                foreground::run(Command::new(&bench).arg("--steering-lab"))?;
                // Failover time per failure kind and health setting.
                foreground::run(Command::new(&bench).arg("--failover"))?;
                // Desired states through etcd: simulated watchers and real agents in a lab.
                foreground::run(Command::new(&bench).arg("--etcd"))
            } else {
                eprintln!(
                    "xtask: not root: skipping `cats-bench --propagation`, \
                     `--steering-lab`, `--failover` and `--etcd` (they run labs)"
                );
                Ok(())
            }
        }
        Task::FmtCheck => cmd::run(&mut cargo(["fmt", "--all", "--check"])),
        Task::Lint => {
            bootstrap::run(Scope::Toolchain)?;
            cmd::run(&mut cargo([
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_PACKAGE,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The eBPF crate only builds for the BPF target (no_std, its own panic handler).
            cmd::run(&mut cargo([
                "+nightly",
                "clippy",
                "--package",
                EBPF_PACKAGE,
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]))
        }
    }
}

/// xtask's parent directory (this is compiled in, so xtask must be run from its own tree).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new("cargo");
    c.args(args);
    c
}

fn build() -> Result<()> {
    bootstrap::run(Scope::All)?;
    cmd::run(&mut cargo(["build", "--release", "--workspace", "--exclude", EBPF_PACKAGE]))
}

/// `cargo test --workspace --release` plus `extra`; with `-p`/`--package` among the extra
/// arguments, those packages only (cargo ignores `-p` next to `--workspace`).
fn cargo_test(extra: &[OsString]) -> Command {
    let cargo_args = extra.iter().take_while(|a| *a != "--");
    let picks_packages = cargo_args.map(|a| a.to_string_lossy()).any(|a| {
        a == "-p" || a == "--package" || a.starts_with("--package=") || a.starts_with("-p")
    });
    let mut c = cargo(["test", "--release"]);
    if !picks_packages {
        c.args(["--workspace", "--exclude", EBPF_PACKAGE]);
    }
    c.args(extra);
    c
}

/// A binary of the release build, relative to the workspace root where possible.
fn release_bin(root: &Path, name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    relative_to(root, &root.join(target).join("release").join(name))
}

fn relative_to(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

fn require_root(why: &str) -> Result<()> {
    if bootstrap::is_root() {
        return Ok(());
    }
    if cmd::dry_run() {
        eprintln!("xtask: not root; a real run would stop here ({why})");
        return Ok(());
    }
    bail!("this needs root: {why}. Re-run it as root.")
}
