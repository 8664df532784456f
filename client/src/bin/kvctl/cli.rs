//! The command line of `kvctl`, declared with clap's derive API.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use raftkv_client::{Consistency, local};

/// The default `--endpoints`: the client addresses of `kvctl local up`, comma-separated.
static DEFAULT_ENDPOINTS: LazyLock<String> = LazyLock::new(|| local::default_endpoints().join(","));

/// kvctl — talk to a raftkv cluster, run a local one, or benchmark one.
///
/// Exit codes: 0 success, 1 definite failure (e.g. key not found, compare failed), 2 usage
/// error, 3 outcome unknown (no answer in time; a write may or may not have been applied).
#[derive(Debug, Parser)]
#[command(name = "kvctl", version, arg_required_else_help = true)]
pub struct Cli {
    /// Client addresses (host:port) of any cluster members, comma-separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINTS.as_str()
    )]
    pub endpoints: Vec<String>,

    /// Budget of each call, redirects and retries included (e.g. 5s, 500ms).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print machine-readable JSON on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,

    /// Use TLS, trusting this CA certificate (PEM) for the nodes' client port certificates.
    #[arg(long, global = true, value_name = "FILE", env = "RAFTKV_CACERT")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) for nodes that require one (kvnode --client-ca).
    #[arg(long = "cert", id = "tls_cert", global = true, value_name = "FILE", env = "RAFTKV_CERT",
          requires_all = ["tls_key", "cacert"])]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    // Named apart from the `key` argument of put/get/... (clap ids share one namespace).
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        value_name = "FILE",
        env = "RAFTKV_KEY",
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set KEY to VALUE (read from stdin when VALUE is omitted).
    Put {
        /// The key.
        key: String,
        /// The value; stdin is read when it is omitted.
        value: Option<String>,
    },
    /// Print the value of KEY; exit 1 when it does not exist.
    Get {
        /// The key.
        key: String,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
        consistency: ReadConsistency,
    },
    /// Delete KEY (deleting a missing key is not an error).
    Delete {
        /// The key.
        key: String,
    },
    /// List keys in [START, END) in byte order, or those starting with --prefix.
    Scan {
        /// First key (inclusive); empty = from the first key.
        #[arg(default_value = "")]
        start: String,
        /// End key (exclusive); empty = to the last key.
        #[arg(default_value = "")]
        end: String,
        /// Only keys starting with this prefix (replaces START and END).
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// The most keys to print; 0 = all.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
        consistency: ReadConsistency,
    },
    /// Compare-and-swap: set KEY to VALUE only if its version is --expected-version (0 = absent);
    /// exit 1 when the compare fails.
    Cas {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// The version KEY must have; 0 means KEY must not exist.
        #[arg(long, visible_alias = "expect")]
        expected_version: u64,
    },
    /// Show the cluster: leader, term, indexes and a table of members.
    Status,
    /// Change or list the membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Move leadership to node ID (default 0: the most caught-up follower).
    TransferLeader {
        /// The target voter; 0 lets the leader choose.
        #[arg(default_value_t = 0)]
        id: u64,
    },
    /// Run a cluster of kvnode processes on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Drive concurrent clients and report throughput and latency percentiles.
    Bench(BenchArgs),
    /// Make a CA and node and client certificates for a local cluster (TLS on both ports).
    Certs(CertsArgs),
}

/// Flags of `kvctl certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where to write the files. A CA already there (ca.crt, ca.key) is reused, so more node
    /// certificates can be added to a cluster later.
    #[arg(long, default_value = "./raftkv-certs")]
    pub dir: PathBuf,
    /// A node certificate: ID=HOST[,HOST...] (the hosts are its DNS or IP SANs; the first
    /// should be the host of its --advertise-peer). Repeat for each node. Default: nodes
    /// 1..=3 for 127.0.0.1 and localhost.
    #[arg(long = "node", value_name = "ID=HOSTS", value_parser = parse_node_hosts)]
    pub nodes: Vec<(u64, Vec<String>)>,
    /// How long the certificates are valid, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
}

fn parse_node_hosts(s: &str) -> Result<(u64, Vec<String>), String> {
    let (id, hosts) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=HOST[,HOST...]"))?;
    let id: u64 = id
        .trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{id:?} is not a node id (1 or more)"))?;
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err(format!("node {id}: no host given"));
    }
    Ok((id, hosts))
}

/// `kvctl member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add node ID as a learner; the leader promotes it once it has caught up.
    Add {
        /// The new member's id.
        id: u64,
        /// Its peer address (host:port).
        peer_addr: String,
        /// Its client address (host:port).
        client_addr: String,
    },
    /// Remove node ID (a voter or a learner).
    Remove {
        /// The member's id.
        id: u64,
    },
    /// List the members (the table of `kvctl status`).
    List,
}

/// `kvctl local ...`
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start N kvnode processes on 127.0.0.1 (client ports 7001.., peer ports 7101..) and keep
    /// them running until Ctrl-C. Run it again with the same flags to resume on the same data.
    Up(LocalUpArgs),
}

/// Flags of `kvctl local up`.
#[derive(Debug, Args)]
pub struct LocalUpArgs {
    /// Where the nodes keep their data (`node-<id>/`) and logs (`node-<id>.log`).
    #[arg(long, default_value = "./raftkv-data")]
    pub data_dir: PathBuf,
    /// How many nodes to run.
    #[arg(long, default_value_t = local::DEFAULT_NODES,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(local::MAX_NODES)))]
    pub nodes: u16,
    /// The kvnode binary; by default the one next to kvctl, else the first on PATH.
    #[arg(long)]
    pub kvnode: Option<PathBuf>,
    /// How long the nodes get to stop after SIGTERM before they are killed.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// TLS on both ports, client certificates required: certificates are made in
    /// `<data-dir>/certs` (as `kvctl certs` makes them) on the first start and reused after.
    #[arg(long)]
    pub tls: bool,
}

/// Flags of `kvctl bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to benchmark: raftkv, or etcd (same workload; needs kvctl built with `--features etcd`).
    #[arg(long, value_enum, default_value_t = BenchTarget::Raftkv)]
    pub target: BenchTarget,
    /// Concurrent clients, each with one request in flight (a closed loop).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How many connections the clients share, round-robin (0 = one per client). For raftkv a
    /// connection is one client object: its channels and its exactly-once session.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub connections: u32,
    /// How long to run (ignored when --requests is given).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run exactly this many requests in total instead of for --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// How many distinct keys to spread the load over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Size of each written value in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of requests that are reads (0.0 = only puts, 1.0 = only gets).
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Consistency of the reads.
    #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
    pub consistency: ReadConsistency,
    /// Prefix of the benchmark's keys.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Which key each request takes: at random, or the next in order (each key once per pass
    /// over --keys; with --requests equal to --keys and --read-ratio 0 it loads every key once).
    #[arg(long, value_enum, default_value_t = KeyOrder::Random)]
    pub key_order: KeyOrder,
    /// Also draw the latency distribution (percentile spectrum) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Draw the latency distribution of an earlier run (its `--json` report) on the same plot;
    /// may be repeated.
    #[arg(long, value_name = "REPORT.json", requires = "plot")]
    pub plot_with: Vec<PathBuf>,
}

impl BenchArgs {
    /// How many connections the run opens: --connections, at most one per client (0 = one each).
    pub fn connection_count(&self) -> u32 {
        match self.connections {
            0 => self.clients,
            n => n.min(self.clients),
        }
    }
}

/// `--target` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchTarget {
    /// A raftkv cluster.
    Raftkv,
    /// An etcd v3 cluster: LINEARIZABLE reads are linearizable ranges, LEASE and STALE serializable.
    Etcd,
}

/// `--key-order` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyOrder {
    /// Uniformly random keys.
    Random,
    /// Keys in order from a shared counter, wrapping after --keys.
    Sequential,
}

/// `--consistency` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadConsistency {
    /// ReadIndex on the leader (the default).
    Linearizable,
    /// A leader lease (skips the heartbeat round).
    Lease,
    /// Any node's applied state; may be stale.
    Stale,
}

impl From<ReadConsistency> for Consistency {
    fn from(value: ReadConsistency) -> Self {
        match value {
            ReadConsistency::Linearizable => Consistency::Linearizable,
            ReadConsistency::Lease => Consistency::Lease,
            ReadConsistency::Stale => Consistency::Stale,
        }
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 500ms, 5s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("invalid duration {text:?}: must be positive and finite"))
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("invalid ratio {text:?}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("ratio must be between 0 and 1, got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn default_endpoints_are_the_local_cluster() {
        let cli = Cli::try_parse_from(["kvctl", "status"]).expect("valid command line");
        assert_eq!(cli.endpoints, local::default_endpoints());
        let cli = Cli::try_parse_from(["kvctl", "status", "--endpoints", "a:1,b:2"])
            .expect("valid command line");
        assert_eq!(cli.endpoints, ["a:1", "b:2"]);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
