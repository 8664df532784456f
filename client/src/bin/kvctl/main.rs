//! `kvctl`: the command-line client of raftkv.
//!
//! - `cli`: the flags and subcommands (clap derive).
//! - `commands`: put, get, delete, scan, cas, status, member, transfer-leader.
//! - `output`: text and `--json` rendering, the status table.
//! - `local`: `kvctl local up`, a cluster of kvnode child processes on 127.0.0.1.
//! - `bench`: `kvctl bench`, concurrent load with HdrHistogram latency percentiles.
//!
//! Exit codes (DESIGN §5): 0 success, 1 definite failure, 2 usage error, 3 outcome unknown.

mod bench;
mod cli;
mod commands;
mod local;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LocalCommand};
use crate::output::Output;

/// How `kvctl` exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success = 0,
    /// 1: a definite failure: nothing changed, or the answer is "no" (key not found, compare
    /// failed, server refused the request).
    Failure = 1,
    /// 2: the command line is wrong (clap uses the same code for its own errors).
    Usage = 2,
    /// 3: no answer in time: a write may or may not have been applied.
    Unknown = 3,
}

/// Why a command failed: a client error (mapped to an exit code by kind) or anything else.
#[derive(Debug)]
pub enum Failure {
    /// An error from the client library.
    Client(raftkv_client::Error),
    /// A local problem (files, child processes, stdin); exits with 1.
    Other(String),
}

impl From<raftkv_client::Error> for Failure {
    fn from(error: raftkv_client::Error) -> Self {
        Failure::Client(error)
    }
}

impl Failure {
    fn exit(&self) -> Exit {
        use raftkv_client::Error;
        match self {
            Failure::Client(e) if e.is_outcome_unknown() => Exit::Unknown,
            Failure::Client(Error::NoEndpoints | Error::InvalidEndpoint { .. }) => Exit::Usage,
            Failure::Client(_) | Failure::Other(_) => Exit::Failure,
        }
    }

    fn kind(&self) -> &'static str {
        match self.exit() {
            Exit::Unknown => "outcome_unknown",
            Exit::Usage => "usage",
            _ => "failure",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => e.fmt(f),
            Failure::Other(message) => f.write_str(message),
        }
    }
}

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
    let result = match cli.command {
        Command::Local(LocalCommand::Up(args)) => local::up(args, &out).await,
        Command::Bench(args) => bench::run(&cli.endpoints, cli.timeout, args, &out).await,
        command => commands::run(&cli.endpoints, cli.timeout, command, &out).await,
    };
    match result {
        Ok(exit) => exit,
        Err(failure) => {
            out.error(failure.kind(), &failure.to_string());
            failure.exit()
        }
    }
}
