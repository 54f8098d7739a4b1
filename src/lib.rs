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
//! - `proto/etcd/`: etcd 3.5's v3 API, written for Reinado from etcd's published reference with etcd's
//!   packages, names and field numbers (so the bytes and the gRPC paths match etcd's), generated into
//!   [`etcd`]: `api/mvccpb/kv.proto`, `api/authpb/auth.proto`, `api/etcdserverpb/rpc.proto` (services `KV`,
//!   `Watch`, `Lease`, `Cluster`, `Maintenance`, `Auth`), `server/etcdserver/api/v3lock/v3lockpb/v3lock.proto`
//!   (`Lock`) and `server/etcdserver/api/v3election/v3electionpb/v3election.proto` (`Election`).
//! - `build.rs`: compiles every `proto/**/*.proto` with protox and generates prost messages plus tonic
//!   clients and servers with tonic-prost-build, into `OUT_DIR`.
//! - [`raft::v1`]: the generated code for package `reinado.raft.v1`, included here. The client is
//!   [`raft::v1::raft_peer_client::RaftPeerClient`]; the server trait and wrapper are
//!   [`raft::v1::raft_peer_server::RaftPeer`] and [`raft::v1::raft_peer_server::RaftPeerServer`].
//! - [`no_auth`]: etcd's `Auth` service as Reinado answers it before authentication exists (UNIMPLEMENTED,
//!   saying why).
//! - [`convert`]: every conversion between generated types and `reinado_raft` types, one file per type.
//!   Core to wire is infallible (`From`); wire to core is checked (`TryFrom`, failing with [`ConvertError`]),
//!   because bytes from the network may say anything.

pub mod convert;
pub mod no_auth;

pub use convert::ConvertError;

/// Version 1 of the client and cluster API: package `reinado.v1`, generated from `proto/reinado/v1/*.proto`
/// (`api.proto`: the services; `kv.proto` and `cluster.proto`: their messages; `log.proto`: what the
/// replicated log and snapshots hold).
pub use reinado::v1;

/// Package `reinado.v1` at the depth prost's paths expect: the log's `Command` names
/// `etcdserverpb.TxnRequest`, which prost reaches as `super::super::super::etcdserverpb` from
/// `reinado::v1::command` (the crate root's `etcdserverpb`, re-exported below).
pub mod reinado {
    /// See [`crate::v1`].
    pub mod v1 {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("reinado.v1");
    }
}

use etcd::etcdserverpb;

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

/// etcd's v3 API as etcd 3.5 puts it on the wire, generated from `proto/etcd/`.
///
/// One module per protobuf package, side by side, because prost refers to another package's types through
/// `super::` (`super::mvccpb::KeyValue` in [`etcd::etcdserverpb`], `super::etcdserverpb::ResponseHeader` in
/// [`etcd::v3lockpb`]). The gRPC service names are etcd's (`etcdserverpb.KV`, `v3lockpb.Lock`, ...), so
/// these clients talk to a real etcd, and these servers answer etcdctl.
pub mod etcd {
    /// Keys and events (package `mvccpb`): `KeyValue`, `Event`.
    pub mod mvccpb {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("mvccpb");
    }

    /// Authentication records (package `authpb`): `User`, `Permission`, `Role`.
    pub mod authpb {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("authpb");
    }

    /// The main v3 API (package `etcdserverpb`): services `KV`, `Watch`, `Lease`, `Cluster`, `Maintenance`
    /// and `Auth`, with their messages.
    pub mod etcdserverpb {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("etcdserverpb");
    }

    /// Locks (package `v3lockpb`): service `Lock`.
    pub mod v3lockpb {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("v3lockpb");
    }

    /// Elections (package `v3electionpb`): service `Election`.
    pub mod v3electionpb {
        // Generated code: its style is prost's and tonic's, not ours.
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("v3electionpb");
    }
}
