//! etcd's access control for cats, against a real etcd 3.4 (TLS, `--client-cert-auth`, auth
//! on): each node's certificate reaches exactly its own keys, the controllers' the whole
//! prefix, and a client without a certificate of our CA does not get past TLS.

use std::time::Duration;

use cats_controller::{
    certs::{self, CertDir, Client},
    store::{auth::is_permission_denied, etcd::TlsFiles},
};
use cats_tests::{binaries, etcd::EtcdServer, tcp_cut::TcpCut};
use etcd_client::{
    Certificate, ConnectOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions, TlsOptions,
};

/// Fails unless `result` is etcd's "permission denied".
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>, what: &str) {
    match result {
        Err(e) if is_permission_denied(&e) => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

/// Runs catsd with `args`; (exit code, stdout, stderr).
fn catsd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = std::process::Command::new(binaries::catsd())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running catsd");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("catsd writes UTF-8");
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

async fn connect(etcd: &EtcdServer, cert: &str) -> etcd_client::Client {
    etcd.config(cert).connect().await.unwrap()
}

async fn value(client: &etcd_client::Client, key: &str) -> Option<Vec<u8>> {
    let got = client.kv_client().get(key, None).await.unwrap();
    got.kvs().first().map(|kv| kv.value().to_vec())
}

#[tokio::test]
async fn a_node_reads_only_its_own_desired_state() {
    let etcd = EtcdServer::new(&["gw", "edge1"]).await.unwrap();
    let keys = etcd.keys().clone();
    let controller = connect(&etcd, "controller").await;
    let mut kv = controller.kv_client();
    kv.put(keys.desired("gw"), "gw state", None).await.unwrap();
    kv.put(keys.desired("edge1"), "edge1 state", None).await.unwrap();

    let gw = connect(&etcd, "node-gw").await;
    assert_eq!(value(&gw, &keys.desired("gw")).await.as_deref(), Some(&b"gw state"[..]));
    let mut kv = gw.kv_client();
    assert_denied(kv.get(keys.desired("edge1"), None).await, "reading another node's state");
    assert_denied(
        kv.get(keys.desired_prefix(), Some(GetOptions::new().with_prefix())).await,
        "reading every node's state",
    );
    assert_denied(kv.get(keys.report("edge1"), None).await, "reading another node's report");

    // A watch of its own key sees the controller's writes; one of another node's key is
    // cancelled by etcd with "permission denied".
    let mut watch = gw.watch_client();
    let mut own = watch.watch(keys.desired("gw"), None).await.unwrap();
    let created = own.message().await.unwrap().unwrap();
    assert!(created.created() && !created.canceled(), "{created:?}");
    controller.kv_client().put(keys.desired("gw"), "gw state 2", None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), own.message()).await.unwrap();
    let event = event.unwrap().unwrap();
    assert_eq!(event.events()[0].kv().unwrap().value(), b"gw state 2");

    let mut other = watch.watch(keys.desired("edge1"), None).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), other.message()).await.unwrap();
    let refused = refused.unwrap().unwrap();
    assert!(refused.canceled(), "{refused:?}");
    assert!(refused.cancel_reason().contains("permission denied"), "{refused:?}");
}

#[tokio::test]
async fn a_node_writes_only_its_own_report_and_alive_keys() {
    let etcd = EtcdServer::new(&["gw", "edge1"]).await.unwrap();
    let keys = etcd.keys().clone();
    let gw = connect(&etcd, "node-gw").await;
    let mut kv = gw.kv_client();

    kv.put(keys.report("gw"), "applied", None).await.unwrap();
    assert_eq!(value(&gw, &keys.report("gw")).await.as_deref(), Some(&b"applied"[..]));
    let lease = gw.lease_client().grant(10, None).await.unwrap().id();
    kv.put(keys.alive("gw"), "up", Some(PutOptions::new().with_lease(lease))).await.unwrap();

    assert_denied(kv.put(keys.report("edge1"), "forged", None).await, "another node's report");
    assert_denied(kv.put(keys.alive("edge1"), "forged", None).await, "another node's alive");
    assert_denied(kv.put(keys.desired("gw"), "forged", None).await, "its own desired state");
    assert_denied(kv.put(keys.desired("edge1"), "x", None).await, "another node's desired");
    assert_denied(kv.delete(keys.desired("gw"), None).await, "deleting its desired state");
    assert_denied(kv.put(keys.election(), "me", None).await, "the election");
    assert_denied(kv.put("/elsewhere", "x", None).await, "a key outside the prefix");

    // Its own lease ends its alive key.
    gw.lease_client().revoke(lease).await.unwrap();
    let controller = connect(&etcd, "controller").await;
    assert_eq!(value(&controller, &keys.alive("gw")).await, None);
    assert_eq!(value(&controller, &keys.report("gw")).await.as_deref(), Some(&b"applied"[..]));
}

/// What etcd 3.4.23 checks on leases, which the store must not count on for more: a node
/// cannot attach a key to, or revoke, a lease that holds keys it may not write; but any
/// authenticated user can list every lease, see the keys of any lease (fixed upstream in
/// 3.4.26, CVE-2023-32082) and keep any lease alive. So a node could keep another node's
/// alive key alive, once that lease's holder is gone: alive keys tell that some holder of
/// the lease is alive, not which one.
#[tokio::test]
async fn lease_rules_of_etcd_3_4() {
    let etcd = EtcdServer::new(&["gw", "edge1"]).await.unwrap();
    let keys = etcd.keys().clone();
    let gw = connect(&etcd, "node-gw").await;
    let edge1 = connect(&etcd, "node-edge1").await;
    let lease = gw.lease_client().grant(30, None).await.unwrap().id();
    gw.kv_client()
        .put(keys.alive("gw"), "up", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();

    let mut their = edge1.lease_client();
    let with_lease = Some(PutOptions::new().with_lease(lease));
    assert_denied(
        edge1.kv_client().put(keys.alive("edge1"), "up", with_lease).await,
        "attaching its key to another node's lease",
    );
    assert_denied(their.revoke(lease).await, "revoking another node's lease");

    // Not checked by etcd 3.4.23.
    let listed = their.leases().await.unwrap();
    assert!(listed.leases().iter().any(|l| l.id() == lease), "{listed:?}");
    let ttl = their.time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys())).await;
    assert_eq!(ttl.unwrap().keys(), [keys.alive("gw").into_bytes()]);
    let (mut keeper, mut answers) = their.keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!(answer.id(), lease);
    assert!(answer.ttl() > 0, "{answer:?}");
}

#[tokio::test]
async fn the_controller_reads_and_writes_the_whole_prefix() {
    let etcd = EtcdServer::new(&["gw"]).await.unwrap();
    let keys = etcd.keys().clone();
    let controller = connect(&etcd, "controller").await;
    let mut kv = controller.kv_client();
    for key in [keys.desired("gw"), keys.report("gw"), keys.alive("gw"), keys.desired("new")] {
        kv.put(key.as_str(), "v", None).await.unwrap();
        assert_eq!(value(&controller, &key).await.as_deref(), Some(&b"v"[..]), "{key}");
    }
    let all = kv.get(keys.all(), Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(all.kvs().len(), 4);
    kv.delete(keys.desired("new"), None).await.unwrap();

    // Elections under the prefix, with a lease of its own (etcd's election service).
    let lease = controller.lease_client().grant(10, None).await.unwrap().id();
    let won = controller.election_client().campaign(keys.election(), "me", lease).await.unwrap();
    let leader = won.leader().expect("a leader key");
    assert!(leader.key().starts_with(keys.election().as_bytes()), "{leader:?}");

    assert_denied(kv.put("/elsewhere", "x", None).await, "a key outside the prefix");
    assert_denied(kv.get("/cats/v10", None).await, "the first key past the prefix");
    let gw = connect(&etcd, "node-gw").await;
    assert_denied(
        gw.election_client().campaign(keys.election(), "me", 0).await,
        "a node campaigning",
    );
}

/// The text of `e` and its sources, if it is a failure of the connection (tonic's transport
/// error, maybe wrapped in a gRPC status of the client's own making, which has it as its
/// source), never an answer of etcd such as "permission denied".
fn tls_failure(e: &etcd_client::Error) -> Option<String> {
    let transport = match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s).is_some(),
        _ => false,
    };
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    transport.then_some(text)
}

/// Connects with `tls` and makes a first request, which must fail in the TLS handshake with
/// an error that says one of `why`.
async fn refused(etcd: &EtcdServer, tls: TlsOptions, why: &[&str]) {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3))
        .with_tls(tls);
    let answer = async {
        let client = etcd_client::Client::connect([etcd.endpoint()], Some(options)).await?;
        client.kv_client().get("/cats/v1/desired/gw", None).await
    };
    let err = answer.await.expect_err("refused");
    let text = tls_failure(&err).unwrap_or_else(|| panic!("not a TLS failure: {err:?}"));
    assert!(why.iter().any(|w| text.contains(w)), "expected one of {why:?}: {text}");
}

/// How a client sees etcd (Go, TLS 1.3) refuse its certificate. In TLS 1.3 the client's
/// handshake is over before the server checks its certificate, so the client may already be
/// sending its first request when the alert and the close come: it reads the alert, or finds
/// the connection closed or broken.
const REFUSED_BY_ETCD: &[&str] = &[
    "BadCertificate",
    "CertificateRequired",
    "connection closed",
    "broken pipe",
    "connection reset",
];

#[tokio::test]
async fn clients_without_a_certificate_of_our_ca_are_refused() {
    let etcd = EtcdServer::new(&["gw"]).await.unwrap();
    let ca = Certificate::from_pem(std::fs::read(etcd.certs().ca()).unwrap());

    // No client certificate.
    refused(&etcd, TlsOptions::new().ca_certificate(ca.clone()), REFUSED_BY_ETCD).await;

    // root's certificate, from another CA.
    let other = CertDir::new(etcd.dir().join("other-ca"));
    certs::mint(other.dir(), &["gw".to_string()], &[]).unwrap();
    for client in [Client::Root, Client::Node("gw".into())] {
        let files = other.tls(&client);
        let identity = etcd_client::Identity::from_pem(
            std::fs::read(&files.cert).unwrap(),
            std::fs::read(&files.key).unwrap(),
        );
        let tls = TlsOptions::new().ca_certificate(ca.clone()).identity(identity);
        refused(&etcd, tls, REFUSED_BY_ETCD).await;
    }

    // And the client refuses a server whose certificate is not of its CA (rustls: the other CA
    // has the same name, so the signature is what fails).
    let config = etcd.config_with(TlsFiles { ca: other.ca(), ..etcd.certs().tls(&Client::Root) });
    let err = match config.connect().await {
        Ok(client) => client.kv_client().get("x", None).await.expect_err("server of another CA"),
        Err(e) => e.downcast::<etcd_client::Error>().expect("an etcd client error"),
    };
    let text = tls_failure(&err).unwrap_or_else(|| panic!("not a TLS failure: {err:?}"));
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[tokio::test]
async fn etcd_init_again_changes_nothing_and_adds_new_nodes() {
    let etcd = EtcdServer::new(&["gw"]).await.unwrap();
    let keys = etcd.keys().clone();
    assert_eq!(etcd.init_nodes(&["gw".to_string()]).await.unwrap(), Vec::<String>::new());

    // A new node: only its role and user are added.
    certs::mint(etcd.certs().dir(), &["edge1".to_string()], &[]).unwrap();
    let changes = etcd.init_nodes(&["gw".to_string(), "edge1".to_string()]).await.unwrap();
    assert_eq!(
        changes,
        [
            "added role cats-node-edge1",
            "role cats-node-edge1: granted read /cats/v1/desired/edge1",
            "role cats-node-edge1: granted readwrite /cats/v1/report/edge1",
            "role cats-node-edge1: granted readwrite /cats/v1/alive/edge1",
            "added user cats-node-edge1",
            "user cats-node-edge1: granted role cats-node-edge1",
        ]
    );
    let edge1 = connect(&etcd, "node-edge1").await;
    edge1.kv_client().put(keys.report("edge1"), "ok", None).await.unwrap();

    // A permission granted by hand is taken back.
    let root = connect(&etcd, "root").await;
    let extra = etcd_client::Permission::read(keys.desired("edge1"));
    root.auth_client().role_grant_permission("cats-node-gw", extra).await.unwrap();
    let changes = etcd.init_nodes(&["gw".to_string(), "edge1".to_string()]).await.unwrap();
    assert_eq!(changes, ["role cats-node-gw: revoked read /cats/v1/desired/edge1"]);
    let gw = connect(&etcd, "node-gw").await;
    assert_denied(gw.kv_client().get(keys.desired("edge1"), None).await, "revoked read");
}

#[tokio::test]
async fn a_restart_keeps_users_roles_and_data() {
    let mut etcd = EtcdServer::new(&["gw", "edge1"]).await.unwrap();
    let keys = etcd.keys().clone();
    connect(&etcd, "controller")
        .await
        .kv_client()
        .put(keys.desired("gw"), "s", None)
        .await
        .unwrap();

    etcd.stop().unwrap();
    etcd.start().await.unwrap();
    let gw = connect(&etcd, "node-gw").await;
    assert_eq!(value(&gw, &keys.desired("gw")).await.as_deref(), Some(&b"s"[..]));
    assert_denied(gw.kv_client().get(keys.desired("edge1"), None).await, "after a restart");
    assert_eq!(
        etcd.init_nodes(&["gw".into(), "edge1".into()]).await.unwrap(),
        Vec::<String>::new()
    );

    // A crash too.
    etcd.kill();
    etcd.start().await.unwrap();
    let gw = connect(&etcd, "node-gw").await;
    assert_eq!(value(&gw, &keys.desired("gw")).await.as_deref(), Some(&b"s"[..]));
    assert_denied(gw.kv_client().put(keys.report("edge1"), "x", None).await, "after a crash");
}

/// A relay cut between one node and etcd partitions that node alone, and its client finds
/// etcd again once the relay is restored.
#[tokio::test]
async fn a_cut_partitions_one_node_alone() {
    let etcd = EtcdServer::new(&["gw", "edge1"]).await.unwrap();
    let keys = etcd.keys().clone();
    let relay = TcpCut::start(etcd.client_addr()).unwrap();
    let mut config = etcd.config("node-gw");
    // 127.0.0.1 is in the server certificate, whatever the port.
    config.endpoints = vec![format!("https://{}", relay.addr())];
    let gw = config.connect().await.unwrap();
    let edge1 = connect(&etcd, "node-edge1").await;
    gw.kv_client().put(keys.report("gw"), "1", None).await.unwrap();

    relay.cut();
    let cut = gw.kv_client().put(keys.report("gw"), "2", None).await;
    assert!(cut.as_ref().is_err_and(|e| !is_permission_denied(e)), "{cut:?}");
    edge1.kv_client().put(keys.report("edge1"), "1", None).await.unwrap();

    relay.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = gw.kv_client().put(keys.report("gw"), "3", None).await {
        assert!(std::time::Instant::now() < deadline, "still cut off after the restore: {e:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(value(&edge1, &keys.report("edge1")).await.as_deref(), Some(&b"1"[..]));
}

/// `catsd certs` and `catsd etcd-init` as an operator runs them, adding a node to a running
/// deployment: only the new node's files, role and user are made.
#[tokio::test]
async fn catsd_certs_and_etcd_init_add_a_node() {
    let etcd = EtcdServer::new(&["gw"]).await.unwrap();
    let dir = etcd.certs().dir().display().to_string();
    let (code, out, err) = catsd(&["certs", "--dir", &dir, "--node", "gw", "--node", "edge1"]);
    assert_eq!(code, 0, "{err}");
    let made: Vec<&str> = out.lines().filter(|l| l.starts_with("made ")).collect();
    assert_eq!(
        made,
        [format!("made {dir}/node-edge1.pem"), format!("made {dir}/node-edge1-key.pem")]
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("kept ")).count(), 10, "{out}");

    let root = etcd.certs().tls(&Client::Root);
    let init = |nodes: &[&str]| {
        let mut args: Vec<std::ffi::OsString> =
            vec!["etcd-init".into(), "--etcd".into(), etcd.endpoint().into()];
        for (flag, path) in [("--ca", &root.ca), ("--cert", &root.cert), ("--key", &root.key)] {
            args.push(flag.into());
            args.push(path.into());
        }
        for n in nodes {
            args.push("--node".into());
            args.push(n.into());
        }
        catsd(&args)
    };
    let (code, out, err) = init(&["gw", "edge1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added user cats-node-edge1\n"), "{out}");
    assert!(!out.contains("cats-node-gw"), "{out}");
    assert!(out.ends_with("auth is on\n"), "{out}");
    let (code, out, err) = init(&["gw", "edge1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "users and roles were already set up\nauth is on\n");

    let edge1 = connect(&etcd, "node-edge1").await;
    edge1.kv_client().put(etcd.keys().report("edge1"), "ok", None).await.unwrap();
    assert_denied(edge1.kv_client().put(etcd.keys().report("gw"), "x", None).await, "gw's report");
}
