//! A node agent's side of the etcd store: it follows its own desired state, holds a lease
//! that says it is alive, and writes its report when it moved enough to matter.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    EtcdConfig,
    follow::{Change, follow},
};
use crate::{
    measure::LinkTarget,
    state::NodeState,
    store::report::{NodeReport, worth_writing},
};

/// What the controller publishes for one node: its state, and what it measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub state: NodeState,
    /// The links this node probes.
    pub probes: Vec<LinkTarget>,
    /// The instances on this node, whose reports its agent forwards.
    pub instances: Vec<String>,
}

/// A lease lives this long without a keep-alive: an agent cut off for longer counts as dead.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Reports are written at most this often, however much they move.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Follows `node`'s desired state into `desired` for ever (a value that does not decode is
/// logged and skipped: the node keeps its last good state). `connected` tells whether the
/// watch is up.
pub async fn follow_desired(
    config: EtcdConfig,
    node: String,
    desired: watch::Sender<Option<Arc<Desired>>>,
    connected: Arc<AtomicBool>,
) {
    let key = config.keys.desired(&node);
    let take = |value: &[u8]| match serde_json::from_slice::<Desired>(value) {
        Ok(d) if d.state.node == node => Some(d),
        Ok(d) => {
            warn!(node, holds = d.state.node, "desired state names another node; ignored");
            None
        }
        Err(e) => {
            warn!(node, error = %e, "desired state does not decode; keeping the last one");
            None
        }
    };
    follow(
        &config,
        &key,
        false,
        |change| {
            let value = match change {
                Change::Reset(all) => all.into_iter().next().map(|(_, v)| v),
                Change::Put(_, v) => Some(v),
                // The node left the intent: it keeps forwarding with what it has.
                Change::Delete(_) => None,
            };
            if let Some(d) = value.as_deref().and_then(take) {
                desired.send_if_modified(|current| {
                    let new = current.as_deref() != Some(&d);
                    if new {
                        *current = Some(Arc::new(d));
                    }
                    new
                });
            }
        },
        |up| connected.store(up, Ordering::Relaxed),
    )
    .await
}

/// Keeps `node` alive in the store (a key on a lease of [`LEASE_TTL`]) and writes its
/// reports as they move, for ever, reconnecting after errors. After a reconnect the newest
/// report is written again whatever it is.
pub async fn keep_reporting(
    config: EtcdConfig,
    node: String,
    reports: watch::Receiver<NodeReport>,
) {
    loop {
        if let Err(e) = report_session(&config, &node, reports.clone()).await {
            warn!(node, error = %format!("{e:#}"), "reporting to etcd: reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn report_session(
    config: &EtcdConfig,
    node: &str,
    mut reports: watch::Receiver<NodeReport>,
) -> Result<()> {
    let mut client = config.connect().await?;
    let lease = client
        .lease_grant(LEASE_TTL.as_secs() as i64, None)
        .await
        .context("granting the liveness lease")?
        .id();
    client
        .put(config.keys.alive(node), "", Some(PutOptions::new().with_lease(lease)))
        .await
        .context("writing the liveness key")?;
    info!(node, lease, "alive in etcd");
    let mut keeper = tokio::spawn(super::keep_lease_alive(client.clone(), lease));
    let mut written: Option<NodeReport> = None;
    let mut last_write = Instant::now() - MIN_REPORT_INTERVAL;
    loop {
        tokio::select! {
            // A new session makes a new lease; the old one goes with its key.
            _ = &mut keeper => bail!("the liveness lease was lost"),
            changed = reports.changed() => {
                if changed.is_err() {
                    keeper.abort();
                    return Ok(()); // the agent stopped
                }
            }
        }
        let report = reports.borrow().clone();
        if worth_writing(written.as_ref(), &report) {
            let wait = MIN_REPORT_INTERVAL.saturating_sub(last_write.elapsed());
            tokio::time::sleep(wait).await;
            let report = reports.borrow_and_update().clone();
            if let Err(e) = write_report(&mut client, config, node, &report).await {
                keeper.abort();
                return Err(e);
            }
            last_write = Instant::now();
            written = Some(report);
        }
    }
}

async fn write_report(
    client: &mut Client,
    config: &EtcdConfig,
    node: &str,
    report: &NodeReport,
) -> Result<()> {
    let value = serde_json::to_vec(report)?;
    client.put(config.keys.report(node), value, None).await.context("writing the report")?;
    Ok(())
}
