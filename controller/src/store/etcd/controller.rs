//! The controllers' side of the etcd store: leader election (one writer at a time, fenced),
//! publishing desired states, and a view of what the agents report.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, Compare, CompareOp, GetOptions, LeaderKey, Txn, TxnOp};
use tracing::{info, warn};

use super::{
    EtcdConfig,
    agent::{Desired, LEASE_TTL},
    follow::{Change, follow},
};
use crate::store::{keys::Keys, report::NodeReport};

/// etcd's default limit of operations in one transaction is 128.
const PUTS_PER_TXN: usize = 100;

/// This controller leads: it alone writes desired states, and every write checks that it
/// still does (its election key is still the one it won with), so a controller that lost
/// its lease while cut off cannot overwrite its successor's states.
pub struct Leadership {
    client: Client,
    config: EtcdConfig,
    leader: LeaderKey,
    lost: Arc<AtomicBool>,
    keepalive: tokio::task::JoinHandle<()>,
    /// What the store holds, by node: read when elected, then what this leader wrote.
    published: BTreeMap<String, Desired>,
}

/// Campaigns as `name` until elected (a standby waits here while another controller leads).
pub async fn campaign(config: &EtcdConfig, name: &str) -> Result<Leadership> {
    let mut client = config.connect().await?;
    let lease = client.lease_grant(LEASE_TTL.as_secs() as i64, None).await?.id();
    let lost = Arc::new(AtomicBool::new(false));
    let keepalive = tokio::spawn(keep_lease(client.clone(), lease, lost.clone()));
    let mut waiting = config.connect_to_wait().await?;
    let won = match waiting.campaign(config.keys.election(), name, lease).await {
        Ok(won) => won,
        Err(e) => {
            // Our candidacy must not outlive this campaign, or it would queue ahead of the
            // next one.
            keepalive.abort();
            let _ = client.lease_revoke(lease).await;
            return Err(e).context("campaigning for leadership");
        }
    };
    let leader = won.leader().cloned().context("campaign answered without a leader key")?;
    info!(name, lease, "elected: this controller leads");
    let mut led = Leadership {
        client,
        config: config.clone(),
        leader,
        lost,
        keepalive,
        published: BTreeMap::new(),
    };
    led.published = led.read_desired().await?;
    Ok(led)
}

/// Keeps the election lease alive; marks leadership lost once it cannot.
async fn keep_lease(client: Client, lease: i64, lost: Arc<AtomicBool>) {
    super::keep_lease_alive(client, lease).await;
    warn!(lease, "leadership lost");
    lost.store(true, Ordering::Relaxed);
}

impl Leadership {
    /// Whether this controller may have lost the lead (its lease could not be kept alive):
    /// it must stop and campaign again.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The highest generation any desired state in the store has: a new leader counts on
    /// from there.
    pub fn last_generation(&self) -> u64 {
        self.published.values().map(|d| d.state.generation).max().unwrap_or(0)
    }

    /// Generation of `node`'s desired state in the store.
    pub fn generation(&self, node: &str) -> Option<u64> {
        self.published.get(node).map(|d| d.state.generation)
    }

    async fn read_desired(&mut self) -> Result<BTreeMap<String, Desired>> {
        let prefix = self.config.keys.desired_prefix();
        let got = self.client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        let mut out = BTreeMap::new();
        for kv in got.kvs() {
            let key = kv.key_str()?;
            let Some(node) = self.config.keys.node_of(&prefix, key) else { continue };
            match serde_json::from_slice::<Desired>(kv.value()) {
                Ok(d) => {
                    out.insert(node.to_string(), d);
                }
                Err(e) => warn!(key, error = %e, "desired state in the store does not decode"),
            }
        }
        Ok(out)
    }

    /// Writes the states that differ from the store's (apart from the generation: an equal
    /// state keeps its old one and wakes no agent). Returns the nodes written.
    pub async fn publish(&mut self, states: BTreeMap<String, Desired>) -> Result<Vec<String>> {
        let changed: Vec<(String, Desired)> = states
            .into_iter()
            .filter(|(node, d)| {
                self.published.get(node).is_none_or(|old| {
                    let mut same = d.clone();
                    same.state.generation = old.state.generation;
                    *old != same
                })
            })
            .collect();
        // Still the leader: the election key it won with is still there, unchanged. Each
        // transaction checks it; they go out together, so etcd commits them in as few
        // rounds (and disk syncs) as it can instead of one after another.
        let fence = Compare::create_revision(
            self.leader.key().to_vec(),
            CompareOp::Equal,
            self.leader.rev(),
        );
        let mut txns = Vec::new();
        for batch in changed.chunks(PUTS_PER_TXN) {
            let mut puts = Vec::with_capacity(batch.len());
            for (node, d) in batch {
                puts.push(TxnOp::put(self.config.keys.desired(node), serde_json::to_vec(d)?, None));
            }
            let mut client = self.client.clone();
            let txn = Txn::new().when([fence.clone()]).and_then(puts);
            txns.push(async move { client.txn(txn).await });
        }
        let results = futures::future::join_all(txns).await;
        let mut refused = false;
        for done in results {
            refused |= !done.context("publishing desired states")?.succeeded();
        }
        if refused {
            self.lost.store(true, Ordering::Relaxed);
            bail!("no longer the leader: another controller's states stand");
        }
        let written: Vec<String> = changed.iter().map(|(n, _)| n.clone()).collect();
        self.published.extend(changed);
        Ok(written)
    }

    /// Gives the lead up (a clean stop): a standby takes over at once instead of after the
    /// lease runs out.
    pub async fn resign(mut self) {
        self.keepalive.abort();
        let lease = self.leader.lease();
        if let Err(e) = self.client.lease_revoke(lease).await {
            warn!(error = %e, "revoking the election lease; it expires by itself");
        }
    }
}

/// What the agents report, as one controller (leader or standby) sees it.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub reports: BTreeMap<String, NodeReport>,
    /// Nodes whose agent holds its liveness lease.
    pub alive: BTreeSet<String>,
}

pub type SharedView = Arc<Mutex<View>>;

/// Follows every agent's report and liveness key into a shared [`View`].
pub fn spawn_view(config: &EtcdConfig) -> SharedView {
    let view: SharedView = Arc::default();
    follow_into(config, config.keys.report_prefix(), &view, |v, keys, prefix, change| {
        apply_change(&mut v.reports, keys, prefix, change, |b| serde_json::from_slice(b).ok())
    });
    follow_into(config, config.keys.alive_prefix(), &view, |v, keys, prefix, change| {
        let mut alive: BTreeMap<String, ()> = v.alive.iter().map(|n| (n.clone(), ())).collect();
        apply_change(&mut alive, keys, prefix, change, |_| Some(()));
        v.alive = alive.into_keys().collect();
    });
    view
}

/// Follows every key under `prefix`, handing each change to `apply` with the view locked.
fn follow_into(
    config: &EtcdConfig,
    prefix: String,
    view: &SharedView,
    apply: impl Fn(&mut View, &Keys, &str, Change) + Send + Sync + 'static,
) {
    let (config, view) = (config.clone(), view.clone());
    tokio::spawn(async move {
        let sink =
            |change| apply(&mut view.lock().expect("view lock"), &config.keys, &prefix, change);
        follow(&config, &prefix, true, sink, |_| {}).await
    });
}

/// Applies one change under `prefix` to a map by node; values that do not decode are left
/// out (a report from a newer agent must not stop the controller).
fn apply_change<T>(
    map: &mut BTreeMap<String, T>,
    keys: &Keys,
    prefix: &str,
    change: Change,
    decode: impl Fn(&[u8]) -> Option<T>,
) {
    let put = |map: &mut BTreeMap<String, T>, key: &str, value: &[u8]| {
        if let (Some(node), Some(v)) = (keys.node_of(prefix, key), decode(value)) {
            map.insert(node.to_string(), v);
        }
    };
    match change {
        Change::Reset(all) => {
            map.clear();
            for (key, value) in all {
                put(map, &key, &value);
            }
        }
        Change::Put(key, value) => put(map, &key, &value),
        Change::Delete(key) => {
            if let Some(node) = keys.node_of(prefix, &key) {
                map.remove(node);
            }
        }
    }
}

/// The value of the current leader (its name), if any controller leads.
pub async fn current_leader(config: &EtcdConfig) -> Result<Option<String>> {
    let mut client = config.connect().await?;
    match client.leader(config.keys.election()).await {
        Ok(r) => Ok(r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "election: no leader" as an error.
        Err(e) if e.to_string().contains("no leader") => Ok(None),
        Err(e) => Err(e.into()),
    }
}
