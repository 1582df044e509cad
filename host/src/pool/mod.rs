//! The user-facing pool: load modules, submit calls, map over inputs, shut down.
//! A [`Pool`] validates each call against the module's exports, hands it to the dispatcher
//! thread and gives back a [`Task`].

mod batched;
pub mod builder;
pub mod task;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};

use crate::command::{self, CommandOutput, CommandSpec, OutputChunk, STREAM_CHUNKS};
use crate::dispatch::{self, Dispatcher, Event, Job, PoolStats};
use crate::error::{LoadError, PoolError, TaskError};
use crate::limits::Limits;
use crate::module::{ExportKind, Module, ModuleId, Origin};
use crate::module_cache::{self, ModuleCache};
use crate::sandbox::Metering;
use crate::value::{Args, FromOutput, Input, Instances, ValType, Value};
use crate::worker::compile::{self, CompileLimits};
use crate::worker::harden::WorkerUser;
use crate::worker::scratch::ScratchRoot;
use crate::worker::Launch;

/// Most jobs of one `map` sent to the dispatcher in one event.
const MAX_SUBMIT_BATCH: usize = 4096;

pub use builder::PoolBuilder;
pub use task::{AsCompleted, Imap, Task};

pub(crate) struct Settings {
    pub program: PathBuf,
    pub disk_cache: Option<PathBuf>,
    pub max_retries: u32,
    pub max_worker_rss: Option<u64>,
    pub compile: CompileLimits,
    pub workers: usize,
    pub limits: Limits,
    pub max_tasks_per_worker: Option<u64>,
    pub max_module_size: usize,
    pub scratch_dir: Option<PathBuf>,
    pub user: Option<WorkerUser>,
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
pub struct Pool {
    events: Sender<Event>,
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
    disk_cache: Option<ModuleCache>,
    modules: Mutex<HashMap<ModuleId, Module>>,
    next_id: AtomicU64,
    dispatcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers)
            .field("limits", &self.limits)
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
        let (events, inbox) = unbounded();
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
        let config = dispatch::Config {
            launch: Launch {
                program: s.program.clone(),
                user: s.user,
                scratch,
            },
            workers: s.workers,
            max_tasks_per_worker: s.max_tasks_per_worker,
            max_worker_rss: s.max_worker_rss,
            remove_dir: std::sync::Arc::new(crate::worker::scratch::remove_worker_dir),
        };
        let dispatcher = Dispatcher::start(config, inbox, events.clone())?;
        Ok(Pool {
            events,
            limits: s.limits,
            workers: s.workers,
            max_module_size: s.max_module_size,
            max_retries: s.max_retries,
            max_tasks_per_worker: s.max_tasks_per_worker,
            program: s.program,
            user: s.user,
            compile: s.compile,
            disk_cache: s.disk_cache.as_deref().and_then(ModuleCache::open),
            modules: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dispatcher: Some(dispatcher),
        })
    }

    /// Number of worker processes.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Process ids of the worker processes running now (they change as workers are
    /// replaced).
    pub fn worker_pids(&self) -> Vec<u32> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.events.send(Event::Pids(tx)).is_err() {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }

    /// A snapshot of the pool's work and workers: calls queued, running, done and failed
    /// (by kind), workers live and restarted, and their memory.
    pub fn stats(&self) -> PoolStats {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.events.send(Event::Stats(tx)).is_err() {
            return PoolStats::default();
        }
        rx.recv().unwrap_or_default()
    }

    /// The default limits of calls.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Validates and compiles a module (binary or text format) once; loading the same bytes
    /// again returns the cached module. Compilation runs in a sandboxed compile process with
    /// its own time and memory limits, never in the host; workers receive the artifact. The
    /// artifact is also kept in the on-disk compile cache (see
    /// [`PoolBuilder::compile_cache`]), so the next pool loads it without compiling.
    pub fn load(&self, bytes: impl AsRef<[u8]>) -> Result<Module, LoadError> {
        let bytes = bytes.as_ref();
        if bytes.len() > self.max_module_size {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit: self.max_module_size,
            });
        }
        let id = ModuleId::of(bytes);
        if let Some(m) = self
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(m.clone());
        }
        if let Some(message) = crate::module::not_wasm(bytes) {
            return Err(LoadError::Invalid { message });
        }
        // The code for the pool's default limits now; the other variant when a call needs it.
        let metering = Metering::of(&self.limits);
        let (entry, origin) = self.compile(bytes, id, metering)?;
        let module = Module::new(bytes, metering, entry.artifact, entry.exports, origin);
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, module.clone());
        Ok(module)
    }

    /// The code of `bytes` for `metering`: from the disk cache, else from a compile process
    /// (then cached).
    fn compile(
        &self,
        bytes: &[u8],
        id: ModuleId,
        metering: Metering,
    ) -> Result<(module_cache::Entry, Origin), LoadError> {
        let started = std::time::Instant::now();
        if let Some(hit) = self.disk_cache.as_ref().and_then(|c| c.get(id, metering)) {
            return Ok((hit, Origin::DiskCache(started.elapsed())));
        }
        let (artifact, exports) =
            compile::compile(&self.program, self.user, bytes, metering, self.compile)?;
        let entry = module_cache::Entry { artifact, exports };
        if let Some(cache) = &self.disk_cache {
            cache.put(id, metering, &entry);
        }
        Ok((entry, Origin::Compiled(started.elapsed())))
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
            .compile(&module.inner.bytes, module.id(), metering)
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

    /// Starts a call of `export` with the pool's default limits, to adjust before submitting.
    pub fn call(&self, module: &Module, export: &str) -> Call<'_> {
        Call {
            pool: self,
            module: module.clone(),
            export: Arc::from(export),
            limits: self.limits,
            retries: self.max_retries,
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
    pub fn map_unordered<T: FromOutput, A: Args>(
        &self,
        module: &Module,
        export: &str,
        inputs: impl IntoIterator<Item = A>,
    ) -> AsCompleted<T> {
        self.call(module, export).map_unordered(inputs)
    }

    /// Results in input order, lazily; see [`Call::imap`].
    pub fn imap<T: FromOutput, A: Args>(
        &self,
        module: &Module,
        export: &str,
        inputs: impl IntoIterator<Item = A>,
    ) -> Imap<T> {
        self.call(module, export).imap(inputs)
    }

    /// Starts runs of the WASI command `module` (its `_start`) with the pool's default
    /// limits, to adjust before submitting [`CommandSpec`]s: `pool.command(&m).timeout(t).map(specs)`.
    pub fn command(&self, module: &Module) -> Call<'_> {
        self.call(module, command::ENTRY)
    }

    /// Runs the WASI command `module` once, like `subprocess.run` in a sandbox; see
    /// [`CommandSpec`]. Limits are the pool's defaults; use [`Pool::command`] to change them.
    pub fn run_command(&self, module: &Module, spec: CommandSpec) -> Task<CommandOutput> {
        self.command(module).submit(spec)
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
    pub fn shutdown(mut self) {
        self.stop(true);
    }

    /// Cancels queued tasks, stops running ones (they fail with `Cancelled`) and stops the
    /// workers at once. Dropping a pool does the same.
    pub fn terminate(mut self) {
        self.stop(false);
    }

    fn stop(&mut self, drain: bool) {
        let Some(handle) = self.dispatcher.take() else {
            return;
        };
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.events.send(Event::Shutdown { drain, done }).is_ok() {
            let _ = finished.recv();
        }
        let _ = handle.join();
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for Pool {
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
#[derive(Clone)]
pub struct Call<'p> {
    pool: &'p Pool,
    module: Module,
    export: Arc<str>,
    limits: Limits,
    retries: u32,
}

impl<'p> Call<'p> {
    /// How many times to re-run a task whose worker process dies under it (a crash, an OOM
    /// kill); 0 (the default) reports `WorkerLost` at once. A task that times out, traps or
    /// is cancelled is never retried.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Fuel for this call; `None` for unlimited. Limits out of their valid range (see
    /// [`Limits::validate`]) make the call's tasks fail with [`TaskError::BadInput`].
    pub fn fuel(mut self, fuel: impl Into<Option<u64>>) -> Self {
        self.limits.fuel = fuel.into();
        self
    }

    /// Wall-clock limit for this call; `None` for unlimited. Valid: more than zero, at most
    /// [`MAX_TIMEOUT`](crate::limits::MAX_TIMEOUT) (365 days); else the call's tasks fail
    /// with [`TaskError::BadInput`].
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.timeout = timeout.into();
        self
    }

    /// Memory limit for this call, in bytes; `None` for the wasm32 maximum. Valid: 1 byte to
    /// 4 GiB; else the call's tasks fail with [`TaskError::BadInput`].
    pub fn memory(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.limits.memory = bytes.into();
        self
    }

    /// All limits for this call, checked with [`Limits::validate`] when tasks are submitted
    /// (out of range: the tasks fail with [`TaskError::BadInput`], naming the limit).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Submits one call. Never blocks; a call that cannot run (unknown export, wrong
    /// arguments) gives a task already failed with [`TaskError::BadInput`].
    pub fn submit<T: FromOutput>(&self, args: impl Args) -> Task<T> {
        let (task, job) = self.job(args, None, None);
        if let Some(job) = job {
            self.send(vec![job]);
        }
        task
    }

    /// Submits one task per input at once (one message to the dispatcher); the tasks in
    /// input order. Like any [`Task`], each is cancelled if dropped unfinished.
    #[must_use = "dropping the tasks cancels them; wait for them, or detach each"]
    pub fn submit_many<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Task<T>> {
        self.submit_all(inputs, None)
    }

    /// Runs the export once per input, spread over the workers; results in input order.
    ///
    /// Each call runs in a fresh store and instance, as a task of its own would. When there
    /// are many, calls travel to the workers in batches (one message and one answer for up
    /// to 64 calls), which doubles the throughput of tiny calls; a batch whose worker dies
    /// has its calls run again one task each, so only the call that killed it fails.
    pub fn map<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> Vec<Result<T, TaskError>> {
        let calls = batched::check(self, inputs, false);
        let n = calls.len();
        let workers = self.pool.workers;
        // Enough batches for every worker to get several, so none idles at the end.
        let most = (n / (workers * 16)).min(batched::MAX_FRESH_BATCH).min(
            self.pool
                .max_tasks_per_worker
                .map_or(usize::MAX, |n| n as usize),
        );
        if most < 2 || calls.has_commands() {
            let tasks: Vec<Task<T>> = batched::singles(self, &calls, 0..n);
            return calls.merge(tasks.iter().map(Task::wait));
        }
        // The first call per worker runs as a task of its own; how long the first one took
        // sets the batch size for the rest, so a batch holds about `BATCH_WORK` of work
        // (long calls are not batched at all: batching saves nothing there, and a batch
        // is only as fast as its worker).
        let probes: Vec<Task<T>> = batched::singles(self, &calls, 0..workers);
        let took = probes.first().and_then(|t| {
            t.wait().ok()?;
            Some(t.stats()?.duration)
        });
        let chunk = took.map_or(most, |d| {
            let fits = batched::BATCH_WORK.as_nanos() / d.as_nanos().max(1);
            (fits as usize).clamp(1, most)
        });
        let rest = if chunk >= 2 {
            batched::map(self, &calls, workers..n, chunk, Instances::Fresh)
        } else {
            let tasks: Vec<Task<T>> = batched::singles(self, &calls, workers..n);
            tasks.iter().map(Task::wait).collect()
        };
        let probed: Vec<_> = probes.iter().map(Task::wait).collect();
        calls.merge(probed.into_iter().chain(rest))
    }

    /// Like [`Call::map`], yielding each result as soon as it and those before it are done.
    pub fn imap<T: FromOutput, A: Args>(&self, inputs: impl IntoIterator<Item = A>) -> Imap<T> {
        Imap::new(self.submit_all(inputs, None))
    }

    /// Runs the export once per input; yields `(input index, result)` as tasks finish.
    pub fn map_unordered<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
    ) -> AsCompleted<T> {
        let (tx, rx) = unbounded();
        AsCompleted::new(self.submit_all(inputs, Some(tx)), rx)
    }

    fn submit_all<T: FromOutput, A: Args>(
        &self,
        inputs: impl IntoIterator<Item = A>,
        notify: Option<Sender<usize>>,
    ) -> Vec<Task<T>> {
        self.submit_inputs(inputs.into_iter().map(|a| self.checked(a)), notify)
    }

    /// One task per input (already checked, or its error).
    fn submit_inputs<T: FromOutput>(
        &self,
        inputs: impl IntoIterator<Item = Result<Input, TaskError>>,
        notify: Option<Sender<usize>>,
    ) -> Vec<Task<T>> {
        let mut tasks = Vec::new();
        let mut jobs = Vec::new();
        // Jobs go out in growing batches while the rest are made, so the workers start at
        // once (making 100k jobs takes tens of milliseconds) and the dispatcher still
        // wakes only a few times.
        let mut batch = 16;
        for (i, input) in inputs.into_iter().enumerate() {
            let (task, job) = self.job_for(input, notify.clone().map(|tx| (tx, i)), None);
            tasks.push(task);
            jobs.extend(job);
            if jobs.len() >= batch {
                self.send(std::mem::take(&mut jobs));
                batch = (batch * 2).min(MAX_SUBMIT_BATCH);
            }
        }
        if !jobs.is_empty() {
            self.send(jobs);
        }
        tasks
    }

    /// Runs a command like [`Call::submit`], but sends its stdout and stderr to the returned
    /// channel as the program writes them (up to `Limits::stdout_cap`/`stderr_cap` each),
    /// instead of keeping them in [`CommandOutput`]. The channel ends when the task does.
    ///
    /// The channel holds at most [`STREAM_CHUNKS`] chunks of up to
    /// [`STREAM_CHUNK_BYTES`](crate::command::STREAM_CHUNK_BYTES):
    /// when the reader falls behind, the program blocks in its write (its wall clock runs
    /// on), like a process writing to a full pipe. So read the channel while the task runs:
    /// waiting for the task first can only end at its timeout once the program has written
    /// more than the channel holds. Keep the task while you read (or [`Task::detach`] it):
    /// dropping it unfinished cancels the run, and the channel ends there.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use wasmpool::{CommandSpec, OutputChunk, Pool};
    /// let pool = Pool::builder().build()?;
    /// let wc = pool.load_file("target/wasi-c/wc.wasm")?;
    /// let (task, output) = pool.command(&wc).submit_streaming(CommandSpec::new().stdin("a b"));
    /// for chunk in output {
    ///     if let OutputChunk::Stdout(bytes) = chunk {
    ///         print!("{}", String::from_utf8_lossy(&bytes));
    ///     }
    /// }
    /// assert_eq!(task.wait()?.exit_code, 0);
    /// # Ok(()) }
    /// ```
    #[must_use = "dropping the task cancels the run; keep it while reading, or detach it"]
    pub fn submit_streaming(
        &self,
        spec: CommandSpec,
    ) -> (
        Task<CommandOutput>,
        crossbeam_channel::Receiver<OutputChunk>,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(STREAM_CHUNKS);
        let (task, job) = self.job(spec, None, Some(tx));
        if let Some(job) = job {
            self.send(vec![job]);
        }
        (task, rx)
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
    pub fn reuse_instance(self, chunk: usize) -> ReusingCall<'p> {
        ReusingCall { call: self, chunk }
    }

    fn job<T: FromOutput>(
        &self,
        args: impl Args,
        notify: Option<(Sender<usize>, usize)>,
        stream: Option<Sender<OutputChunk>>,
    ) -> (Task<T>, Option<Job>) {
        let streaming = stream.is_some();
        let input = self.checked(args).map(|input| match input {
            Input::Command(mut c) => {
                c.stream = streaming;
                Input::Command(c)
            }
            other => other,
        });
        self.job_for(input, notify, stream)
    }

    /// One call's input, ready to send: the code its limits need compiled, the input
    /// converted and checked against the export and the size caps.
    fn checked(&self, args: impl Args) -> Result<Input, TaskError> {
        self.pool
            .prepare(&self.module, &self.limits)
            .and_then(|()| self.validate(args))
    }

    /// One call's input, converted and checked against the export and the size caps.
    fn validate(&self, args: impl Args) -> Result<Input, TaskError> {
        args.into_input_within(self.limits.max_input as usize)
            .and_then(|input| self.check(input))
            .and_then(|input| self.check_size(input))
    }

    /// A task for an input already validated (or already failed).
    fn job_for<T: FromOutput>(
        &self,
        input: Result<Input, TaskError>,
        notify: Option<(Sender<usize>, usize)>,
        stream: Option<Sender<OutputChunk>>,
    ) -> (Task<T>, Option<Job>) {
        let id = self.pool.next_id();
        let completion = task::Completion::new(notify);
        let task = Task::new(id, completion.clone(), self.pool.events.clone());
        if let Some(tx) = stream {
            completion.set_stream(tx);
        }
        match input {
            Ok(input) => {
                let job = Job {
                    id,
                    module: self.module.clone(),
                    export: self.export.clone(),
                    input,
                    limits: self.limits,
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

    fn send(&self, jobs: Vec<Job>) {
        if let Err(crossbeam_channel::SendError(Event::Submit(jobs))) =
            self.pool.events.send(Event::Submit(jobs))
        {
            for job in jobs {
                job.completion
                    .fail(TaskError::cancelled("the pool is shut down"));
            }
        }
    }

    /// Checks the input against the call's size cap.
    fn check_size(&self, input: Input) -> Result<Input, TaskError> {
        match &input {
            Input::Json(bytes) if bytes.len() > self.limits.max_input as usize => {
                Err(TaskError::bad_input(format!(
                    "the input is {} bytes, over the cap of {} bytes (Limits::max_input)",
                    bytes.len(),
                    self.limits.max_input
                )))
            }
            Input::Command(c) if c.size() > self.limits.max_input as usize => {
                Err(TaskError::bad_input(format!(
                    "the command's arguments, environment, stdin and input files are {} bytes, over the cap of {} bytes (Limits::max_input)",
                    c.size(),
                    self.limits.max_input
                )))
            }
            _ => Ok(input),
        }
    }

    /// Checks a plain numeric call's arguments against the export's parameters, converting
    /// each to its parameter's type.
    fn check_numbers(&self, args: &mut [Value], params: &[ValType]) -> Result<(), TaskError> {
        let export: &str = &self.export;
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

    /// Checks the input against the export's signature; converts numbers to its types.
    fn check(&self, input: Input) -> Result<Input, TaskError> {
        let export: &str = &self.export;
        let Some(e) = self.module.export(export) else {
            if matches!(input, Input::Command(_)) && export == command::ENTRY {
                return Err(TaskError::bad_input(format!(
                    "the module is not a WASI command: it has no `{}` export",
                    command::ENTRY
                )));
            }
            let names: Vec<&str> = self
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
pub struct ReusingCall<'p> {
    call: Call<'p>,
    chunk: usize,
}

impl ReusingCall<'_> {
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
            0 => (n / (call.pool.workers * 8)).clamp(1, 4096),
            c => c,
        };
        let results = batched::map(call, &calls, 0..n, chunk, Instances::Shared);
        calls.merge(results)
    }
}
