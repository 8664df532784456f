//! `kv-operator`: the raftkv operator's command line.
//!
//! `kv-operator render -f examples/kvcluster.yaml` prints, as YAML, every object the first
//! reconcile of that KvCluster would apply.

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
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Render { file, namespace } => {
            let input = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            };
            let yaml = match input {
                Ok(y) => y,
                Err(e) => {
                    eprintln!("kv-operator: cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
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
    }
}
