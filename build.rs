//! Compiles `proto/` with a vendored protoc (no system protoc needed) and writes the
//! descriptor set that the reflection service serves.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC right after.
    unsafe { env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("socketbridge_descriptor.bin"))
        // prost's codec with field-naming INVALID_ARGUMENT for strings that are not UTF-8.
        .codec_path("crate::grpc::codec::ProtoCodec")
        .compile_protos(
            &["proto/socketbridge/v1/bridge.proto"],
            &["proto", protoc_bin_vendored::include_path()?.to_str().ok_or("include path")?],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
