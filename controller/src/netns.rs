//! Running code inside a network namespace.
//!
//! A network namespace belongs to a thread, not a process: sockets (netlink included) and XDP
//! attachments made by a thread after `setns` live in that namespace. So the agent for a node
//! runs on a thread of its own that entered the node's namespace first.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    thread::JoinHandle,
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (no such namespace, or no permission).
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// `setns(2)` refused to move the thread.
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: std::io::Error },
    /// The thread could not be started.
    #[error("cannot start a thread for network namespace {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
}

/// Where `ip netns add NAME` puts the namespace file.
pub fn path_of(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Moves the calling thread into the network namespace at `path` for the rest of its life.
pub fn enter(path: &Path) -> Result<(), NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open { path: path.into(), source })?;
    // SAFETY: setns takes a valid fd we own and a namespace type constant; it touches no memory.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Enter {
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside the network namespace at `path`.
pub fn spawn_in<T, F>(path: &Path, f: F) -> Result<JoinHandle<anyhow::Result<T>>, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name(format!("netns:{}", path.file_name().unwrap_or_default().to_string_lossy()))
        .spawn(move || {
            enter(&owned)?;
            f()
        })
        .map_err(|source| NetnsError::Spawn { path: path.into(), source })
}

/// Runs `f` inside the namespace at `path` and waits for its result.
pub fn run_in<T, F>(path: &Path, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    spawn_in(path, f)?
        .join()
        .map_err(|_| anyhow::anyhow!("thread in network namespace {} panicked", path.display()))?
}
