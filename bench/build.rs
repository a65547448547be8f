//! Generates the socket-bridge gRPC client from ../proto with a vendored protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC right after.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().build_server(false).compile_protos(
        &["../proto/socketbridge/v1/bridge.proto"],
        &["../proto", protoc_bin_vendored::include_path()?.to_str().ok_or("include path")?],
    )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
