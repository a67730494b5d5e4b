//! Generates the `trellis.mesh.v1` messages and service from `proto/` with protox
//! (a pure-Rust protobuf compiler), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/trellis/mesh/v1/mesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../../proto"])?;
    // `bytes` fields as `bytes::Bytes`: one encoded config is shared, not copied, per push.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
