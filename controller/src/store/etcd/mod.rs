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

/// Keeps `lease` alive until it cannot: returns once the lease expired, or no keep-alive got
/// through for a whole [`agent::LEASE_TTL`] (the store must then be taken to have let it
/// go). Short outages (a reconnect, an etcd restart) are ridden out.
pub async fn keep_lease_alive(mut client: Client, lease: i64) {
    let ttl = agent::LEASE_TTL;
    let mut last_ack = tokio::time::Instant::now();
    loop {
        let left = ttl.saturating_sub(last_ack.elapsed());
        if left.is_zero() {
            tracing::warn!(lease, "no keep-alive got through for the lease's whole TTL");
            return;
        }
        match tokio::time::timeout(left, renew(&mut client, lease, &mut last_ack)).await {
            Ok(Ok(())) => {
                tracing::warn!(lease, "lease expired");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(lease, error = %e, "keep-alive failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    }
}

/// Renews `lease` every third of its TTL; returns Ok once etcd says it expired.
async fn renew(client: &mut Client, lease: i64, last_ack: &mut tokio::time::Instant) -> Result<()> {
    let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(agent::LEASE_TTL / 3);
    loop {
        tick.tick().await;
        keeper.keep_alive().await?;
        match acks.message().await? {
            Some(ack) if ack.ttl() > 0 => *last_ack = tokio::time::Instant::now(),
            Some(_) => return Ok(()),
            None => anyhow::bail!("keep-alive stream ended"),
        }
    }
}
