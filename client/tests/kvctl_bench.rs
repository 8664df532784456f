//! `kvctl bench`'s report and plot, running the built binary against an in-process fake node:
//! the JSON is one document with ordered percentiles, `--connections` and `--key-order` are
//! honoured, `--plot` writes well-formed SVG, and the etcd target fails with a clear message
//! when kvctl was built without it. Nothing here measures speed.
//!
//! The real-cluster smoke run (3 kvnode processes, a few seconds of load) is
//! scripts/bench-smoke.sh, run by .ci/run.

#![cfg(feature = "cli")]

mod fake;

use std::process::Output;

use fake::{Fake, start};
use serde_json::Value;

async fn kvctl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kvctl"))
            .args(&args)
            .output()
            .expect("run kvctl")
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// The latency figures of `report["latency_ms"][op]` in report order; they must not decrease.
fn assert_ordered(report: &Value, op: &str) {
    let latency = &report["latency_ms"][op];
    let figures: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|q| {
            latency[q]
                .as_f64()
                .unwrap_or_else(|| panic!("{op}.{q}: {report}"))
        })
        .collect();
    assert!(figures[0] > 0.0, "{op}: {report}");
    assert!(
        figures.windows(2).all(|w| w[0] <= w[1]),
        "{op}: {figures:?}"
    );
}

#[tokio::test]
async fn json_report_has_ordered_percentiles_and_the_run_shape() {
    let addr = start(Fake::new()).await;
    let output = kvctl(args(&[
        "--endpoints",
        &addr,
        "--json",
        "bench",
        "--clients",
        "6",
        "--connections",
        "2",
        "--requests",
        "300",
        "--keys",
        "50",
        "--read-ratio",
        "0.5",
        "--consistency",
        "lease",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["target"], "raftkv");
    assert_eq!(report["clients"], 6);
    assert_eq!(report["connections"], 2);
    assert_eq!(report["consistency"], "lease");
    assert_eq!(report["ops"], 300);
    assert_eq!(report["errors"]["total"], 0);
    assert!(report["throughput_ops_per_second"].as_f64() > Some(0.0));
    assert_ordered(&report, "all");
    assert_ordered(&report, "read");
    assert_ordered(&report, "write");
    let (reads, writes) = (
        report["latency_ms"]["read"]["count"].as_u64().unwrap_or(0),
        report["latency_ms"]["write"]["count"].as_u64().unwrap_or(0),
    );
    assert_eq!(reads + writes, 300);
    // The spectrum `--plot-with` reads back: quantiles ascending to 1, latencies not falling.
    let spectrum = report["spectrum"]["write"].as_array().expect("a spectrum");
    let points: Vec<(f64, f64)> = spectrum
        .iter()
        .map(|p| (p[0].as_f64().unwrap_or(-1.0), p[1].as_f64().unwrap_or(-1.0)))
        .collect();
    assert!(
        points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
        "{points:?}"
    );
    assert_eq!(points.last().map(|p| p.0), Some(1.0));
}

#[tokio::test]
async fn sequential_keys_write_every_key_once() {
    let addr = start(Fake::new()).await;
    let output = kvctl(args(&[
        "--endpoints",
        &addr,
        "--json",
        "bench",
        "--clients",
        "4",
        "--key-order",
        "sequential",
        "--keys",
        "40",
        "--requests",
        "40",
        "--read-ratio",
        "0",
        "--key-prefix",
        "load/",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let output = kvctl(args(&[
        "--endpoints",
        &addr,
        "scan",
        "--prefix",
        "load/",
        "--keys-only",
    ]))
    .await;
    let listed = String::from_utf8_lossy(&output.stdout);
    let keys: Vec<&str> = listed.lines().collect();
    let expected: Vec<String> = (0..40).map(|i| format!("load/{i:08}")).collect();
    assert_eq!(keys, expected, "{output:?}");
}

#[tokio::test]
async fn plot_is_well_formed_svg() {
    let addr = start(Fake::new()).await;
    let file = std::env::temp_dir().join(format!("kvctl-bench-{}.svg", std::process::id()));
    let output = kvctl(args(&[
        "--endpoints",
        &addr,
        "bench",
        "--clients",
        "2",
        "--requests",
        "200",
        "--plot",
        file.to_str().expect("UTF-8 path"),
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("p99.9"), "{text}");
    let svg = std::fs::read_to_string(&file).expect("the plot was written");
    let _ = std::fs::remove_file(&file);
    assert!(svg.starts_with("<svg"), "{svg:.80}");
    assert!(svg.trim_end().ends_with("</svg>"), "not closed");
    // Tags balance: every element opened is closed or self-closing.
    let opened = svg.matches('<').count();
    let closed = svg.matches("</").count() * 2 + svg.matches("/>").count();
    assert_eq!(opened, closed, "unbalanced tags");
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn etcd_target_without_the_feature_says_how_to_build_it() {
    let addr = start(Fake::new()).await;
    let output = kvctl(args(&[
        "--endpoints",
        &addr,
        "bench",
        "--target",
        "etcd",
        "--requests",
        "1",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features etcd"), "{stderr}");
}
