//! The sandbox: what a guest meets. Its import surface (`linker`, also what the compile
//! process checks imports against: `compile::validate`); a worker's [`Sandbox`] runs each task in a fresh store and instance under its limits and
//! turns every way a guest can fail into a [`TaskError`].

mod batch;
mod call;
pub mod engine;
mod files;
pub mod interrupt;
mod limiter;
mod output;
mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::{Engine, InstancePre, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

use crate::error::TaskError;
use crate::module::ModuleId;
use crate::mount::Mount;
use crate::protocol::{CallInputs, CallsRequest, RunRequest, TaskId, TaskStats};
use crate::value::{Input, Output};

pub use batch::CallEnd;
pub use engine::Metering;
pub use files::Scratch;
pub use interrupt::Interrupter;
pub use limiter::MAX_TABLE_ELEMENTS;
use output::CappedPipe;
pub use output::Forward;

/// The data of one task's store.
pub struct TaskState {
    /// The task's WASI context, once made.
    wasi: Option<WasiP1Ctx>,
    /// Where a context made on the guest's first WASI call sends stdout and stderr.
    pending: Option<(CappedPipe, CappedPipe, Env)>,
    limiter: limiter::MemoryLimiter,
}

/// The environment of a plain or SDK call's WASI context (`Call::env`).
pub(crate) type Env = std::sync::Arc<[(String, String)]>;

/// How a task's WASI context is made. Contexts start deny-by-default: no files, no
/// environment, no arguments, no network, empty stdin; stdout and stderr captured.
pub(crate) enum WasiSetup {
    /// Now, from this builder (commands: their `_start` uses WASI at once).
    Now(Box<WasiCtxBuilder>),
    /// On the guest's first WASI call, writing to these pipes. Most exported functions
    /// never make one, and a context (its random generators seeded, its tables built)
    /// costs as much as a third of a small task.
    OnFirstCall {
        stdout: CappedPipe,
        stderr: CappedPipe,
        env: Env,
    },
}

impl TaskState {
    pub(crate) fn new(memory: Option<u64>, wasi: WasiSetup) -> Self {
        let (wasi, pending) = match wasi {
            WasiSetup::Now(mut builder) => (Some(builder.build_p1()), None),
            WasiSetup::OnFirstCall {
                stdout,
                stderr,
                env,
            } => (None, Some((stdout, stderr, env))),
        };
        TaskState {
            wasi,
            pending,
            limiter: limiter::MemoryLimiter::new(memory),
        }
    }

    /// The task's WASI context, made on first use; every WASI call goes through here.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        let pending = &mut self.pending;
        self.wasi.get_or_insert_with(|| {
            let mut builder = WasiCtxBuilder::new();
            if let Some((stdout, stderr, env)) = pending.take() {
                builder.stdout(stdout).stderr(stderr).envs(&env);
            }
            builder.build_p1()
        })
    }
}

/// The host functions every guest can import: WASI preview 1 (and its predecessor,
/// `wasi_unstable`, which older toolchains emit), and nothing else.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<TaskState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, TaskState::wasi)?;
    wasmtime_wasi::p0::add_to_linker_sync(&mut linker, TaskState::wasi)?;
    // wasmtime-wasi refuses exit statuses of 126 and above (shells reserve them) with a
    // trap; a command's exit code is its own business, so every status is an exit.
    linker.allow_shadowing(true);
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(module, "proc_exit", |status: i32| -> wasmtime::Result<()> {
            Err(wasmtime_wasi::I32Exit(status).into())
        })?;
    }
    linker.allow_shadowing(false);
    Ok(linker)
}

/// A worker's sandbox: an engine per [`Metering`], the modules it has loaded (in either), and
/// the interrupter that enforces wall-clock limits and cancellation.
pub struct Sandbox {
    engines: [(Engine, Linker<TaskState>); 2],
    modules: HashMap<(ModuleId, Metering), InstancePre<TaskState>>,
    /// Why a module could not be loaded, for its tasks' errors.
    unloadable: HashMap<(ModuleId, Metering), String>,
    interrupter: Arc<Interrupter>,
    scratch: Scratch,
    /// The pool's mounts, preopened for every command.
    mounts: Vec<Mount>,
    /// Set once a command's task directory was left behind in `scratch`: the worker must be
    /// replaced (a fresh one gets a fresh directory).
    scratch_spoiled: bool,
    link: HostLink,
}

/// A module's compiled code as a worker receives it.
enum Code<'a> {
    Bytes(&'a [u8]),
    File(std::fs::File),
}

/// What a worker's sandbox is given to talk to its host while tasks run.
#[derive(Clone)]
pub struct HostLink {
    /// Where streaming commands' output goes.
    pub forward: Forward,
}

impl Sandbox {
    /// Creates the worker's engine (pooling allocator) and starts its deadline timer;
    /// command tasks keep their files in `scratch`; `link` carries streamed output.
    pub fn new(scratch: Scratch, link: HostLink) -> wasmtime::Result<Self> {
        let with_linker = |metering| -> wasmtime::Result<(Engine, Linker<TaskState>)> {
            let engine = engine::engine(true, metering)?;
            let linker = linker(&engine)?;
            Ok((engine, linker))
        };
        let engines = [
            with_linker(Metering::ALL[0])?,
            with_linker(Metering::ALL[1])?,
        ];
        let interrupter = Interrupter::start(engines.iter().map(|(e, _)| e.clone()).collect())?;
        Ok(Sandbox {
            engines,
            modules: HashMap::new(),
            unloadable: HashMap::new(),
            interrupter,
            scratch,
            mounts: Vec::new(),
            scratch_spoiled: false,
            link,
        })
    }

    /// The [`engine::digest`] of this sandbox's engines, for the worker handshake.
    pub fn engine_digest(&self) -> String {
        engine::digest_of(
            self.engines
                .iter()
                .zip(Metering::ALL)
                .map(|((e, _), m)| engine::fingerprint_of(e, m)),
        )
    }

    /// The pool's mounts, which every command sees from now on (the worker's Landlock
    /// ruleset must allow them).
    pub fn set_mounts(&mut self, mounts: Vec<Mount>) {
        self.mounts = mounts;
    }

    /// The interrupter, for the thread that reads cancellations.
    pub fn interrupter(&self) -> Arc<Interrupter> {
        self.interrupter.clone()
    }

    /// Makes a module's code compiled for `metering` available to later tasks; if it
    /// cannot be, its tasks fail saying why.
    pub fn load(
        &mut self,
        id: ModuleId,
        metering: Metering,
        artifact: &[u8],
    ) -> wasmtime::Result<()> {
        let loaded = self.try_load(id, metering, Code::Bytes(artifact));
        if let Err(e) = &loaded {
            self.unloadable.insert((id, metering), format!("{e:#}"));
        }
        loaded
    }

    /// [`Sandbox::load`] of code in a file of the host's compile cache (passed as a
    /// read-only descriptor, `Request::LoadFile`), which is mapped, not read: its pages
    /// (and its memory image, copy-on-write) come from the page cache, shared by every
    /// worker.
    pub fn load_file(
        &mut self,
        id: ModuleId,
        metering: Metering,
        file: std::fs::File,
    ) -> wasmtime::Result<()> {
        let loaded = self.try_load(id, metering, Code::File(file));
        if let Err(e) = &loaded {
            self.unloadable.insert((id, metering), format!("{e:#}"));
        }
        loaded
    }

    fn try_load(&mut self, id: ModuleId, metering: Metering, code: Code) -> wasmtime::Result<()> {
        if self.modules.contains_key(&(id, metering)) {
            return Ok(());
        }
        let (engine, linker) = &self.engines[metering.index()];
        // SAFETY: the artifact was produced by `Module::serialize` in a compile process of this
        // same build (or read back from the user's private, checksummed compile cache), with
        // an engine built from the same `engine::config`, and reached us over the private
        // pipe (or socket) from our parent; wasmtime still checks its version and settings. A
        // file is one the host checked against the cache's checksum when it loaded it;
        // cache files are never written in place (see `compile::cache`), and our descriptor
        // is read-only, so what is mapped stays what was checked.
        let module = unsafe {
            match code {
                Code::Bytes(artifact) => wasmtime::Module::deserialize(engine, artifact)?,
                Code::File(file) => wasmtime::Module::deserialize_open_file(engine, file)?,
            }
        };
        // Function imports the sandbox does not provide reach a worker only when the pool
        // lets them in (`UnknownImports::Trap`; the host checked): each becomes a trap.
        let pre = match linker.instantiate_pre(&module) {
            Ok(pre) => pre,
            Err(_) => {
                let mut linker = linker.clone();
                linker.define_unknown_imports_as_traps(&module)?;
                linker.instantiate_pre(&module)?
            }
        };
        self.modules.insert((id, metering), pre);
        Ok(())
    }

    /// Whether this worker must be replaced: a command's files could not all be removed
    /// from its scratch directory (see [`Sandbox::run`]).
    pub fn scratch_spoiled(&self) -> bool {
        self.scratch_spoiled
    }

    /// After a command task with files: its directory must be gone, leaving the scratch
    /// directory empty (one listing, only for such tasks).
    fn check_scratch(&mut self, req: &RunRequest) {
        let (Input::Command(c), Scratch::Dir(root)) = (&req.input, &self.scratch) else {
            return;
        };
        if self.scratch_spoiled || (c.files.is_empty() && !c.output_dir) {
            return;
        }
        let empty = std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_none());
        if !empty {
            eprintln!(
                "wasmpool worker: files of a task were left in {}; this worker asks to be replaced",
                root.display()
            );
            self.scratch_spoiled = true;
        }
    }

    /// Runs the calls of `req` one after another, each a task of its own in a fresh store
    /// and instance; `done` gets each one's wire id, outcome, stats and end as it finishes.
    pub fn run_calls(
        &mut self,
        req: &mut CallsRequest,
        mut done: impl FnMut(TaskId, CallEnd<'_>, TaskStats, std::time::Instant),
    ) {
        let metering = Metering::of(&req.limits);
        if let CallInputs::Commands(commands) = &mut req.inputs {
            // Each run exactly as a single command task (its files, its scratch check); a
            // command costs far more than the request around it.
            let commands = std::mem::take(commands);
            for (i, command) in commands.into_iter().enumerate() {
                let run = RunRequest {
                    task: req.first + i as TaskId,
                    module: req.module,
                    export: req.export.clone(),
                    input: Input::Command(command),
                    limits: req.limits,
                    env: Vec::new(),
                };
                let (outcome, stats) = self.run(&run);
                done(
                    run.task,
                    CallEnd::Outcome(outcome),
                    stats,
                    std::time::Instant::now(),
                );
            }
            return;
        }
        match self.modules.get(&(req.module, metering)) {
            Some(pre) => batch::run_calls(pre, &self.interrupter, req, done),
            None => {
                let error = self.not_loaded(req.module, metering);
                for i in 0..req.inputs.len() {
                    done(
                        req.first + i as TaskId,
                        CallEnd::Outcome(Err(error.clone())),
                        TaskStats::default(),
                        std::time::Instant::now(),
                    );
                }
            }
        }
    }

    /// The error of a task whose module this worker has not loaded (or could not).
    fn not_loaded(&self, module: ModuleId, metering: Metering) -> TaskError {
        TaskError::worker_lost(format!(
            "module {module} ({}) was not loaded in this worker{}",
            metering.tag(),
            match self.unloadable.get(&(module, metering)) {
                Some(why) => format!(": {why}"),
                None => String::new(),
            }
        ))
    }

    /// Runs one task in a fresh store and instance.
    pub fn run(&mut self, req: &RunRequest) -> (Result<Output, TaskError>, TaskStats) {
        let metering = Metering::of(&req.limits);
        match self.modules.get(&(req.module, metering)) {
            Some(pre) => match &req.input {
                Input::Batch { .. } | Input::NumberBatch { .. } => {
                    batch::run(pre, &self.interrupter, req)
                }
                Input::Snapshot(snap) => {
                    let files = call::Files {
                        scratch: &self.scratch,
                        mounts: &self.mounts,
                    };
                    snapshot::run(pre, &self.interrupter, files, req, snap)
                }
                _ => {
                    let files = call::Files {
                        scratch: &self.scratch,
                        mounts: &self.mounts,
                    };
                    let done = call::run(pre, &self.interrupter, files, &self.link, req);
                    self.check_scratch(req);
                    done
                }
            },
            None => (
                Err(self.not_loaded(req.module, metering)),
                TaskStats::default(),
            ),
        }
    }
}
