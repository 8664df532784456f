//! Helpers of the tests that run real `kvnode` processes (planner_processes.rs,
//! tls_processes.rs): the binary, and free ports.
//!
//! The `kvnode` binary is not a binary of this package (no `CARGO_BIN_EXE_kvnode`): it is taken
//! from the target directory of the test executable and built there with `$CARGO build -p
//! raftkv-node --bin kvnode` if missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `kvnode` of this worktree's target directory, built once if it is missing.
pub fn kvnode() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // target/debug/deps/planner_processes-<hash> -> target/debug/kvnode
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in <target>/<profile>/deps");
        let path = dir.join(format!("kvnode{}", std::env::consts::EXE_SUFFIX));
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            eprintln!(
                "{} is missing: running `{cargo} build -p raftkv-node --bin kvnode`",
                path.display()
            );
            let status = Command::new(&cargo)
                .args(["build", "-p", "raftkv-node", "--bin", "kvnode"])
                .status()
                .unwrap_or_else(|e| panic!("could not run `{cargo} build`: {e}"));
            assert!(
                status.success() && path.exists(),
                "`{cargo} build -p raftkv-node --bin kvnode` did not produce {} ({status}); \
                 build it by hand and run the test again",
                path.display()
            );
        }
        path
    })
}

/// Free ports on 127.0.0.1, as the kernel hands them out. Another process could take one before
/// `kvnode` binds it; a node that fails to start says so in its log, which the panic shows.
pub fn reserve_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}
