//! [`reinado_raft::Message`] and batches of them ([`pb::MessageBatch`]).

use reinado_raft as raft;

use super::{ConvertError, message_body, node_id, required};
use crate::raft::v1 as pb;

impl From<raft::Message> for pb::Message {
    fn from(message: raft::Message) -> Self {
        pb::Message {
            from: message.from,
            to: message.to,
            term: message.term,
            body: Some(message.body.into()),
        }
    }
}

impl TryFrom<pb::Message> for raft::Message {
    type Error = ConvertError;

    fn try_from(message: pb::Message) -> Result<Self, ConvertError> {
        let body = required(message.body, "Message.body")?;
        Ok(raft::Message {
            from: node_id(message.from, "Message.from")?,
            to: node_id(message.to, "Message.to")?,
            term: message.term,
            body: message_body::from_body(body)?,
        })
    }
}

impl From<Vec<raft::Message>> for pb::MessageBatch {
    fn from(messages: Vec<raft::Message>) -> Self {
        messages.into_iter().collect()
    }
}

impl FromIterator<raft::Message> for pb::MessageBatch {
    fn from_iter<I: IntoIterator<Item = raft::Message>>(messages: I) -> Self {
        pb::MessageBatch {
            messages: messages.into_iter().map(pb::Message::from).collect(),
        }
    }
}

/// Converts every message of a batch, in order. One malformed message rejects the whole batch: a peer that
/// sends one is broken, and delivering part of a batch would only hide it.
impl TryFrom<pb::MessageBatch> for Vec<raft::Message> {
    type Error = ConvertError;

    fn try_from(batch: pb::MessageBatch) -> Result<Self, ConvertError> {
        batch
            .messages
            .into_iter()
            .map(raft::Message::try_from)
            .collect()
    }
}
