//! [`reinado_raft::SnapshotMeta`], the snapshot chunk body of a message ([`pb::Snapshot`]) and the
//! [`pb::SnapshotChunk`] that carries one on an `InstallSnapshot` stream.

use reinado_raft as raft;

use super::{ConvertError, node_id, required};
use crate::raft::v1 as pb;

impl From<raft::SnapshotMeta> for pb::SnapshotMeta {
    fn from(meta: raft::SnapshotMeta) -> Self {
        pb::SnapshotMeta {
            index: meta.index,
            term: meta.term,
            conf_state: Some(meta.conf_state.into()),
        }
    }
}

impl TryFrom<pb::SnapshotMeta> for raft::SnapshotMeta {
    type Error = ConvertError;

    fn try_from(meta: pb::SnapshotMeta) -> Result<Self, ConvertError> {
        let conf_state = required(meta.conf_state, "SnapshotMeta.conf_state")?;
        Ok(raft::SnapshotMeta {
            index: meta.index,
            term: meta.term,
            conf_state: conf_state.try_into()?,
        })
    }
}

/// The wire form of a [`raft::MessageBody::Snapshot`]'s fields.
pub(super) fn snapshot_body(
    meta: raft::SnapshotMeta,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> pb::Snapshot {
    pb::Snapshot {
        meta: Some(meta.into()),
        offset,
        data,
        done,
    }
}

/// Reads a snapshot chunk body back into a [`raft::MessageBody::Snapshot`].
pub(super) fn snapshot_from_body(body: pb::Snapshot) -> Result<raft::MessageBody, ConvertError> {
    let meta = required(body.meta, "Snapshot.meta")?;
    Ok(raft::MessageBody::Snapshot {
        meta: meta.try_into()?,
        offset: body.offset,
        data: body.data,
        done: body.done,
    })
}

/// Only a [`raft::MessageBody::Snapshot`] message becomes a chunk. Any other message is handed back unchanged
/// as the error, so the caller can send it on the `Send` stream instead.
impl TryFrom<raft::Message> for pb::SnapshotChunk {
    type Error = raft::Message;

    fn try_from(message: raft::Message) -> Result<Self, raft::Message> {
        let raft::MessageBody::Snapshot {
            meta,
            offset,
            data,
            done,
        } = message.body
        else {
            return Err(message);
        };
        Ok(pb::SnapshotChunk {
            from: message.from,
            to: message.to,
            term: message.term,
            snapshot: Some(snapshot_body(meta, offset, data, done)),
        })
    }
}

impl TryFrom<pb::SnapshotChunk> for raft::Message {
    type Error = ConvertError;

    fn try_from(chunk: pb::SnapshotChunk) -> Result<Self, ConvertError> {
        let body = required(chunk.snapshot, "SnapshotChunk.snapshot")?;
        Ok(raft::Message {
            from: node_id(chunk.from, "SnapshotChunk.from")?,
            to: node_id(chunk.to, "SnapshotChunk.to")?,
            term: chunk.term,
            body: snapshot_from_body(body)?,
        })
    }
}
