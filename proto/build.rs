//! Compiles the contract with protox (pure Rust, so no `protoc` is needed on the machine) and
//! generates prost messages plus tonic clients and servers from the resulting descriptors.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "sportello/identity/v1/identity.proto",
    "sportello/identity/v1/conversion.proto",
    "sportello/claims/v1/claims.proto",
    "sportello/notify/v1/notify.proto",
    "sportello/privacy/v1/privacy.proto",
];

/// Not generated into Rust (tonic-types has them) but served by reflection, so that clients such as
/// grpcurl can render the rich error details our statuses carry. Vendored from googleapis.
const SERVED_ONLY: &[&str] = &["google/rpc/status.proto", "google/rpc/error_details.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let served = protox::compile(PROTOS.iter().chain(SERVED_ONLY), ["."])?;
    std::fs::write(out_dir.join("sportello_descriptor.bin"), served.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(protox::compile(PROTOS, ["."])?)?;
    println!("cargo:rerun-if-changed=sportello");
    println!("cargo:rerun-if-changed=google");
    Ok(())
}
