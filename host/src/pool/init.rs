//! Loading a module through an initializer: the initializer runs once per snapshot key, as a
//! task in one of the pool's workers (its walls, its limits), and the state it leaves is
//! snapshotted into a new module that is compiled and cached like any other (see
//! [`Pool::load_initialized`]).

use std::path::Path;
use std::sync::Arc;

use super::{Call, Pool};
use crate::command::{CommandInput, Invoke};
use crate::error::{LoadError, TaskError};
use crate::init::{instrumented_id, Init};
use crate::module::{Module, ModuleId};
use crate::sandbox::Metering;
use crate::value::{Input, Output, SnapshotInput};

impl Pool {
    /// Loads `bytes` as the module `init` leaves behind: `init`'s export runs once (after
    /// `_initialize`, if exported) in a fresh instance in one of the pool's workers, under
    /// the pool's default limits, and the instance's memories and mutable globals are
    /// snapshotted into a new module (Wizer's pre-initialization). Every task of the
    /// returned module starts from a fresh instance of that state: expensive set-up (tables
    /// built, an interpreter's imports done, a model read into memory) is paid once, and no
    /// task sees another's changes.
    ///
    /// The snapshot is taken once per key — the module's hash, the initializer's export,
    /// argv and stdin, the metering of the pool's limits (fuel or not) and the pool's mounts (by path)
    /// — and kept in the on-disk compile cache with its compiled code, so the next pool or
    /// process loads it without running the initializer. An initializer that fails (traps,
    /// exits, returns nonzero, runs out of time, fuel or memory) is a
    /// [`LoadError::Initializer`] carrying the task error; a module whose state cannot be
    /// snapshotted (imported memories or globals, table mutations: Wizer's limits) is
    /// [`LoadError::Invalid`].
    ///
    /// What the initializer may do: what a reactor command may (`CommandSpec::invoke`) with
    /// no environment and no files of its own, and the stdin [`Init::stdin`] gives it (or
    /// its arguments, with [`Init::stdin_as_argument`]): read the pool's mounts, write
    /// stdout and stderr (captured and dropped), use clocks and randomness. Only wasm state
    /// is carried into the snapshot: files or directories it opened are not open in the
    /// tasks (their descriptors are unknown there), and every task gets a WASI context of
    /// its own. The snapshot no longer exports `_initialize` (it ran) and has no `start`
    /// function; the initializer stays exported (a task that calls it runs it again, on
    /// its own instance).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().workers(2).build()?;
    /// let bytes = std::fs::read("table.wasm")?;
    /// let table = pool.load_initialized(&bytes, &wasmpool::Init::new("build_table"))?;
    /// let n: i32 = pool.submit(&table, "lookup", 7).wait()?;
    /// # Ok(()) }
    /// ```
    pub fn load_initialized(
        &self,
        bytes: impl AsRef<[u8]>,
        init: &Init,
    ) -> Result<Module, LoadError> {
        let bytes = bytes.as_ref();
        if bytes.len() > self.inner.max_module_size {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit: self.inner.max_module_size,
            });
        }
        if let Some(message) = crate::compile::validate::not_wasm(bytes) {
            return Err(LoadError::Invalid { message });
        }
        let failed = |error: TaskError| LoadError::Initializer {
            export: init.export().to_string(),
            error: Box::new(error),
        };
        if self.inner.remote {
            return Err(failed(TaskError::bad_input(
                "initializers run in local pools only (a remote pool's agents cannot take a snapshot)",
            )));
        }
        let metering = Metering::of(&self.inner.limits);
        let key = init.key(ModuleId::of(bytes), metering, &self.inner.mounts);
        let known = |key| {
            self.inner
                .initialized
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .cloned()
        };
        if let Some(module) = known(&key) {
            return Ok(module);
        }
        let cache = self.inner.disk_cache.as_ref();
        let snapshot = match cache.and_then(|c| c.get_snapshot(key, metering)) {
            Some(wasm) => wasm,
            None => {
                // One initializer run per key at a time, across the processes and threads
                // sharing the cache: one that waited here finds the other's snapshot.
                let held = cache.and_then(|c| c.lock(ModuleId(key), metering));
                let waited = held
                    .as_ref()
                    .and_then(|_| cache.and_then(|c| c.get_snapshot(key, metering)));
                match waited {
                    Some(wasm) => wasm,
                    None => {
                        let wasm = self.take_snapshot(bytes, init, metering)?;
                        if let Some(cache) = cache {
                            cache.put_snapshot(key, metering, &wasm);
                        }
                        wasm
                    }
                }
            }
        };
        let module = self.load_any_size(&snapshot)?;
        self.inner
            .initialized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, module.clone());
        Ok(module)
    }

    /// Reads a module file and loads it through `init` (see [`Pool::load_initialized`]).
    pub fn load_file_initialized(
        &self,
        path: impl AsRef<Path>,
        init: &Init,
    ) -> Result<Module, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_initialized(bytes, init)
    }

    /// Runs `init` in a worker on the module instrumented for a snapshot (compiled, or read
    /// from the cache, like any module) and returns the module the snapshot made.
    fn take_snapshot(
        &self,
        bytes: &[u8],
        init: &Init,
        metering: Metering,
    ) -> Result<Vec<u8>, LoadError> {
        let failed = |error: TaskError| LoadError::Initializer {
            export: init.export().to_string(),
            error: Box::new(error),
        };
        let id = instrumented_id(ModuleId::of(bytes));
        let (entry, origin) = self.compile(bytes, id, metering, true)?;
        let instrumented =
            Module::with_id(id, bytes, metering, entry.artifact, entry.described, origin);
        let (stdin, stdin_as_argument) = init.input();
        let input = Input::Snapshot(Box::new(SnapshotInput {
            command: CommandInput {
                argv: init.argv(),
                env: Vec::new(),
                stdin: stdin.to_vec(),
                files: Vec::new(),
                output_dir: false,
                check: true,
                stream: false,
                invoke: Some(Box::new(Invoke {
                    export: init.export().into(),
                    stdin_as_argument: stdin_as_argument.map(Into::into),
                })),
            },
            wasm: bytes.to_vec(),
        }));
        let call = Call {
            pool: self.clone(),
            shape: Arc::new(crate::dispatch::Shape {
                module: instrumented,
                export: Arc::from(init.export()),
                limits: self.inner.limits,
                env: Arc::from(Vec::new()),
            }),
            // A worker lost under the initializer is not retried: a hostile one would take
            // a worker each time.
            retries: 0,
        };
        let (task, job) = call.job_for::<Output>(Ok(input), None, None, None);
        if let Some(job) = job {
            call.send(std::iter::once(job));
        }
        match task.wait() {
            Ok(Output::Snapshot(wasm)) => Ok(wasm),
            Ok(_) => Err(failed(TaskError::BadOutput {
                message: "the worker answered an initializer with something else than a snapshot"
                    .into(),
            })),
            Err(error) => Err(failed(error)),
        }
    }
}
