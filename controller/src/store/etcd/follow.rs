//! Following a key (or every key under a prefix) through disconnects: a watch that resumes
//! from the last revision it saw, and reads everything again only when that revision was
//! compacted away (or on the first connect).

use std::time::Duration;

use anyhow::{Result, bail};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tracing::{debug, warn};

use super::EtcdConfig;

/// What changed under the followed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Everything there is now (after the first read, or after a compaction): whatever was
    /// known before and is not in here is gone.
    Reset(Vec<(String, Vec<u8>)>),
    Put(String, Vec<u8>),
    Delete(String),
}

/// Waits between reconnects: short, since a node cut off converges as soon as it is back.
const RECONNECT: Duration = Duration::from_millis(500);

/// Feeds `sink` every change of `key` (with `prefix`, of every key under it) for ever,
/// reconnecting after errors. `on_connection` hears each connection's fate (true: following,
/// false: lost), for a status that says whether the store is reachable.
pub async fn follow(
    config: &EtcdConfig,
    key: &str,
    prefix: bool,
    mut sink: impl FnMut(Change),
    mut on_connection: impl FnMut(bool),
) {
    let mut revision: Option<i64> = None;
    loop {
        let result = async {
            let mut client = config.connect().await?;
            session(&mut client, key, prefix, &mut revision, &mut sink, &mut on_connection).await
        }
        .await;
        on_connection(false);
        if let Err(e) = result {
            warn!(key, error = %format!("{e:#}"), "following etcd: reconnecting");
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn session(
    client: &mut Client,
    key: &str,
    prefix: bool,
    revision: &mut Option<i64>,
    sink: &mut impl FnMut(Change),
    on_connection: &mut impl FnMut(bool),
) -> Result<()> {
    let start = match *revision {
        Some(seen) => seen + 1,
        None => {
            let options = prefix.then(|| GetOptions::new().with_prefix());
            let got = client.get(key, options).await?;
            let at = got.header().map_or(0, |h| h.revision());
            let mut all = Vec::new();
            for kv in got.kvs() {
                all.push((kv.key_str()?.to_string(), kv.value().to_vec()));
            }
            sink(Change::Reset(all));
            *revision = Some(at);
            at + 1
        }
    };
    let mut options = WatchOptions::new().with_start_revision(start).with_progress_notify();
    if prefix {
        options = options.with_prefix();
    }
    let mut stream = client.watch(key, Some(options)).await?;
    on_connection(true);
    while let Some(response) = stream.message().await? {
        if response.compact_revision() > 0 {
            // What happened between our revision and the compaction is gone: read again.
            debug!(key, compacted = response.compact_revision(), "watch start compacted");
            *revision = None;
            bail!("revision {start} was compacted (now {})", response.compact_revision());
        }
        if response.canceled() {
            bail!("watch canceled: {}", response.cancel_reason());
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let name = kv.key_str()?.to_string();
            match event.event_type() {
                EventType::Put => sink(Change::Put(name, kv.value().to_vec())),
                EventType::Delete => sink(Change::Delete(name)),
            }
            *revision = Some(revision.unwrap_or(0).max(kv.mod_revision()));
        }
        // Progress notifications move the revision on without events: a resume after a long
        // quiet spell then starts from a revision compaction has not removed. (Not the
        // creation's header: events from `start` on may still be on their way.)
        if response.events().is_empty()
            && !response.created()
            && let Some(h) = response.header()
        {
            *revision = Some(revision.unwrap_or(0).max(h.revision()));
        }
    }
    bail!("watch stream ended")
}
