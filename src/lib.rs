//! # reinado-proto: Reinado's wire protocol
//!
//! The protobuf messages and gRPC services Reinado's processes speak, generated at build time from `proto/`
//! by a pure-Rust protobuf compiler (no system `protoc`), and the conversions between those messages and the
//! consensus core's types.
//!
//! ## Layout
//!
//! - `proto/reinado/raft/v1/raft.proto`: the peer protocol (service `RaftPeer`), Raft messages between nodes.
//! - `proto/reinado/v1/`: the services (`api.proto`: `Kv`, `Cluster`, `Fault`, `Pipeline`), their
//!   messages (`kv.proto`, `cluster.proto`) and the log's contents (`log.proto`), generated into [`v1`].
//! - `build.rs`: compiles every `proto/**/*.proto` with protox and generates prost messages plus tonic
//!   clients and servers with tonic-prost-build, into `OUT_DIR`.
//! - [`raft::v1`]: the generated code for package `reinado.raft.v1`, included here. The client is
//!   [`raft::v1::raft_peer_client::RaftPeerClient`]; the server trait and wrapper are
//!   [`raft::v1::raft_peer_server::RaftPeer`] and [`raft::v1::raft_peer_server::RaftPeerServer`].
//! - [`convert`]: every conversion between generated types and `reinado_raft` types, one file per type.
//!   Core to wire is infallible (`From`); wire to core is checked (`TryFrom`, failing with [`ConvertError`]),
//!   because bytes from the network may say anything.

pub mod convert;

pub use convert::ConvertError;

/// Version 1 of the client and cluster API: package `reinado.v1`, generated from `proto/reinado/v1/*.proto`
/// (`api.proto`: the services; `kv.proto` and `cluster.proto`: their messages; `log.proto`: what the
/// replicated log and snapshots hold).
pub mod v1 {
    // Generated code: its style is prost's and tonic's, not ours.
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("reinado.v1");
}

/// Code generated from `proto/reinado/raft/` (the peer protocol).
pub mod raft {
    /// Version 1 of the peer protocol: package `reinado.raft.v1`, generated from
    /// `proto/reinado/raft/v1/raft.proto`.
    pub mod v1 {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("reinado.raft.v1");
    }
}
