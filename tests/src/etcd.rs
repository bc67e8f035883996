//! A real etcd for one test: `/usr/bin/etcd` on 127.0.0.1 with TLS and `--client-cert-auth`,
//! certificates minted by `catsd certs`' library, users and roles set up by `catsd etcd-init`'s
//! ([`cats_controller::store::auth::setup`]), auth on. Everything lives in one fresh
//! directory (certificates, data, `etcd.log`); Drop kills etcd and removes the directory,
//! also when the test panics.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cats_controller::{
    certs::{self, CertDir, Client},
    store::{
        auth,
        etcd::{EtcdConfig, TlsFiles},
        keys::Keys,
    },
};
use cats_lab::netns::unique_name;

pub const ETCD: &str = "/usr/bin/etcd";

/// How long etcd may take to answer after it starts (a loaded machine elects slowly).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries with fresh ports when etcd cannot bind the ones picked.
const BIND_TRIES: usize = 5;

pub struct EtcdServer {
    name: String,
    dir: PathBuf,
    certs: CertDir,
    keys: Keys,
    nodes: Vec<String>,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

impl EtcdServer {
    /// Mints certificates (root, the controllers, and `nodes`), starts etcd on free ports and
    /// sets up its users and roles for `nodes` under the default prefix, with auth on.
    pub async fn new(nodes: &[&str]) -> Result<Self> {
        let name = unique_name("etcd");
        let dir = std::env::temp_dir().join(format!("cats-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let unbound: SocketAddr = "127.0.0.1:0".parse()?;
        // From here on Drop cleans up.
        let mut server = EtcdServer {
            certs: CertDir::new(dir.join("certs")),
            name,
            dir,
            keys: Keys::default(),
            nodes,
            client: unbound,
            peer: unbound,
            child: None,
        };
        certs::mint(server.certs.dir(), &server.nodes, &[])?;
        server.start_on_free_ports().await?;
        server.init().await?;
        Ok(server)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.client)
    }

    /// The client address (for a relay in front of it, e.g. [`crate::tcp_cut::TcpCut`]).
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn certs(&self) -> &CertDir {
        &self.certs
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Connecting as the owner of certificate `cert_name` (`root`, `controller`, `node-<N>`:
    /// the stem of its file).
    pub fn config(&self, cert_name: &str) -> EtcdConfig {
        let cert = self.certs.dir().join(format!("{cert_name}.pem"));
        let key = self.certs.dir().join(format!("{cert_name}-key.pem"));
        self.config_with(TlsFiles { ca: self.certs.ca(), cert, key })
    }

    /// `catsd`'s `--etcd`, `--etcd-ca`, `--etcd-cert`, `--etcd-key` for the owner of
    /// certificate `cert_name`, reaching etcd at `endpoint` (its own, or a relay's).
    pub fn cli_args(&self, endpoint: &str, cert_name: &str) -> Vec<String> {
        let dir = self.certs.dir();
        vec![
            "--etcd".into(),
            endpoint.into(),
            "--etcd-ca".into(),
            self.certs.ca().display().to_string(),
            "--etcd-cert".into(),
            dir.join(format!("{cert_name}.pem")).display().to_string(),
            "--etcd-key".into(),
            dir.join(format!("{cert_name}-key.pem")).display().to_string(),
        ]
    }

    /// Connecting as `client`.
    pub fn config_of(&self, client: &Client) -> EtcdConfig {
        self.config_with(self.certs.tls(client))
    }

    /// Connecting with any files (another CA's, none of a client's...).
    pub fn config_with(&self, tls: TlsFiles) -> EtcdConfig {
        EtcdConfig { endpoints: vec![self.endpoint()], tls: Some(tls), keys: self.keys.clone() }
    }

    /// Runs the access setup (`catsd etcd-init`) again, as root, for `nodes`; its changes.
    pub async fn init_nodes(&self, nodes: &[String]) -> Result<Vec<String>> {
        let client = self.config_of(&Client::Root).connect().await?;
        auth::setup(&client, &self.keys, nodes).await
    }

    async fn init(&self) -> Result<()> {
        self.init_nodes(&self.nodes).await.map(drop).context("setting up etcd users and roles")
    }

    async fn start_on_free_ports(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..BIND_TRIES {
            (self.client, self.peer) = free_ports()?;
            // A failed try may have begun a member with the old ports.
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
            match self.start().await {
                Ok(()) => return Ok(()),
                Err(e) if self.bind_failed() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("tried")).context("no free ports for etcd")
    }

    fn bind_failed(&self) -> bool {
        std::fs::read_to_string(self.log()).is_ok_and(|l| l.contains("address already in use"))
    }

    /// Starts etcd (again, after [`EtcdServer::stop`] or [`EtcdServer::kill`]: same data,
    /// same ports) and waits until it answers.
    pub async fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("etcd {} is running", self.name);
        }
        let log = File::options().create(true).append(true).open(self.log())?;
        let client_url = format!("https://{}", self.client);
        let peer_url = format!("http://{}", self.peer);
        let child = Command::new(ETCD)
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{}={peer_url}", self.name)])
            .args(["--initial-cluster-token", &self.name, "--initial-cluster-state", "new"])
            .arg("--cert-file")
            .arg(self.certs.server())
            .arg("--key-file")
            .arg(self.certs.server_key())
            .arg("--trusted-ca-file")
            .arg(self.certs.ca())
            .arg("--client-cert-auth")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {ETCD}"))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let config = self.config_of(&Client::Root);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("started").try_wait()? {
                self.child = None;
                bail!("etcd exited ({status}) before it answered:\n{}", self.log_tail());
            }
            let answer = async {
                let client = config.connect().await?;
                client.kv_client().get("health", None).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(3), answer).await {
                Ok(Ok(())) => return Ok(()),
                _ if Instant::now() > deadline => {
                    self.kill();
                    bail!("etcd did not answer in {READY_TIMEOUT:?}:\n{}", self.log_tail());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops etcd as an operator would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { bail!("etcd {} is not running", self.name) };
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: our own child, not reaped yet (so the pid is still its own).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                bail!("etcd did not stop on SIGTERM in 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills etcd (SIGKILL): a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The end of etcd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two different ports free now on 127.0.0.1 (etcd may still lose one to someone else
/// before it binds it: see BIND_TRIES).
fn free_ports() -> Result<(SocketAddr, SocketAddr)> {
    let (a, b) = (TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?);
    Ok((a.local_addr()?, b.local_addr()?))
}
