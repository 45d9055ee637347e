//! The vaxtrace v1 API: protobuf messages, gRPC service stubs and the descriptor set for reflection.

/// Generated code of package `vaxtrace.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/vaxtrace.v1.rs"));
}

pub mod signing;

/// The encoded `FileDescriptorSet` of every vaxtrace proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vaxtrace_descriptor.bin"));
