//! The user-facing pool: load modules, submit calls, map over inputs, shut down.
//! A [`Pool`] validates each call against the module's exports, hands it to the dispatcher
//! thread and gives back a [`Task`].

mod batched;
pub mod builder;
mod command_call;
mod feed;
mod gate;
mod init;
pub mod task;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::command::{self, CommandOutput, CommandSpec, OutputChunk, STREAM_CHUNKS};
use crate::compile::cache::{self, ModuleCache};
use crate::compile::driver::{self, CompileLimits};
use crate::dispatch::{self, Dispatcher, Event, Job, PoolStats};
use crate::error::{LoadError, PoolError, TaskError};
use crate::limits::Limits;
use crate::module::{Artifact, ExportKind, Module, ModuleId, Origin, UnknownImports};
use crate::mount::Mount;
use crate::sandbox::Metering;
use crate::spec::TaskSpec;
use crate::value::{Args, FromOutput, Input, Instances, ValType, Value};
use crate::walls::harden::WorkerUser;
use crate::worker::scratch::ScratchRoot;
use crate::worker::Launch;
use feed::Feed;

/// Most jobs of one `map` sent to the dispatcher in one event.
const MAX_SUBMIT_BATCH: usize = 4096;

pub use batched::Batch;
pub use builder::PoolBuilder;
pub use command_call::CommandCall;
pub use task::{AsCompleted, Imap, OutputStream, Task};

use gate::{Admission, Gate, Refused};

pub(crate) struct Settings {
    pub program: PathBuf,
    pub disk_cache: Option<cache::CacheSettings>,
    pub max_retries: u32,
    pub max_worker_rss: Option<u64>,
    pub compile: CompileLimits,
    pub workers: usize,
    pub limits: Limits,
    pub max_tasks_per_worker: Option<u64>,
    pub max_module_size: usize,
    pub max_queued: Option<usize>,
    pub scratch_dir: Option<PathBuf>,
    pub user: Option<WorkerUser>,
    pub unknown_imports: UnknownImports,
    /// Resolved by the builder.
    pub mounts: Vec<Mount>,
    /// Run the tasks on agents behind this NATS server instead of local workers.
    #[cfg(feature = "nats")]
    pub remote: Option<crate::remote::Remote>,
}

/// A pool of sandboxed worker processes running WebAssembly tasks.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = wasmpool::Pool::builder().workers(2).build()?;
/// let math = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
/// let squares: Vec<i64> = pool
///     .map(&math, "square", 0..10i64)
///     .into_iter()
///     .collect::<Result<_, _>>()?;
/// assert_eq!(squares[9], 81);
/// pool.shutdown();
/// # Ok(()) }
/// ```
///
/// A `Pool` is a cheap handle (`Clone`, `Send`, `Sync`, `'static`): clones share the workers,
/// the loaded modules and the queue, so a service keeps one pool and moves clones into its
/// threads and tasks. [`Pool::shutdown`] or [`Pool::terminate`] through any clone closes the
/// pool for all of them (like closing a channel: later submissions fail with
/// [`TaskError::Cancelled`]); dropping the last clone terminates it. The handles it gives
/// out ([`Call`], [`CommandCall`], [`Task`], [`Imap`], [`AsCompleted`], [`OutputStream`]) own what they need.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Shared>,
}

/// What the clones of a [`Pool`] share.
struct Shared {
    events: Sender<Event>,
    /// Where submissions wait for a local dispatcher (a remote pool's take `Event::Submit`).
    inbox: Option<Arc<dispatch::Inbox>>,
    limits: Limits,
    workers: usize,
    max_module_size: usize,
    max_retries: u32,
    /// Calls of a batch count as tasks here too: `map` batches no more than this.
    max_tasks_per_worker: Option<u64>,
    program: PathBuf,
    /// Who workers and compile processes run as (when the host is root).
    user: Option<WorkerUser>,
    compile: CompileLimits,
    unknown_imports: UnknownImports,
    disk_cache: Option<ModuleCache>,
    modules: Mutex<HashMap<ModuleId, Module>>,
    /// Modules made by initializers, by their snapshot key (`Init::key`).
    initialized: Mutex<HashMap<[u8; 32], Module>>,
    /// The pool's mounts, which an initializer could read (part of a snapshot's key).
    mounts: Vec<Mount>,
    /// Whether tasks run on agents behind a NATS server (no initializers there).
    remote: bool,
    next_id: AtomicU64,
    /// The bound on waiting calls (`PoolBuilder::max_queued`), if any.
    gate: Option<Gate>,
    /// Set when a shutdown or terminate begins.
    closed: std::sync::atomic::AtomicBool,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.inner.workers)
            .field("limits", &self.inner.limits)
            .field("max_queued", &self.inner.gate.as_ref().map(Gate::limit))
            .finish()
    }
}

impl Pool {
    /// A builder with the documented defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A pool with every default (one worker per CPU).
    pub fn new() -> Result<Pool, PoolError> {
        PoolBuilder::default().build()
    }

    pub(crate) fn start(s: Settings) -> Result<Pool, PoolError> {
        let (events, inbox) = crossbeam_channel::unbounded();
        let scratch =
            match &s.scratch_dir {
                Some(base) => Some(ScratchRoot::create(base, s.user).map_err(|source| {
                    PoolError::Scratch {
                        path: base.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        let mounts = s.mounts.clone();
        #[cfg(feature = "nats")]
        let remote = s.remote.is_some();
        #[cfg(not(feature = "nats"))]
        let remote = false;
        let config = dispatch::Config {
            launch: Launch {
                program: s.program.clone(),
                user: s.user,
                scratch,
                mounts: s.mounts,
            },
            workers: s.workers,
            max_tasks_per_worker: s.max_tasks_per_worker,
            max_worker_rss: s.max_worker_rss,
            remove_dir: std::sync::Arc::new(crate::worker::scratch::remove_worker_dir),
        };
        let jobs = Arc::new(dispatch::Inbox::default());
        #[cfg(feature = "nats")]
        let (dispatcher, jobs) = match s.remote.clone() {
            Some(remote) => (crate::remote::client::start(remote, inbox)?, None),
            None => (
                Dispatcher::start(config, inbox, events.clone(), jobs.clone())?,
                Some(jobs),
            ),
        };
        #[cfg(not(feature = "nats"))]
        let (dispatcher, jobs) = (
            Dispatcher::start(config, inbox, events.clone(), jobs.clone())?,
            Some(jobs),
        );
        Ok(Pool {
            inner: Arc::new(Shared {
                events,
                inbox: jobs,
                limits: s.limits,
                workers: s.workers,
                max_module_size: s.max_module_size,
                max_retries: s.max_retries,
                max_tasks_per_worker: s.max_tasks_per_worker,
                program: s.program,
                user: s.user,
                compile: s.compile,
                unknown_imports: s.unknown_imports,
                disk_cache: s.disk_cache.as_ref().and_then(ModuleCache::open),
                modules: Mutex::new(HashMap::new()),
                initialized: Mutex::new(HashMap::new()),
                mounts,
                remote,
                next_id: AtomicU64::new(1),
                gate: s.max_queued.map(Gate::new),
                closed: std::sync::atomic::AtomicBool::new(false),
                dispatcher: Mutex::new(Some(dispatcher)),
            }),
        })
    }

    /// A pool whose tasks run on the agents (`wasmpool agent --nats URL`) behind the NATS
    /// server at `url`, with every other setting at its default; the same calls as a local
    /// pool. See [`PoolBuilder::remote`] for the details and [`Remote`](crate::Remote) for
    /// credentials and timeouts.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::connect("nats://127.0.0.1:4222")?;
    /// let math = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
    /// let squares: Vec<i64> = pool.map(&math, "square", 0..10i64).into_iter().collect::<Result<_, _>>()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "nats")]
    pub fn connect(url: &str) -> Result<Pool, PoolError> {
        PoolBuilder::default()
            .remote(crate::remote::Remote::new(url))
            .build()
    }

    /// Number of worker processes (for a remote pool: the builder's `workers`, which
    /// sizes `map`'s batches, not the agents' workers).
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Process ids of the worker processes running now (they change as workers are
    /// replaced).
    pub fn worker_pids(&self) -> Vec<u32> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.inner.events.send(Event::Pids(tx)).is_err() {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }

    /// A snapshot of the pool's work and workers: calls queued, running, done and failed
    /// (by kind), workers live and restarted, and their memory.
    pub fn stats(&self) -> PoolStats {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.inner.events.send(Event::Stats(tx)).is_err() {
            return PoolStats::default();
        }
        rx.recv().unwrap_or_default()
    }

    /// The default limits of calls.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The largest module this pool loads, in bytes ([`PoolBuilder::max_module_size`]).
    pub fn max_module_size(&self) -> usize {
        self.inner.max_module_size
    }

    /// Validates and compiles a module (binary or text format) once; loading the same bytes
    /// again returns the cached module. Compilation runs in a sandboxed compile process with
    /// its own time and memory limits, never in the host; workers receive the artifact. The
    /// artifact is also kept in the on-disk compile cache (see
    /// [`PoolBuilder::compile_cache`]), so the next pool loads it without compiling.
    pub fn load(&self, bytes: impl AsRef<[u8]>) -> Result<Module, LoadError> {
        let bytes = bytes.as_ref();
        if bytes.len() > self.inner.max_module_size {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit: self.inner.max_module_size,
            });
        }
        self.load_any_size(bytes)
    }

    /// [`Pool::load`] without the size limit (a snapshot's size is bounded by its
    /// module's and the initializer's memory limit instead).
    fn load_any_size(&self, bytes: &[u8]) -> Result<Module, LoadError> {
        let id = ModuleId::of(bytes);
        if let Some(m) = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(m.clone());
        }
        if let Some(message) = crate::compile::validate::not_wasm(bytes) {
            return Err(LoadError::Invalid { message });
        }
        // The code for the pool's default limits now; the other variant when a call needs it.
        let metering = Metering::of(&self.inner.limits);
        let (entry, origin) = self.compile(bytes, id, metering, false)?;
        let module = Module::new(bytes, metering, entry.artifact, entry.described, origin);
        self.inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, module.clone());
        Ok(module)
    }

    /// The code of `bytes` for `metering` (instrumented for a snapshot first when
    /// `instrument` is set; `id` names what is compiled): from the disk cache, else from a
    /// compile process (then cached).
    fn compile(
        &self,
        bytes: &[u8],
        id: ModuleId,
        metering: Metering,
        instrument: bool,
    ) -> Result<(cache::Entry, Origin), LoadError> {
        let started = std::time::Instant::now();
        let cache = self.inner.disk_cache.as_ref();
        let (entry, origin) = match cache.and_then(|c| c.get(id, metering)) {
            Some(hit) => (hit, Origin::DiskCache(started.elapsed())),
            None => {
                // One compile of a module per variant at a time, across the processes and
                // threads sharing the cache: one that waited here finds the other's entry.
                let held = cache.and_then(|c| c.lock(id, metering));
                let waited = held
                    .as_ref()
                    .and_then(|_| cache.and_then(|c| c.get(id, metering)));
                match waited {
                    Some(hit) => (hit, Origin::DiskCache(started.elapsed())),
                    None => {
                        let done = driver::compile(
                            &self.inner.program,
                            self.inner.user,
                            bytes,
                            metering,
                            self.inner.compile,
                            instrument,
                        )?;
                        let described = cache::Described {
                            exports: done.exports,
                            proposals: done.proposals,
                            unknown_imports: done.unknown_imports,
                        };
                        // Workers map a large artifact from its cache file.
                        let stored =
                            cache.and_then(|c| c.put(id, metering, &done.artifact, &described));
                        let artifact = match stored {
                            Some(file) => Artifact::File(file),
                            None => Artifact::Bytes(done.artifact),
                        };
                        let entry = cache::Entry {
                            artifact,
                            described,
                        };
                        (entry, Origin::Compiled(started.elapsed()))
                    }
                }
            }
        };
        if self.inner.unknown_imports == UnknownImports::Refuse {
            if let Some((module, name)) = entry.described.unknown_imports.first() {
                return Err(LoadError::UnsupportedImport {
                    module: module.clone(),
                    name: name.clone(),
                });
            }
        }
        Ok((entry, origin))
    }

    /// Makes sure `module` has code for calls under `limits` (with or without fuel
    /// metering), compiling it on the first call that needs it. Limits outside their valid
    /// range (see [`Limits::validate`]) are refused first.
    fn prepare(&self, module: &Module, limits: &Limits) -> Result<(), TaskError> {
        limits
            .validate()
            .map_err(|e| TaskError::bad_input(format!("this call's {e}")))?;
        let metering = Metering::of(limits);
        if module.artifact(metering).is_some() {
            return Ok(());
        }
        let (entry, _) = self
            .compile(&module.inner.bytes, module.id(), metering, false)
            .map_err(|e| {
                TaskError::bad_input(format!(
                    "cannot compile the module with {} metering for this call: {e}",
                    metering.tag()
                ))
            })?;
        // Another thread may have compiled it meanwhile; either artifact will do.
        let _ = module.inner.artifacts[metering.index()].set(Arc::new(entry.artifact));
        Ok(())
    }

    /// Reads and loads a module file (see [`Pool::load`]).
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Module, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(bytes)
    }

    /// [`Pool::load`] without blocking the caller: the compile (or the read of the disk
    /// cache) runs on a thread of its own, and the future resolves when it is done, so an
    /// async service never blocks its executor on a compile. The future owns what it needs
    /// and works with any executor. A module already loaded resolves at once.
    ///
    /// ```no_run
    /// # async fn f(pool: wasmpool::Pool, bytes: Vec<u8>) -> Result<(), wasmpool::LoadError> {
    /// let module = pool.load_async(bytes).await?;
    /// # Ok(()) }
    /// ```
    pub fn load_async(
        &self,
        bytes: impl Into<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<Module, LoadError>> + Send + 'static {
        let bytes = bytes.into();
        let loaded = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ModuleId::of(&bytes))
            .cloned();
        let (tx, rx) = async_channel::bounded(1);
        let started = match loaded {
            Some(m) => {
                let _ = tx.try_send(Ok(m));
                Ok(())
            }
            None => {
                let pool = self.clone();
                std::thread::Builder::new()
                    .name("wasmpool-load".into())
                    .spawn(move || {
                        let _ = tx.send_blocking(pool.load(bytes));
                    })
                    .map(drop)
            }
        };
        async move {
            started.map_err(|e| LoadError::CompileFailed {
                message: format!("cannot start a thread to load the module: {e}"),
            })?;
            rx.recv().await.unwrap_or_else(|_| {
                Err(LoadError::CompileFailed {
                    message: "the thread loading the module ended without an answer".into(),
                })
            })
        }
    }

    /// Forgets the loaded module `id`, so the pool no longer holds its code: a service that
    /// drops modules calls this to bound its memory. Handles to it held elsewhere (and
    /// tasks running it) keep working; loading the same bytes again reads the on-disk
    /// compile cache or compiles anew. Whether the pool held it.
    pub fn unload(&self, id: ModuleId) -> bool {
        self.inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .is_some()
    }

    /// Starts a call of `export` with the pool's default limits, to adjust before submitting.
    pub fn call(&self, module: &Module, export: &str) -> Call {
        Call {
            pool: self.clone(),
            shape: Arc::new(dispatch::Shape {
                module: module.clone(),
                export: Arc::from(export),
                limits: self.inner.limits,
                env: Arc::from(Vec::new()),
            }),
            retries: self.inner.max_retries,
        }
    }

    /// Submits one call; see [`Call::submit`].
    pub fn submit<T: FromOutput>(&self, module: &Module, export: &str, args: impl Args) -> Task<T> {
        self.call(module, export).submit(args)
    }

    /// Runs `export` over every input, results in input order; see [`Call::map`].
    pub fn map<T: FromOutput, A: Args>(
        &self,
        module: &Module,
        export: &str,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Result<T, TaskError>> {
        self.call(module, export).map(inputs)
    }

    /// [`Pool::map`] for multi-argument exports, each input a tuple (like `Pool.starmap`).
    pub fn starmap<T: FromOutput, A: Args>(
        &self,
        module: &Module,
        export: &str,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Result<T, TaskError>> {
        self.call(module, export).map(inputs)
    }

    /// Results as they finish; see [`Call::map_unordered`].
    pub fn map_unordered<T: FromOutput, I>(
        &self,
        module: &Module,
        export: &str,
        inputs: I,
    ) -> AsCompleted<T>
    where
        I: IntoIterator,
        I::Item: Args,
        I::IntoIter: Send + 'static,
    {
        self.call(module, export).map_unordered(inputs)
    }

    /// Results in input order, lazily; see [`Call::imap`].
    pub fn imap<T: FromOutput, I>(&self, module: &Module, export: &str, inputs: I) -> Imap<T>
    where
        I: IntoIterator,
        I::Item: Args,
        I::IntoIter: Send + 'static,
    {
        self.call(module, export).imap(inputs)
    }

    /// Starts runs of the WASI command `module` (its `_start`) with the pool's default
    /// limits, to adjust before submitting [`CommandSpec`]s: `pool.command(&m).timeout(t).map(specs)`.
    pub fn command(&self, module: &Module) -> CommandCall {
        CommandCall::new(self.call(module, command::ENTRY))
    }

    /// Runs the WASI command `module` once, like `subprocess.run` in a sandbox; see
    /// [`CommandSpec`]. Limits are the pool's defaults; use [`Pool::command`] to change them.
    pub fn run_command(&self, module: &Module, spec: CommandSpec) -> Task<CommandOutput> {
        self.command(module).submit(spec)
    }

    /// Runs the WASI command `module` once as `spec` describes it: its limits over the
    /// pool's, its retries, its argv, stdin, environment and files.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().build()?;
    /// let wc = pool.load_file("target/wasi-c/wc.wasm")?;
    /// let spec = wasmpool::TaskSpec::from_json(r#"{"stdin": "to be or not\n", "timeout_ms": 1000}"#)?;
    /// let out = pool.run_spec(&wc, &spec).wait()?;
    /// assert_eq!(out.stdout_text().trim(), "1 4 13");
    /// # Ok(()) }
    /// ```
    pub fn run_spec(&self, module: &Module, spec: &TaskSpec) -> Task<CommandOutput> {
        self.command(module).spec(spec).submit(spec.command.clone())
    }

    /// Runs the WASI command `module` once per spec, spread over the workers; results in
    /// input order (like `map`).
    pub fn map_commands(
        &self,
        module: &Module,
        specs: impl IntoIterator<Item = CommandSpec>,
    ) -> Vec<Result<CommandOutput, TaskError>> {
        self.command(module).map(specs)
    }

    /// Waits for every submitted task to finish, then stops the workers. (A task whose
    /// [`Task`] was dropped unfinished was cancelled then; [`Task::detach`] keeps it.)
    ///
    /// Through any clone, this closes the pool for all of them: calls submitted afterwards
    /// fail with [`TaskError::Cancelled`], and a submission waiting for room in a bounded
    /// queue gives up the same way. It returns once the pool has stopped, also when another
    /// clone is shutting it down at the same time.
    pub fn shutdown(&self) {
        self.inner.stop(true);
    }

    /// Cancels queued tasks, stops running ones (they fail with `Cancelled`) and stops the
    /// workers at once, for every clone. Dropping the last clone of a pool does the same.
    pub fn terminate(&self) {
        self.inner.stop(false);
    }

    /// Whether the pool was shut down or terminated (through any clone), or is shutting
    /// down.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Shared {
    fn stop(&self, drain: bool) {
        // Held to the end: a second `shutdown` waits for the first to finish.
        let mut dispatcher = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
        let Some(handle) = dispatcher.take() else {
            return;
        };
        self.closed.store(true, Ordering::Relaxed);
        if let Some(gate) = &self.gate {
            gate.close();
        }
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.events.send(Event::Shutdown { drain, done }).is_ok() {
            let _ = finished.recv();
        }
        let _ = handle.join();
    }
}

impl Drop for Shared {
    /// The last clone of the pool is gone: nobody can wait for its tasks.
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// One call's settings: module, export and limits. Made by [`Pool::call`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let pool = wasmpool::Pool::builder().build()?;
/// let m = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
/// let n: i64 = pool
///     .call(&m, "primes")
///     .fuel(50_000_000_000)
///     .timeout(Duration::from_secs(5))
///     .submit(1_000_000i64)
///     .wait()?;
/// assert_eq!(n, 78_498);
/// # Ok(()) }
/// ```
///
/// A `Call` owns what it needs (a clone of the pool among them): keep it, clone it, move it
/// into threads and tasks.
#[derive(Clone)]
pub struct Call {
    pool: Pool,
    /// The module, export, limits and environment, shared with every job of the call.
    shape: Arc<dispatch::Shape>,
    retries: u32,
}

impl Call {
    /// How many times to re-run a task whose worker process dies under it (a crash, an OOM
    /// kill); the default is the pool's [`PoolBuilder::max_retries`] (0: `WorkerLost` at
    /// once). A task that times out, traps or is cancelled is never retried.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The old name of [`Call::max_retries`].
    #[deprecated(note = "named `max_retries`, like the builder's setting")]
    pub fn retries(self, n: u32) -> Self {
        self.max_retries(n)
    }

    /// Sets an environment variable in the WASI context of this call's tasks (plain and SDK
    /// calls; a command has its own in [`CommandSpec::env`]). Deny-by-default as everything
    /// else: without this a guest sees no environment at all. The variables count toward
    /// [`Limits::max_input`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().build()?;
    /// let m = pool.load_file("guests/target/wasm32-wasip1/release/wordcount.wasm")?;
    /// let call = pool.call(&m, "wordcount").env("RUST_BACKTRACE", "1");
    /// # Ok(()) }
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let shape = Arc::make_mut(&mut self.shape);
        let mut env = shape.env.to_vec();
        env.push((key.into(), value.into()));
        shape.env = env.into();
        self
    }

    /// Fuel for this call; `None` for unlimited. Limits out of their valid range (see
    /// [`Limits::validate`]) make the call's tasks fail with [`TaskError::BadInput`].
    pub fn fuel(mut self, fuel: impl Into<Option<u64>>) -> Self {
        Arc::make_mut(&mut self.shape).limits.fuel = fuel.into();
        self
    }

    /// Wall-clock limit for this call; `None` for unlimited. Valid: more than zero, at most
    /// [`MAX_TIMEOUT`](crate::limits::MAX_TIMEOUT) (365 days); else the call's tasks fail
    /// with [`TaskError::BadInput`].
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        Arc::make_mut(&mut self.shape).limits.timeout = timeout.into();
        self
    }

    /// Memory limit for this call, in bytes; `None` for the wasm32 maximum. Valid: 1 byte to
    /// 4 GiB; else the call's tasks fail with [`TaskError::BadInput`].
    pub fn memory(mut self, bytes: impl Into<Option<u64>>) -> Self {
        Arc::make_mut(&mut self.shape).limits.memory = bytes.into();
        self
    }

    /// The limits and retries `spec` sets, over this call's (a limit the spec leaves out
    /// stays as it is). Its command parts are a command's ([`CommandCall::spec`],
    /// [`Pool::run_spec`]); a plain or SDK call does not use them.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().build()?;
    /// let m = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
    /// let spec = wasmpool::TaskSpec::from_json(r#"{"fuel": 1000000, "timeout_ms": 200}"#)?;
    /// let n: i64 = pool.call(&m, "square").spec(&spec).submit(7i64).wait()?;
    /// # Ok(()) }
    /// ```
    pub fn spec(mut self, spec: &TaskSpec) -> Self {
        let shape = Arc::make_mut(&mut self.shape);
        shape.limits = spec.over(shape.limits);
        if let Some(n) = spec.max_retries {
            self.retries = n;
        }
        self
    }

    /// All limits for this call, checked with [`Limits::validate`] when tasks are submitted
    /// (out of range: the tasks fail with [`TaskError::BadInput`], naming the limit).
    pub fn limits(mut self, limits: Limits) -> Self {
        Arc::make_mut(&mut self.shape).limits = limits;
        self
    }

    /// Submits one call; a call that cannot run (unknown export, wrong arguments) gives a
    /// task already failed with [`TaskError::BadInput`]. Never blocks unless the pool's queue
    /// is bounded ([`PoolBuilder::max_queued`]) and full: then it waits for room, like a
    /// bounded channel's `send` (see [`Call::try_submit`] and [`Call::submit_async`]).
    pub fn submit<T: FromOutput>(&self, args: impl Args) -> Task<T> {
        let input = self.checked(args);
        match self.wait_for_room(&input) {
            Some(admission) => self.submit_one(input, admission, None),
            None => self.closed_task(),
        }
    }

    /// Submits one call if the pool's queue has room now; [`QueueFull`] if it is at its
    /// bound ([`PoolBuilder::max_queued`]). Never blocks. Otherwise like [`Call::submit`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().max_queued(1000).build()?;
    /// let m = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
    /// match pool.call(&m, "square").try_submit::<i64>(7i64) {
    ///     Ok(task) => assert_eq!(task.wait()?, 49),
    ///     Err(full) => eprintln!("busy, try later: {full}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_submit<T: FromOutput>(&self, args: impl Args) -> Result<Task<T>, QueueFull> {
        let input = self.checked(args);
        let admission = match (&input, &self.pool.inner.gate) {
            (Ok(_), Some(gate)) => match gate.try_admit(1) {
                Ok(a) => Some(a),
                Err(Refused::Full) => {
                    return Err(QueueFull {
                        limit: gate.limit(),
                    })
                }
                Err(Refused::Closed) => return Ok(self.closed_task()),
            },
            _ => None,
        };
        Ok(self.submit_one(input, admission, None))
    }

    /// [`Call::submit`] for async code: waits for room in a full queue without blocking a
    /// thread, then gives the task (itself a future of the result). The arguments are
    /// checked before it returns; the future owns what it needs (`Send + 'static`), so it
    /// can be spawned.
    ///
    /// ```no_run
    /// # async fn f(call: wasmpool::Call) -> Result<(), wasmpool::TaskError> {
    /// let square: i64 = call.submit_async(7i64).await.await?;
    /// # Ok(()) }
    /// ```
    // The future gives the task, itself a future of the result: the caller keeps a handle
    // (to cancel, detach or poll) once the call is queued.
    #[allow(clippy::async_yields_async)]
    pub fn submit_async<T: FromOutput>(
        &self,
        args: impl Args,
    ) -> impl std::future::Future<Output = Task<T>> + Send + 'static {
        let input = self.checked(args);
        let call = self.clone();
        let waiting = match (&input, &self.pool.inner.gate) {
            (Ok(_), Some(gate)) => Some(gate.admit_async(1)),
            _ => None,
        };
        async move {
            let admission = match waiting {
                Some(waiting) => match waiting.await {
                    Some(a) => Some(a),
                    None => return call.closed_task(),
                },
                None => None,
            };
            call.submit_one(input, admission, None)
        }
    }

    /// Submits one task per input at once; the tasks in input order. Like any [`Task`],
    /// each is cancelled if dropped unfinished. With a bounded queue, this waits for room
    /// as [`Call::submit`] does.
    #[must_use = "dropping the tasks cancels them; wait for them, or detach each"]
    pub fn submit_many<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Task<T>> {
        self.submit_all(inputs, None)
    }

    /// Submits the calls together: plain numeric calls travel to the workers in batches of
    /// up to 64 (one message and one answer per batch, as [`Call::map`] sends them), other
    /// calls one task each. Each call still runs in a store and instance of its own, under
    /// its own limits, and keeps its own result and stats ([`Batch::wait`]).
    ///
    /// For many short calls wanted in order with their stats, as a stream cut into chunks
    /// (what `wasmpool run` does): one handle per chunk costs the host far less than one
    /// [`Task`] per call. A batch is only as fast as its worker and answers when its last
    /// call is done, so size the chunks to the calls: a millisecond or so of work each, and
    /// several per worker. A batch whose worker dies has its calls run again one task each
    /// (in [`Batch::wait`]), so only the call that killed it fails. With a bounded queue,
    /// this waits for room as [`Call::submit`] does (each call counts).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().build()?;
    /// let math = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
    /// let call = pool.call(&math, "square").fuel(1_000_000);
    /// // A stream cut into chunks, a handle per chunk, results in order.
    /// let batches: Vec<_> = (0..1000i64)
    ///     .step_by(64)
    ///     .map(|i| call.submit_batch::<i64, _>(i..(i + 64).min(1000)))
    ///     .collect();
    /// for batch in batches {
    ///     for (result, stats) in batch.wait() {
    ///         println!("{:?} in {:?}, {} fuel", result?, stats.duration, stats.fuel_used);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn submit_batch<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> Batch<T> {
        Batch::submit(self, batched::check(self, inputs, false))
    }

    /// Runs the export once per input, spread over the workers; results in input order.
    ///
    /// Each call runs in a fresh store and instance, as a task of its own would. When there
    /// are many, calls travel to the workers in batches (one message and one answer for up
    /// to 64 calls), which doubles the throughput of tiny calls; a batch whose worker dies
    /// has its calls run again one task each, so only the call that killed it fails. With a
    /// bounded queue, batches wait for room as [`Call::submit`] does (each call of a batch
    /// counts).
    pub fn map<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Result<T, TaskError>> {
        let calls = batched::check(self, inputs, false);
        let n = calls.len();
        let workers = self.pool.inner.workers;
        // Enough batches for every worker to get several, so none idles at the end.
        let most = (n / (workers * 16)).min(batched::largest(self));
        if most < 2 || calls.has_commands() {
            let tasks: Vec<Task<T>> = batched::singles(self, &calls, 0..n);
            return calls.merge(tasks.iter().map(Task::wait));
        }
        // The first call per worker runs as a task of its own; how long the first one took
        // sets the batch size for the rest, so a batch holds about `BATCH_WORK` of work
        // (long calls are not batched at all: batching saves nothing there, and a batch
        // is only as fast as its worker).
        let probes: Vec<Task<T>> = batched::singles(self, &calls, 0..workers.min(n));
        let took = probes.first().and_then(|t| {
            t.wait().ok()?;
            Some(t.stats()?.duration)
        });
        let chunk = took.map_or(most, |d| {
            let fits = batched::BATCH_WORK.as_nanos() / d.as_nanos().max(1);
            (fits as usize).clamp(1, most)
        });
        let rest = if chunk >= 2 {
            batched::map(self, &calls, workers.min(n)..n, chunk, Instances::Fresh)
        } else {
            let tasks: Vec<Task<T>> = batched::singles(self, &calls, workers.min(n)..n);
            tasks.iter().map(Task::wait).collect()
        };
        let probed: Vec<_> = probes.iter().map(Task::wait).collect();
        calls.merge(probed.into_iter().chain(rest))
    }

    /// Like [`Call::map`], yielding each result as soon as it and those before it are done;
    /// an [`Iterator`] and a [`Stream`](futures_core::Stream). In a pool with an unbounded
    /// queue every input is submitted at once; with a bounded one
    /// ([`PoolBuilder::max_queued`]) inputs are taken from the iterator as there is room, so
    /// an endless iterator runs in bounded memory.
    pub fn imap<T: FromOutput, I>(&self, inputs: I) -> Imap<T>
    where
        I: IntoIterator,
        I::Item: Args,
        I::IntoIter: Send + 'static,
    {
        let mut feed = self.feed(inputs, false);
        let mut tasks = std::collections::VecDeque::new();
        if self.pool.inner.gate.is_none() {
            tasks.extend(feed.drain::<T>().into_iter().map(|(_, t)| t));
            return Imap::new(tasks, None);
        }
        Imap::new(tasks, Some(feed))
    }

    /// Runs the export once per input; yields `(input index, result)` as tasks finish; an
    /// [`Iterator`] and a [`Stream`](futures_core::Stream). Inputs are submitted as by
    /// [`Call::imap`].
    pub fn map_unordered<T: FromOutput, I>(&self, inputs: I) -> AsCompleted<T>
    where
        I: IntoIterator,
        I::Item: Args,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = async_channel::unbounded();
        let mut feed = self.feed(inputs, false);
        feed.notify = Some(tx);
        if self.pool.inner.gate.is_none() {
            let tasks = feed.drain::<T>();
            return AsCompleted::new(tasks, rx, None);
        }
        AsCompleted::new(Vec::new(), rx, Some(feed))
    }

    /// A feed of this call's inputs, checked one by one as they are taken.
    fn feed<I>(&self, inputs: I, _streaming: bool) -> Feed
    where
        I: IntoIterator,
        I::Item: Args,
        I::IntoIter: Send + 'static,
    {
        let call = self.clone();
        let checked = inputs.into_iter().map(move |a| call.checked(a));
        Feed::new(self.clone(), Box::new(checked))
    }

    fn submit_all<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
        notify: Option<NotifySender>,
    ) -> Vec<Task<T>> {
        self.submit_inputs(inputs.into_iter().map(|a| self.checked(a)), notify)
    }

    /// One task per input (already checked, or its error), sent to the dispatcher in
    /// growing groups while the rest are made, so the workers start at once (making 100k
    /// jobs takes tens of milliseconds) and the dispatcher still wakes only a few times.
    /// Under a queue bound each is admitted first (see [`Outbox`]).
    fn submit_inputs<T: FromOutput>(
        &self,
        inputs: impl IntoIterator<Item = Result<Input, TaskError>>,
        notify: Option<NotifySender>,
    ) -> Vec<Task<T>> {
        let mut tasks = Vec::new();
        let mut out = Outbox::new(self);
        for (i, input) in inputs.into_iter().enumerate() {
            let notify = notify.clone().map(|tx| (tx, i));
            let task = match input {
                Ok(input) => match out.admit(1) {
                    Ok(admission) => {
                        let (task, job) = self.job_for(Ok(input), notify, None, admission);
                        out.push(job);
                        task
                    }
                    Err(closed) => self.job_for(Err(closed), notify, None, None).0,
                },
                Err(e) => self.job_for(Err(e), notify, None, None).0,
            };
            tasks.push(task);
        }
        out.flush();
        tasks
    }

    /// Room in a bounded queue for one checked input, waiting for it (blocking) if the
    /// queue is full: `Some(None)` when none is needed (no bound, or an input that fails
    /// anyway), `None` when the pool is closed.
    fn wait_for_room(&self, input: &Result<Input, TaskError>) -> Option<Option<Admission>> {
        match (input, &self.pool.inner.gate) {
            (Ok(_), Some(gate)) => gate.admit(1).map(Some),
            _ => Some(None),
        }
    }

    /// A task already failed because the pool is closed.
    fn closed_task<T: FromOutput>(&self) -> Task<T> {
        self.job_for(Err(closed_error()), None, None, None).0
    }

    /// Makes and sends the task of one checked input.
    fn submit_one<T: FromOutput>(
        &self,
        input: Result<Input, TaskError>,
        admission: Option<Admission>,
        stream: Option<async_channel::Sender<OutputChunk>>,
    ) -> Task<T> {
        let (task, job) = self.job_for(input, None, stream, admission);
        if let Some(job) = job {
            self.send(std::iter::once(job));
        }
        task
    }

    /// [`CommandCall::submit_streaming`]: a command run whose stdout and stderr go to the
    /// returned channel as the program writes them.
    #[must_use = "dropping the task cancels the run; keep it while reading, or detach it"]
    pub(super) fn submit_streaming(
        &self,
        spec: CommandSpec,
    ) -> (Task<CommandOutput>, OutputStream) {
        let (tx, rx) = async_channel::bounded(STREAM_CHUNKS);
        let input = self.checked(spec).map(|input| match input {
            Input::Command(mut c) => {
                c.stream = true;
                Input::Command(c)
            }
            other => other,
        });
        let Some(admission) = self.wait_for_room(&input) else {
            return (self.closed_task(), OutputStream::new(rx));
        };
        (
            self.submit_one(input, admission, Some(tx)),
            OutputStream::new(rx),
        )
    }

    /// Runs the calls of a `map` in chunks of `chunk` per instance instead of a fresh
    /// instance per call: much cheaper for tiny tasks, but **weaker isolation** — the calls
    /// of a chunk share one instance, so what one call leaves in memory or globals the next
    /// one sees, memory grown by one stays grown, and stdout/stderr are shared. Limits still
    /// apply per call (fuel, wall clock, cancel); a call that traps or breaks a limit gets
    /// its error and the rest of its chunk continues in a fresh instance. If the worker dies,
    /// the whole chunk fails (or is retried). `chunk` 0 picks a size from the input count.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = wasmpool::Pool::builder().build()?;
    /// let m = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
    /// let squares = pool.call(&m, "square").reuse_instance(0).map::<i64, _>(0..1_000_000i64);
    /// assert_eq!(squares[999_999], Ok(999_998_000_001));
    /// # Ok(()) }
    /// ```
    pub fn reuse_instance(self, chunk: usize) -> ReusingCall {
        ReusingCall { call: self, chunk }
    }

    /// Submits an input as it came off the network (an agent's task): checked against the
    /// export like any call's — batches call by call — and the size caps, then run as it
    /// is. A bad input gives a task failed with [`TaskError::BadInput`].
    #[cfg(feature = "nats")]
    pub(crate) fn submit_input(&self, input: Input) -> Task<crate::value::Output> {
        let checked = self
            .pool
            .prepare(&self.shape.module, &self.shape.limits)
            .and_then(|()| self.check_remote(input))
            .and_then(|input| self.check_size(input));
        match self.wait_for_room(&checked) {
            Some(admission) => self.submit_one(checked, admission, None),
            None => self.closed_task(),
        }
    }

    #[cfg(feature = "nats")]
    fn check_remote(&self, input: Input) -> Result<Input, TaskError> {
        match input {
            Input::Batch { items, instances } => {
                let items = items
                    .into_iter()
                    .map(|i| self.check(i).and_then(|i| self.check_size(i)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Input::Batch { items, instances })
            }
            Input::NumberBatch {
                calls,
                mut values,
                instances,
                call_stats,
            } => {
                let params = match self
                    .shape
                    .module
                    .export(&self.shape.export)
                    .map(|e| &e.kind)
                {
                    Some(ExportKind::Numeric { params, .. }) => params.clone(),
                    _ => {
                        return Err(TaskError::bad_input(format!(
                            "`{}` is not a plain numeric export",
                            self.shape.export
                        )))
                    }
                };
                if params.is_empty() || values.len() != calls as usize * params.len() {
                    return Err(TaskError::bad_input(format!(
                        "a batch of {calls} calls of `{}` with {} values",
                        self.shape.export,
                        values.len()
                    )));
                }
                for chunk in values.chunks_mut(params.len()) {
                    self.check_numbers(chunk, &params)?;
                }
                Ok(Input::NumberBatch {
                    calls,
                    values,
                    instances,
                    call_stats,
                })
            }
            other => self.check(other),
        }
    }

    /// One call's input, ready to send: the code its limits need compiled, the input
    /// converted and checked against the export and the size caps.
    fn checked(&self, args: impl Args) -> Result<Input, TaskError> {
        self.pool
            .prepare(&self.shape.module, &self.shape.limits)
            .and_then(|()| self.validate(args))
    }

    /// One call's input, converted and checked against the export and the size caps.
    fn validate(&self, args: impl Args) -> Result<Input, TaskError> {
        args.into_input_within(self.shape.limits.max_input as usize)
            .and_then(|input| self.check(input))
            .and_then(|input| self.check_size(input))
    }

    /// A task for an input already validated (or already failed), holding its room in the
    /// queue (if the queue is bounded) until a worker takes it.
    fn job_for<T: FromOutput>(
        &self,
        input: Result<Input, TaskError>,
        notify: Option<(NotifySender, usize)>,
        stream: Option<async_channel::Sender<OutputChunk>>,
        admission: Option<Admission>,
    ) -> (Task<T>, Option<Job>) {
        let id = self.pool.next_id();
        let completion = task::Completion::new(notify);
        let task = Task::new(id, completion.clone(), self.pool.inner.events.clone());
        if let Some(tx) = stream {
            completion.set_stream(tx);
        }
        match input {
            Ok(input) => {
                if let Some(a) = admission {
                    completion.hold(a);
                }
                let job = Job {
                    id,
                    shape: self.shape.clone(),
                    // A plain call's numbers go inline (the input's vector is freed here,
                    // on the thread that made it).
                    input: input.into(),
                    retries: self.retries,
                    completion,
                };
                (task, Some(job))
            }
            Err(e) => {
                completion.fail(e);
                (task, None)
            }
        }
    }

    /// Hands `jobs` to the dispatcher, in order (through the inbox of a local pool: see
    /// `dispatch::Inbox`); a closed pool fails them.
    fn send(&self, jobs: impl IntoIterator<Item = Job>) {
        let inner = &self.pool.inner;
        let refused = match &inner.inbox {
            Some(inbox) => match inbox.push(jobs) {
                dispatch::Pushed::Behind => return,
                // Sent after the push, so the dispatcher (which empties the inbox before
                // it handles an event) finds the jobs; if it has ended, it closed the inbox
                // and failed whatever it held.
                dispatch::Pushed::First => {
                    let _ = inner.events.send(Event::Submitted);
                    return;
                }
                dispatch::Pushed::Closed(jobs) => jobs,
            },
            None => {
                let Err(crossbeam_channel::SendError(Event::Submit(jobs))) =
                    inner.events.send(Event::Submit(jobs.into_iter().collect()))
                else {
                    return;
                };
                jobs
            }
        };
        for job in refused {
            job.completion.fail(closed_error());
        }
    }

    /// Checks the input against the call's size cap.
    fn check_size(&self, input: Input) -> Result<Input, TaskError> {
        let env: usize = self
            .shape
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum();
        match &input {
            Input::Json(bytes) if bytes.len() + env > self.shape.limits.max_input as usize => {
                Err(TaskError::bad_input(format!(
                    "the input and environment are {} bytes, over the cap of {} bytes (Limits::max_input)",
                    bytes.len() + env,
                    self.shape.limits.max_input
                )))
            }
            Input::Numbers(_) if env > self.shape.limits.max_input as usize => {
                Err(TaskError::bad_input(format!(
                    "the environment is {env} bytes, over the cap of {} bytes (Limits::max_input)",
                    self.shape.limits.max_input
                )))
            }
            Input::Command(c) if c.size() > self.shape.limits.max_input as usize => {
                Err(TaskError::bad_input(format!(
                    "the command's arguments, environment, stdin and input files are {} bytes, over the cap of {} bytes (Limits::max_input)",
                    c.size(),
                    self.shape.limits.max_input
                )))
            }
            _ => Ok(input),
        }
    }

    /// Checks a plain numeric call's arguments against the export's parameters, converting
    /// each to its parameter's type.
    fn check_numbers(&self, args: &mut [Value], params: &[ValType]) -> Result<(), TaskError> {
        let export: &str = &self.shape.export;
        if args.len() != params.len() {
            return Err(TaskError::bad_input(format!(
                "`{export}` takes {} argument(s) ({}), {} given",
                params.len(),
                params
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                args.len()
            )));
        }
        for (i, (v, &ty)) in args.iter_mut().zip(params).enumerate() {
            *v = v.coerce(ty).ok_or_else(|| {
                TaskError::bad_input(format!(
                    "argument {} of `{export}` is {ty}; {v:?} does not convert to it",
                    i + 1
                ))
            })?;
        }
        Ok(())
    }

    /// Checks that `name` is a reactor's entry point: a function without parameters
    /// returning an `i32` or nothing (see [`CommandSpec::invoke`]), or, when stdin is passed
    /// as its argument through the allocator `alloc`, one of `(i32, i32)` and `alloc` a
    /// function of `(i32) -> i32` (see [`CommandSpec::stdin_as_argument`]).
    fn check_reactor(&self, name: &str, alloc: Option<&str>) -> Result<(), TaskError> {
        let numeric = |name: &str| match self.shape.module.export(name).map(|e| &e.kind) {
            Some(ExportKind::Numeric { params, results }) => Some((params, results)),
            _ => None,
        };
        if let Some(alloc) = alloc {
            if !matches!(numeric(alloc), Some((p, r)) if p[..] == [ValType::I32] && r[..] == [ValType::I32])
            {
                return Err(TaskError::bad_input(format!(
                    "stdin cannot be passed as an argument through `{alloc}`: the module has no allocator export `{alloc}: (i32) -> i32`"
                )));
            }
        }
        let params: &[ValType] = match alloc {
            Some(_) => &[ValType::I32, ValType::I32],
            None => &[],
        };
        match self.shape.module.export(name).map(|e| &e.kind) {
            Some(ExportKind::Numeric { params: p, results })
                if p[..] == *params && matches!(results.as_slice(), [] | [ValType::I32]) =>
            {
                Ok(())
            }
            Some(_) if alloc.is_some() => Err(TaskError::bad_input(format!(
                "`{name}` does not take stdin as an argument (a function of (i32, i32) returning an i32 or nothing)"
            ))),
            Some(_) => Err(TaskError::bad_input(format!(
                "`{name}` is not a reactor entry point (a function without parameters returning an i32 or nothing)"
            ))),
            None => Err(TaskError::bad_input(format!(
                "the module has no export `{name}` to invoke"
            ))),
        }
    }

    /// Checks the input against the export's signature; converts numbers to its types.
    fn check(&self, input: Input) -> Result<Input, TaskError> {
        if let Input::Command(c) = &input {
            if let Some(invoke) = &c.invoke {
                self.check_reactor(&invoke.export, invoke.stdin_as_argument.as_deref())?;
                return Ok(input);
            }
        }
        let export: &str = &self.shape.export;
        let Some(e) = self.shape.module.export(export) else {
            if matches!(input, Input::Command(_)) && export == command::ENTRY {
                return Err(TaskError::bad_input(format!(
                    "the module is not a WASI command: it has no `{}` export",
                    command::ENTRY
                )));
            }
            let names: Vec<&str> = self
                .shape
                .module
                .exports()
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            return Err(TaskError::bad_input(format!(
                "the module has no export `{export}` (its exports: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        match (&e.kind, input) {
            (_, Input::Batch { .. } | Input::NumberBatch { .. }) => Err(TaskError::bad_input(
                "a batch is not an input of one call; use Call::reuse_instance",
            )),
            (_, Input::Snapshot(_)) => Err(TaskError::bad_input(
                "an initializer snapshot is not a call's input (Pool::load_initialized takes them)",
            )),
            (ExportKind::Numeric { params, .. }, Input::Numbers(mut args)) => {
                self.check_numbers(&mut args, params)?;
                Ok(Input::Numbers(args))
            }
            (ExportKind::Numeric { params, results }, Input::Command(c))
                if params.is_empty() && results.is_empty() =>
            {
                Ok(Input::Command(c))
            }
            (_, Input::Command(_)) => Err(TaskError::bad_input(format!(
                "`{export}` is not a command entry point (a function without parameters or results, such as `_start`)"
            ))),
            (ExportKind::Numeric { .. }, Input::Json(_)) => Err(TaskError::bad_input(format!(
                "`{export}` is a plain export taking numbers; JSON input is for SDK tasks"
            ))),
            (ExportKind::Task, Input::Json(bytes)) => Ok(Input::Json(bytes)),
            (ExportKind::Task, Input::Numbers(_)) => Err(TaskError::bad_input(format!(
                "`{export}` is an SDK task: pass its input as wasmpool::Json(..)"
            ))),
            (ExportKind::Unsupported { signature }, _) => Err(TaskError::bad_input(format!(
                "`{export}` has signature {signature}, which wasmpool cannot call (only i32/i64/f32/f64 params and results)"
            ))),
        }
    }
}

/// A [`Call`] whose `map` reuses one instance per chunk of calls; made by
/// [`Call::reuse_instance`], which explains the weaker isolation.
#[derive(Clone)]
pub struct ReusingCall {
    call: Call,
    chunk: usize,
}

impl ReusingCall {
    /// Runs the export once per input, `chunk` calls per instance, chunks spread over the
    /// workers; results in input order.
    pub fn map<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Result<T, TaskError>> {
        let call = &self.call;
        let calls = batched::check(call, inputs, true);
        let n = calls.len();
        let chunk = match self.chunk {
            0 => (n / (call.pool.inner.workers * 8)).clamp(1, 4096),
            c => c,
        };
        let results = batched::map(call, &calls, 0..n, chunk, Instances::Shared);
        calls.merge(results)
    }
}

/// Where a task tells [`AsCompleted`] that it finished (with its input's index).
pub(crate) type NotifySender = async_channel::Sender<usize>;

fn closed_error() -> TaskError {
    TaskError::cancelled("the pool is shut down")
}

/// The pool's queue is at its bound ([`PoolBuilder::max_queued`]): what
/// [`Call::try_submit`] says instead of waiting for room.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the pool's queue is full ({limit} calls waiting, its max_queued bound); try again when tasks have started")]
#[non_exhaustive]
pub struct QueueFull {
    /// The bound.
    pub limit: usize,
}

/// Jobs on their way to the dispatcher, sent in growing groups (up to
/// [`MAX_SUBMIT_BATCH`]). Under a queue bound, each is admitted before it joins; when there
/// is no room, what is held is sent before waiting, so the wait never holds back jobs whose
/// start would make the room.
struct Outbox<'c> {
    call: &'c Call,
    jobs: Vec<Job>,
    next: usize,
}

impl<'c> Outbox<'c> {
    fn new(call: &'c Call) -> Self {
        Outbox {
            call,
            jobs: Vec::new(),
            next: 16,
        }
    }

    /// Room for `calls` more calls (waiting for it if the queue is full); `Ok(None)` in an
    /// unbounded pool; the error when the pool is closed.
    fn admit(&mut self, calls: usize) -> Result<Option<Admission>, TaskError> {
        let Some(gate) = &self.call.pool.inner.gate else {
            return Ok(None);
        };
        match gate.try_admit(calls) {
            Ok(a) => Ok(Some(a)),
            Err(Refused::Closed) => Err(closed_error()),
            Err(Refused::Full) => {
                self.flush();
                gate.admit(calls).map(Some).ok_or_else(closed_error)
            }
        }
    }

    fn push(&mut self, job: Option<Job>) {
        if self.jobs.capacity() == 0 {
            // A group's room at once: grown by doubling, its jobs were copied over and
            // over (measured: a third of `wasmpool run`'s own time).
            self.jobs.reserve_exact(self.next);
        }
        self.jobs.extend(job);
        if self.jobs.len() >= self.next {
            self.flush();
            self.next = (self.next * 2).min(MAX_SUBMIT_BATCH);
        }
    }

    fn flush(&mut self) {
        if !self.jobs.is_empty() {
            self.call.send(std::mem::take(&mut self.jobs));
        }
    }
}

impl Drop for Outbox<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
