//! TLS on both ports with real `kvnode` processes (issue 13). Each node listens on its own
//! loopback address (127.0.0.2, .3, .4) with a certificate for that address only, from a CA
//! made for the test (`support/tls.rs`), so certificates tell the members apart.
//!
//! - `kvctl_over_tls_and_clients_without_a_certificate_are_refused`: put/get through kvctl with
//!   `--cacert/--cert/--key` and with the `RAFTKV_*` variables; with `--client-ca`, kvctl and the
//!   client library without a certificate, or with one from another CA, are refused
//!   (UNAUTHENTICATED) with one line naming the cause;
//! - `forged_peer_traffic_is_refused_and_the_term_does_not_move`: the attack of issue 13 (ask a
//!   client port for the cluster id, then send the leader a heartbeat from another member's id
//!   with the term + 1000) without a certificate, with a certificate from another CA, and with a
//!   valid certificate of the wrong member: all refused, and no node reaches the forged term;
//! - `rotated_certificates_are_used_by_new_connections`: a node's files are replaced while it
//!   runs; new connections get the new certificate, the rotation is logged, the cluster works;
//! - `health_port_stays_plain_for_probes`: with TLS on the client port, `--listen-health` serves
//!   the gRPC health service in plain TCP (the kubelet's probe cannot do TLS).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use raftkv_client::{Client, Consistency, Error};
use raftkv_proto::tls::rustls::pki_types::ServerName;
use raftkv_proto::tls::{client_config, read_roots};
use raftkv_proto::v1 as pb;
use support::cluster::{Cluster, ClusterOptions, KVNODE, TlsMode};
use support::tls::{TestPki, tls_channel};
use support::wait::wait_for;

async fn tls_cluster(n: u64, client_ca: bool, extra_args: Vec<String>) -> Cluster {
    Cluster::start_with(
        n,
        ClusterOptions {
            tls: Some(TlsMode { client_ca }),
            extra_args,
            ..ClusterOptions::default()
        },
    )
    .await
}

/// Runs the kvctl binary (see `ensure_kvctl`: it belongs to the client package).
async fn kvctl(
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let bin_dir = Path::new(KVNODE).parent().expect("kvnode has a directory");
        support::docker::ensure_kvctl(bin_dir);
        let out = Command::new(bin_dir.join("kvctl"))
            .args(&args)
            .envs(env)
            .output()
            .expect("run kvctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("kvctl task")
}

#[tokio::test(flavor = "multi_thread")]
async fn kvctl_over_tls_and_clients_without_a_certificate_are_refused() {
    let cluster = tls_cluster(3, true, Vec::new()).await;
    let pki = cluster.pki().expect("a TLS cluster");
    let client = cluster.client_cert().expect("a client certificate").clone();
    let endpoints = cluster.endpoints().join(",");
    let path = |p: &Path| p.display().to_string();
    let flags = vec![
        "--endpoints".to_owned(),
        endpoints.clone(),
        "--timeout".to_owned(),
        "10s".to_owned(),
        "--cacert".to_owned(),
        path(&pki.ca()),
        "--cert".to_owned(),
        path(&client.cert),
        "--key".to_owned(),
        path(&client.key),
    ];
    let with = |more: &[&str]| {
        let mut args = flags.clone();
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    let (code, out, err) = kvctl(with(&["put", "greeting", "hello"]), Vec::new()).await;
    assert_eq!(code, Some(0), "kvctl put over TLS: {out}{err}");
    let (code, out, err) = kvctl(with(&["get", "greeting"]), Vec::new()).await;
    assert_eq!((code, out.trim()), (Some(0), "hello"), "kvctl get: {err}");
    // The same through the environment, as with ETCDCTL_CACERT.
    let env = vec![
        ("RAFTKV_CACERT", path(&pki.ca())),
        ("RAFTKV_CERT", path(&client.cert)),
        ("RAFTKV_KEY", path(&client.key)),
    ];
    let args = vec![
        "--endpoints".to_owned(),
        endpoints.clone(),
        "get".to_owned(),
        "greeting".to_owned(),
    ];
    let (code, out, err) = kvctl(args, env).await;
    assert_eq!(
        (code, out.trim()),
        (Some(0), "hello"),
        "kvctl with RAFTKV_*: {err}"
    );

    // Without a client certificate: refused, one line saying what is missing, exit 1.
    let args = vec![
        "--endpoints".to_owned(),
        endpoints,
        "--cacert".to_owned(),
        path(&pki.ca()),
        "get".to_owned(),
        "greeting".to_owned(),
    ];
    let (code, out, err) = kvctl(args, Vec::new()).await;
    assert_eq!(code, Some(1), "kvctl without a certificate: {out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("client certificate"),
        "says what is missing: {err}"
    );

    // The library alike: a definite refusal that says why, not a timeout.
    let options = raftkv_client::ClientOptions {
        tls: Some(pki.client_tls(None)),
        ..cluster.client_options()
    };
    let bare = Client::connect(cluster.endpoints(), options)
        .await
        .expect("client");
    match bare.get("greeting", Consistency::Linearizable).await {
        Err(Error::Rpc { code, message }) => {
            assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
            assert!(message.contains("no client certificate"), "{message}");
        }
        other => panic!("a client without a certificate got {other:?}"),
    }
    // And one from another CA, with a certificate of that CA.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = TestPki::new(dir.path(), "other");
    let stranger = other.issue_client("stranger");
    let options = raftkv_client::ClientOptions {
        tls: Some(pki.client_tls(Some(&stranger))),
        ..cluster.client_options()
    };
    let stranger = Client::connect(cluster.endpoints(), options)
        .await
        .expect("client");
    match stranger.get("greeting", Consistency::Linearizable).await {
        Err(Error::Rpc { code, message }) => {
            assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
            assert!(message.contains("trusted CA"), "{message}");
        }
        other => panic!("a certificate from another CA got {other:?}"),
    }
    assert!(
        cluster.log(1).contains("refused a client")
            || cluster.log(2).contains("refused a client")
            || cluster.log(3).contains("refused a client"),
        "no refusal logged"
    );
}

/// The forged heartbeat of issue 13: `from` another member, the term + 1000.
fn forged_heartbeat(cluster_id: &str, from: u64, to: u64, term: u64) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        cluster_id: cluster_id.to_owned(),
        from,
        to,
        term: term + 1000,
        kind: Some(pb::append_entries_request::Kind::Heartbeat(pb::Heartbeat {
            commit: 0,
            round: 1,
        })),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_peer_traffic_is_refused_and_the_term_does_not_move() {
    // No client CA: an outsider can ask a client port for the cluster id, as in the issue.
    let cluster = tls_cluster(3, false, Vec::new()).await;
    let pki = cluster.pki().expect("a TLS cluster");
    let leader = cluster.leader().await;
    let status = cluster.status(leader).await.expect("leader status");
    let (term, cluster_id) = (status.term, status.cluster_id.clone());
    // An insider whose certificate is valid (member `insider`) speaking as member `victim`.
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let (insider, victim) = (others[0], others[1]);
    let leader_peer = cluster.peer_addr(leader).to_string();
    let send = async |connector| {
        let channel = tls_channel(&leader_peer, connector);
        pb::raft_client::RaftClient::new(channel)
            .append_entries(forged_heartbeat(&cluster_id, victim, leader, term))
            .await
    };

    // 1. No certificate at all: the handshake is refused.
    let refused = send(pki.connector(None)).await;
    assert!(refused.is_err(), "no certificate: {refused:?}");
    // 2. A certificate from another CA, even one made for the victim's own address.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = TestPki::new(dir.path(), "forger");
    let victim_host = cluster.peer_addr(victim).ip().to_string();
    let forged = other.issue_node("victim", std::slice::from_ref(&victim_host), 1);
    let refused = send(other.connector(Some(&forged))).await;
    let status = refused.expect_err("a certificate from another CA was accepted");
    assert_ne!(status.code(), tonic::Code::Ok);
    // 3. A valid certificate of the wrong member: the handshake passes, the sender check does not.
    let insider_cert = cluster.node_cert(insider).expect("node certificate");
    let refused = send(pki.connector(Some(&insider_cert))).await;
    let status = refused.expect_err("member {insider}'s certificate spoke as {victim}");
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "wrong member: {status:?}"
    );
    assert!(status.message().contains(&victim_host), "{status:?}");

    // Refused before the message could reach the core: no node ever sees the forged term.
    for (id, view) in cluster.statuses().await {
        let view = view.unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert!(
            view.term < term + 1000,
            "node {id} moved to term {} after forged heartbeats at {}",
            view.term,
            term + 1000
        );
    }
    let now = cluster.status(leader).await.expect("leader status").term;
    println!("term before the forgeries {term}, after {now} (elections may move it a little)");

    // The refusals are logged once, naming the claimed sender and the reason.
    let log = cluster.log(leader);
    assert!(
        log.contains("refused a Raft message") && log.contains(&format!("peer={victim}")),
        "the leader's log does not name the forged sender:\n{}",
        cluster.log_tail(leader, 30)
    );
    assert!(
        log.contains("TLS handshake refused"),
        "no refused handshake logged"
    );
    // The cluster is unharmed.
    let client = cluster.client().await;
    client
        .put("after", "forgeries")
        .await
        .expect("put after the forgeries");

    // The control: the very same message with the victim's own certificate is admitted (and
    // does move the term), so what stopped the forgeries above was the identity check alone.
    let victim_cert = cluster.node_cert(victim).expect("node certificate");
    send(pki.connector(Some(&victim_cert)))
        .await
        .expect("the victim's own certificate is accepted");
    wait_for(
        "the leader to see the term of the admitted message",
        Duration::from_secs(30),
        async || {
            let t = cluster.status(leader).await.ok()?.term;
            (t >= term + 1000).then_some(())
        },
    )
    .await;
}

/// The certificate the server at `addr` presents to a new connection.
async fn served_certificate(
    addr: std::net::SocketAddr,
    pki: &TestPki,
    cluster: &Cluster,
) -> Vec<u8> {
    let roots = read_roots(&pki.ca()).expect("CA");
    let client = cluster
        .client_cert()
        .map(|c| raftkv_proto::tls::Identity::load(&c.cert, &c.key).expect("client identity"));
    let config = Arc::new(client_config(roots, client).expect("config"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::from(addr.ip());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_are_used_by_new_connections() {
    let cluster = tls_cluster(3, true, Vec::new()).await;
    let pki = cluster.pki().expect("a TLS cluster");
    let addr = cluster.client_addr(1);
    let before = served_certificate(addr, pki, &cluster).await;
    // What cert-manager does: a new key and certificate, written whole.
    let host = addr.ip().to_string();
    let rotated = pki.issue_node("node-1", &[host], 90);
    let new_pem = std::fs::read(&rotated.cert).expect("read the new certificate");
    let new_der =
        raftkv_proto::tls::certs_from_pem(&rotated.cert, &new_pem).expect("PEM")[0].to_vec();
    assert_ne!(before, new_der);
    let waited = wait_for(
        "node 1 to serve its rotated certificate",
        Duration::from_secs(60),
        async || (served_certificate(addr, pki, &cluster).await == new_der).then_some(()),
    )
    .await;
    println!("the rotated certificate was served after {waited:?}");
    assert!(
        cluster.log(1).contains("TLS certificate rotated"),
        "the rotation was not logged"
    );
    // Peers dial node 1 with TLS too: the cluster keeps working on the new certificate, and
    // a fresh client (a new connection) is served by it.
    let client = cluster.client().await;
    client
        .put("rotated", "yes")
        .await
        .expect("put after rotation");
    let got = cluster
        .client_of(1)
        .await
        .get("rotated", Consistency::Linearizable)
        .await
        .expect("get through node 1")
        .expect("the key");
    assert_eq!(&got.value[..], b"yes");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_port_stays_plain_for_probes() {
    let port = support::ports::reserve_ports(1)[0];
    // Node 1 of a TLS cluster listens on 127.0.0.2 (see ClusterOptions::tls).
    let health = format!("127.0.0.2:{port}");
    let cluster = tls_cluster(1, true, vec!["--listen-health".into(), health.clone()]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{health}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut probe = tonic_health::pb::health_client::HealthClient::new(channel);
    wait_for(
        "the plain health port to say SERVING",
        Duration::from_secs(30),
        async || {
            let answer = probe
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .ok()?;
            (answer.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                .then_some(())
        },
    )
    .await;
    // The client port itself speaks only TLS.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(1)))
            .expect("uri")
            .timeout(Duration::from_secs(2))
            .connect_lazy();
    let refused = pb::cluster_client::ClusterClient::new(plain)
        .status(pb::StatusRequest {})
        .await;
    assert!(
        refused.is_err(),
        "plain Status on the TLS client port: {refused:?}"
    );
}
