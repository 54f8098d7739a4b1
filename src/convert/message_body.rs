//! [`reinado_raft::MessageBody`], one variant per arm of the `Message.body` oneof ([`pb::message::Body`]).

use reinado_raft as raft;

use super::ConvertError;
use super::snapshot::{snapshot_body, snapshot_from_body};
use crate::raft::v1 as pb;
use pb::message::Body;

impl From<raft::MessageBody> for Body {
    fn from(body: raft::MessageBody) -> Self {
        use raft::MessageBody as M;
        match body {
            M::Vote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            } => Body::Vote(pb::Vote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            }),
            M::VoteResponse {
                pre_vote,
                reject,
                committed,
                committed_term,
            } => Body::VoteResponse(pb::VoteResponse {
                pre_vote,
                reject,
                committed,
                committed_term,
            }),
            M::Append {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => Body::Append(pb::Append {
                prev_log_index,
                prev_log_term,
                entries: entries.into_iter().map(pb::Entry::from).collect(),
                commit,
            }),
            M::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => Body::AppendResponse(pb::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            }),
            M::Heartbeat { commit, read_round } => {
                Body::Heartbeat(pb::Heartbeat { commit, read_round })
            }
            M::HeartbeatResponse { read_round } => {
                Body::HeartbeatResponse(pb::HeartbeatResponse { read_round })
            }
            M::Snapshot {
                meta,
                offset,
                data,
                done,
            } => Body::Snapshot(snapshot_body(meta, offset, data, done)),
            M::SnapshotResponse {
                index,
                next_offset,
                reject,
                done,
            } => Body::SnapshotResponse(pb::SnapshotResponse {
                index,
                next_offset,
                reject,
                done,
            }),
            M::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
            M::ReadIndex { ctx } => Body::ReadIndex(pb::ReadIndex { ctx }),
            M::ReadIndexResponse { ctx, index } => {
                Body::ReadIndexResponse(pb::ReadIndexResponse { ctx, index })
            }
        }
    }
}

/// Reads the `Message.body` oneof. Only nested fields can fail (entries, snapshot metadata).
pub(super) fn from_body(body: Body) -> Result<raft::MessageBody, ConvertError> {
    use raft::MessageBody as M;
    Ok(match body {
        Body::Vote(v) => M::Vote {
            pre_vote: v.pre_vote,
            last_log_index: v.last_log_index,
            last_log_term: v.last_log_term,
            transfer: v.transfer,
        },
        Body::VoteResponse(v) => M::VoteResponse {
            pre_vote: v.pre_vote,
            reject: v.reject,
            committed: v.committed,
            committed_term: v.committed_term,
        },
        Body::Append(a) => M::Append {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: a
                .entries
                .into_iter()
                .map(raft::Entry::try_from)
                .collect::<Result<_, _>>()?,
            commit: a.commit,
        },
        Body::AppendResponse(a) => M::AppendResponse {
            reject: a.reject,
            index: a.index,
            hint_index: a.hint_index,
            hint_term: a.hint_term,
        },
        Body::Heartbeat(h) => M::Heartbeat {
            commit: h.commit,
            read_round: h.read_round,
        },
        Body::HeartbeatResponse(h) => M::HeartbeatResponse {
            read_round: h.read_round,
        },
        Body::Snapshot(s) => snapshot_from_body(s)?,
        Body::SnapshotResponse(s) => M::SnapshotResponse {
            index: s.index,
            next_offset: s.next_offset,
            reject: s.reject,
            done: s.done,
        },
        Body::TimeoutNow(pb::TimeoutNow {}) => M::TimeoutNow,
        Body::ReadIndex(r) => M::ReadIndex { ctx: r.ctx },
        Body::ReadIndexResponse(r) => M::ReadIndexResponse {
            ctx: r.ctx,
            index: r.index,
        },
    })
}
