//! Compiles `proto/**/*.proto` into Rust without a system `protoc`.
//!
//! protox (a pure-Rust protobuf compiler) parses the files into a `FileDescriptorSet`; tonic-prost-build turns
//! that set into prost messages and tonic clients/servers, written to `OUT_DIR` as one file per package
//! (`reinado.raft.v1.rs`), which `src/lib.rs` includes with `tonic::include_proto!`.

use std::path::{Path, PathBuf};

/// Where the `.proto` files live; also the import root, so imports read `reinado/raft/v1/raft.proto`.
const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Rerun when anything under proto/ changes (a directory path makes Cargo scan it recursively).
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let mut files = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Appends every `.proto` file under `dir` to `out`, depth first.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
