//! Conversions between the generated protobuf types ([`crate::raft::v1`]) and the core's types
//! ([`reinado_raft`]), one file per type.
//!
//! Core to wire is a `From`: every core value has a wire form. Wire to core is a `TryFrom` failing with
//! [`ConvertError`]: a message off the network may lack a required field, carry an enum value this build does
//! not know, or name node 0, and none of that may panic or reach the core.
//!
//! In these files `raft::` is the core crate (`use reinado_raft as raft`) and `pb::` the generated code.

mod conf_change;
mod conf_state;
mod entry;
mod hard_state;
mod message;
mod message_body;
mod snapshot;

/// Why a protobuf message could not become a core value. `field` names the offending field as
/// `Message.field` (proto names), so the error can be logged or returned to the peer as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required message field or the `oneof` body is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// The absent field.
        field: &'static str,
    },
    /// An enum field holds a value this build does not know, or the UNSPECIFIED zero value.
    #[error("field `{field}` has invalid enum value {value}")]
    InvalidEnum {
        /// The enum field.
        field: &'static str,
        /// The raw value on the wire.
        value: i32,
    },
    /// A node id field is 0, which never names a node.
    #[error("field `{field}` is 0, which is not a node id")]
    ZeroNodeId {
        /// The node id field.
        field: &'static str,
    },
    /// A list of node ids is not sorted ascending without duplicates.
    #[error("field `{field}` is not sorted ascending without duplicates")]
    Unsorted {
        /// The list field.
        field: &'static str,
    },
}

/// Checks that a node id read off the wire names a node.
fn node_id(id: u64, field: &'static str) -> Result<reinado_raft::NodeId, ConvertError> {
    if id == 0 {
        return Err(ConvertError::ZeroNodeId { field });
    }
    Ok(id)
}

/// Unwraps a required message field.
fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ConvertError> {
    value.ok_or(ConvertError::MissingField { field })
}

#[cfg(test)]
mod tests;
