//! The workspace's own binaries, for tests that run them as an operator would. They belong to
//! other packages, so `CARGO_BIN_EXE_*` is not available: the first test to need one builds it
//! with the cargo running the tests, into the same target directory and profile (a no-op when
//! it is up to date), and runs it from there.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").into()
}

/// `target/<profile>/<bin>` of `package`, built if needed (once per test process).
pub fn built(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(bin) {
        return path.clone();
    }
    // A test runs as target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace())
        .status()
        .unwrap_or_else(|e| panic!("running cargo build for {bin}: {e}"));
    assert!(status.success(), "cargo build of {bin} failed");
    let path = profile_dir.join(bin);
    built.insert(bin.to_string(), path.clone());
    path
}

/// The catsd binary of this build.
pub fn catsd() -> PathBuf {
    built("cats-controller", "catsd")
}

/// The catsctl binary of this build.
pub fn catsctl() -> PathBuf {
    built("cats-controller", "catsctl")
}

/// One of these binaries running as a child process, its stderr in a log file; killed
/// (SIGKILL, like a crash) when dropped, also on the way out of an error or a panic.
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Starts `bin` with `args`, logging at `rust_log` into `log`.
    pub fn start(
        bin: &Path,
        args: &[String],
        rust_log: &str,
        log: PathBuf,
    ) -> std::io::Result<Self> {
        let out = File::create(&log)?;
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()?;
        Ok(Running { child, log })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
