//! kvctl's exit codes and output, running the built binary against in-process fake nodes.
//!
//! 0 success, 1 definite failure (key not found, compare failed), 2 usage error, 3 outcome
//! unknown (no endpoint answers in time).

#![cfg(feature = "cli")]

mod fake;

use std::process::Output;

use fake::{Fake, closed_port, start};

/// Runs kvctl with `args` without blocking the runtime that serves the fake.
async fn kvctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kvctl"))
            .args(&args)
            .output()
            .expect("run kvctl")
    })
    .await
    .expect("join")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &[],
        &["get"],
        &["put", "k", "v", "extra"],
        &["--timeout", "soon", "get", "k"],
        &["cas", "k", "v"],
        &["--endpoints", "", "get", "k"],
    ] {
        let output = kvctl(args).await;
        assert_eq!(code(&output), 2, "kvctl {args:?}: {output:?}");
    }
    assert_eq!(code(&kvctl(&["--help"]).await), 0);
}

#[tokio::test]
async fn no_answer_exits_3() {
    let dead = closed_port().await;
    for args in [&["put", "k", "v"][..], &["get", "k"], &["status"]] {
        let mut full = vec!["--endpoints", &dead, "--timeout", "300ms"];
        full.extend_from_slice(args);
        let output = kvctl(&full).await;
        assert_eq!(code(&output), 3, "kvctl {full:?}: {output:?}");
    }
    let output = kvctl(&[
        "--json",
        "--endpoints",
        &dead,
        "--timeout",
        "300ms",
        "put",
        "k",
        "v",
    ])
    .await;
    let error: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(error["error"]["kind"], "outcome_unknown");
}

#[tokio::test]
async fn get_exits_0_when_found_and_1_when_not() {
    let node = Fake::new();
    node.insert("greeting", "hello");
    let addr = start(node).await;

    let output = kvctl(&["--endpoints", &addr, "get", "greeting"]).await;
    assert_eq!(code(&output), 0, "{output:?}");
    assert_eq!(output.stdout, b"hello\n");

    let output = kvctl(&["--endpoints", &addr, "get", "nothing"]).await;
    assert_eq!(code(&output), 1, "{output:?}");
    assert!(output.stdout.is_empty());

    let output = kvctl(&["--endpoints", &addr, "--json", "get", "greeting"]).await;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(value["found"], true);
    assert_eq!(value["value"], "hello");
}

#[tokio::test]
async fn writes_scan_cas_and_status() {
    let node = Fake::new();
    let addr = start(node).await;
    let run = |args: &'static [&'static str]| {
        let addr = addr.clone();
        async move {
            let mut full = vec!["--endpoints", addr.as_str()];
            full.extend_from_slice(args);
            kvctl(&full).await
        }
    };

    assert_eq!(code(&run(&["put", "app/a", "1"]).await), 0);
    assert_eq!(code(&run(&["put", "app/b", "2"]).await), 0);
    assert_eq!(code(&run(&["put", "other", "3"]).await), 0);

    let output = run(&["scan", "--prefix", "app/"]).await;
    assert_eq!(code(&output), 0, "{output:?}");
    assert_eq!(output.stdout, b"app/a\t1\napp/b\t2\n");

    // Compare fails: the key exists, so expected version 0 does not match.
    let output = run(&["cas", "app/a", "x", "--expected-version", "0"]).await;
    assert_eq!(code(&output), 1, "{output:?}");
    let output = run(&["--json", "cas", "app/a", "x", "--expected-version", "1"]).await;
    assert_eq!(code(&output), 0, "{output:?}");

    let output = run(&["delete", "app/b"]).await;
    assert_eq!(code(&output), 0, "{output:?}");
    let output = run(&["delete", "app/b"]).await;
    assert_eq!(code(&output), 0, "deleting a missing key is not an error");

    let output = run(&["status"]).await;
    assert_eq!(code(&output), 0, "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("voter (leader)"), "{text}");

    let output = run(&["--json", "status"]).await;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(value["members"][0]["leader"], true);
    assert_eq!(value["role"], "leader");
}

#[tokio::test]
async fn bench_runs_against_any_endpoint() {
    let node = Fake::new();
    let addr = start(node).await;
    let output = kvctl(&[
        "--endpoints",
        &addr,
        "--json",
        "bench",
        "--clients",
        "2",
        "--requests",
        "50",
        "--keys",
        "10",
        "--value-size",
        "16",
    ])
    .await;
    assert_eq!(code(&output), 0, "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["ops"], 50);
    assert!(
        report["latency_ms"]["all"]["p99"].as_f64().is_some(),
        "{report}"
    );
}

/// `kvctl certs` makes a CA, node and client certificates that the client library accepts, keeps
/// keys private, and reuses the CA on a second run (to add a node later).
#[tokio::test]
async fn certs_makes_usable_certificates_and_reuses_the_ca() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile_dir();
    let d = dir.display().to_string();
    let first = kvctl(&[
        "--json",
        "certs",
        "--dir",
        &d,
        "--node",
        "1=127.0.0.2,kv-0.kv",
    ])
    .await;
    assert_eq!(code(&first), 0, "{first:?}");
    let json: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON output");
    assert_eq!(json["new_ca"], true);
    let ca_before = std::fs::read(dir.join("ca.crt")).expect("ca.crt");
    let mode = std::fs::metadata(dir.join("node-1.key"))
        .expect("node key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "a key readable by others: {mode:o}");
    raftkv_client::tls::TlsConfig::from_files(
        &dir.join("ca.crt"),
        Some((&dir.join("client.crt"), &dir.join("client.key"))),
    )
    .expect("the client certificate and key load");

    let second = kvctl(&["--json", "certs", "--dir", &d, "--node", "2=127.0.0.3"]).await;
    assert_eq!(code(&second), 0, "{second:?}");
    let json: serde_json::Value = serde_json::from_slice(&second.stdout).expect("JSON output");
    assert_eq!(json["new_ca"], false);
    assert_eq!(
        std::fs::read(dir.join("ca.crt")).expect("ca.crt"),
        ca_before
    );
    let bad = kvctl(&["certs", "--dir", &d, "--node", "0=127.0.0.1"]).await;
    assert_eq!(code(&bad), 2, "node id 0: {bad:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("kvctl-certs-{}-{nanos}", std::process::id()))
}
