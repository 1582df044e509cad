//! An initializer snapshot, in a worker (`Input::Snapshot`): a fresh instance of the
//! instrumented module under the task's limits, `_initialize` if exported, then the
//! initializer; then Wizer's snapshot pass reads the instance's memories and mutable
//! globals and rewrites the original module with them as its initial state (data segments,
//! global initializers, memory minimums; no `start` section nor `_initialize` export, which
//! ran).
//! The new module's bytes are the task's output; the host compiles and caches it like any
//! module.
//!
//! The initializer gets what a reactor command gets — its argv, the pool's mounts, captured
//! stdout and stderr, its stdin (or arguments: `Init::stdin_as_argument`), no environment, no `/in` or `/out` — and must return
//! (exit code 0, or nothing): a trap, a `proc_exit` (any code), a nonzero result or a limit
//! fails the snapshot with that task error. Nothing of its WASI context is carried: the
//! snapshot holds wasm state only, and every task gets a context of its own.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use wasmtime::{Instance, InstancePre, Store, Val};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use super::call::{arm, classify, enter_reactor, fuel_used, new_store, Files};
use super::files::TaskDir;
use super::interrupt::Interrupter;
use super::output::CappedPipe;
use super::{TaskState, WasiSetup};
use crate::command::CommandInput;
use crate::error::TaskError;
use crate::protocol::{RunRequest, TaskStats};
use crate::value::{Output, SnapshotInput};

/// Runs the initializer of `snap` in a fresh instance of `pre` (the instrumented module)
/// and snapshots the instance it leaves.
pub(super) fn run(
    pre: &InstancePre<TaskState>,
    interrupter: &Interrupter,
    files: Files<'_>,
    req: &RunRequest,
    snap: &SnapshotInput,
) -> (Result<Output, TaskError>, TaskStats) {
    let limits = &req.limits;
    let stdout = CappedPipe::new(limits.stdout_cap as usize);
    let stderr = CappedPipe::new(limits.stderr_cap as usize);
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout.clone()).stderr(stderr.clone());
    // No files: `TaskDir::prepare` only sets argv, stdin and the mounts then.
    let mut command = snap.command.clone();
    command.files.clear();
    command.output_dir = false;
    command.env.clear();
    if let Err(e) = TaskDir::prepare(&mut wasi, &command, files.scratch, files.mounts, req.task) {
        return (Err(e), TaskStats::default());
    }
    let Some(export) = command.invoke.as_ref().map(|i| i.export.as_str()) else {
        return (
            Err(TaskError::bad_input(
                "a snapshot needs an initializer export",
            )),
            TaskStats::default(),
        );
    };
    let started = Instant::now();
    let mut store = new_store(pre, limits, WasiSetup::Now(Box::new(wasi)));
    if let Err(e) = arm(interrupter, req.task, limits, started) {
        return (Err(e), TaskStats::default());
    }
    let result = pre.instantiate(&mut store).and_then(|instance| {
        initialize(&mut store, instance, export, &command).map(|r| (instance, r))
    });
    let stop = interrupter.disarm();
    let fuel = fuel_used(limits, &store);
    let mut stats = CappedPipe::stats(&stdout, &stderr, fuel, started.elapsed());
    stats.peak_memory = store.data().limiter.peak;
    let outcome = match result {
        Ok((_, Err(e))) => Err(e),
        Err(e) => Err(classify(e, store.data(), stop, &req.limits, &stats.stderr)),
        Ok((instance, Ok(()))) => take(&mut store, instance, export, &snap.wasm),
    };
    stats.duration = started.elapsed();
    (outcome, stats)
}

/// [`enter_reactor`] on the initializer, which must return 0 (or nothing). The outer error
/// is a wasm failure still to be classified (an exit included: the program ended, so its
/// state is no start for tasks).
fn initialize(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &str,
    command: &CommandInput,
) -> wasmtime::Result<Result<(), TaskError>> {
    Ok(match enter_reactor(store, instance, export, command)? {
        Ok(0) => Ok(()),
        Ok(code) => Err(TaskError::Exit { code }),
        Err(TaskError::BadInput { message }) => Err(TaskError::bad_input(format!(
            "the initializer cannot run: {message}"
        ))),
        Err(e) => Err(e),
    })
}

/// Wizer's snapshot of `instance` as a new module: `wasm` (the original) with the
/// instance's memories and mutable globals as its initial state.
fn take(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &str,
    wasm: &[u8],
) -> Result<Output, TaskError> {
    let failed = |message: String| TaskError::Trap {
        message: format!("cannot snapshot the initialized instance: {message}"),
        code: None,
    };
    let mut wizer = Wizer::new();
    // The initializer stays exported (an interpreter's may be its entry point too); only
    // `_initialize`, which ran, goes.
    wizer.init_func(export).keep_init_func(true);
    // The host instrumented and compiled these bytes already, so neither pass should fail or
    // panic here; if one does, the snapshot fails and the worker lives on.
    let taken = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let binary = wat::parse_bytes(wasm)?;
        let (cx, _) = wizer.instrument(&binary)?;
        let mut live = Live {
            store,
            instance,
            missing: None,
        };
        let bytes = pollster::block_on(wizer.snapshot(&cx, &mut live))?;
        match live.missing {
            Some(name) => Err(wasmtime::Error::msg(format!(
                "the instrumented instance does not export `{name}`"
            ))),
            None => Ok(bytes),
        }
    }));
    match taken {
        Ok(Ok(bytes)) => Ok(Output::Snapshot(bytes)),
        Ok(Err(e)) => Err(failed(format!("{e:#}"))),
        Err(_) => Err(failed("the snapshot pass panicked".into())),
    }
}

/// The instance's state as Wizer reads it, through the instrumented module's exports.
struct Live<'a> {
    store: &'a mut Store<TaskState>,
    instance: Instance,
    /// An export Wizer asked for that the instance lacks (then the snapshot is refused).
    missing: Option<String>,
}

impl InstanceState for Live<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let value = self
            .instance
            .get_global(&mut *self.store, name)
            .map(|g| g.get(&mut *self.store));
        match value {
            Some(Val::I32(x)) => SnapshotVal::I32(x),
            Some(Val::I64(x)) => SnapshotVal::I64(x),
            Some(Val::F32(x)) => SnapshotVal::F32(x),
            Some(Val::F64(x)) => SnapshotVal::F64(x),
            Some(Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            _ => {
                self.missing.get_or_insert_with(|| name.to_string());
                SnapshotVal::I32(0)
            }
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(memory) => contents(memory.data(&*self.store)),
            None => {
                self.missing.get_or_insert_with(|| name.to_string());
                contents(&[]);
            }
        }
    }
}
