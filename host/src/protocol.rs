//! The host ↔ worker wire protocol, in one place: every message either side sends, and the
//! framing (a little-endian `u32` length, then a postcard-encoded message).
//!
//! The host writes [`Request`]s to the worker's stdin and reads [`Reply`]s from its stdout.
//! A worker handles requests in order, one task at a time. `Cancel`s travel on a pipe of
//! their own, the worker's [`CANCEL_FD`], read by a thread that acts on them at once, even
//! while a task runs (a cancel for a task not started yet makes the worker skip it).
//! Closing the worker's stdin asks it to exit. A large compiled module travels as a
//! descriptor of its file in the compile cache instead of its bytes: the host passes it on
//! the worker's [`DESCRIPTOR_FD`] (a Unix socket the worker may only receive on), then sends
//! [`Request::LoadFile`], and the worker maps the file.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::command::{CommandInput, OutputChunk};
use crate::error::TaskError;
use crate::limits::Limits;
use crate::module::{Export, ModuleId};
use crate::sandbox::Metering;
use crate::value::{Input, Output, Value};

/// The wire format's number. Bump it whenever the encoding of anything that crosses a
/// pipe between a host and the processes it starts changes: [`Request`], [`Reply`],
/// [`CompileReply`] and every type they hold (limits, values, errors, commands, modules),
/// the framing, or the command line of [`Handshake::arg`]. (Postcard encodes by field
/// order, so adding, removing or reordering a field or a variant is such a change.)
pub const PROTOCOL: u32 = 11;

/// What a host and a worker or compile process must agree on before a byte of protocol
/// flows: the wire format ([`PROTOCOL`]), the crate's version, and the engine's
/// [`fingerprint`](crate::sandbox::engine::fingerprint) of both metering variants (the
/// wasmtime version, target and configuration: a worker must load the artifacts the host
/// had compiled and cached). The host passes its own as the argument after the mode; a
/// process of another build refuses to run ([`EXIT_VERSION_MISMATCH`]), and
/// `program __handshake` prints a program's own, which a pool checks when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The crate's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// [`crate::sandbox::engine::digest`] in hex.
    pub engine: String,
}

/// The hidden argument that makes a worker program print its [`Handshake`] and exit.
pub const HANDSHAKE_ARG: &str = "__handshake";

impl Handshake {
    /// This build's handshake (its engine part computed once per process).
    pub fn ours() -> Result<&'static Handshake, String> {
        static OURS: std::sync::OnceLock<Result<Handshake, String>> = std::sync::OnceLock::new();
        OURS.get_or_init(|| {
            let engine = crate::sandbox::engine::digest()
                .map_err(|e| format!("cannot create the wasmtime engine: {e:#}"))?;
            Ok(Handshake::with_engine(engine))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// This build's protocol and version with `engine`.
    pub fn with_engine(engine: String) -> Handshake {
        Handshake {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_string(),
            engine,
        }
    }

    /// Its form on a command line: `PROTOCOL:VERSION:ENGINE`.
    pub fn arg(&self) -> String {
        format!("{}:{}:{}", self.protocol, self.version, self.engine)
    }

    /// Reads [`Self::arg`]'s form; `None` if `arg` is not one.
    pub fn parse(arg: &str) -> Option<Handshake> {
        let mut parts = arg.trim().splitn(3, ':');
        let protocol = parts.next()?.parse().ok()?;
        let version = parts.next()?.to_string();
        let engine = parts.next()?.to_string();
        Some(Handshake {
            protocol,
            version,
            engine,
        })
    }

    /// Whether a process of this build may serve a host that sent `theirs`, as far as it
    /// can tell before it has made its engines (see [`Self::check_engine`]).
    pub fn check_build(theirs: Option<&str>) -> Result<Handshake, String> {
        let parsed = theirs.and_then(Handshake::parse);
        match parsed {
            Some(h) if h.protocol == PROTOCOL && h.version == env!("CARGO_PKG_VERSION") => Ok(h),
            _ => Err(mismatch(
                &Handshake::ours().map_or_else(
                    |e| {
                        format!(
                            "protocol {PROTOCOL}, wasmpool {}, no engine: {e}",
                            env!("CARGO_PKG_VERSION")
                        )
                    },
                    |h| h.to_string(),
                ),
                &parsed.map_or_else(
                    || format!("{theirs:?}, not a handshake of this form"),
                    |h| h.to_string(),
                ),
            )),
        }
    }

    /// Whether this process's engines (`ours`, their [`crate::sandbox::engine::digest`])
    /// are those of the host that sent `self`.
    pub fn check_engine(&self, ours: &str) -> Result<(), String> {
        if self.engine == ours {
            return Ok(());
        }
        Err(mismatch(
            &Handshake::with_engine(ours.to_string()).to_string(),
            &self.to_string(),
        ))
    }
}

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "protocol {}, wasmpool {}, engine {}",
            self.protocol, self.version, self.engine
        )
    }
}

/// What a process of another build than its host says before it exits with
/// [`EXIT_VERSION_MISMATCH`].
fn mismatch(ours: &str, host: &str) -> String {
    format!(
        "wasmpool: this worker program is of another build than its host (worker: {ours}; host: {host}); {}",
        MISMATCH_HINT
    )
}

/// What to do about a worker program of another build.
pub const MISMATCH_HINT: &str = "use one built from the same wasmpool and wasmtime as the host: call wasmpool::worker_main() first in main (the pool then runs the host's own executable), or point $WASMPOOL_WORKER or PoolBuilder::worker_program at a matching `wasmpool` binary";

/// Exit status of a worker or compile process started by a host of another build.
pub const EXIT_VERSION_MISMATCH: i32 = 65;

/// Exit status of a worker that stopped itself because a call of a batch was stuck in a
/// host call well past its time limit (the host kills single tasks itself; it does not
/// know the deadline of each call of a batch).
pub const EXIT_STUCK: i32 = 66;

/// Exit status of a process started as a worker (or compile process) whose
/// [`worker_main`](crate::worker_main) found other threads already running: its walls
/// bind one thread, so it refuses to run.
pub const EXIT_STARTED_LATE: i32 = 67;

/// The file descriptor on which a worker reads [`Request::Cancel`] frames.
pub const CANCEL_FD: i32 = 3;

/// The file descriptor on which a worker receives the descriptors of compiled modules'
/// files ([`Request::LoadFile`]): its end of a Unix datagram socket pair whose other end the
/// host holds, shut for writing on the worker's side (a write fails with `EPIPE`) and for
/// reading on the host's; the worker's seccomp filter allows `recvmsg` on this descriptor
/// and no other socket call.
pub const DESCRIPTOR_FD: i32 = 4;

/// The host's id of one task, unique within a pool.
pub type TaskId = u64;

/// Largest frame either side accepts (a module artifact is the biggest message).
pub const MAX_FRAME: usize = 1 << 30;

/// A message from the host to a worker.
// `Run` is most messages and the others are rare; a `Request` lives only while one is
// decoded (one at a time, in the worker), so its size costs nothing and boxing `Run` would
// cost an allocation per task.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Make a compiled module available; sent once per worker before its first task.
    Load {
        module: ModuleId,
        metering: Metering,
        #[serde(with = "serde_bytes")]
        artifact: Vec<u8>,
    },
    /// Run one task in a fresh instance.
    Run(RunRequest),
    /// Run several tasks of one export, each in a fresh instance of its own, one after
    /// another: calls the dispatcher found queued together (see [`CallsRequest`]).
    Calls(CallsRequest),
    /// Stop this task: skip it if it has not started, interrupt it if it runs.
    Cancel { task: TaskId },
    /// Make a compiled module available from its file in the compile cache, whose
    /// descriptor the host passed on [`DESCRIPTOR_FD`] before this frame (tagged with the
    /// same module and metering: [`receive_descriptor`]); the worker maps it.
    LoadFile {
        module: ModuleId,
        metering: Metering,
    },
}

/// [`Request`] as the host encodes it: the same wire form, from borrowed parts, so the
/// dispatcher sends a job's input and a module's artifact without copying them (it keeps
/// the job, to re-send it if the worker dies). Variants and fields mirror `Request`'s, in
/// order; a test checks that both encode alike.
#[derive(Serialize)]
pub(crate) enum RequestRef<'a> {
    Load {
        module: ModuleId,
        metering: Metering,
        #[serde(with = "serde_bytes")]
        artifact: &'a [u8],
    },
    Run {
        task: TaskId,
        module: ModuleId,
        export: &'a str,
        input: &'a JobInput,
        limits: &'a Limits,
        env: &'a [(String, String)],
    },
    Calls {
        first: TaskId,
        module: ModuleId,
        export: &'a str,
        limits: &'a Limits,
        env: &'a [(String, String)],
        inputs: Inputs<'a>,
    },
    Cancel {
        task: TaskId,
    },
    LoadFile {
        module: ModuleId,
        metering: Metering,
    },
}

/// The inputs of a [`RequestRef::Calls`], encoded as the [`CallInputs`] of
/// [`CallsRequest::inputs`] from wherever the dispatcher keeps them. They must all be of
/// one kind and, for numbers, of one length (calls of one export are): otherwise encoding
/// fails, and the dispatcher sends the calls one by one.
pub(crate) struct Inputs<'a>(pub Vec<&'a JobInput>);

impl Serialize for Inputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStructVariant};
        let Some(first) = self.0.first() else {
            return s
                .serialize_struct_variant("CallInputs", 0, "Numbers", 2)
                .and_then(|mut v| {
                    v.serialize_field("calls", &0u32)?;
                    v.serialize_field("values", &FlatValues(Vec::new()))?;
                    v.end()
                });
        };
        if let Some(first) = first.numbers() {
            let arity = first.len();
            let values = self.0.iter().map(|input| match input.numbers() {
                Some(args) if args.len() == arity => Ok(args),
                _ => Err(S::Error::custom("calls of different kinds or lengths")),
            });
            let calls = u32::try_from(self.0.len()).map_err(S::Error::custom)?;
            let mut v = s.serialize_struct_variant("CallInputs", 0, "Numbers", 2)?;
            v.serialize_field("calls", &calls)?;
            v.serialize_field("values", &FlatValues(values.collect::<Result<_, _>>()?))?;
            return v.end();
        }
        if first.json().is_some() {
            let items = self.0.iter().map(|input| match input.json() {
                Some(bytes) => Ok(serde_bytes::Bytes::new(bytes)),
                None => Err(S::Error::custom("calls of different kinds")),
            });
            let items: Vec<_> = items.collect::<Result<_, _>>()?;
            return s.serialize_newtype_variant("CallInputs", 1, "Json", &items);
        }
        if first.command().is_some() {
            let items = self.0.iter().map(|input| match input.command() {
                Some(command) if !command.stream => Ok(command),
                _ => Err(S::Error::custom(
                    "calls of different kinds, or a streamed run",
                )),
            });
            let items: Vec<_> = items.collect::<Result<_, _>>()?;
            return s.serialize_newtype_variant("CallInputs", 2, "Commands", &items);
        }
        Err(S::Error::custom(
            "only numeric, JSON and command calls travel in a Calls frame",
        ))
    }
}

/// A job's input as the host keeps it (`dispatch::Job`): a plain call of one or two numbers
/// inline, so a stream of tiny calls moves no vector from the submitting thread to the
/// dispatcher's (which would free it); an SDK call's JSON and numbers as they came; any
/// other input boxed, so a job stays small. It encodes exactly as the [`Input`] it stands
/// for (`job_inputs_encode_like_inputs`).
pub(crate) enum JobInput {
    Few { len: u8, values: [Value; 2] },
    Numbers(Vec<Value>),
    Json(Vec<u8>),
    Other(Box<Input>),
}

impl From<Input> for JobInput {
    fn from(input: Input) -> Self {
        match input {
            Input::Numbers(v) if v.len() <= 2 => {
                let mut values = [Value::I32(0); 2];
                values[..v.len()].copy_from_slice(&v);
                JobInput::Few {
                    len: v.len() as u8,
                    values,
                }
            }
            Input::Numbers(v) => JobInput::Numbers(v),
            Input::Json(bytes) => JobInput::Json(bytes),
            other => JobInput::Other(Box::new(other)),
        }
    }
}

impl JobInput {
    /// The arguments of a plain call.
    pub(crate) fn numbers(&self) -> Option<&[Value]> {
        match self {
            JobInput::Few { len, values } => Some(&values[..*len as usize]),
            JobInput::Numbers(v) => Some(v),
            _ => None,
        }
    }

    /// The JSON input of an SDK call.
    pub(crate) fn json(&self) -> Option<&[u8]> {
        match self {
            JobInput::Json(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The run of a WASI command.
    pub(crate) fn command(&self) -> Option<&CommandInput> {
        match self {
            JobInput::Other(input) => match &**input {
                Input::Command(command) => Some(command),
                _ => None,
            },
            _ => None,
        }
    }

    /// How many calls it makes (see [`Input::calls`]).
    pub(crate) fn calls(&self) -> usize {
        match self {
            JobInput::Other(input) => input.calls(),
            _ => 1,
        }
    }

    /// The input it stands for (what a remote pool publishes).
    #[cfg(any(test, feature = "nats"))]
    pub(crate) fn into_input(self) -> Input {
        match self {
            JobInput::Few { len, values } => Input::Numbers(values[..len as usize].to_vec()),
            JobInput::Numbers(v) => Input::Numbers(v),
            JobInput::Json(bytes) => Input::Json(bytes),
            JobInput::Other(input) => *input,
        }
    }
}

impl Serialize for JobInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `Input`'s first two variants, as its derived `Serialize` writes them.
        match self {
            JobInput::Few { .. } | JobInput::Numbers(_) => s.serialize_newtype_variant(
                "Input",
                0,
                "Numbers",
                self.numbers().unwrap_or_default(),
            ),
            JobInput::Json(bytes) => {
                s.serialize_newtype_variant("Input", 1, "Json", serde_bytes::Bytes::new(bytes))
            }
            JobInput::Other(input) => input.serialize(s),
        }
    }
}

/// Calls' arguments, encoded end to end as one `Vec<Value>`.
struct FlatValues<'a>(Vec<&'a [Value]>);

impl Serialize for FlatValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let len = self.0.iter().map(|args| args.len()).sum();
        let mut seq = s.serialize_seq(Some(len))?;
        for value in self.0.iter().flat_map(|args| args.iter()) {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

/// One task for a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRequest {
    pub task: TaskId,
    pub module: ModuleId,
    pub export: String,
    pub input: Input,
    pub limits: Limits,
    /// Environment of a plain or SDK call's WASI context (`Call::env`); commands carry
    /// theirs in their input.
    pub env: Vec<(String, String)>,
}

/// Tasks of one module and export, with the same limits and environment, sent in one frame:
/// the dispatcher coalesces such tasks when they are queued together, so a stream of
/// `submit`s, `imap` or `wasmpool run` travels in batches as `map` does. Each call is still
/// a task of its own: its own wire id (`first + i` for call `i`, so cancels, deadlines and
/// the worker's order of ids work as for single tasks), a fresh store and instance, and its
/// own outcome and stats ([`Reply::Calls`]). Inputs are plain numeric calls, SDK calls or
/// WASI command runs (not streamed ones: their output goes out as it is written), never
/// batches or initializer snapshots.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallsRequest {
    pub first: TaskId,
    pub module: ModuleId,
    pub export: String,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    pub inputs: CallInputs,
}

/// The inputs of a [`CallsRequest`]'s calls, laid out as `map`'s `NumberBatch` is: numeric
/// calls' arguments end to end (no vector per call to decode and free), SDK calls' JSON
/// one after another.
#[derive(Debug, Serialize, Deserialize)]
pub enum CallInputs {
    /// `calls` plain numeric calls of one export: `values.len()` is `calls` × its
    /// parameter count.
    Numbers { calls: u32, values: Vec<Value> },
    /// SDK calls: each call's JSON input.
    Json(Vec<serde_bytes::ByteBuf>),
    /// WASI command runs, each with its own argv, environment, stdin and files (each runs as
    /// a single command task would: its files in a directory of its own, removed after).
    Commands(Vec<CommandInput>),
}

/// One call's input, borrowed from its [`CallInputs`].
#[derive(Clone, Copy, Debug)]
pub enum CallInput<'a> {
    Numbers(&'a [Value]),
    Json(&'a [u8]),
}

impl CallInputs {
    /// How many calls.
    pub fn len(&self) -> usize {
        match self {
            CallInputs::Numbers { calls, .. } => *calls as usize,
            CallInputs::Json(items) => items.len(),
            CallInputs::Commands(items) => items.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arguments of each numeric call, in order (`None` for every call if the values do
    /// not split evenly among them: not a frame a host sends).
    pub fn numbers(values: &[Value], calls: u32) -> impl Iterator<Item = Option<&[Value]>> {
        let calls = calls as usize;
        let arity = values.len().checked_div(calls).unwrap_or(0);
        let even = calls == 0 || arity * calls == values.len();
        (0..calls).map(move |i| even.then(|| &values[i * arity..(i + 1) * arity]))
    }
}

/// A message from a worker to the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The worker has started and its engine is ready.
    Ready { pid: u32 },
    /// Output a streaming command task wrote (sent before its `Done`).
    Output { task: TaskId, chunk: OutputChunk },
    /// A task finished, one way or another.
    Done {
        task: TaskId,
        outcome: Result<Output, TaskError>,
        stats: TaskStats,
    },
    /// Calls of a [`Request::Calls`] that finished, in order: the tasks with wire ids
    /// `first`, `first + 1`, …, each with its own outcome and stats. (A worker sends what it
    /// has every 500 µs at most, at the end of the request when no request waits, and,
    /// while a call holds up the worker's main thread, from a thread of its own within
    /// 5–10 ms.)
    Calls { first: TaskId, calls: CallOutcomes },
    /// The worker must be replaced once the tasks sent to it are done: a command's files
    /// could not be removed from its scratch directory. (Sent once, after that task's `Done`.)
    Retire,
}

/// Each finished call's outcome and stats, in call order ([`Reply::Calls`]).
pub type CallOutcomes = Vec<(Result<Output, TaskError>, TaskStats)>;

/// How a worker collects the outcomes of coalesced calls for a [`Reply::Calls`]: each call's
/// `(outcome, stats)` is encoded as soon as it finishes, into a buffer kept from frame to
/// frame, and [`CallsReply::write_to`] frames them. The bytes are those of `Reply::Calls`
/// (a test checks it), without building an `Output` per call or a [`CallOutcomes`] vector:
/// a numeric call's results are encoded from the worker's scratch slice.
#[derive(Default)]
pub struct CallsReply {
    /// The wire id of the first call held.
    first: TaskId,
    /// How many calls are held.
    count: u64,
    /// Their encoded `(Result<Output, TaskError>, TaskStats)`, end to end.
    bytes: Vec<u8>,
}

/// `Reply::Calls`'s variant index, as postcard encodes it.
const REPLY_CALLS: u32 = 3;

impl CallsReply {
    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends the outcome of call `task` (the one after those held: calls finish in order).
    pub fn push(
        &mut self,
        task: TaskId,
        outcome: &Result<Output, TaskError>,
        stats: &TaskStats,
    ) -> io::Result<()> {
        self.append(task, &(outcome, stats))
    }

    /// Appends the outcome of numeric call `task` that returned `values`
    /// (`Ok(Output::Numbers(values))`, without the vector).
    pub fn push_numbers(
        &mut self,
        task: TaskId,
        values: &[Value],
        stats: &TaskStats,
    ) -> io::Result<()> {
        if self.count == 0 {
            self.first = task;
        }
        debug_assert_eq!(task, self.first + self.count, "calls finish in order");
        // Written by hand: the one reply every tiny coalesced call makes, where serde's
        // field-by-field walk cost as much as the rest of the worker's bookkeeping. The
        // bytes are postcard's for `(Ok(Output::Numbers(values)), stats)` (a test checks).
        let out = &mut self.bytes;
        out.extend_from_slice(&[0, 0]); // Ok(Output::Numbers(
        varint(out, values.len() as u64);
        for value in values {
            match *value {
                Value::I32(v) => {
                    out.push(0);
                    varint(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
                }
                Value::I64(v) => {
                    out.push(1);
                    varint(out, ((v << 1) ^ (v >> 63)) as u64);
                }
                Value::F32(v) => {
                    out.push(2);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Value::F64(v) => {
                    out.push(3);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        varint(out, u64::from(stats.worker));
        varint(out, stats.worker_rss);
        varint(out, stats.fuel_used);
        varint(out, stats.duration.as_secs());
        varint(out, u64::from(stats.duration.subsec_nanos()));
        varint(out, stats.peak_memory);
        for bytes in [&stats.stdout, &stats.stderr] {
            varint(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        out.push(u8::from(stats.output_truncated));
        self.count += 1;
        Ok(())
    }

    fn append(&mut self, task: TaskId, call: &impl Serialize) -> io::Result<()> {
        if self.count == 0 {
            self.first = task;
        }
        debug_assert_eq!(task, self.first + self.count, "calls finish in order");
        let start = self.bytes.len();
        if let Err(e) = postcard::to_extend(call, Append(&mut self.bytes)) {
            // The calls held before stay whole.
            self.bytes.truncate(start);
            return Err(invalid(e));
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the calls held as one framed `Reply::Calls` (nothing if none) and forgets them.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let mut head = [0u8; 4 + 5 + 10 + 10];
        let fields = postcard::to_slice(&(REPLY_CALLS, self.first, self.count), &mut head[4..])
            .map_err(invalid)?
            .len();
        let len = fields + self.bytes.len();
        let sent = if len > MAX_FRAME {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
            ))
        } else {
            head[..4].copy_from_slice(&(len as u32).to_le_bytes());
            w.write_all(&head[..4 + fields])
                .and_then(|()| w.write_all(&self.bytes))
        };
        self.count = 0;
        self.bytes.clear();
        if self.bytes.capacity() > KEEP_FRAME_BUFFER {
            self.bytes = Vec::new();
        }
        sent
    }
}

/// Appends `v` as postcard writes an unsigned integer (LEB128).
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The answer of a compile process (`wasmpool __compile`), which reads a module's bytes on
/// stdin and validates and compiles them in a sandbox of its own.
#[derive(Debug, Serialize, Deserialize)]
pub enum CompileReply {
    /// The serialized artifact for the workers, and the module's callable exports.
    Compiled {
        #[serde(with = "serde_bytes")]
        artifact: Vec<u8>,
        exports: Vec<Export>,
        /// The WebAssembly proposals the module uses beyond the first version
        /// (`compile::proposals`), by their proposal names.
        proposals: Vec<String>,
        /// `(module, name)` of every function import the sandbox does not provide: the
        /// host refuses the module for them, or links them to traps, as the pool says
        /// (`PoolBuilder::unknown_imports`).
        unknown_imports: Vec<(String, String)>,
    },
    /// Not a valid module (wasmtime's message).
    Invalid { message: String },
    /// An import the sandbox does not provide and cannot stand in for (not a function).
    UnsupportedImport { module: String, name: String },
    /// A valid module that does not fit the workers' instance slots (wasmtime's message,
    /// naming the limit).
    OverLimit { message: String },
}

/// What a finished task cost and printed.
///
/// ```
/// let stats = wasmpool::TaskStats::default();
/// assert!(stats.stdout.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskStats {
    /// Process id of the worker that ran the task (0 if none did).
    pub worker: u32,
    /// The worker process's resident memory, in bytes, as of a recent task (0 if unknown).
    pub worker_rss: u64,
    /// Fuel the task consumed (instantiation included); 0 when the call had no fuel limit
    /// (its code then runs without fuel metering).
    pub fuel_used: u64,
    /// Time from the start of instantiation to the end of the call, in the worker.
    pub duration: Duration,
    /// The largest size the task's linear memory reached, in bytes (its initial size at
    /// least; 0 if it had none or never started). For a batch of calls (`map` sends them),
    /// the largest of its calls'.
    pub peak_memory: u64,
    /// What the guest wrote to stdout, up to the limit's cap.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr, up to the limit's cap.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr went over its cap and was cut.
    pub output_truncated: bool,
}

/// Writes one framed message into `buf` (appending), ready to be sent. On an error, `buf`
/// is as it was (the frames already in it stay).
pub fn encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = postcard::to_extend(msg, Append(&mut *buf)) {
        buf.truncate(start);
        return Err(invalid(e));
    }
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Appends what postcard encodes to a buffer it borrows (`postcard::to_extend` takes its
/// output by value, and gives nothing back on an error).
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Writes one framed message.
pub fn write<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let mut buf = Vec::new();
    encode(msg, &mut buf)?;
    w.write_all(&buf)
}

/// Reads one framed message; `Ok(None)` on a clean end of stream between frames.
pub fn read<R: Read, T: DeserializeOwned>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(invalid(format!("frame of {len} bytes is over the limit")));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)?;
    // Byte fields decode straight into buffers of their exact size (`serde_bytes`), so a
    // frame costs its own size twice at most while it is decoded, never more.
    let msg = postcard::from_bytes(buf).map(Some).map_err(invalid);
    if buf.capacity() > KEEP_FRAME_BUFFER {
        // One large frame (an artifact, a 64 MiB reply) must not stay allocated for the
        // life of the reader.
        *buf = Vec::new();
    }
    msg
}

/// Largest frame buffer [`read`] keeps for the next frame.
const KEEP_FRAME_BUFFER: usize = 1 << 20;

/// Whether `buffered` bytes hold at least one whole frame (so reading it will not block).
pub fn frame_buffered(buffered: &[u8]) -> bool {
    match buffered.first_chunk::<4>() {
        Some(len) => buffered.len() - 4 >= u32::from_le_bytes(*len) as usize,
        None => false,
    }
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// What travels with a passed descriptor: the module and metering it is the code of, so a
/// worker takes the one its [`Request::LoadFile`] names.
type DescriptorTag = [u8; 33];

fn descriptor_tag(module: ModuleId, metering: Metering) -> DescriptorTag {
    let mut tag = [0; 33];
    tag[..32].copy_from_slice(&module.0);
    tag[32] = metering.index() as u8;
    tag
}

/// Passes `file` (a compiled module's file) to a worker over its descriptor socket, tagged
/// with `module` and `metering`, without blocking. Sent before the [`Request::LoadFile`]
/// frame that asks the worker to take it.
pub(crate) fn send_descriptor(
    socket: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    module: ModuleId,
    metering: Metering,
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let tag = descriptor_tag(module, metering);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let files = [file];
    if !control.push(SendAncillaryMessage::ScmRights(&files)) {
        return Err(io::Error::other(
            "no room for a descriptor in its control message",
        ));
    }
    rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(&tag)],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// In a worker: takes the descriptor the host passed on [`DESCRIPTOR_FD`] for `module`'s
/// code of `metering` (descriptors tagged otherwise, left by a request the host dropped, are
/// closed), without blocking: the host passes it before it writes the frame that asks for it.
pub fn receive_descriptor(module: ModuleId, metering: Metering) -> io::Result<std::fs::File> {
    // SAFETY: `DESCRIPTOR_FD` is the descriptor socket the host placed in the worker before
    // exec (`worker::process`); nothing in the worker closes it, so it stays open as long as
    // the process lives.
    let socket = unsafe { BorrowedFd::borrow_raw(DESCRIPTOR_FD) };
    receive_tagged(socket, descriptor_tag(module, metering))
}

/// Receives messages on `socket` until one tagged `want` carrying a descriptor arrives;
/// every other descriptor received on the way is closed.
fn receive_tagged(socket: BorrowedFd<'_>, want: DescriptorTag) -> io::Result<std::fs::File> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    loop {
        let mut tag: DescriptorTag = [0; 33];
        // Room for one descriptor: a message with more has them closed by the kernel and
        // comes flagged `CTRUNC`.
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            socket,
            &mut [io::IoSliceMut::new(&mut tag)],
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("no descriptor of the module's file arrived: {e}"),
            )
        })?;
        if got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::other(
                "the module's file descriptor could not be received (too many open files?)",
            ));
        }
        // Descriptors not taken here are closed when `control` is dropped.
        let file = control.drain().find_map(|message| match message {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        if got.bytes == tag.len() && tag == want {
            if let Some(file) = file {
                return Ok(std::fs::File::from(file));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn a_worker_takes_the_descriptor_tagged_for_its_module_and_closes_the_others() {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixDatagram;
        let (host, worker) = UnixDatagram::pair().unwrap();
        let module = ModuleId([7; 32]);
        // Left by a request the host dropped: the write end of a pipe, tagged for another
        // module. Once the worker closes the copy it received, the pipe reads as ended.
        let (pipe_read, pipe_write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
        send_descriptor(
            host.as_fd(),
            pipe_write.as_fd(),
            ModuleId([1; 32]),
            Metering::Epochs,
        )
        .unwrap();
        drop(pipe_write);
        // The module's code, but of the other metering variant: not the one asked for.
        let mut other = tempfile::tempfile().unwrap();
        other.write_all(b"fuel").unwrap();
        send_descriptor(host.as_fd(), other.as_fd(), module, Metering::Fuel).unwrap();
        let mut code = tempfile::tempfile().unwrap();
        code.write_all(b"code").unwrap();
        send_descriptor(host.as_fd(), code.as_fd(), module, Metering::Epochs).unwrap();

        let mut got =
            receive_tagged(worker.as_fd(), descriptor_tag(module, Metering::Epochs)).unwrap();
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "code");
        let mut buf = [0u8; 1];
        assert_eq!(
            rustix::io::read(&pipe_read, &mut buf),
            Ok(0),
            "the descriptor tagged for another module is closed (else the pipe is still open)"
        );
        // Nothing left: the next request finds no descriptor and says so, without blocking.
        let e = receive_tagged(worker.as_fd(), descriptor_tag(module, Metering::Fuel)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert!(e.to_string().contains("no descriptor"), "{e}");
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut buf = Vec::new();
        let run = Request::Run(RunRequest {
            task: 7,
            module: ModuleId([3; 32]),
            export: "square".into(),
            input: Input::Numbers(vec![Value::I64(9)]),
            limits: Limits::default(),
            env: Vec::new(),
        });
        encode(&run, &mut buf).unwrap();
        encode(&Request::Cancel { task: 7 }, &mut buf).unwrap();
        let mut r = &buf[..];
        let mut scratch = Vec::new();
        match read::<_, Request>(&mut r, &mut scratch).unwrap() {
            Some(Request::Run(req)) => {
                assert_eq!(req.task, 7);
                assert_eq!(req.input, Input::Numbers(vec![Value::I64(9)]));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            read::<_, Request>(&mut r, &mut scratch).unwrap(),
            Some(Request::Cancel { task: 7 })
        ));
        assert!(read::<_, Request>(&mut r, &mut scratch).unwrap().is_none());
    }

    #[test]
    fn borrowed_requests_encode_like_owned_ones() {
        let (mut owned, mut borrowed) = (Vec::new(), Vec::new());
        let input = Input::Batch {
            items: vec![
                Input::Numbers(vec![Value::I64(9)]),
                Input::Json(b"{}".to_vec()),
            ],
            instances: crate::value::Instances::Fresh,
        };
        let limits = Limits::default().with_fuel(Some(5));
        let run = Request::Run(RunRequest {
            task: 7,
            module: ModuleId([3; 32]),
            export: "square".into(),
            input: input.clone(),
            limits,
            env: vec![("K".into(), "V".into())],
        });
        encode(&run, &mut owned).unwrap();
        let run = RequestRef::Run {
            task: 7,
            module: ModuleId([3; 32]),
            export: "square",
            input: &JobInput::from(input.clone()),
            limits: &limits,
            env: &[("K".into(), "V".into())],
        };
        encode(&run, &mut borrowed).unwrap();
        let load = Request::Load {
            module: ModuleId([1; 32]),
            metering: Metering::Fuel,
            artifact: vec![1, 2, 3],
        };
        encode(&load, &mut owned).unwrap();
        let load = RequestRef::Load {
            module: ModuleId([1; 32]),
            metering: Metering::Fuel,
            artifact: &[1, 2, 3],
        };
        encode(&load, &mut borrowed).unwrap();
        let numbers = [
            Input::Numbers(vec![Value::I64(1), Value::F32(0.5)]),
            Input::Numbers(vec![Value::I64(-2), Value::F32(2.0)]),
        ]
        .map(JobInput::from);
        let json = [Input::Json(b"2".to_vec()), Input::Json(Vec::new())].map(JobInput::from);
        let run = |stdin: &[u8], stream: bool| CommandInput {
            argv: vec!["prog".into(), "-v".into()],
            env: vec![("A".into(), "1".into())],
            stdin: stdin.to_vec(),
            files: vec![("in.txt".into(), b"data".to_vec())],
            output_dir: true,
            check: false,
            stream,
            invoke: Some(Box::new(crate::command::Invoke {
                export: "turn".into(),
                stdin_as_argument: Some("alloc".into()),
            })),
        };
        let commands =
            [run(b"one", false), run(b"", false)].map(|c| JobInput::from(Input::Command(c)));
        let flat = [
            CallInputs::Numbers {
                calls: 2,
                values: vec![
                    Value::I64(1),
                    Value::F32(0.5),
                    Value::I64(-2),
                    Value::F32(2.0),
                ],
            },
            CallInputs::Json(vec![b"2".to_vec().into(), Vec::new().into()]),
            CallInputs::Commands(vec![run(b"one", false), run(b"", false)]),
            CallInputs::Numbers {
                calls: 0,
                values: Vec::new(),
            },
        ];
        for (inputs, flat) in [&numbers[..], &json[..], &commands[..], &[]]
            .into_iter()
            .zip(flat)
        {
            let calls = Request::Calls(CallsRequest {
                first: 9,
                module: ModuleId([4; 32]),
                export: "f".into(),
                limits,
                env: vec![("K".into(), "V".into())],
                inputs: flat,
            });
            encode(&calls, &mut owned).unwrap();
            let calls = RequestRef::Calls {
                first: 9,
                module: ModuleId([4; 32]),
                export: "f",
                limits: &limits,
                env: &[("K".into(), "V".into())],
                inputs: Inputs(inputs.iter().collect()),
            };
            encode(&calls, &mut borrowed).unwrap();
        }
        // Calls of different kinds or lengths are not encoded together (the dispatcher
        // then sends them one by one).
        for mixed in [
            vec![&numbers[0], &json[0]],
            vec![&json[0], &numbers[0]],
            vec![
                &numbers[0],
                &JobInput::from(Input::Numbers(vec![Value::I64(1)])),
            ],
            vec![&commands[0], &json[0]],
            vec![&json[0], &commands[0]],
            // A streamed run travels alone.
            vec![
                &commands[0],
                &JobInput::from(Input::Command(run(b"", true))),
            ],
            vec![&JobInput::from(Input::Command(run(b"", true)))],
        ] {
            let calls = RequestRef::Calls {
                first: 9,
                module: ModuleId([4; 32]),
                export: "f",
                limits: &limits,
                env: &[],
                inputs: Inputs(mixed),
            };
            // A frame that fails leaves those before it whole.
            let mut frames = Vec::new();
            encode(&Request::Cancel { task: 1 }, &mut frames).unwrap();
            let before = frames.clone();
            assert!(encode(&calls, &mut frames).is_err());
            assert_eq!(frames, before);
        }
        let (module, metering) = (ModuleId([2; 32]), Metering::Epochs);
        encode(&Request::LoadFile { module, metering }, &mut owned).unwrap();
        encode(&RequestRef::LoadFile { module, metering }, &mut borrowed).unwrap();
        encode(&Request::Cancel { task: 9 }, &mut owned).unwrap();
        encode(&RequestRef::Cancel { task: 9 }, &mut borrowed).unwrap();
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn job_inputs_encode_like_inputs() {
        let command = crate::command::CommandInput {
            argv: vec!["p".into()],
            env: Vec::new(),
            stdin: b"in".to_vec(),
            files: Vec::new(),
            output_dir: false,
            check: false,
            stream: false,
            invoke: None,
        };
        for input in [
            Input::Numbers(Vec::new()),
            Input::Numbers(vec![Value::I32(-1)]),
            Input::Numbers(vec![Value::F64(0.5), Value::I64(i64::MIN)]),
            Input::Numbers(vec![Value::F32(1.0), Value::I32(2), Value::I64(3)]),
            Input::Json(b"{\"a\":1}".to_vec()),
            Input::Command(command),
            Input::NumberBatch {
                calls: 2,
                values: vec![Value::I64(1), Value::I64(2)],
                instances: crate::value::Instances::Fresh,
                call_stats: true,
            },
        ] {
            let (mut want, mut got) = (Vec::new(), Vec::new());
            encode(&input, &mut want).unwrap();
            let job = JobInput::from(input.clone());
            assert_eq!(job.calls(), input.calls());
            encode(&job, &mut got).unwrap();
            assert_eq!(got, want, "{input:?}");
            assert_eq!(job.into_input(), input);
        }
    }

    #[test]
    fn calls_replies_encode_like_owned_ones() {
        let stats = |n: u64| TaskStats {
            worker: 12,
            worker_rss: 1 << 20,
            fuel_used: n,
            duration: Duration::from_nanos(1234 * n),
            peak_memory: 65536,
            stdout: if n == 2 { b"out".to_vec() } else { Vec::new() },
            stderr: Vec::new(),
            output_truncated: n == 3,
        };
        let calls: CallOutcomes = vec![
            (Ok(Output::Numbers(vec![Value::I64(-9)])), stats(1)),
            (
                Err(TaskError::Trap {
                    message: "unreachable".into(),
                    code: Some(crate::error::TrapCode::UnreachableCodeReached),
                }),
                stats(2),
            ),
            (Ok(Output::Json(b"{\"a\":1}".to_vec())), stats(3)),
            (
                Ok(Output::Numbers(vec![Value::F32(0.5), Value::I32(7)])),
                stats(4),
            ),
            (Ok(Output::Numbers(Vec::new())), stats(5)),
            (
                Ok(Output::Numbers(vec![
                    Value::I32(i32::MIN),
                    Value::I32(-1),
                    Value::I32(i32::MAX),
                    Value::I64(i64::MIN),
                    Value::I64(0),
                    Value::I64(i64::MAX),
                    Value::F32(f32::NAN),
                    Value::F32(-0.0),
                    Value::F64(f64::INFINITY),
                    Value::F64(-1.25e300),
                ])),
                TaskStats {
                    worker: u32::MAX,
                    worker_rss: u64::MAX,
                    fuel_used: 127,
                    duration: Duration::new(u64::MAX, 999_999_999),
                    peak_memory: 128,
                    stdout: vec![0xff; 200],
                    stderr: b"e".to_vec(),
                    output_truncated: true,
                },
            ),
            (
                Ok(Output::Numbers(vec![Value::I64(3)])),
                TaskStats::default(),
            ),
        ];
        let first = u64::MAX - 10;
        let mut owned = Vec::new();
        encode(
            &Reply::Calls {
                first,
                calls: calls.clone(),
            },
            &mut owned,
        )
        .unwrap();
        let mut reply = CallsReply::default();
        let mut borrowed = Vec::new();
        // Nothing held, nothing written.
        reply.write_to(&mut borrowed).unwrap();
        assert!(borrowed.is_empty() && reply.is_empty());
        for (i, (outcome, stats)) in calls.iter().enumerate() {
            let task = first + i as TaskId;
            match outcome {
                Ok(Output::Numbers(values)) => reply.push_numbers(task, values, stats),
                other => reply.push(task, other, stats),
            }
            .unwrap();
        }
        reply.write_to(&mut borrowed).unwrap();
        assert_eq!(borrowed, owned);
        // Emptied: the next frame starts afresh, from its own first id.
        assert!(reply.is_empty());
        reply.push(3, &calls[2].0, &calls[2].1).unwrap();
        reply.write_to(&mut borrowed).unwrap();
        let mut r = &borrowed[owned.len()..];
        let mut scratch = Vec::new();
        match read::<_, Reply>(&mut r, &mut scratch).unwrap() {
            Some(Reply::Calls { first: 3, calls: c }) => assert_eq!(c, calls[2..3]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn numeric_calls_split_their_values_evenly_or_not_at_all() {
        let values: Vec<Value> = (0..6).map(Value::I64).collect();
        let split: Vec<_> = CallInputs::numbers(&values, 3).collect();
        assert_eq!(
            split,
            [
                Some(&values[0..2]),
                Some(&values[2..4]),
                Some(&values[4..6])
            ]
        );
        // No parameters: each call has none.
        assert_eq!(
            CallInputs::numbers(&[], 2).collect::<Vec<_>>(),
            [Some(&[][..]), Some(&[][..])]
        );
        // Values that do not split evenly: no call gets arguments (each fails alone).
        assert_eq!(
            CallInputs::numbers(&values, 4).collect::<Vec<_>>(),
            [None; 4]
        );
        assert_eq!(CallInputs::numbers(&values, 0).count(), 0);
    }

    #[test]
    fn buffered_frames_are_recognised_whole() {
        let mut buf = Vec::new();
        encode(&Request::Cancel { task: 1 }, &mut buf).unwrap();
        assert!(frame_buffered(&buf));
        assert!(!frame_buffered(&buf[..buf.len() - 1]));
        assert!(!frame_buffered(&buf[..3]));
    }

    #[test]
    fn truncated_frame_is_an_error_not_a_clean_end() {
        let mut buf = Vec::new();
        encode(&Request::Cancel { task: 1 }, &mut buf).unwrap();
        buf.pop();
        let mut scratch = Vec::new();
        assert!(read::<_, Request>(&mut &buf[..], &mut scratch).is_err());
    }
}

/// A subverted worker's bytes must never panic or crash the host: random frames, and valid
/// replies cut and flipped at random, only ever decode or fail.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::command::{CommandOutput, OutputFile};
    use crate::value::Value;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    /// Every reply shape a worker sends, encoded.
    fn samples() -> Vec<Vec<u8>> {
        let stats = TaskStats {
            worker: 7,
            stdout: b"out".to_vec(),
            stderr: b"err".to_vec(),
            ..TaskStats::default()
        };
        let replies = [
            Reply::Ready { pid: 1 },
            Reply::Output {
                task: 3,
                chunk: OutputChunk::Stdout(b"chunk".to_vec()),
            },
            Reply::Done {
                task: 4,
                outcome: Ok(Output::Numbers(vec![Value::I64(-1), Value::F32(0.5)])),
                stats: stats.clone(),
            },
            Reply::Done {
                task: 5,
                outcome: Ok(Output::Json(b"{\"a\":[1,2]}".to_vec())),
                stats: stats.clone(),
            },
            Reply::Done {
                task: 6,
                outcome: Ok(Output::Command(CommandOutput {
                    exit_code: 3,
                    files: vec![OutputFile {
                        path: "a/b.txt".into(),
                        data: b"data".to_vec(),
                    }],
                    ..CommandOutput::default()
                })),
                stats: stats.clone(),
            },
            Reply::Done {
                task: 8,
                outcome: Ok(Output::Batch(vec![
                    Ok(Output::Numbers(vec![Value::I32(1)])),
                    Err(TaskError::Trap {
                        message: "unreachable".into(),
                        code: Some(crate::error::TrapCode::UnreachableCodeReached),
                    }),
                ])),
                stats: stats.clone(),
            },
            Reply::Done {
                task: 9,
                outcome: Ok(Output::NumberBatch {
                    values: vec![Value::I64(1), Value::I64(2)],
                    failures: vec![(1, TaskError::Exit { code: 2 })],
                    call_stats: vec![stats.clone(), TaskStats::default()],
                }),
                stats: stats.clone(),
            },
            Reply::Calls {
                first: 10,
                calls: vec![
                    (Ok(Output::Numbers(vec![Value::I64(7)])), stats.clone()),
                    (Err(TaskError::Exit { code: 1 }), stats.clone()),
                    (Ok(Output::Json(b"[]".to_vec())), stats.clone()),
                ],
            },
            // Command runs coalesced: their outputs and files.
            Reply::Calls {
                first: 20,
                calls: vec![
                    (
                        Ok(Output::Command(CommandOutput {
                            exit_code: 0,
                            stdout: b"1 2 3\n".to_vec(),
                            files: vec![OutputFile {
                                path: "out.txt".into(),
                                data: b"x".to_vec(),
                            }],
                            ..CommandOutput::default()
                        })),
                        stats.clone(),
                    ),
                    (Err(TaskError::Exit { code: 2 }), stats),
                ],
            },
        ];
        replies
            .iter()
            .map(|r| {
                let mut buf = Vec::new();
                encode(r, &mut buf).unwrap();
                buf[4..].to_vec()
            })
            .collect()
    }

    fn decode(frame: &[u8]) {
        let mut scratch = Vec::new();
        let mut r = frame;
        while let Ok(Some(reply)) = read::<_, Reply>(&mut r, &mut scratch) {
            drop(reply);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_frames_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode(&framed(&payload));
        }

        #[test]
        fn damaged_replies_never_panic(
            which in 0usize..9,
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ) {
            let mut payload = samples()[which].clone();
            for (at, byte) in flips {
                let i = at.index(payload.len());
                payload[i] ^= byte;
            }
            let len = cut.index(payload.len() + 1);
            decode(&framed(&payload[..len]));
            decode(&framed(&payload));
        }
    }

    #[test]
    fn samples_decode_back() {
        for payload in samples() {
            let mut scratch = Vec::new();
            assert!(read::<_, Reply>(&mut &framed(&payload)[..], &mut scratch)
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn batches_nested_in_batches_are_refused_not_recursed_into() {
        // A Done reply whose outcome is Batch(Ok(Batch(Ok(…)))) a million levels deep: 3
        // bytes a level. Decoding it recursed once per level and overflowed the reader
        // thread's stack, which aborts the whole host.
        let mut payload = vec![2, 1, 0]; // Reply::Done, task 1, Ok(
        for _ in 0..1_000_000 {
            payload.extend_from_slice(&[3, 1, 0]); // Output::Batch, one item, Ok(
        }
        let mut scratch = Vec::new();
        let e = read::<_, Reply>(&mut &framed(&payload)[..], &mut scratch).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // The same for requests, which a worker decodes.
        let mut payload = vec![1, 1]; // Request::Run, task 1
        payload.extend_from_slice(&[0; 32]); // module id
        payload.extend_from_slice(&[1, b'f']); // export "f"
        for _ in 0..1_000_000 {
            payload.extend_from_slice(&[3, 1]); // Input::Batch with one item:
        }
        assert!(read::<_, Request>(&mut &framed(&payload)[..], &mut scratch).is_err());
    }
}

#[cfg(test)]
mod handshake_tests {
    use super::*;

    #[test]
    fn a_handshake_reads_back_and_refuses_another_build() {
        let ours = Handshake::ours().unwrap();
        assert_eq!(Handshake::parse(&ours.arg()).as_ref(), Some(ours));
        assert_eq!(Handshake::check_build(Some(&ours.arg())).as_ref(), Ok(ours));
        ours.check_engine(&ours.engine).unwrap();
        for theirs in [
            None,
            Some("12345".to_string()),
            Some(format!("{}:{}:{}", PROTOCOL + 1, ours.version, ours.engine)),
            Some(format!("{PROTOCOL}:0.0.0-other:{}", ours.engine)),
        ] {
            let message = Handshake::check_build(theirs.as_deref()).unwrap_err();
            assert!(message.contains(&ours.to_string()), "{message}");
        }
        let other = Handshake::with_engine("0".repeat(32));
        assert!(other.check_engine(&ours.engine).is_err());
    }
}
