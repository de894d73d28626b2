//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/herald/v1/common.proto",
        "proto/herald/v1/ingest.proto",
        "proto/herald/v1/query.proto",
        "proto/herald/v1/admin.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    // The encoded descriptor set feeds gRPC server reflection.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("herald_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // A project document is decoded as a view into the received message,
    // not copied out of it: at tens of megabytes, every copy shows.
    tonic_prost_build::configure()
        .bytes(".herald.v1.ProjectEventRequest.project_xml")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
