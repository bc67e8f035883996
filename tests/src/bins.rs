//! The workspace's binaries for tests that run them as an operator would.
//!
//! A binary of another package has no `CARGO_BIN_EXE_*` here, so the first test to need one
//! builds it with the cargo running the tests, into the same target directory and profile (a
//! no-op when it is up to date), and runs it from there.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// `target/<profile>/<name>` of the controller package, built if needed.
pub fn controller_bin(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // Tests run as target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "cats-controller", "--bin", name, "--profile"])
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build of {name} failed");
    let path = profile_dir.join(name);
    built.insert(name.to_string(), path.clone());
    path
}
