//! What crosses the network between a remote pool's client and its agents: a task, its
//! result, a dead letter. Each message is `MAGIC`, the wire version (`WIRE`, two bytes,
//! little-endian) and a postcard body; anything else on our subjects is refused by
//! [`decode`] with an error naming what it is, never a panic. Postcard encodes by field
//! order: bump [`WIRE`] whenever a type here (or one it holds: values, errors, outputs)
//! changes. A task's sandbox is the public [`TaskSpec`] in its JSON form, checked when it
//! is read.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::{CommandInput, CommandSpec, InputFile, InputSource};
use crate::error::TaskError;
use crate::limits::Limits;
use crate::protocol::TaskStats;
use crate::spec::{SpecError, TaskSpec};
use crate::value::{Input, Output};

/// The first bytes of every message of ours.
pub const MAGIC: &[u8; 4] = b"wpn\x01";

/// The wire version of the messages below. 2: a task's sandbox is the public [`TaskSpec`]
/// (in [`TaskBody`]) instead of a struct of its own. 3: a [`Input::NumberBatch`] may ask
/// for each call's stats, and its answer carries them.
pub const WIRE: u16 = 3;

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
    /// The postcard form of the task's [`TaskBody`] ([`body`]; read with
    /// [`TaskBody::decode`]).
    pub body: Blob,
}

/// What a task runs with and on: its sandbox as the public [`TaskSpec`], and what it runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskBody {
    /// The task's sandbox, the one description a local task has too: every limit that
    /// differs from [`Limits::default`] (an agent's own defaults play no part), its
    /// `max_retries`, and, for a command run, its argv, stdin, environment and input files
    /// (as data, read by the client: an agent refuses a host path). For a plain or SDK call
    /// `command.env` is the call's environment ([`Call::env`](crate::Call::env)) and nothing
    /// else of `command` is set. It travels in its JSON form and is checked
    /// ([`TaskSpec::validate`]) when it is read.
    #[serde(serialize_with = "spec_json")]
    pub spec: TaskSpec,
    pub run: Run,
}

/// What a task runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Run {
    /// Calls of the export with these arguments: one plain or SDK call, or a batch of them
    /// ([`Input::Batch`], [`Input::NumberBatch`]); never a command run.
    Call(Input),
    /// The WASI command the spec's `command` describes.
    Command,
}

/// A task as an agent's local pool runs it (see [`TaskBody::into_local`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalTask {
    pub limits: Limits,
    pub max_retries: u32,
    pub input: Input,
    /// The environment of a plain or SDK call (a command's is in its input).
    pub env: Vec<(String, String)>,
}

impl TaskBody {
    /// The body of a task as a local pool holds it (its checked input, limits, retries and
    /// call environment): the same sandbox, in the public description.
    pub fn of(
        input: Input,
        limits: Limits,
        max_retries: u32,
        call_env: &[(String, String)],
    ) -> Self {
        let spec = TaskSpec::new()
            .limits_over_default(limits)
            .max_retries(max_retries);
        match input {
            Input::Command(c) => TaskBody {
                spec: spec.command(command_spec(c)),
                run: Run::Command,
            },
            input => TaskBody {
                spec: spec.command(CommandSpec {
                    env: call_env.to_vec(),
                    ..CommandSpec::default()
                }),
                run: Run::Call(input),
            },
        }
    }

    /// Reads a body (a [`TaskMsg`]'s, out of its [`Blob`]); its spec is checked.
    pub fn decode(bytes: &[u8]) -> Result<TaskBody, WireError> {
        let raw: RawBody = from_body(bytes)?;
        let spec = TaskSpec::from_json(&raw.spec).map_err(WireError::Spec)?;
        Ok(TaskBody { spec, run: raw.run })
    }

    /// The task's limits, retries and input as the local path makes them (a command's input
    /// from its spec, as [`Call::submit`](crate::Call::submit) makes it), with a plain or
    /// SDK call's environment; an error when it is not what a client sends.
    pub fn into_local(self) -> Result<LocalTask, String> {
        let TaskBody { spec, run } = self;
        let limits = spec
            .limits_over(Limits::default())
            .map_err(|e| format!("the task's {e}"))?;
        let max_retries = spec.max_retries.unwrap_or(0);
        match run {
            Run::Command => {
                if let Some(f) = spec
                    .command
                    .inputs
                    .iter()
                    .find(|f| !matches!(f.source, InputSource::Bytes(_)))
                {
                    return Err(format!(
                        "input file {:?} is a host path; a client sends the contents of its files, and an agent reads no file of its own host",
                        f.path
                    ));
                }
                let input =
                    crate::value::Args::into_input_within(spec.command, limits.max_input as usize)
                        .map_err(|e| e.to_string())?;
                Ok(LocalTask {
                    limits,
                    max_retries,
                    input,
                    env: Vec::new(),
                })
            }
            Run::Call(Input::Command(_)) => {
                Err("a command run travels as its spec's command, not as a call's input".into())
            }
            Run::Call(input) => {
                let TaskSpec { command, .. } = spec;
                let env = command.env.clone();
                if command
                    != (CommandSpec {
                        env: env.clone(),
                        ..CommandSpec::default()
                    })
                {
                    return Err(
                        "the spec of a plain or SDK call sets command parts other than its environment"
                            .into(),
                    );
                }
                Ok(LocalTask {
                    limits,
                    max_retries,
                    input,
                    env,
                })
            }
        }
    }
}

/// A command as a worker takes it, back in the public description: argv\[0\] set, input
/// files as data. [`Args::into_input_within`](crate::Args::into_input_within) of the result
/// is the same input again.
fn command_spec(c: CommandInput) -> CommandSpec {
    let (invoke, stdin_as_argument) = match c.invoke {
        Some(i) => (Some(i.export), i.stdin_as_argument),
        None => (None, None),
    };
    let mut argv = c.argv.into_iter();
    CommandSpec {
        argv0: argv.next(),
        args: argv.collect(),
        stdin: c.stdin,
        env: c.env,
        inputs: c
            .files
            .into_iter()
            .map(|(path, bytes)| InputFile {
                path,
                source: InputSource::Bytes(bytes),
            })
            .collect(),
        output_dir: c.output_dir,
        check: c.check,
        invoke,
        stdin_as_argument,
    }
}

/// A [`TaskSpec`] as its JSON text inside a postcard message.
fn spec_json<S: serde::Serializer>(spec: &TaskSpec, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&spec.to_json())
}

/// A [`TaskBody`] as it is read: its spec still text.
#[derive(Deserialize)]
struct RawBody {
    spec: String,
    run: Run,
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
    #[error("a task whose spec is not valid: {0}")]
    Spec(SpecError),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use std::time::Duration;

    fn task() -> TaskMsg {
        let body = TaskBody::of(
            Input::Numbers(vec![Value::I64(4)]),
            Limits::default().with_fuel(Some(1000)),
            2,
            &[("K".into(), "V".into())],
        );
        TaskMsg {
            client: "c1".into(),
            task: 7,
            module: [3; 32],
            export: "square".into(),
            body: Blob::Inline(super::body(&body)),
        }
    }

    #[test]
    fn a_task_round_trips() {
        let t = task();
        let back = decode::<TaskMsg>(&encode(&t)).unwrap();
        assert_eq!(back, t);
        let Blob::Inline(bytes) = back.body else {
            panic!("inline")
        };
        let local = TaskBody::decode(&bytes).unwrap().into_local().unwrap();
        assert_eq!(local.limits, Limits::default().with_fuel(Some(1000)));
        assert_eq!(local.max_retries, 2);
        assert_eq!(local.env, [("K".to_string(), "V".to_string())]);
        assert_eq!(local.input, Input::Numbers(vec![Value::I64(4)]));
    }

    #[test]
    fn a_command_travels_as_its_spec_and_comes_back_the_same_input() {
        let spec = CommandSpec::new()
            .argv0("/usr/bin/py")
            .invoke("run")
            .stdin_as_argument("host_alloc")
            .args(["-c", "x"])
            .stdin(vec![0xff, 0, 1])
            .env("A", "1")
            .input("d/x.bin", vec![0xfe, 0])
            .input("t.txt", "text")
            .output_dir()
            .check();
        let input = crate::value::Args::into_input(spec).unwrap();
        let limits = Limits::default().with_timeout(Some(Duration::from_millis(1500)));
        let body = TaskBody::of(input.clone(), limits, 0, &[]);
        assert_eq!(body.run, Run::Command);
        // The wire form is the public JSON form.
        assert!(body.spec.to_json().contains(r#""argv0":"/usr/bin/py""#));
        let local = TaskBody::decode(&super::body(&body))
            .unwrap()
            .into_local()
            .unwrap();
        assert_eq!(local.input, input);
        assert_eq!(local.limits, limits);
        assert!(local.env.is_empty());
    }

    #[test]
    fn bodies_a_client_does_not_send_are_refused() {
        let local = |spec: TaskSpec, run: Run| {
            TaskBody::decode(&super::body(&TaskBody { spec, run }))
                .unwrap()
                .into_local()
                .unwrap_err()
        };
        let host = TaskSpec::new().command(CommandSpec::new().input_file("x", "/etc/passwd"));
        assert!(local(host, Run::Command).contains("host path"));
        let command = TaskSpec::new().command(CommandSpec::new().arg("-l"));
        let call = Run::Call(Input::Numbers(Vec::new()));
        assert!(local(command, call).contains("command parts"));
        let nested = Run::Call(crate::value::Args::into_input(CommandSpec::new()).unwrap());
        assert!(local(TaskSpec::new(), nested).contains("command run"));
        // A spec that does not validate does not decode, and says why.
        let raw = postcard::to_allocvec(&(r#"{"timeout_ms": 0}"#, Run::Command)).unwrap();
        let err = TaskBody::decode(&raw).unwrap_err().to_string();
        assert!(err.contains("timeout_ms"), "{err}");
        assert!(TaskBody::decode(b"\xff\xff").is_err());
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
        other[4] = 1;
        assert!(matches!(
            decode::<TaskMsg>(&other),
            Err(WireError::Version { got: 1 })
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
