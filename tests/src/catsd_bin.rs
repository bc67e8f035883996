//! The `catsd` binary of this build, for tests that run it as an operator would.
//!
//! The binary belongs to another package, so `CARGO_BIN_EXE_catsd` is not available: the
//! first caller builds it with the cargo running the tests, into the same target directory
//! and profile (a no-op when it is up to date). (`tests/catsd_cli.rs` has its own copy.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// `target/<profile>/catsd`, built if needed. Call it from an integration test (it finds the
/// target directory from the test's own executable, `target/<profile>/deps/<test>-<hash>`).
pub fn catsd_path() -> &'static Path {
    static CATSD: OnceLock<PathBuf> = OnceLock::new();
    CATSD.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "cats-controller", "--bin", "catsd", "--profile"])
            .arg(profile)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(workspace)
            .status()
            .expect("running cargo build for catsd");
        assert!(status.success(), "cargo build of catsd failed");
        profile_dir.join("catsd")
    })
}

/// Runs catsd with `args`; (exit code, stdout, stderr).
pub fn catsd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(catsd_path())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running catsd");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("catsd writes UTF-8");
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}
