//! `kvnode` refuses flags that make no sense with a clear error and exit code 2, before it opens
//! a port or touches the data directory.

use std::process::Command;

const KVNODE: &str = env!("CARGO_BIN_EXE_kvnode");

/// Runs kvnode with a valid base command line plus `extra`; returns (exit code, stderr).
fn run(extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(KVNODE)
        .args([
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
        .arg(dir.path())
        .args(extra)
        .output()
        .expect("run kvnode");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zero_snapshot_entries_is_refused() {
    let (code, err) = run(&["--snapshot-entries", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--snapshot-entries"), "{err}");
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
        let (code, err) = run(&["--election-ticks", bad]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("--election-ticks"), "{err}");
    }
}

#[test]
fn a_zero_tick_is_refused() {
    let (code, err) = run(&["--tick", "0ms"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least 1ms"), "{err}");
}
