//! The etcd store: the connection (TLS with client certificates) here, the agents' side in
//! [`agent`], the controllers' in [`controller`], both following keys with [`follow`].

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::keys::Keys;

pub mod agent;
pub mod controller;
pub mod follow;

/// How to reach etcd and who to be there.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `https://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Client TLS: CA that signed etcd's server certificate, and this client's own
    /// certificate and key (its CN is its etcd user). `None`: plain TCP, no authentication
    /// (for trying things out only).
    pub tls: Option<TlsFiles>,
    pub keys: Keys,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Time to connect, and to wait for one request, before etcd counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

impl EtcdConfig {
    fn options(&self) -> Result<ConnectOptions> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            // Finds a dead connection (a partition) without waiting for a request to fail.
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
                .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    /// A client of etcd (connects lazily: it fails only if no endpoint is reachable now).
    pub async fn connect(&self) -> Result<Client> {
        Client::connect(&self.endpoints, Some(self.options()?))
            .await
            .with_context(|| format!("connecting to etcd at {}", self.endpoints.join(",")))
    }
}
