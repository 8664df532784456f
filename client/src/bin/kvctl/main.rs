//! `kvctl`: the command-line client of raftkv.
//!
//! - `cli`: the flags and subcommands (clap derive).
//! - `commands`: put, get, delete, scan, cas, status, member, transfer-leader.
//! - `output`: text and `--json` rendering, the status table.
//! - `local`: `kvctl local up`, a cluster of kvnode child processes on 127.0.0.1.
//! - `bench`: `kvctl bench`, concurrent closed-loop load against raftkv or etcd.
//!   - `bench_target`: the per-request call of each target (etcd behind the `etcd` feature).
//!   - `bench_stats`: counters, HdrHistogram tallies, the progress bar, the text/JSON report.
//!   - `bench_plot`: `--plot FILE.svg`, the latency percentile spectrum.
//! - `certs`: `kvctl certs`, a CA and certificates for a local cluster with TLS.
//! - `exit`: the exit codes and the failures that map to them.
//!
//! Exit codes (DESIGN §5): 0 success, 1 definite failure, 2 usage error, 3 outcome unknown.

mod bench;
mod bench_plot;
mod bench_stats;
mod bench_target;
mod certs;
mod cli;
mod commands;
mod exit;
mod local;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LocalCommand};
use crate::exit::Exit;
use crate::output::Output;

fn main() -> ExitCode {
    // `try_parse` + `exit` keeps clap's own behaviour: help and version exit 0, usage errors 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvctl: cannot start the async runtime: {error}");
            return ExitCode::from(Exit::Failure as u8);
        }
    };
    let exit = runtime.block_on(run(cli));
    ExitCode::from(exit as u8)
}

async fn run(cli: Cli) -> Exit {
    let out = Output::new(cli.json);
    let result = match tls(&cli) {
        Err(failure) => Err(failure),
        Ok(tls) => match cli.command {
            Command::Local(LocalCommand::Up(args)) => local::up(args, &out).await,
            Command::Certs(args) => certs::run(args, &out),
            Command::Bench(args) => {
                bench::run(&cli.endpoints, cli.timeout, tls.as_ref(), args, &out).await
            }
            command => {
                commands::run(&cli.endpoints, cli.timeout, tls.as_ref(), command, &out).await
            }
        },
    };
    match result {
        Ok(exit) => exit,
        Err(failure) => {
            out.error(failure.kind(), &failure.to_string());
            failure.exit()
        }
    }
}

/// The TLS configuration the global flags ask for: `None` without `--cacert`.
fn tls(cli: &Cli) -> Result<Option<raftkv_client::tls::TlsConfig>, exit::Failure> {
    let Some(ca) = &cli.cacert else {
        return Ok(None);
    };
    let identity = cli.cert.as_deref().zip(cli.key.as_deref());
    raftkv_client::tls::TlsConfig::from_files(ca, identity)
        .map(Some)
        .map_err(|e| exit::Failure::Usage(format!("TLS: {e}")))
}
