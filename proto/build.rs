//! Compiles `vaxtrace/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed.

use std::{env, fs, path::PathBuf};

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("vaxtrace/v1");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=vaxtrace/v1");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Reflection serves this descriptor set, so grpcurl works without the .proto files.
    fs::write(out.join("vaxtrace_descriptor.bin"), fds.encode_to_vec())?;
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
