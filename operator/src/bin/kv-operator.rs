//! `kv-operator`: the raftkv operator's command line.
//!
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

fn main() -> ExitCode {
    match Args::parse().command {
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
