//! The operator's TLS against real `kvnode` processes, with no Kubernetes: three nodes started
//! with exactly the TLS flags the StatefulSet gives (`podtls::pod_tls`, `auto` on both ports,
//! client certificates required), `$(POD_NAME)` and the mount directory substituted as the
//! kubelet would, reading certificates the operator's own code made (`certs`) laid out as the
//! pods' Secret is (`<pod>.crt`, `<pod>.key`, `ca.crt`).
//!
//! Checked: the members find each other over mutual TLS and elect a leader; the operator's
//! [`GrpcNodes`] reads every node's status over TLS with its client-only certificate, and moves
//! leadership through the client library's TLS; without its certificate, or trusting another
//! CA, it is refused. Pods cannot have their DNS names here, so each member listens on its own
//! loopback address (127.0.0.1, .2, .3) and its certificate names that address.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_operator::certs::{self, Usage};
use raftkv_operator::crd::KvClusterSpec;
use raftkv_operator::nodes::{GrpcNodes, NodeApi, NodeTls};
use raftkv_operator::podtls::{self, AUTO_DIR, POD_NAME_ENV};
use raftkv_operator::resources::{Cluster, node_args};

#[path = "support/processes.rs"]
mod processes;
use processes::{kvnode, reserve_ports};

/// Generous: a loaded 2-core machine starts three processes and runs TLS handshakes.
const TIMEOUT: Duration = Duration::from_secs(90);

struct Member {
    client: SocketAddr,
    log: std::path::PathBuf,
    process: Child,
}

/// The nodes; killed on drop, with their logs printed if the test failed.
struct Members(Vec<Member>);

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.0 {
            let _ = m.process.kill();
            let _ = m.process.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("---- {} log ends:", m.client);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

/// Polls until every member reports the same leader, or panics after [`TIMEOUT`].
async fn leader(nodes: &GrpcNodes, members: &Members, tls: &NodeTls) -> u64 {
    let started = Instant::now();
    loop {
        let mut leaders = vec![];
        let mut last_error = String::new();
        for m in &members.0 {
            match nodes.status(&m.client.to_string(), Some(tls)).await {
                Ok(s) => leaders.push(s.leader_id),
                Err(e) => last_error = e.to_string(),
            }
        }
        if leaders.len() == members.0.len()
            && leaders[0] != 0
            && leaders.iter().all(|l| *l == leaders[0])
        {
            return leaders[0];
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no agreed leader over TLS after {TIMEOUT:?}: leaders {leaders:?}, last error: {last_error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_the_operator_speak_tls_with_the_operators_certificates() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .expect("clock after 1970");
    let root = tempfile::Builder::new()
        .prefix("raftkv-op-tls-")
        .tempdir()
        .expect("temporary directory");
    let tls_dir = root.path().join("tls");
    std::fs::create_dir(&tls_dir).expect("mount directory");

    // The pods' Secret, as the operator lays it out.
    let ca = certs::new_ca("test/demo", now).expect("CA");
    write(&tls_dir, podtls::CA_KEY, &ca.cert_pem);
    let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    for (i, host) in hosts.iter().enumerate() {
        let leaf = certs::issue(
            &ca,
            &format!("demo-{i}"),
            &[host.to_string()],
            Usage::Member,
            now,
        )
        .expect("member certificate");
        write(&tls_dir, &format!("demo-{i}.crt"), &leaf.cert_pem);
        write(&tls_dir, &format!("demo-{i}.key"), &leaf.key_pem);
    }
    let operator = certs::issue(&ca, "raftkv-operator", &[], Usage::Client, now).expect("operator");

    // The StatefulSet's arguments for `auto` on both ports, client certificates required.
    let spec: KvClusterSpec = serde_json::from_value(serde_json::json!({
        "replicas": 3, "image": "raftkv/kvnode:test", "storage": {"size": "1Gi"},
        "tuning": {"tickMillis": 100, "electionTicks": 10},
        "tls": {"peer": {"auto": {}}, "client": {"auto": {}, "requireClientCertificate": true}}
    }))
    .expect("spec");
    let cluster = Cluster {
        name: "demo".into(),
        namespace: "test".into(),
        uid: "operator-tls-process-test".into(),
        spec,
        initial_replicas: 3,
    };
    let mut template = node_args(&cluster);
    template.extend(podtls::pod_tls("demo", cluster.spec.tls.as_ref()).args);
    assert!(template.iter().any(|a| a.starts_with("--client-ca=")));

    let ports = reserve_ports(4 * hosts.len());
    let addr = |i: usize, k: usize| -> SocketAddr {
        format!("{}:{}", hosts[i], ports[4 * i + k])
            .parse()
            .expect("address")
    };
    let peers = (0..hosts.len())
        .map(|i| format!("{}={}", i + 1, addr(i, 1)))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Members(vec![]);
    for i in 0..hosts.len() {
        let pod = format!("demo-{i}");
        let mut args: Vec<String> = template
            .iter()
            .filter(|a| !a.starts_with("--discovery="))
            .map(|a| {
                // What the kubelet does: the Secret is mounted at AUTO_DIR, and $(POD_NAME) is
                // the pod's name.
                let a = a
                    .replace(AUTO_DIR, &tls_dir.display().to_string())
                    .replace(&format!("$({POD_NAME_ENV})"), &pod);
                match a.split_once('=') {
                    Some(("--listen-client", _)) => format!("--listen-client={}", addr(i, 0)),
                    Some(("--listen-peer", _)) => format!("--listen-peer={}", addr(i, 1)),
                    Some(("--listen-metrics", _)) => format!("--listen-metrics={}", addr(i, 2)),
                    Some(("--listen-health", _)) => format!("--listen-health={}", addr(i, 3)),
                    Some(("--data-dir", _)) => {
                        format!("--data-dir={}", root.path().join(&pod).display())
                    }
                    _ => a,
                }
            })
            .collect();
        args.extend([
            format!("--id={}", i + 1),
            format!("--advertise-client={}", addr(i, 0)),
            format!("--advertise-peer={}", addr(i, 1)),
            format!("--peers={peers}"),
        ]);
        let log = root.path().join(format!("{pod}.log"));
        let out = File::create(&log).expect("log");
        let err = out.try_clone().expect("log handle");
        let process = Command::new(kvnode())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn kvnode: {e}"));
        members.0.push(Member {
            client: addr(i, 0),
            log,
            process,
        });
    }

    let nodes = GrpcNodes {
        status_timeout: Duration::from_secs(5),
        change_timeout: Duration::from_secs(30),
    };
    let tls = NodeTls {
        ca_pem: ca.cert_pem.clone(),
        identity: Some(operator.clone()),
    };
    let first = leader(&nodes, &members, &tls).await;

    // Leadership moves through the client library's TLS (and its redirect to the leader).
    let endpoints: Vec<String> = members.0.iter().map(|m| m.client.to_string()).collect();
    let moved = nodes
        .transfer_leader(Some(&tls), endpoints)
        .await
        .expect("transfer leadership over TLS");
    assert_ne!(moved, first, "leadership moved away from {first}");
    // The members agree on a leader again (not necessarily `moved`: on a loaded machine another
    // election may follow, and this test is about TLS, not timing).
    leader(&nodes, &members, &tls).await;

    // Without the operator's certificate, or trusting another CA, the operator is refused.
    let some_member = members.0[0].client.to_string();
    let anonymous = NodeTls {
        ca_pem: ca.cert_pem.clone(),
        identity: None,
    };
    assert!(
        nodes.status(&some_member, Some(&anonymous)).await.is_err(),
        "a client without a certificate is refused (--client-ca)"
    );
    let stranger = certs::new_ca("test/other", now).expect("CA");
    let wrong_ca = NodeTls {
        ca_pem: stranger.cert_pem,
        identity: Some(operator),
    };
    let refused = nodes
        .status(&some_member, Some(&wrong_ca))
        .await
        .expect_err("a server from another CA is not trusted");
    assert!(
        refused.to_string().contains("certificate"),
        "the error says why: {refused}"
    );
    // And plain text does not get an answer from a TLS port.
    assert!(nodes.status(&some_member, None).await.is_err());
}
