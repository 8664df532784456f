//! Prints the `KvCluster` CustomResourceDefinition as YAML.
//!
//! `make crd` writes it to `charts/raftkv/crds/kvclusters.raftkv.dev.yaml`; a test fails when the
//! committed file differs from this output.

use std::process::ExitCode;

fn main() -> ExitCode {
    match raftkv_operator::crd::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}
