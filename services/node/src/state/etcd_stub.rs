//! TEMPORARY: the etcd read interface the lead engineer is writing on main, stubbed so the etcd API compiles
//! until it lands. Deleted by the merge.

use super::StateMachine;
use crate::error::NodeError;
use reinado_proto::etcd::{etcdserverpb, mvccpb};

/// A revision outside the history window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// Compacted away.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The compaction revision.
        compact_revision: u64,
    },
    /// Not reached yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    Future {
        /// The current revision.
        current: u64,
    },
}

impl From<RevisionError> for NodeError {
    fn from(e: RevisionError) -> NodeError {
        NodeError::Compacted(e.to_string())
    }
}

impl StateMachine {
    /// Stub.
    pub fn revision(&self) -> u64 {
        unimplemented!()
    }
    /// Stub.
    pub fn compact_revision(&self) -> u64 {
        unimplemented!()
    }
    /// Stub.
    pub fn etcd_range(
        &self,
        _req: &etcdserverpb::RangeRequest,
        _max_bytes: usize,
    ) -> Result<etcdserverpb::RangeResponse, RevisionError> {
        unimplemented!()
    }
    /// Stub.
    pub fn etcd_events(
        &self,
        _start: u64,
        _key: &[u8],
        _range_end: &[u8],
        _max_events: usize,
    ) -> Result<(Vec<mvccpb::Event>, u64), RevisionError> {
        unimplemented!()
    }
}
