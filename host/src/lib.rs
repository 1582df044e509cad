//! # wasmpool
//!
//! A sandboxed worker pool for WebAssembly tasks: `multiprocessing.Pool` /
//! `ProcessPoolExecutor`, rebuilt so that every task is a function exported by a wasm guest
//! module and runs in a fresh wasmtime instance inside an isolated worker process, under
//! fuel, wall-clock and memory limits.
//!
//! A task travels `pool → dispatch → worker → sandbox → guest` and its result comes back the
//! same way; `ARCHITECTURE.md` maps each stop to its file.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use wasmpool::{Json, Pool, TaskError};
//!
//! let pool = Pool::builder().workers(2).timeout(Duration::from_secs(1)).build()?;
//! let math = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
//!
//! // Plain numeric exports take numbers…
//! assert_eq!(pool.submit::<i64>(&math, "square", 7i64).wait()?, 49);
//! // …and every failure is a typed error.
//! match pool.call(&math, "spin").fuel(1_000_000).submit::<i64>(()).wait() {
//!     Err(TaskError::FuelExhausted { .. }) => {}
//!     other => panic!("{other:?}"),
//! }
//!
//! // SDK tasks take and return serde values.
//! let wc = pool.load_file("guests/target/wasm32-wasip1/release/wordcount.wasm")?;
//! let out: Json<serde_json::Value> =
//!     pool.submit(&wc, "wordcount", Json(serde_json::json!({"text": "to be or not to be"}))).wait()?;
//! assert_eq!(out.0["words"], 6);
//! # Ok(()) }
//! ```

pub mod command;
mod dispatch;
pub mod error;
mod init;
pub mod limits;
mod module;
mod mount;
pub mod pool;
mod spec;
mod value;

// The data path below the pool, as folders: the host's side of worker processes (`worker`),
// what runs inside them (`child`), the OS walls they raise (`walls`), compilation in a
// process of its own and its on-disk cache (`compile`), wasmtime (`sandbox`) and the wire
// between host and child (`protocol`). Not part of the API (hidden from the docs, no
// stability promise): public only where the `wasmpool` binary, the tests and the benchmark
// reach into them; a library user needs none of them.
mod child;
#[doc(hidden)]
pub mod compile;
#[doc(hidden)]
pub mod protocol;
#[cfg(feature = "nats")]
pub mod remote;
#[doc(hidden)]
pub mod sandbox;
mod walls;
#[doc(hidden)]
pub mod worker;

pub use child::entry::worker_main;
pub use command::{CommandOutput, CommandSpec, InputFile, InputSource, OutputChunk, OutputFile};
pub use dispatch::PoolStats;
pub use error::{LoadError, PoolError, TaskError, TrapCode};
pub use init::Init;
pub use limits::{LimitError, Limits};
pub use module::{Export, ExportKind, Module, ModuleId, Origin, UnknownImports};
pub use mount::Mount;
pub use pool::{
    AsCompleted, Batch, Call, CommandCall, Imap, OutputStream, Pool, PoolBuilder, QueueFull,
    ReusingCall, Task,
};
pub use protocol::TaskStats;
#[cfg(feature = "nats")]
pub use remote::Remote;
pub use spec::{SpecError, TaskSpec};
pub use value::{Args, FromOutput, Input, Instances, Json, Output, ValType, Value};
pub use walls::harden::WorkerUser;
