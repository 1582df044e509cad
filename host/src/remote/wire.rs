//! What crosses the network between a remote pool's client and its agents: a task, its
//! result, a dead letter. Each message is `MAGIC`, the wire version (`WIRE`, two bytes,
//! little-endian) and a postcard body; anything else on our subjects is refused by
//! [`decode`] with an error naming what it is, never a panic. Postcard encodes by field
//! order: bump [`WIRE`] whenever a type here (or one it holds: limits, values, errors,
//! commands) changes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::limits::Limits;
use crate::protocol::TaskStats;
use crate::value::{Input, Output};

/// The first bytes of every message of ours.
pub const MAGIC: &[u8; 4] = b"wpn\x01";

/// The wire version of the messages below.
pub const WIRE: u16 = 1;

/// What a task is, apart from its module and export: the serde task description.
///
/// (The lead's public `TaskSpec` will replace this struct; it is the only place the
/// description is spelled out.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub limits: Limits,
    /// Attempts after the first when the task's worker (or agent) is lost: the task is
    /// delivered at most `max_retries + 1` times.
    pub max_retries: u32,
    pub env: Vec<(String, String)>,
}

/// A payload carried in the message, or (when it would make the message larger than the
/// server's payload limit) stored in the object store under `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blob {
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    Stored {
        name: String,
        len: u64,
        /// BLAKE3 of the stored bytes, checked on the way back.
        hash: [u8; 32],
    },
}

/// One task, published on the task subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMsg {
    /// The client that waits for the result (its results subject's last token).
    pub client: String,
    /// The client's id of the task; results carry it back.
    pub task: u64,
    /// The module's full BLAKE3 hash: its name in the module store.
    pub module: [u8; 32],
    pub export: String,
    pub spec: TaskSpec,
    /// The postcard form of the task's [`Input`].
    pub input: Blob,
}

/// One result, published on the client's results subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMsg {
    pub task: u64,
    /// The agent that ran it (its `--name`).
    pub agent: String,
    /// Which delivery of the task this is (1 for the first).
    pub delivery: u32,
    /// The postcard form of the outcome, `Result<Output, TaskError>`.
    pub outcome: Blob,
    pub stats: TaskStats,
}

/// A task given up after its last delivery, with its input, on the dead-letter subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub deliveries: u32,
    pub reason: String,
    pub task: TaskMsg,
}

/// A message that is not one of ours, or not of this version.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a wasmpool message ({len} bytes starting {start:02x?})")]
    Foreign { len: usize, start: Vec<u8> },
    #[error("a wasmpool message of wire version {got}; this build speaks version {WIRE}")]
    Version { got: u16 },
    #[error("a wasmpool message that does not decode: {0}")]
    Body(postcard::Error),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&WIRE.to_le_bytes());
    // Serializing our own types into a Vec cannot fail (no maps with non-string keys, no
    // unsupported types); were it to, an empty body is refused by the reader.
    out.extend_from_slice(&postcard::to_allocvec(msg).unwrap_or_default());
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(WireError::Foreign {
            len: bytes.len(),
            start: bytes.iter().take(8).copied().collect(),
        });
    };
    let Some((version, body)) = rest.split_first_chunk::<2>() else {
        return Err(WireError::Version { got: 0 });
    };
    let got = u16::from_le_bytes(*version);
    if got != WIRE {
        return Err(WireError::Version { got });
    }
    postcard::from_bytes(body).map_err(WireError::Body)
}

/// The postcard body of an input or outcome (what a [`Blob`] holds).
pub fn body<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

pub fn from_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(bytes).map_err(WireError::Body)
}

/// A task's outcome as it travels.
pub type Outcome = Result<Output, TaskError>;

/// A task's input as it travels.
pub type TaskInput = Input;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn task() -> TaskMsg {
        TaskMsg {
            client: "c1".into(),
            task: 7,
            module: [3; 32],
            export: "square".into(),
            spec: TaskSpec {
                limits: Limits::default(),
                max_retries: 2,
                env: vec![("K".into(), "V".into())],
            },
            input: Blob::Inline(body(&Input::Numbers(vec![Value::I64(4)]))),
        }
    }

    #[test]
    fn a_task_round_trips() {
        let t = task();
        assert_eq!(decode::<TaskMsg>(&encode(&t)).unwrap(), t);
    }

    #[test]
    fn foreign_bytes_and_other_versions_are_refused_not_panicked_on() {
        assert!(matches!(
            decode::<TaskMsg>(b"hello"),
            Err(WireError::Foreign { len: 5, .. })
        ));
        assert!(matches!(
            decode::<TaskMsg>(b""),
            Err(WireError::Foreign { .. })
        ));
        assert!(matches!(
            decode::<TaskMsg>(b"wpn\x01"),
            Err(WireError::Version { got: 0 })
        ));
        let mut other = encode(&task());
        other[4] = 9;
        assert!(matches!(
            decode::<TaskMsg>(&other),
            Err(WireError::Version { got: 9 })
        ));
        let full = encode(&task());
        for cut in 6..full.len() {
            assert!(decode::<TaskMsg>(&full[..cut]).is_err(), "cut at {cut}");
        }
        // A result is not a task, and garbage after the header does not decode.
        let mut garbage = MAGIC.to_vec();
        garbage.extend_from_slice(&WIRE.to_le_bytes());
        garbage.extend_from_slice(&[0xff; 40]);
        assert!(decode::<TaskMsg>(&garbage).is_err());
    }
}
