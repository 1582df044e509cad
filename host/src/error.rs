//! The typed errors of the library: what a task, a module load or a pool start can fail with.
//!
//! An error that wraps another (an `std::io::Error`) says what failed in its `Display` and
//! returns the cause from `source()`, never both: print the whole chain with
//! [`Chain`] (or anyhow's `{:#}`), and each cause appears once.
//!
//! ```
//! use std::error::Error;
//! let e = wasmpool::PoolError::Scratch {
//!     path: "/nonexistent".into(),
//!     source: std::io::Error::from(std::io::ErrorKind::NotFound),
//! };
//! assert!(e.source().is_some());
//! assert_eq!(
//!     wasmpool::error::Chain(&e).to_string(),
//!     "cannot create a scratch directory under /nonexistent (see PoolBuilder::scratch_dir): entity not found"
//! );
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a task did not produce a result. Match on it; its `Display` is a sentence a user
/// understands.
///
/// ```
/// use wasmpool::TaskError;
/// let e = TaskError::Exit { code: 3 };
/// assert_eq!(e.kind(), "exit");
/// assert_eq!(e.to_string(), "guest called proc_exit(3)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task ran past its wall-clock limit and was stopped.
    #[error("task exceeded its wall-clock limit of {}", humantime::format_duration(*.limit))]
    Timeout { limit: Duration },
    /// The task used up its fuel (its deterministic instruction budget).
    #[error("task ran out of fuel (limit: {fuel} units)")]
    FuelExhausted { fuel: u64 },
    /// The task tried to grow its memory (or a table) past its limit; `initial` is the
    /// module's initial memory size when that alone is over the limit (no task of the
    /// module can run under it).
    #[error("{}", memory_limit_message(*.limit, *.initial))]
    MemoryLimit { limit: u64, initial: Option<u64> },
    /// The guest trapped: unreachable, division by zero, stack overflow, out-of-bounds access…
    /// `code` says which, as data (`None` for a failure wasmtime gives no trap code, such as
    /// a host call's error); `message` is wasmtime's text with the function it happened in.
    #[error("guest trapped: {message}")]
    Trap {
        message: String,
        code: Option<TrapCode>,
    },
    /// The guest returned an error through the SDK.
    #[error("guest returned an error: {message}")]
    Guest { message: String },
    /// The guest called WASI `proc_exit`.
    #[error("guest called proc_exit({code})")]
    Exit { code: i32 },
    /// The worker process running the task died or stopped answering. On a remote pool
    /// (`Pool::connect`), `deliveries` is how many times the task was handed to an agent
    /// before it was given up (each attempt lost its worker or its agent); `None` locally.
    #[error("worker process lost: {message}")]
    WorkerLost {
        message: String,
        deliveries: Option<u32>,
    },
    /// The task was cancelled before it finished (by `Task::cancel` or a pool shutdown).
    #[error("task cancelled: {message}")]
    Cancelled { message: String },
    /// The call was malformed: missing export, wrong arity or type, undecodable input.
    #[error("bad input: {message}")]
    BadInput { message: String },
    /// The guest's output does not convert to the type the caller asked for.
    #[error("bad output: {message}")]
    BadOutput { message: String },
}

fn memory_limit_message(limit: u64, initial: Option<u64>) -> String {
    match initial {
        Some(initial) => format!(
            "the module's initial memory of {} is already over the task's memory limit of {}: raise the limit (--memory, Limits::memory) to run it",
            bytesize::ByteSize(initial),
            bytesize::ByteSize(limit)
        ),
        None => format!(
            "task tried to grow its memory past the limit of {}",
            bytesize::ByteSize(limit)
        ),
    }
}

/// Which trap ended a guest: [`TaskError::Trap`]'s `code`.
///
/// ```
/// use wasmpool::TrapCode;
/// assert_eq!(TrapCode::StackOverflow.name(), "stack_overflow");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrapCode {
    /// The call stack grew past its limit (deep or endless recursion).
    StackOverflow,
    /// A memory access outside the linear memory.
    MemoryOutOfBounds,
    /// A misaligned atomic access.
    HeapMisaligned,
    /// A table access outside the table.
    TableOutOfBounds,
    /// An indirect call through a null table entry.
    IndirectCallToNull,
    /// An indirect call whose signature does not match.
    BadSignature,
    /// An integer operation overflowed (e.g. `i32.div_s` of `MIN / -1`).
    IntegerOverflow,
    /// An integer division by zero.
    IntegerDivisionByZero,
    /// A float that does not convert to the integer type.
    BadConversionToInteger,
    /// An `unreachable` instruction (a Rust guest's `panic!` ends here).
    UnreachableCodeReached,
    /// A null reference was used.
    NullReference,
    /// An array access outside the array (GC proposal).
    ArrayOutOfBounds,
    /// An allocation larger than allowed (GC proposal).
    AllocationTooLarge,
    /// A failed cast (GC proposal).
    CastFailure,
    /// Any other trap code (wasmtime's list grows); the message names it.
    Other,
}

impl TrapCode {
    /// A short stable name (`snake_case`), as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TrapCode::StackOverflow => "stack_overflow",
            TrapCode::MemoryOutOfBounds => "memory_out_of_bounds",
            TrapCode::HeapMisaligned => "heap_misaligned",
            TrapCode::TableOutOfBounds => "table_out_of_bounds",
            TrapCode::IndirectCallToNull => "indirect_call_to_null",
            TrapCode::BadSignature => "bad_signature",
            TrapCode::IntegerOverflow => "integer_overflow",
            TrapCode::IntegerDivisionByZero => "integer_division_by_zero",
            TrapCode::BadConversionToInteger => "bad_conversion_to_integer",
            TrapCode::UnreachableCodeReached => "unreachable_code_reached",
            TrapCode::NullReference => "null_reference",
            TrapCode::ArrayOutOfBounds => "array_out_of_bounds",
            TrapCode::AllocationTooLarge => "allocation_too_large",
            TrapCode::CastFailure => "cast_failure",
            TrapCode::Other => "other",
        }
    }
}

impl TaskError {
    /// A short stable name for the error kind, as printed in the CLI's JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::Timeout { .. } => "timeout",
            TaskError::FuelExhausted { .. } => "fuel_exhausted",
            TaskError::MemoryLimit { .. } => "memory_limit",
            TaskError::Trap { .. } => "trap",
            TaskError::Guest { .. } => "guest",
            TaskError::Exit { .. } => "exit",
            TaskError::WorkerLost { .. } => "worker_lost",
            TaskError::Cancelled { .. } => "cancelled",
            TaskError::BadInput { .. } => "bad_input",
            TaskError::BadOutput { .. } => "bad_output",
        }
    }

    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        TaskError::BadInput {
            message: message.into(),
        }
    }

    pub(crate) fn cancelled(message: impl Into<String>) -> Self {
        TaskError::Cancelled {
            message: message.into(),
        }
    }

    pub(crate) fn worker_lost(message: impl Into<String>) -> Self {
        TaskError::WorkerLost {
            message: message.into(),
            deliveries: None,
        }
    }
}

/// Why a module could not be loaded into the pool.
///
/// ```no_run
/// # fn main() -> Result<(), wasmpool::PoolError> {
/// let pool = wasmpool::Pool::builder().workers(1).build()?;
/// let err = pool.load(b"definitely not wasm").unwrap_err();
/// assert!(matches!(err, wasmpool::LoadError::Invalid { .. }));
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read module {}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module (wasmtime's message).
    #[error("invalid module: {message}")]
    Invalid { message: String },
    /// The module needs more than a worker's instance slot holds — more than one memory,
    /// more than two tables, a table over 2^20 elements, over 16 MiB of instance metadata —
    /// so none of its tasks could run (wasmtime's message names the limit).
    #[error("the module does not fit the sandbox's instance limits (one memory, two tables of up to 2^20 elements, 16 MiB of instance metadata): {message}")]
    OverLimit { message: String },
    /// The module imports something the sandbox does not provide.
    #[error("module imports `{module}::{name}`, which the sandbox does not provide (only WASI preview 1 and `wasi_unstable` are); an unknown function import can be linked to one that traps when called instead (PoolBuilder::unknown_imports(UnknownImports::Trap), --unknown-imports trap)")]
    UnsupportedImport { module: String, name: String },
    /// Compiling the module took longer than the pool's compile limit.
    #[error("compiling the module took longer than {}; it was stopped (raise the limit: PoolBuilder::compile_timeout, --compile-timeout)", humantime::format_duration(*.limit))]
    CompileTimeout { limit: Duration },
    /// Compiling the module needed more memory than the pool's compile limit.
    #[error("compiling the module needed more than {} of memory; it was stopped", bytesize::ByteSize(*.limit))]
    CompileMemory { limit: u64 },
    /// The compile process failed in another way.
    #[error("the compile process failed: {message}")]
    CompileFailed { message: String },
    /// The module is larger than the pool accepts.
    #[error("module is {size} bytes, over the pool's limit of {limit} bytes (raise it: PoolBuilder::max_module_size, --max-module-size)")]
    TooLarge { size: usize, limit: usize },
    /// The module's initializer ([`Pool::load_initialized`](crate::Pool::load_initialized))
    /// did not finish well in its sandbox — it trapped, exited, returned nonzero, or ran
    /// out of time, fuel or memory (`error` says which, as for a task) — so nothing was
    /// snapshotted or cached.
    #[error("the initializer `{export}` failed: {error}")]
    Initializer {
        export: String,
        error: Box<TaskError>,
    },
}

impl LoadError {
    /// A short stable name for the error kind, like [`TaskError::kind`].
    ///
    /// ```
    /// let e = wasmpool::LoadError::Invalid { message: "magic header not detected".into() };
    /// assert_eq!(e.kind(), "invalid_module");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "io",
            LoadError::Invalid { .. } => "invalid_module",
            LoadError::OverLimit { .. } => "over_limit",
            LoadError::UnsupportedImport { .. } => "unsupported_import",
            LoadError::CompileTimeout { .. } => "compile_timeout",
            LoadError::CompileMemory { .. } => "compile_memory",
            LoadError::CompileFailed { .. } => "compile_failed",
            LoadError::TooLarge { .. } => "too_large",
            LoadError::Initializer { .. } => "initializer",
        }
    }
}

/// Why a pool could not be started.
///
/// Its `Debug` form carries the `Display` message for [`PoolError::WorkerNotFound`] and
/// [`PoolError::WorkerMismatch`], so that
/// `fn main() -> Result<(), PoolError>` (which prints `Debug`) shows what to do.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The worker program was not found (see `worker::locate::worker_program`).
    #[error("cannot find the wasmpool worker program; searched: {searched}. Call wasmpool::worker_main() first in main (the pool then runs this executable as its workers), or set $WASMPOOL_WORKER or PoolBuilder::worker_program to a `wasmpool` binary")]
    WorkerNotFound { searched: String },
    /// The worker program is of another build than this library: its
    /// [`Handshake`](crate::protocol::Handshake) differs.
    #[error("the worker program {program} is of another build than this library (worker: {worker}; library: {host}); {hint}", hint = crate::protocol::MISMATCH_HINT)]
    WorkerMismatch {
        program: std::path::PathBuf,
        /// The program's handshake, or why it gave none.
        worker: String,
        /// This library's handshake.
        host: String,
    },
    /// A worker process could not be started.
    #[error("cannot start worker process {}", .program.display())]
    Spawn {
        program: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pool's scratch directory (for command tasks' files) could not be created.
    #[error(
        "cannot create a scratch directory under {} (see PoolBuilder::scratch_dir)",
        .path.display()
    )]
    Scratch {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// The wasmtime engine could not be created.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// A remote pool or agent could not reach or use its NATS server (unreachable URL,
    /// refused credentials, JetStream off, a stream of another shape).
    #[error("NATS: {0}")]
    Remote(String),
}

impl fmt::Debug for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::WorkerNotFound { .. } => write!(f, "WorkerNotFound: {self}"),
            PoolError::WorkerMismatch { .. } => write!(f, "WorkerMismatch: {self}"),
            PoolError::Spawn { program, source } => f
                .debug_struct("Spawn")
                .field("program", program)
                .field("source", source)
                .finish(),
            PoolError::Scratch { path, source } => f
                .debug_struct("Scratch")
                .field("path", path)
                .field("source", source)
                .finish(),
            PoolError::Config(message) => f.debug_tuple("Config").field(message).finish(),
            PoolError::Engine(message) => f.debug_tuple("Engine").field(message).finish(),
            PoolError::Remote(message) => write!(f, "Remote: {message}"),
        }
    }
}

/// An error and its causes on one line, `Display` of each joined by `: ` (what anyhow's
/// `{:#}` prints): how the CLI, the dispatcher and `audit` print a [`LoadError`] or
/// [`PoolError`], whose `Display` leaves the cause to `source()`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fn main() -> Result<(), PoolError>` prints `Debug`: it must say what to do.
    #[test]
    fn worker_not_found_shows_its_hint_in_debug_too() {
        let e = PoolError::WorkerNotFound {
            searched: "$WASMPOOL_WORKER (unset), /x/wasmpool".into(),
        };
        let debug = format!("{e:?}");
        assert!(debug.starts_with("WorkerNotFound"), "{debug}");
        assert!(debug.contains(&e.to_string()), "{debug}");
        assert!(debug.contains("/x/wasmpool"), "{debug}");
    }

    /// A cause is in the chain once: not in `Display` as well as in `source()`.
    #[test]
    fn wrapped_causes_appear_once_in_the_chain() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let errors: [Box<dyn std::error::Error>; 3] = [
            Box::new(LoadError::Io {
                path: "m.wasm".into(),
                source: io(),
            }),
            Box::new(PoolError::Spawn {
                program: "/bin/wasmpool".into(),
                source: io(),
            }),
            Box::new(PoolError::Scratch {
                path: "/tmp/s".into(),
                source: io(),
            }),
        ];
        for e in &errors {
            let chain = Chain(e.as_ref()).to_string();
            assert_eq!(chain.matches("entity not found").count(), 1, "{chain}");
        }
    }
}
