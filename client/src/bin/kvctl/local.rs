//! `kvctl local up`: a cluster of `kvnode` child processes on 127.0.0.1 for a laptop.
//!
//! Node `id` gets client port 7000+id, peer port 7100+id (see `raftkv_client::local`), data in
//! `<data-dir>/node-<id>/` and its log in `<data-dir>/node-<id>.log`. Runs in the foreground until
//! Ctrl-C or SIGTERM, then sends SIGTERM to every node, waits up to `--stop-timeout`, and kills
//! what is left. Started again with the same flags it resumes on the same data: kvnode ignores the
//! bootstrap flags when it finds state on disk.
//!
//! With `--tls` both ports use TLS and clients need a certificate: a CA and certificates are made
//! in `<data-dir>/certs` on the first start (kept, and reused, after). All nodes share 127.0.0.1,
//! so their certificates name the same host: this encrypts and keeps out whoever has no
//! certificate from the CA, but does not tell the members apart (see the README's "Security").
//!
//! Children are spawned with `kill_on_drop`, so an early return or a panic in kvctl still kills
//! them. They run in their own process group so that a Ctrl-C in the terminal reaches only kvctl,
//! which then stops them in order instead of all of them racing on SIGINT. (If kvctl itself is
//! SIGKILLed nothing can stop them; `pkill kvnode` or the printed pids will.)

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raftkv_client::local;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, interval};

use crate::cli::LocalUpArgs;
use crate::exit::{Exit, Failure};
use crate::output::Output;

/// A running node.
struct Node {
    id: u16,
    log: PathBuf,
    child: Child,
    /// Set once the process has exited (and been reaped).
    exited: bool,
}

/// Runs `kvctl local up`.
pub async fn up(args: LocalUpArgs, out: &Output) -> Result<Exit, Failure> {
    let kvnode = find_kvnode(args.kvnode.as_deref())?;
    fs::create_dir_all(&args.data_dir).map_err(|e| {
        Failure::Other(format!(
            "cannot create data dir {}: {e}",
            args.data_dir.display()
        ))
    })?;
    let data_dir = fs::canonicalize(&args.data_dir).unwrap_or_else(|_| args.data_dir.clone());
    // Listen for signals before the children exist, so that an early Ctrl-C is not lost.
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Failure::Other(format!("cannot handle SIGINT: {e}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::Other(format!("cannot handle SIGTERM: {e}")))?;

    let peers = (1..=args.nodes)
        .map(|id| format!("{id}={}", local::peer_addr(id)))
        .collect::<Vec<_>>()
        .join(",");
    let certs = data_dir.join("certs");
    let tls = args.tls.then(|| certs.clone());
    if args.tls && !certs.join(format!("node-{}.crt", args.nodes)).exists() {
        let nodes: Vec<_> = (1..=u64::from(args.nodes))
            .map(|id| (id, crate::certs::localhost()))
            .collect();
        crate::certs::generate(&certs, &nodes, 365)?;
    }
    let mut nodes = Vec::with_capacity(usize::from(args.nodes));
    for id in 1..=args.nodes {
        // On error, returning drops `nodes`, and kill_on_drop stops the ones already started.
        nodes.push(spawn(
            &kvnode,
            id,
            args.nodes,
            &peers,
            &data_dir,
            tls.as_deref(),
        )?);
    }

    let endpoints = local::endpoints(args.nodes).join(",");
    if out.is_json() {
        out.json(&json!({
            "kvnode": kvnode.display().to_string(),
            "data_dir": data_dir.display().to_string(),
            "endpoints": local::endpoints(args.nodes),
            "certs": tls.as_ref().map(|c| c.display().to_string()),
            "nodes": nodes.iter().map(|n| json!({
                "id": n.id,
                "pid": n.child.id(),
                "client_addr": local::client_addr(n.id),
                "peer_addr": local::peer_addr(n.id),
                "log": n.log.display().to_string(),
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "started {} kvnode process(es) from {}",
            args.nodes,
            kvnode.display()
        );
        for node in &nodes {
            println!(
                "  node {}  pid {}  client {}  peer {}  log {}",
                node.id,
                node.child
                    .id()
                    .map_or_else(|| "-".to_owned(), |p| p.to_string()),
                local::client_addr(node.id),
                local::peer_addr(node.id),
                node.log.display()
            );
        }
        println!("data in {}", data_dir.display());
        if let Some(certs) = &tls {
            let c = certs.display();
            println!(
                "TLS on both ports; for kvctl: export RAFTKV_CACERT={c}/ca.crt RAFTKV_CERT={c}/client.crt RAFTKV_KEY={c}/client.key"
            );
        }
        if args.nodes == local::DEFAULT_NODES {
            println!("endpoints: {endpoints}  (kvctl's default)");
        } else {
            println!("endpoints: {endpoints}  (pass --endpoints {endpoints} to kvctl)");
        }
        println!("press Ctrl-C to stop");
    }

    // Poll the children rather than wait on them, so that each `Child` stays available for the
    // SIGTERM at the end. Half a second is plenty to report a crashed node.
    let mut tick = interval(Duration::from_millis(500));
    let stopped_by_signal = loop {
        tokio::select! {
            _ = interrupt.recv() => break true,
            _ = terminate.recv() => break true,
            _ = tick.tick() => {
                reap(&mut nodes, out);
                if nodes.iter().all(|n| n.exited) {
                    break false;
                }
            }
        }
    };

    out.note("stopping the nodes (SIGTERM)...");
    stop(&mut nodes, args.stop_timeout, out).await;
    if stopped_by_signal {
        out.note("all nodes stopped");
        Ok(Exit::Success)
    } else {
        Err(Failure::Other(format!(
            "every node exited; see the logs in {}",
            data_dir.display()
        )))
    }
}

/// Starts node `id`, its output appended to `<data_dir>/node-<id>.log`; with `certs`, TLS on both
/// ports with the certificates there.
fn spawn(
    kvnode: &Path,
    id: u16,
    size: u16,
    peers: &str,
    data_dir: &Path,
    certs: Option<&Path>,
) -> Result<Node, Failure> {
    let dir = data_dir.join(format!("node-{id}"));
    fs::create_dir_all(&dir)
        .map_err(|e| Failure::Other(format!("cannot create {}: {e}", dir.display())))?;
    let log = data_dir.join(format!("node-{id}.log"));
    let stdout = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| Failure::Other(format!("cannot open log {}: {e}", log.display())))?;
    let stderr = stdout
        .try_clone()
        .map_err(|e| Failure::Other(format!("cannot open log {}: {e}", log.display())))?;
    let client = local::client_addr(id);
    let peer = local::peer_addr(id);
    let mut command = Command::new(kvnode);
    if let Some(certs) = certs {
        let (cert, key, ca) = (
            certs.join(format!("node-{id}.crt")),
            certs.join(format!("node-{id}.key")),
            certs.join("ca.crt"),
        );
        for (flag, file) in [
            ("--peer-cert", &cert),
            ("--peer-key", &key),
            ("--peer-ca", &ca),
            ("--client-cert", &cert),
            ("--client-key", &key),
            ("--client-ca", &ca),
        ] {
            command.arg(flag).arg(file);
        }
    }
    let child = command
        .arg("--id")
        .arg(id.to_string())
        .args(["--listen-client", &client, "--listen-peer", &peer])
        .args(["--advertise-client", &client, "--advertise-peer", &peer])
        .args(["--peers", peers])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--initial-cluster-size", &size.to_string()])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Other(format!("cannot start {}: {e}", kvnode.display())))?;
    Ok(Node {
        id,
        log,
        child,
        exited: false,
    })
}

/// Notices nodes that exited on their own and says so.
fn reap(nodes: &mut [Node], out: &Output) {
    for node in nodes.iter_mut().filter(|n| !n.exited) {
        match node.child.try_wait() {
            Ok(Some(status)) => {
                node.exited = true;
                out.note(&format!(
                    "node {} exited ({status}); see {}",
                    node.id,
                    node.log.display()
                ));
            }
            Ok(None) => {}
            Err(e) => out.note(&format!("cannot check node {}: {e}", node.id)),
        }
    }
}

/// SIGTERM to every running node, then wait up to `timeout` in total, then SIGKILL.
async fn stop(nodes: &mut [Node], timeout: Duration, out: &Output) {
    for node in nodes.iter().filter(|n| !n.exited) {
        if let Some(pid) = node.child.id().and_then(|p| i32::try_from(p).ok()) {
            // ESRCH means it exited in the meantime; the wait below reaps it either way.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    for node in nodes.iter_mut().filter(|n| !n.exited) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                out.note(&format!(
                    "node {} did not stop within {timeout:?}; killing it",
                    node.id
                ));
                let _ = node.child.start_kill();
                let _ = node.child.wait().await;
            }
        }
        node.exited = true;
    }
}

/// `--kvnode`, else `kvnode` next to this executable, else the first `kvnode` on PATH.
fn find_kvnode(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Failure::Other(format!(
                "--kvnode {}: no such file",
                path.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("kvnode")));
    if let Some(path) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kvnode"))
        .find(|p| p.is_file())
    {
        return Ok(path);
    }
    Err(Failure::Other(format!(
        "kvnode not found {}or on PATH; build it with `cargo build --bin kvnode` or pass --kvnode PATH",
        beside
            .and_then(|p| p
                .parent()
                .map(|d| format!("next to kvctl (in {}) ", d.display())))
            .unwrap_or_default()
    )))
}
