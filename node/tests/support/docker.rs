//! Node containers for the container end-to-end tests (DESIGN.md §8.4): the Dockerfile's image,
//! and a 3-node cluster of containers on a Docker network whose DNS mimics a StatefulSet behind
//! a headless Service.
//!
//! Layout of one [`DockerCluster`] (everything carries the per-run prefix `rkve2e-<pid>-<n>`):
//!
//! ```text
//!   host (the test process and its clients): 10.214.S.1 on the network's bridge
//!   network <prefix>-net, 10.214.S.0/24, Docker's embedded DNS:
//!     <prefix>-kv-0  hostname kv-0, 10.214.S.10, aliases kv-0.<SERVICE> and <SERVICE>
//!     <prefix>-kv-1  hostname kv-1, 10.214.S.11, aliases kv-1.<SERVICE> and <SERVICE>
//!     <prefix>-kv-2  ...
//!   each with its own named volume <prefix>-kv-N-<generation> on /var/lib/raftkv
//! ```
//!
//! - Every node runs `kvnode --discovery dns:<SERVICE> --initial-cluster-size 3
//!   --initial-cluster-token <prefix>` and listens on 0.0.0.0, as the StatefulSet will run it:
//!   it takes its id from its hostname and reaches its peers by their DNS names. The shared
//!   alias `<SERVICE>` resolves to every node, like the headless Service's own name.
//! - Fixed addresses: the network has a subnet of its own, and every container gets the same
//!   address whenever it is (re)started or reconnected, so the test's clients can keep one
//!   address per node. The nodes advertise their DNS names, which the host cannot resolve, so
//!   the clients dial through [`DockerCluster::connect_to`] (name -> address).
//! - The subnet `10.214.S.0/24` is claimed by creating the network: Docker refuses a subnet
//!   that overlaps one of its networks, so concurrent runs get different ones.
//! - Clean-up: `Drop` removes the containers, the volumes and the network, also while a test
//!   panics; [`TestImage`]'s `Drop` removes the image. Everything is labelled with the creating
//!   process's pid, and [`sweep_stale`] removes what a SIGKILLed run left behind.
//!
//! Needs a Docker engine; see [`docker_or_skip`] for how tests behave without one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use raftkv_proto::v1 as pb;
use tonic::transport::Endpoint;

// Polling is the process harness's: one implementation for every cluster kind.
use super::cluster::agreed_leader;
use super::wait::wait_for;

/// The headless Service's name, as in a `default` namespace of a cluster.
pub const SERVICE: &str = "kv-headless.default.svc.cluster.local";
/// The StatefulSet's name: pods are `kv-0`, `kv-1`, ...
pub const SET: &str = "kv";
/// The ports the Dockerfile exposes.
pub const CLIENT_PORT: u16 = 7001;
/// See [`CLIENT_PORT`].
pub const PEER_PORT: u16 = 7101;
/// See [`CLIENT_PORT`].
pub const METRICS_PORT: u16 = 9100;
/// The label on everything a run creates; its value is the creating process's pid.
const LABEL: &str = "raftkv.e2e.pid";
/// The first two octets of every test network's subnet (the namespace tests use 10.213).
const SUBNET_PREFIX: [u8; 2] = [10, 214];
/// How long one `Cluster.Status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

// ----- the engine ----------------------------------------------------------------------------

/// Whether a Docker engine answers here: `Ok` or why not.
pub fn docker_available() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `docker`: {e}")),
    }
}

/// The skip rule of every test that needs Docker: `true` if the test can run. Without an engine
/// it prints a loud skip message and returns `false` — except under CI (`CI=true`), where CI has
/// Docker and a skipped proof is a hole, so it panics instead.
pub fn docker_or_skip(test: &str) -> bool {
    let Err(why) = docker_available() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: a Docker engine is required in CI, but unavailable: {why}");
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!! SKIPPED {test}: no Docker engine ({why}).\n!! Start Docker to run it; \
         under CI=true this is a failure.\n{bar}\n"
    );
    false
}

/// Runs `docker <args>`; its stdout, trimmed, or the command and its stderr.
///
/// A docker command takes from milliseconds to a second (`docker stop`). Inside a tokio runtime
/// it runs in `block_in_place`, so that the clients recording the history meanwhile keep their
/// worker thread (the tests use the multi-thread runtime; a current-thread one would panic).
pub fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = blocking(|| Command::new("docker").args(args).output())
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `f`, which blocks, without taking a tokio worker from the other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Runs `docker <args>`; panics if it fails.
pub fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// `rkve2e-<pid>-<n>`: unique among live runs (pids are), and telling which run made it.
pub fn run_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "rkve2e-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the containers, volumes, networks and images of runs whose process is gone (a
/// SIGKILLed test leaves them behind; its `Drop` guards never ran).
pub fn sweep_stale() {
    let filter = format!("label={LABEL}");
    let dead = |pid: &str| !Path::new(&format!("/proc/{pid}")).exists();
    let listed = |args: &[&str]| -> Vec<(String, String)> {
        try_docker(args)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, pid)| (name.to_owned(), pid.to_owned()))
            .collect()
    };
    let label = format!("{{{{.Names}}}} {{{{.Label \"{LABEL}\"}}}}");
    for (name, pid) in listed(&["ps", "-a", "--filter", &filter, "--format", &label]) {
        if dead(&pid) {
            let _ = try_docker(&["rm", "-f", &name]);
        }
    }
    let label = format!("{{{{.Name}}}} {{{{.Label \"{LABEL}\"}}}}");
    for (name, pid) in listed(&["volume", "ls", "--filter", &filter, "--format", &label]) {
        if dead(&pid) {
            let _ = try_docker(&["volume", "rm", "-f", &name]);
        }
    }
    for (name, pid) in listed(&["network", "ls", "--filter", &filter, "--format", &label]) {
        if dead(&pid) {
            let _ = try_docker(&["network", "rm", &name]);
        }
    }
    // Test images carry the run prefix in their tag: raftkv/kvnode:rkve2e-<pid>-<n>.
    let tags = try_docker(&["images", "raftkv/kvnode", "--format", "{{.Tag}}"]).unwrap_or_default();
    for tag in tags.lines() {
        let pid = tag
            .strip_prefix("rkve2e-")
            .and_then(|t| t.split('-').next());
        if pid.is_some_and(dead) {
            let _ = try_docker(&["image", "rm", "-f", &format!("raftkv/kvnode:{tag}")]);
        }
    }
}

// ----- the image -----------------------------------------------------------------------------

/// The node image of this run, built from the binaries cargo built for the tests; removed again
/// in `Drop`.
pub struct TestImage {
    /// The image's tag.
    pub tag: String,
    /// How long building it took.
    pub build_time: Duration,
}

impl TestImage {
    /// Builds the Dockerfile's runtime stage with this build's `kvnode` and `kvctl` through
    /// `scripts/build-image.sh --from-host` (the offline path of `make image`: the base image is
    /// made from Debian's packages if it is missing; nothing is pulled). Debug binaries, stripped:
    /// cargo has already built them, so CI pays for no release build.
    pub fn build(prefix: &str, kvnode: &Path) -> TestImage {
        let started = Instant::now();
        let bin_dir = kvnode
            .parent()
            .expect("kvnode lives in a directory")
            .to_path_buf();
        ensure_kvctl(&bin_dir);
        let tag = format!("raftkv/kvnode:{prefix}");
        let script = repo_root().join("scripts/build-image.sh");
        let out = Command::new(&script)
            .args(["--tag", &tag, "--from-host"])
            .arg(&bin_dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "building the node image failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The script's last line: version, user and size of the image.
        if let Some(summary) = stdout.lines().last() {
            println!("[container] {summary}");
        }
        TestImage {
            tag,
            build_time: started.elapsed(),
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = try_docker(&["image", "rm", "-f", &self.tag]);
    }
}

/// The workspace's root (this crate is `node/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

/// `kvctl` belongs to another package of the workspace, so `cargo test -p raftkv-node` does not
/// build it; the image and the TLS tests need it next to kvnode. `cargo test --workspace` (CI,
/// `make test`) has built it already, for the client's own tests: that one is used as it is. It
/// is built here only when it is missing or older than the client's or the protocol's sources:
/// a `-p raftkv-client` build resolves a few dependencies' features differently from `cargo test
/// --workspace`, so it compiles rustls, tonic and the client once more, and the next workspace
/// build (the doc tests) compiles them back.
pub fn ensure_kvctl(bin_dir: &Path) {
    let kvctl = bin_dir.join("kvctl");
    let built = std::fs::metadata(&kvctl).and_then(|m| m.modified()).ok();
    let root = repo_root();
    let sources = newest_mtime(&root.join("client/src")).max(newest_mtime(&root.join("proto")));
    if built.is_some_and(|built| sources.is_none_or(|sources| sources <= built)) {
        return;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "raftkv-client", "--bin", "kvctl"])
        .current_dir(&root)
        .status()
        .expect("run cargo build for kvctl");
    assert!(status.success(), "cargo build --bin kvctl failed: {status}");
    assert!(
        kvctl.exists(),
        "kvctl was built, but not into {}",
        bin_dir.display()
    );
}

/// The latest modification time of any file under `dir` (`None` if there is none).
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

// ----- the cluster ---------------------------------------------------------------------------

/// One node container.
#[derive(Debug)]
struct Node {
    /// `<prefix>-kv-<ordinal>`.
    container: String,
    /// The named volume on its data directory.
    volume: String,
    /// Its fixed address on the network.
    ip: Ipv4Addr,
    /// Frozen with `docker pause`.
    paused: bool,
    /// Disconnected from the network.
    disconnected: bool,
    /// Its process was killed or stopped (and not started again).
    down: bool,
}

impl Node {
    /// Whether asking it anything can get an answer (else it would only cost a timeout).
    fn reachable(&self) -> bool {
        !self.paused && !self.disconnected && !self.down
    }
}

/// A cluster of node containers on a network of its own. See the module docs.
pub struct DockerCluster {
    prefix: String,
    image: String,
    network: String,
    subnet: u8,
    /// Node id -> container.
    nodes: BTreeMap<u64, Node>,
    /// Every volume created, for `Drop` (a replaced node's old one too).
    volumes: Vec<String>,
    /// How many volumes were made for each node so far (a replacement gets a fresh one).
    generation: BTreeMap<u64, u32>,
}

impl DockerCluster {
    /// Creates the network and starts `n` node containers of `image`, all at once (the
    /// StatefulSet's `podManagementPolicy: Parallel`). Does not wait for a leader.
    pub fn start(prefix: &str, image: &str, n: u64) -> DockerCluster {
        let network = format!("{prefix}-net");
        let mut cluster = DockerCluster {
            prefix: prefix.to_owned(),
            image: image.to_owned(),
            network: network.clone(),
            subnet: 0,
            nodes: BTreeMap::new(),
            volumes: Vec::new(),
            generation: BTreeMap::new(),
        };
        cluster.subnet = create_network(&network);
        for id in 1..=n {
            cluster.run_node(id);
        }
        cluster
    }

    /// The ids of the nodes.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s container name.
    pub fn container(&self, id: u64) -> &str {
        &self.node(id).container
    }

    /// Node `id`'s fixed address on the network.
    pub fn ip(&self, id: u64) -> Ipv4Addr {
        self.node(id).ip
    }

    /// Node `id`'s DNS name: `kv-<id - 1>.<SERVICE>`.
    pub fn dns_name(id: u64) -> String {
        format!("{SET}-{}.{SERVICE}", id - 1)
    }

    /// The client endpoints by address (`ip:7001`), in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.ids()
            .into_iter()
            .map(|id| format!("{}:{CLIENT_PORT}", self.ip(id)))
            .collect()
    }

    /// The client addresses the nodes advertise (DNS names) -> the addresses the host dials.
    pub fn connect_to(&self) -> BTreeMap<String, String> {
        self.ids()
            .into_iter()
            .map(|id| {
                (
                    format!("{}:{CLIENT_PORT}", Self::dns_name(id)),
                    format!("{}:{CLIENT_PORT}", self.ip(id)),
                )
            })
            .collect()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Creates node `id`'s container with a fresh volume, and starts it.
    fn run_node(&mut self, id: u64) {
        let ordinal = id - 1;
        let generation = self.generation.entry(id).or_insert(0);
        *generation += 1;
        let volume = format!("{}-{SET}-{ordinal}-{generation}", self.prefix);
        let container = format!("{}-{SET}-{ordinal}", self.prefix);
        let pid = std::process::id().to_string();
        let label = format!("{LABEL}={pid}");
        docker(&["volume", "create", "--label", &label, &volume]);
        self.volumes.push(volume.clone());
        let ip = Ipv4Addr::new(
            SUBNET_PREFIX[0],
            SUBNET_PREFIX[1],
            self.subnet,
            10 + ordinal as u8,
        );
        let hostname = format!("{SET}-{ordinal}");
        let own_alias = Self::dns_name(id);
        let mount = format!("{volume}:/var/lib/raftkv");
        let (ip_text, discovery) = (ip.to_string(), format!("dns:{SERVICE}"));
        let listen_client = format!("0.0.0.0:{CLIENT_PORT}");
        let listen_peer = format!("0.0.0.0:{PEER_PORT}");
        let listen_metrics = format!("0.0.0.0:{METRICS_PORT}");
        docker(&[
            "run",
            "--detach",
            "--name",
            &container,
            "--label",
            &label,
            "--hostname",
            &hostname,
            "--network",
            &self.network,
            "--ip",
            &ip_text,
            "--network-alias",
            &own_alias,
            "--network-alias",
            SERVICE,
            "--volume",
            &mount,
            // The StatefulSet's default grace period.
            "--stop-timeout",
            "30",
            &self.image,
            "--discovery",
            &discovery,
            "--initial-cluster-size",
            "3",
            "--initial-cluster-token",
            &self.prefix,
            "--listen-client",
            &listen_client,
            "--listen-peer",
            &listen_peer,
            "--listen-metrics",
            &listen_metrics,
            "--data-dir",
            "/var/lib/raftkv/data",
        ]);
        self.nodes.insert(
            id,
            Node {
                container,
                volume,
                ip,
                paused: false,
                disconnected: false,
                down: false,
            },
        );
    }

    // ----- faults ----------------------------------------------------------------------------

    /// `docker kill` (SIGKILL): the process dies at once; the container and its volume stay.
    pub fn kill(&mut self, id: u64) {
        docker(&["kill", self.container(id)]);
        self.node_mut(id).down = true;
    }

    /// Kills every node at once (one `docker kill` for all: a power cut).
    pub fn kill_all(&mut self) {
        let mut args = vec!["kill".to_owned()];
        args.extend(self.nodes.values().map(|n| n.container.clone()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args);
        self.nodes.values_mut().for_each(|n| n.down = true);
    }

    /// `docker start` of node `id`'s stopped container: same volume, same address.
    pub fn start_node(&mut self, id: u64) {
        docker(&["start", self.container(id)]);
        self.node_mut(id).down = false;
    }

    /// Starts every node's stopped container at once.
    pub fn start_all(&mut self) {
        let mut args = vec!["start".to_owned()];
        args.extend(self.nodes.values().map(|n| n.container.clone()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args);
        self.nodes.values_mut().for_each(|n| n.down = false);
    }

    /// `docker pause`: every process of the container frozen (the cgroup freezer).
    pub fn pause(&mut self, id: u64) {
        docker(&["pause", self.container(id)]);
        self.node_mut(id).paused = true;
    }

    /// `docker unpause`.
    pub fn unpause(&mut self, id: u64) {
        docker(&["unpause", self.container(id)]);
        self.node_mut(id).paused = false;
    }

    /// Takes node `id` off the network: no packet to or from its peers or the clients.
    pub fn disconnect(&mut self, id: u64) {
        let container = self.container(id).to_owned();
        docker(&["network", "disconnect", &self.network, &container]);
        self.node_mut(id).disconnected = true;
    }

    /// Puts node `id` back on the network, with its address and DNS names.
    pub fn reconnect(&mut self, id: u64) {
        let (container, ip) = (self.container(id).to_owned(), self.ip(id).to_string());
        let own_alias = Self::dns_name(id);
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            "--alias",
            &own_alias,
            "--alias",
            SERVICE,
            &self.network,
            &container,
        ]);
        self.node_mut(id).disconnected = false;
    }

    /// `docker stop --time <grace>`: SIGTERM, then SIGKILL if the grace period runs out. Returns
    /// how long it took and the container's exit code (137 = it had to be killed).
    pub fn stop(&mut self, id: u64, grace: Duration) -> (Duration, i64) {
        let started = Instant::now();
        let secs = grace.as_secs().to_string();
        docker(&["stop", "--time", &secs, self.container(id)]);
        let took = started.elapsed();
        self.node_mut(id).down = true;
        let code = docker(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            self.container(id),
        ]);
        let code = code
            .parse()
            .unwrap_or_else(|_| panic!("exit code {code:?} is not a number"));
        (took, code)
    }

    /// Replaces node `id`'s container with a new one on a fresh, empty volume (a pod whose
    /// volume was lost): same hostname, same address, same flags. Returns the new volume.
    pub fn replace_with_empty_volume(&mut self, id: u64) -> String {
        let old = self.container(id).to_owned();
        docker(&["rm", "--force", &old]);
        self.run_node(id);
        self.node(id).volume.clone()
    }

    /// Node `id`'s output (kvnode logs to stderr), all of it.
    pub fn logs(&self, id: u64) -> String {
        let out = blocking(|| {
            Command::new("docker")
                .args(["logs", self.container(id)])
                .output()
        });
        match out {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(docker logs failed: {e})"),
        }
    }

    /// Prints the last `lines` lines of every node's log (for a failing test).
    pub fn print_logs(&self, lines: usize) {
        for id in self.ids() {
            let log = self.logs(id);
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            eprintln!("---- node {id} ({}) ----", self.container(id));
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// The uid node `id`'s kvnode process runs as, read from `/proc` of the Docker host; `None`
    /// where the engine's processes are not visible (an engine in a VM).
    pub fn process_uid(&self, id: u64) -> Option<u32> {
        let pid =
            try_docker(&["inspect", "--format", "{{.State.Pid}}", self.container(id)]).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Runs `kvctl <args>` inside node `id`'s container, where the DNS names resolve.
    pub fn kvctl(&self, id: u64, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["exec", self.container(id), "/usr/local/bin/kvctl"];
        all.extend_from_slice(args);
        try_docker(&all)
    }

    // ----- observation -----------------------------------------------------------------------

    /// Node `id`'s own view (`Cluster.Status` on its client port), or why there is none.
    pub async fn status(&self, id: u64) -> Result<pb::StatusResponse, String> {
        if !self.node(id).reachable() {
            return Err(format!("node {id} is down, paused or disconnected"));
        }
        self.status_future(id).await
    }

    /// The views of every reachable node, asked concurrently.
    pub async fn statuses(&self) -> BTreeMap<u64, pb::StatusResponse> {
        let mut asks = tokio::task::JoinSet::new();
        for (&id, node) in &self.nodes {
            // A frozen or cut-off node cannot answer; asking would only cost a timeout.
            if node.reachable() {
                let ask = self.status_future(id);
                asks.spawn(async move { (id, ask.await) });
            }
        }
        let mut out = BTreeMap::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok((id, Ok(status))) = joined {
                out.insert(id, status);
            }
        }
        out
    }

    /// `Cluster.Status` of node `id`, as a `'static` future (for spawning).
    fn status_future(
        &self,
        id: u64,
    ) -> impl std::future::Future<Output = Result<pb::StatusResponse, String>> + Send + 'static
    {
        let uri = format!("http://{}:{CLIENT_PORT}", self.ip(id));
        async move {
            let channel = Endpoint::from_shared(uri)
                .map_err(|e| e.to_string())?
                .connect_timeout(STATUS_TIMEOUT)
                .connect_lazy();
            let mut client = pb::cluster_client::ClusterClient::new(channel);
            let status =
                match tokio::time::timeout(STATUS_TIMEOUT, client.status(pb::StatusRequest {}))
                    .await
                {
                    Ok(Ok(response)) => response.into_inner(),
                    Ok(Err(status)) => return Err(format!("node {id}: {status}")),
                    Err(_) => {
                        return Err(format!("node {id}: no answer within {STATUS_TIMEOUT:?}"));
                    }
                };
            if status.node_id != id {
                return Err(format!(
                    "node {id}'s address answers as node {}",
                    status.node_id
                ));
            }
            Ok(status)
        }
    }

    /// The current leader if there is one right now: a node that says it leads in the highest
    /// term any reachable node reports, named as leader in that term by a majority of the
    /// voters (itself included). A deposed leader that has not noticed yet does not count.
    pub async fn try_leader(&self) -> Option<u64> {
        let views: Vec<pb::StatusResponse> = self.statuses().await.into_values().collect();
        agreed_leader(&views)
    }

    /// Waits up to `timeout` for [`DockerCluster::try_leader`] to name a node other than
    /// `not` (0: any node); returns it and how long that took.
    pub async fn wait_leader(&self, not: u64, timeout: Duration) -> (u64, Duration) {
        let started = Instant::now();
        let leader = wait_for(&format!("a leader other than {not}"), timeout, async || {
            self.try_leader().await.filter(|&l| l != not)
        })
        .await;
        (leader, started.elapsed())
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs(40);
        }
        // A frozen container cannot be removed on every engine version: thaw it first.
        for node in self.nodes.values().filter(|n| n.paused) {
            let _ = try_docker(&["unpause", &node.container]);
        }
        for node in self.nodes.values() {
            if let Err(e) = try_docker(&["rm", "--force", &node.container]) {
                eprintln!("[container] clean-up: {e}");
            }
        }
        for volume in &self.volumes {
            if let Err(e) = try_docker(&["volume", "rm", "--force", volume]) {
                eprintln!("[container] clean-up: {e}");
            }
        }
        if let Err(e) = try_docker(&["network", "rm", &self.network]) {
            eprintln!("[container] clean-up: {e}");
        }
    }
}

/// Creates `name` on the first free subnet 10.214.S.0/24; returns S.
fn create_network(name: &str) -> u8 {
    let label = format!("{LABEL}={}", std::process::id());
    // Start at a place that depends on the pid, so that concurrent runs rarely even collide.
    let start = std::process::id() as usize % 250;
    let mut last_error = String::new();
    for i in 0..250 {
        let s = ((start + i) % 250 + 1) as u8;
        let subnet = format!("{}.{}.{s}.0/24", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
        match try_docker(&[
            "network", "create", "--driver", "bridge", "--subnet", &subnet, "--label", &label, name,
        ]) {
            Ok(_) => return s,
            // Another network (another run's) has this subnet.
            Err(e) if e.contains("overlap") => last_error = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free subnet 10.214.x.0/24 for the test network: {last_error}")
}
