//! `kv-operator`: the raftkv operator's command line.
//!
//! `kv-operator run` runs the operator (what the chart's Deployment starts): JSON logs on stderr
//! (filter in `RUST_LOG`), leader election, the controller, /metrics, /healthz and /readyz.
//! `kv-operator render -f examples/kvcluster.yaml` prints, as YAML, every object the first
//! reconcile of that KvCluster would apply. `kv-operator plan -f observed.json` replays the
//! planner on an observed state (the JSON the planner's tests and logs use) and prints its plan.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "The raftkv operator")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run {
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Manage the KvClusters of this namespace only (default: every namespace).
        #[arg(long)]
        namespace: Option<String>,
        /// The namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
        #[arg(long)]
        lease_namespace: Option<String>,
        /// This replica's identity in the Lease (default: $POD_NAME, else $HOSTNAME).
        #[arg(long)]
        identity: Option<String>,
        /// How long the Lease is held without renewal, in seconds.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
        lease_seconds: u64,
    },
    /// Print every object the first reconcile of a KvCluster manifest would apply, as YAML
    /// (no cluster needed).
    Render {
        /// The KvCluster manifest (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The namespace, unless the manifest names one.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Replay the planner on an observed state (JSON) and print the plan (JSON).
    Plan {
        /// The observed state (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

fn read_input(file: &PathBuf) -> Result<String, ExitCode> {
    let input = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    input.map_err(|e| {
        eprintln!("kv-operator: cannot read {}: {e}", file.display());
        ExitCode::from(2)
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn run(opts: raftkv_operator::run::RunOptions) -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kv-operator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(raftkv_operator::run::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Run {
            metrics_addr,
            namespace,
            lease_namespace,
            identity,
            lease_seconds,
        } => {
            let Some(identity) = identity
                .or_else(|| env("POD_NAME"))
                .or_else(|| env("HOSTNAME"))
            else {
                eprintln!("kv-operator: no identity: pass --identity or set POD_NAME");
                return ExitCode::from(2);
            };
            run(raftkv_operator::run::RunOptions {
                metrics_addr,
                namespace,
                lease_namespace: lease_namespace
                    .or_else(|| env("POD_NAMESPACE"))
                    .unwrap_or_else(|| "default".into()),
                identity,
                lease_seconds,
            })
        }
        Command::Render { file, namespace } => {
            let yaml = match read_input(&file) {
                Ok(y) => y,
                Err(code) => return code,
            };
            match raftkv_operator::render::render(&yaml, &namespace) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kv-operator: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plan { file } => {
            let json = match read_input(&file) {
                Ok(j) => j,
                Err(code) => return code,
            };
            let observed: raftkv_operator::planner::Observed = match serde_json::from_str(&json) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!(
                        "kv-operator: {}: not an observed state: {e}",
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            let plan = raftkv_operator::planner::plan(&observed);
            match serde_json::to_string_pretty(&plan) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kv-operator: cannot print the plan: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
