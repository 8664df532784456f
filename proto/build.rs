//! Generates the Rust code for `raftkv/v1/*.proto` into OUT_DIR with tonic-prost-build.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so no system protoc is needed; it is handed
//! to prost-build through its `Config` rather than the `PROTOC` environment variable because
//! setting environment variables is `unsafe` in edition 2024 and the workspace forbids unsafe code.

use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "raftkv/v1/kv.proto",
    "raftkv/v1/cluster.proto",
    "raftkv/v1/raft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        // Keys, values and log payloads become `bytes::Bytes`: cheap to clone and to slice out of
        // a received message, which the node hands on to the log and the state machine.
        .bytes(".")
        // Exposed as `FILE_DESCRIPTOR_SET` so a node can serve gRPC reflection (grpcurl).
        .file_descriptor_set_path(out_dir.join("raftkv_descriptor.bin"))
        .compile_with_config(config, &PROTOS, &["."])?;
    Ok(())
}
