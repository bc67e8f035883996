//! The etcd store's guarantees, against a real etcd 3.4 (TLS, client certificates, auth on):
//!
//! - a follower cut off from etcd resumes from the last revision it saw (it gets every change
//!   it missed, in order), and reads everything again when compaction removed that revision;
//! - a controller that lost the lead cannot write any more: its successor's states stand.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cats_controller::{
    state::NodeState,
    store::etcd::{
        agent::Desired,
        controller::{campaign, current_leader},
        follow::{Change, follow},
    },
};
use cats_tests::{etcd::EtcdServer, tcp_cut::TcpCut};

/// Waits until `changes` satisfies `pred`; fails showing them.
async fn wait_until(changes: &Mutex<Vec<Change>>, what: &str, pred: impl Fn(&[Change]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if pred(&changes.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: changes seen {:?}", changes.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn put(value: &str) -> Change {
    Change::Put("/cats/v1/desired/gw".into(), value.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_resumes_from_its_revision_and_rereads_after_compaction() {
    let etcd = EtcdServer::new(&["gw"]).await.unwrap();
    let keys = etcd.keys().clone();
    let key = keys.desired("gw");
    let relay =
        TcpCut::start(etcd.endpoint().trim_start_matches("https://").parse().unwrap()).unwrap();
    let mut config = etcd.config("node-gw");
    config.endpoints = vec![format!("https://{}", relay.addr())];
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    {
        let (changes, key) = (changes.clone(), key.clone());
        tokio::spawn(async move {
            follow(&config, &key, false, move |c| changes.lock().unwrap().push(c), |_| {}).await
        });
    }
    let mut controller = etcd.config("controller").connect().await.unwrap();
    wait_until(&changes, "the first read", |c| c == [Change::Reset(vec![])]).await;
    controller.put(key.as_str(), "v1", None).await.unwrap();
    wait_until(&changes, "v1", |c| c.last() == Some(&put("v1"))).await;

    // Cut off while two states are written: both arrive, in order, once back.
    relay.cut();
    controller.put(key.as_str(), "v2", None).await.unwrap();
    controller.put(key.as_str(), "v3", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.restore();
    wait_until(&changes, "v2 and v3 after the cut", |c| c.ends_with(&[put("v2"), put("v3")])).await;
    let seen = changes.lock().unwrap().len();

    // Cut off while the history it would resume from is compacted away: it reads again and
    // gets the newest state only.
    relay.cut();
    controller.put(key.as_str(), "v4", None).await.unwrap();
    let at = controller.put(key.as_str(), "v5", None).await.unwrap();
    let revision = at.header().unwrap().revision();
    controller.compact(revision, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.restore();
    let v5 = Change::Reset(vec![(key.clone(), b"v5".to_vec())]);
    wait_until(&changes, "a fresh read after compaction", |c| c.last() == Some(&v5)).await;
    let after: Vec<Change> = changes.lock().unwrap()[seen..].to_vec();
    assert!(!after.contains(&put("v4")), "v4 was compacted away, yet delivered: {after:?}");
}

fn desired(node: &str, generation: u64) -> Desired {
    Desired {
        state: NodeState { node: node.into(), generation, ..Default::default() },
        probes: Vec::new(),
        instances: vec![format!("written by generation {generation}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_lost_the_lead_cannot_write() {
    let etcd = EtcdServer::new(&["gw"]).await.unwrap();
    let config = etcd.config("controller");
    let mut first = campaign(&config, "ctl-a").await.unwrap();
    assert_eq!(current_leader(&config).await.unwrap().as_deref(), Some("ctl-a"));
    first.publish([("gw".to_string(), desired("gw", 1))].into()).await.unwrap();

    // A standby waits for the lead while ctl-a has it.
    let standby = {
        let config = config.clone();
        tokio::spawn(async move { campaign(&config, "ctl-b").await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!standby.is_finished(), "ctl-b was elected while ctl-a leads");

    // ctl-a's lease is gone (as when it was cut off for longer than its TTL): ctl-b leads.
    let mut root = etcd.config("root").connect().await.unwrap();
    let leases = root.leases().await.unwrap();
    let leader = root.election_client().leader(config.keys.election()).await.unwrap();
    let lease = leader.kv().unwrap().lease();
    assert!(leases.leases().iter().any(|l| l.id() == lease));
    root.lease_revoke(lease).await.unwrap();
    let mut second = tokio::time::timeout(Duration::from_secs(10), standby)
        .await
        .expect("ctl-b elected")
        .unwrap()
        .unwrap();
    assert_eq!(current_leader(&config).await.unwrap().as_deref(), Some("ctl-b"));
    assert_eq!(second.last_generation(), 1, "the new leader counts on from the store");
    second.publish([("gw".to_string(), desired("gw", 2))].into()).await.unwrap();

    // ctl-a does not know yet; its next write is refused, and says why.
    let refused = first.publish([("gw".to_string(), desired("gw", 3))].into()).await;
    let error = format!("{:#}", refused.unwrap_err());
    assert!(error.contains("no longer the leader"), "{error}");
    assert!(first.is_lost());
    let mut client = config.connect().await.unwrap();
    let got = client.get(config.keys.desired("gw"), None).await.unwrap();
    let stored: Desired = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    assert_eq!(stored, desired("gw", 2), "the deposed leader's write must not land");
}
