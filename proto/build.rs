//! Compiles the contract with protox (pure Rust, so no `protoc` is needed on the machine) and
//! generates prost messages plus tonic clients and servers from the resulting descriptors.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "sportello/identity/v1/identity.proto",
    "sportello/claims/v1/claims.proto",
    "sportello/notify/v1/notify.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(out_dir.join("sportello_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=sportello");
    Ok(())
}
