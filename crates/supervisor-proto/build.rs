//! Compiles every `.proto` under `../../proto` with `protox` (pure Rust, no system
//! `protoc`), generates prost messages plus tonic clients and servers, and writes the
//! encoded `FileDescriptorSet` to `OUT_DIR` for gRPC reflection.

use std::{
    env, fs, io,
    path::{Path, PathBuf},
};

use prost::Message as _;

/// Name of the encoded descriptor set inside `OUT_DIR` (read by `lib.rs`).
const DESCRIPTOR_FILE: &str = "supervisor_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut protos = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut protos)?;
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files under {}", proto_root.display()).into());
    }
    for proto in &protos {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }

    // Imports (google/protobuf/*.proto) are kept so reflection can resolve them.
    let fds = protox::compile(&protos, [&proto_root])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

/// Collects the paths, relative to `root`, of every `.proto` file under `dir`.
fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            let relative = path
                .strip_prefix(root)
                .map_err(|e| io::Error::other(e.to_string()))?;
            out.push(relative.to_path_buf());
        }
    }
    Ok(())
}
