//! `kvnode` refuses flags that make no sense with a clear error and exit code 2, before it opens
//! a port or touches the data directory; TLS files that cannot work stop it at start with a
//! message naming the file. And `--worker-threads` sizes the runtime.

mod support;

use std::process::Command;

const KVNODE: &str = env!("CARGO_BIN_EXE_kvnode");

/// A kvnode command with a valid base command line (one node, ports the kernel picks) on a fresh
/// data directory, which lives as long as the returned guard.
fn kvnode() -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(KVNODE);
    cmd.args([
        "--id",
        "1",
        "--listen-client",
        "127.0.0.1:0",
        "--listen-peer",
        "127.0.0.1:0",
        "--advertise-client",
        "127.0.0.1:1",
        "--advertise-peer",
        "127.0.0.1:2",
        "--data-dir",
    ])
    .arg(dir.path());
    (cmd, dir)
}

/// Runs kvnode with the base command line plus `extra`; returns (exit code, stderr).
fn run(extra: &[&str]) -> (Option<i32>, String) {
    let (mut cmd, _dir) = kvnode();
    let out = cmd.args(extra).output().expect("run kvnode");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// kvnode refuses `extra` with exit code 2 and a message that names `flag`.
fn assert_refused(extra: &[&str], flag: &str) {
    let (code, err) = run(extra);
    assert_eq!(code, Some(2), "{extra:?}: {err}");
    assert!(err.contains(flag), "{extra:?}: {err}");
}

#[test]
fn zero_snapshot_entries_is_refused() {
    assert_refused(&["--snapshot-entries", "0"], "--snapshot-entries");
}

/// The trailing log may be 0 (compact to the snapshot), but must be a count.
#[test]
fn snapshot_trailing_entries_must_be_a_count() {
    for bad in ["-1", "many", "1.5"] {
        // `=`: a separate "-1" would be read as a flag of its own.
        let (code, err) = run(&[&format!("--snapshot-trailing-entries={bad}")]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("--snapshot-trailing-entries"), "{bad}: {err}");
    }
    // 0 is accepted: the refusal is then about the other bad flag only.
    let (code, err) = run(&[
        "--snapshot-trailing-entries",
        "0",
        "--snapshot-entries",
        "0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--snapshot-entries"), "{err}");
    assert!(!err.contains("--snapshot-trailing-entries"), "{err}");
}

#[test]
fn election_ticks_below_two_are_refused() {
    for bad in ["0", "1"] {
        assert_refused(&["--election-ticks", bad], "--election-ticks");
    }
}

#[test]
fn zero_worker_threads_are_refused() {
    assert_refused(&["--worker-threads", "0"], "--worker-threads");
}

/// The runtime gets the number of worker threads asked for: kvnode logs the count its runtime
/// reports at start. 5 differs from the default (one per CPU) on this project's machines.
#[test]
fn worker_threads_size_the_runtime() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let (mut cmd, _dir) = kvnode();
    let mut child = cmd
        .args(["--worker-threads", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvnode");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("worker_threads=") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no worker_threads line in kvnode's log: {seen:?}"));
    assert!(line.contains("worker_threads=5"), "{line}");
}

#[test]
fn a_zero_tick_is_refused() {
    assert_refused(&["--tick", "0ms"], "at least 1ms");
}

/// Half of a TLS flag pair is a usage error naming the missing flag, before anything starts.
#[test]
fn half_a_tls_flag_pair_is_refused() {
    for (given, missing) in [
        (
            &["--peer-cert", "a.crt", "--peer-ca", "ca.crt"][..],
            "--peer-key",
        ),
        (
            &["--peer-cert", "a.crt", "--peer-key", "a.key"][..],
            "--peer-ca",
        ),
        (&["--peer-key", "a.key"][..], "--peer-cert"),
        (&["--client-cert", "a.crt"][..], "--client-key"),
        (&["--client-key", "a.key"][..], "--client-cert"),
        (&["--client-ca", "ca.crt"][..], "--client-cert"),
    ] {
        let (code, err) = run(given);
        assert_eq!(code, Some(2), "{given:?}: {err}");
        assert!(
            err.contains(missing),
            "{given:?} should name {missing}: {err}"
        );
    }
}

/// A key that does not belong to its certificate stops the node at start, naming both files; so
/// does a certificate file that holds no certificate.
#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = support::tls::TestPki::new(dir.path(), "flags");
    let hosts = ["127.0.0.1".to_owned()];
    let one = pki.issue_node("one", &hosts, 1);
    let two = pki.issue_node("two", &hosts, 1);
    let path = |p: &std::path::Path| p.display().to_string();
    let ca = path(&pki.ca());
    for port in ["peer", "client"] {
        let (cert, key) = (format!("--{port}-cert"), format!("--{port}-key"));
        let mut args = vec![cert.clone(), path(&one.cert), key.clone(), path(&two.key)];
        if port == "peer" {
            args.extend(["--peer-ca".to_owned(), ca.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = run(&args);
        assert_eq!(code, Some(1), "{port}: {err}");
        assert!(
            err.contains("does not belong") && err.contains(&path(&two.key)),
            "{port}: {err}"
        );
    }
    // The CA where the certificate should be.
    let (code, err) = run(&[
        "--client-cert",
        &path(&pki.ca()),
        "--client-key",
        &path(&one.key),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not belong"), "{err}");
    let (code, err) = run(&[
        "--client-cert",
        &path(&one.key),
        "--client-key",
        &path(&one.key),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
}
