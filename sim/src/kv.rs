//! The simulated nodes' replicated state machine: a key-value map with a session table, so that a write
//! retried with the same (client, sequence) is applied once and answers its original result.

use crate::linearizability::{KvOp, KvOutput, Value, apply_op};
use std::collections::BTreeMap;

/// A client write as it travels through the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client that issued it.
    pub client: u64,
    /// The client's sequence number for it; retries reuse it.
    pub seq: u64,
    /// What to do.
    pub op: KvOp,
}

impl Command {
    /// Encodes the command as entry data (fixed-size little-endian fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(&self.client.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        let (tag, key, a, b) = match self.op {
            KvOp::Put { key, value } => (1u8, key, Some(value), None),
            KvOp::Get { key } => (2, key, None, None),
            KvOp::Delete { key } => (3, key, None, None),
            KvOp::Cas { key, expected, new } => (4, key, expected, new),
        };
        out.push(tag);
        out.extend_from_slice(&key.to_le_bytes());
        for v in [a, b] {
            out.push(u8::from(v.is_some()));
            out.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
        }
        out
    }

    /// Decodes [`Command::encode`]'s output; `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<Command> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
        };
        let opt = |at: usize| -> Option<Option<Value>> {
            let present = *data.get(at)? == 1;
            Some(present.then_some(word(at + 1)?))
        };
        let (client, seq, tag, key) = (word(0)?, word(8)?, *data.get(16)?, word(17)?);
        let (a, b) = (opt(25)?, opt(34)?);
        let op = match tag {
            1 => KvOp::Put { key, value: a? },
            2 => KvOp::Get { key },
            3 => KvOp::Delete { key },
            4 => KvOp::Cas {
                key,
                expected: a,
                new: b,
            },
            _ => return None,
        };
        Some(Command { client, seq, op })
    }
}

/// The state machine: values, and per client the last sequence applied with its output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// The current values.
    pub data: BTreeMap<u64, Value>,
    /// client → (last applied sequence, its output).
    pub sessions: BTreeMap<u64, (u64, KvOutput)>,
}

impl Kv {
    /// Applies a command once: a command whose sequence was already applied returns the recorded output.
    pub fn apply(&mut self, cmd: &Command) -> KvOutput {
        if let Some(&(seq, output)) = self.sessions.get(&cmd.client)
            && cmd.seq <= seq
        {
            return output;
        }
        let key = cmd.op.key();
        let (after, output) = apply_op(self.data.get(&key).copied(), &cmd.op);
        match after {
            Some(v) => self.data.insert(key, v),
            None => self.data.remove(&key),
        };
        self.sessions.insert(cmd.client, (cmd.seq, output));
        output
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<Value> {
        self.data.get(&key).copied()
    }

    /// Serializes the whole state (for snapshots).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (k, v) in &self.data {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (client, (seq, output)) in &self.sessions {
            let (tag, value) = match *output {
                KvOutput::Put => (0u8, 0),
                KvOutput::Get(v) => (1 + u8::from(v.is_some()), v.unwrap_or(0)),
                KvOutput::Delete { existed } => (3, u64::from(existed)),
                KvOutput::Cas { succeeded } => (4, u64::from(succeeded)),
            };
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.push(tag);
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// Restores a state written by [`Kv::encode`]. Panics on malformed data: snapshots are produced by the
    /// simulator itself, so a bad one is a bug in it.
    pub fn decode(data: &[u8]) -> Kv {
        let mut r = Reader(data);
        let mut kv = Kv::default();
        for _ in 0..r.word() {
            let (k, v) = (r.word(), r.word());
            kv.data.insert(k, v);
        }
        for _ in 0..r.word() {
            let (client, seq, tag, value) = (r.word(), r.word(), r.byte(), r.word());
            let output = match tag {
                0 => KvOutput::Put,
                1 => KvOutput::Get(None),
                2 => KvOutput::Get(Some(value)),
                3 => KvOutput::Delete {
                    existed: value == 1,
                },
                _ => KvOutput::Cas {
                    succeeded: value == 1,
                },
            };
            kv.sessions.insert(client, (seq, output));
        }
        kv
    }
}

/// Reads what [`Kv::encode`] wrote, front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self
            .0
            .split_first()
            .expect("a snapshot written by Kv::encode");
        self.0 = rest;
        b
    }

    fn word(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips() {
        for op in [
            KvOp::Put { key: 3, value: 9 },
            KvOp::Get { key: 1 },
            KvOp::Delete { key: 2 },
            KvOp::Cas {
                key: 4,
                expected: None,
                new: Some(5),
            },
            KvOp::Cas {
                key: 4,
                expected: Some(7),
                new: None,
            },
        ] {
            let cmd = Command {
                client: 11,
                seq: 12,
                op,
            };
            assert_eq!(Command::decode(&cmd.encode()), Some(cmd));
        }
        assert_eq!(Command::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn a_retried_write_applies_once_and_answers_its_first_result() {
        let mut kv = Kv::default();
        let cas = Command {
            client: 1,
            seq: 1,
            op: KvOp::Cas {
                key: 1,
                expected: None,
                new: Some(10),
            },
        };
        assert_eq!(kv.apply(&cas), KvOutput::Cas { succeeded: true });
        assert_eq!(kv.apply(&cas), KvOutput::Cas { succeeded: true });
        assert_eq!(kv.get(1), Some(10));
        let snapshot = Kv::decode(&kv.encode());
        assert_eq!(snapshot, kv);
    }
}
