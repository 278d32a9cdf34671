//! Generated bindings for `signer.v1`, the API between callers (the gateway, operators' tools) and
//! signerd. The schema lives in `proto/signer/v1/signer.proto`; this crate only compiles it.

#![allow(
    missing_docs,
    reason = "generated code; the .proto file carries the documentation"
)]
#![allow(clippy::unwrap_used, reason = "generated code")]

/// `signer.v1`: keys and signatures.
pub mod v1 {
    tonic::include_proto!("signer.v1");
}

/// The encoded `FileDescriptorSet` of `signer.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/signer_descriptor.bin"));
