//! `wasmpool exec MODULE [-- ARGS...]`: run a WASI command (a whole program) in the sandbox.
//! Once, like a sandboxed `wasmtime run` (its output and exit code become ours); or once
//! per matching file (`--each`) or per JSON spec line (`--specs`), in parallel, with JSON
//! lines in input order and a summary, like `xargs -P` / GNU `parallel`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;
use wasmpool::{CommandOutput, CommandSpec, Limits, Origin, OutputChunk, Task, TaskError};

use super::{open_output, progress_bar, PoolArgs, EXIT_OK, EXIT_TASK_FAILED};

/// Exit status of a single run that ended in a sandbox error rather than an exit code
/// (timeout: 124, like `timeout(1)`; any other: 125).
const EXIT_TIMEOUT: i32 = 124;
const EXIT_SANDBOX_ERROR: i32 = 125;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The WASI command module (.wasm or .wat), with a `_start` export.
    module: PathBuf,
    /// The program's arguments (after `--`). With `--each --file`, `{}` is replaced by the
    /// input file's path inside the sandbox (appended when no argument has `{}`).
    #[arg(last = true)]
    args: Vec<String>,
    /// Run once per file matching this glob pattern (e.g. 'problems/*.txt'), in parallel.
    #[arg(long, value_name = "GLOB", conflicts_with = "specs")]
    each: Option<String>,
    /// With --each: give each file as the program's stdin (the default).
    #[arg(long, requires = "each", conflicts_with = "file")]
    stdin: bool,
    /// With --each: give each file as a read-only input file, `/in/<name>`.
    #[arg(long, requires = "each")]
    file: bool,
    /// Run once per line of this JSONL file of specs: {"args": [..], "stdin": "..",
    /// "env": {"K": "V"}, "inputs": {"name": "host/path"}, "output_dir": true, "check": false}.
    #[arg(long, value_name = "FILE")]
    specs: Option<PathBuf>,
    /// Set an environment variable for the program (repeatable); the environment is
    /// otherwise empty.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Make a host file readable as /in/<its file name> (repeatable).
    #[arg(long = "input", value_name = "PATH")]
    inputs: Vec<PathBuf>,
    /// Give the program a writable /out and save its files here (with --each or --specs,
    /// under one sub-directory per run, named after the input or the line number).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// With --each or --specs: where to write the JSON lines; `-` is stdout.
    #[arg(long, default_value = "-")]
    output: String,
    /// Report on stderr how the module was loaded (compiled, or read from the compile
    /// cache, and how long it took) and, for a single run, its duration and fuel.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    pool: PoolArgs,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    if args.each.is_some() || args.specs.is_some() {
        return exec_many(args);
    }
    let pool = args.pool.builder().build()?;
    let module = load(&pool, &args)?;
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut stdin)
            .context("cannot read stdin")?;
    }
    let spec = base_spec(&args).stdin(stdin);
    // Like `wasmtime run`: the program's output streams through, not capped at 1 MiB.
    let limits = Limits {
        stdout_cap: u32::MAX,
        stderr_cap: u32::MAX,
        ..pool.limits()
    };
    let (task, output) = pool.command(&module).limits(limits).submit_streaming(spec);
    for chunk in output {
        match chunk {
            OutputChunk::Stdout(bytes) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            OutputChunk::Stderr(bytes) => std::io::stderr().write_all(&bytes)?,
        }
    }
    match task.wait() {
        Ok(out) => {
            if args.verbose {
                let fuel = match out.fuel_used {
                    0 => "no fuel limit".to_string(),
                    n => format!("{n} fuel"),
                };
                eprintln!(
                    "wasmpool: exit code {} after {:.2?} ({fuel})",
                    out.exit_code, out.duration
                );
            }
            if let Some(dir) = &args.out_dir {
                save_files(dir, &out)?;
            }
            Ok(out.exit_code)
        }
        Err(e) => {
            eprintln!("wasmpool: {e}");
            Ok(if matches!(e, TaskError::Timeout { .. }) {
                EXIT_TIMEOUT
            } else {
                EXIT_SANDBOX_ERROR
            })
        }
    }
}

/// Loads the module, reporting how with `--verbose`.
fn load(pool: &wasmpool::Pool, args: &ExecArgs) -> anyhow::Result<wasmpool::Module> {
    let module = pool
        .load_file(&args.module)
        .with_context(|| format!("cannot load {}", args.module.display()))?;
    if args.verbose {
        let how = match module.origin() {
            Origin::Compiled(t) => format!("compiled in {t:.2?}"),
            Origin::DiskCache(t) => format!("read from the compile cache in {t:.2?}"),
        };
        eprintln!(
            "wasmpool: {} ({} bytes): {how}",
            args.module.display(),
            module.size()
        );
    }
    Ok(module)
}

/// The parts of a spec every run shares: argv[0], environment, `--input` files, `/out`.
fn base_spec(args: &ExecArgs) -> CommandSpec {
    let name = args
        .module
        .file_name()
        .map_or("program".into(), |n| n.to_string_lossy().into_owned());
    let mut spec = CommandSpec::new()
        .argv0(name)
        .args(args.args.iter().cloned());
    spec.env = args.env.clone();
    for path in &args.inputs {
        let name = path
            .file_name()
            .map_or("input".into(), |n| n.to_string_lossy().into_owned());
        spec = spec.input_file(name, path);
    }
    spec.output_dir = args.out_dir.is_some();
    spec
}

/// One run of a batch: its label (input file or spec line) and its spec.
struct Job {
    label: String,
    spec: Result<CommandSpec, String>,
}

fn exec_many(args: ExecArgs) -> anyhow::Result<i32> {
    let jobs = match (&args.each, &args.specs) {
        (Some(pattern), _) => each_jobs(&args, pattern)?,
        (None, Some(path)) => spec_jobs(&args, path)?,
        (None, None) => unreachable!("exec_many needs --each or --specs"),
    };
    let pool = args.pool.builder().build()?;
    let module = load(&pool, &args)?;
    let started = Instant::now();
    let call = pool.command(&module);
    let tasks: Vec<Result<Task<CommandOutput>, TaskError>> = jobs
        .iter()
        .map(|job| match &job.spec {
            Ok(spec) => Ok(call.submit(spec.clone())),
            Err(message) => Err(TaskError::BadInput {
                message: message.clone(),
            }),
        })
        .collect();

    let mut out = open_output(&args.output)?;
    let progress = progress_bar(jobs.len() as u64, "runs");
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_ok = true;
    for (i, (job, task)) in jobs.iter().zip(tasks).enumerate() {
        let (result, stats) = match task {
            Ok(task) => {
                let result = task.wait();
                (result, task.stats().unwrap_or_default())
            }
            Err(e) => (Err(e), Default::default()),
        };
        let mut line = json!({ "input": job.label });
        let obj = line.as_object_mut().expect("an object");
        match &result {
            Ok(run) => {
                all_ok &= run.success();
                *summary
                    .entry(format!("exit {}", run.exit_code))
                    .or_default() += 1;
                obj.insert("exit_code".into(), run.exit_code.into());
                obj.insert("stdout".into(), run.stdout_text().into());
                obj.insert("stderr".into(), run.stderr_text().into());
                if run.output_truncated {
                    obj.insert("output_truncated".into(), true.into());
                }
                if !run.files.is_empty() {
                    let files: BTreeMap<&str, usize> = run
                        .files
                        .iter()
                        .map(|f| (f.path.as_str(), f.data.len()))
                        .collect();
                    obj.insert("files".into(), json!(files));
                }
                if let Some(dir) = &args.out_dir {
                    save_files(&dir.join(run_dir_name(job, i)), run)?;
                }
            }
            Err(e) => {
                all_ok = false;
                *summary.entry(e.kind().to_string()).or_default() += 1;
                obj.insert(
                    "error".into(),
                    json!({ "kind": e.kind(), "message": e.to_string() }),
                );
                for (key, bytes) in [("stdout", &stats.stdout), ("stderr", &stats.stderr)] {
                    if !bytes.is_empty() {
                        obj.insert(key.into(), String::from_utf8_lossy(bytes).into());
                    }
                }
            }
        }
        let (fuel, duration) = match &result {
            Ok(run) => (run.fuel_used, run.duration),
            Err(_) => (stats.fuel_used, stats.duration),
        };
        obj.insert("fuel".into(), fuel.into());
        obj.insert("duration_us".into(), (duration.as_micros() as u64).into());
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        progress.inc(1);
    }
    out.flush()?;
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    pool.shutdown();
    print_summary(jobs.len(), elapsed, &summary);
    Ok(if all_ok { EXIT_OK } else { EXIT_TASK_FAILED })
}

/// One job per file matching `pattern`, in sorted order.
fn each_jobs(args: &ExecArgs, pattern: &str) -> anyhow::Result<Vec<Job>> {
    let paths: Vec<PathBuf> = glob::glob(pattern)
        .with_context(|| format!("`{pattern}` is not a valid glob pattern"))?
        .filter_map(|entry| entry.ok())
        .filter(|p| p.is_file())
        .collect();
    if paths.is_empty() {
        bail!("no file matches `{pattern}`");
    }
    let base = base_spec(args);
    Ok(paths
        .into_iter()
        .map(|path| {
            let label = path.display().to_string();
            let spec = if args.file {
                let name = path
                    .file_name()
                    .map_or("input".into(), |n| n.to_string_lossy().into_owned());
                let inside = format!("{}/{name}", wasmpool::command::IN_DIR);
                let mut spec = base.clone();
                if spec.args.iter().any(|a| a.contains("{}")) {
                    spec.args = spec.args.iter().map(|a| a.replace("{}", &inside)).collect();
                } else {
                    spec.args.push(inside);
                }
                Ok(spec.input_file(name, &path))
            } else {
                std::fs::read(&path)
                    .map(|bytes| base.clone().stdin(bytes))
                    .map_err(|e| format!("cannot read {label}: {e}"))
            };
            Job { label, spec }
        })
        .collect())
}

/// One line of a `--specs` file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct SpecLine {
    args: Vec<String>,
    argv0: Option<String>,
    stdin: String,
    env: BTreeMap<String, String>,
    /// `/in/<name>` → host path.
    inputs: BTreeMap<String, PathBuf>,
    output_dir: bool,
    check: bool,
}

/// One job per non-blank line of the JSONL file at `path`; a bad line is that run's
/// `bad_input` error, not the batch's.
fn spec_jobs(args: &ExecArgs, path: &Path) -> anyhow::Result<Vec<Job>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read specs file {}", path.display()))?;
    let base = base_spec(args);
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let label = format!("{}:{}", path.display(), i + 1);
            let spec = serde_json::from_str::<SpecLine>(l)
                .map_err(|e| format!("spec line {}: {e}", i + 1))
                .map(|line| {
                    let mut spec = base.clone().args(line.args).stdin(line.stdin);
                    if let Some(argv0) = line.argv0 {
                        spec.argv0 = Some(argv0);
                    }
                    spec.env.extend(line.env);
                    for (name, host) in line.inputs {
                        spec = spec.input_file(name, host);
                    }
                    spec.output_dir |= line.output_dir;
                    spec.check = line.check;
                    spec
                });
            Job { label, spec }
        })
        .collect())
}

/// The sub-directory of `--out-dir` for run `index`: the input's file name, or the line.
fn run_dir_name(job: &Job, index: usize) -> String {
    Path::new(&job.label)
        .file_name()
        .map(|n| n.to_string_lossy().replace(':', "_"))
        .unwrap_or_else(|| format!("{}", index + 1))
}

/// Writes a run's `/out` files under `dir`.
fn save_files(dir: &Path, run: &CommandOutput) -> anyhow::Result<()> {
    for file in &run.files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &file.data)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The count per outcome (exit code or error kind), on stderr.
fn print_summary(total: usize, elapsed: std::time::Duration, summary: &BTreeMap<String, usize>) {
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "wasmpool: {total} run(s) in {secs:.2} s ({:.1}/s)",
        total as f64 / secs.max(1e-9)
    );
    eprintln!("  {:<16} {:>8}", "outcome", "runs");
    for (outcome, n) in summary {
        eprintln!("  {outcome:<16} {n:>8}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_parse() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn spec_lines_reject_unknown_fields() {
        assert!(serde_json::from_str::<SpecLine>(r#"{"args": ["a"], "stdin": "x"}"#).is_ok());
        assert!(serde_json::from_str::<SpecLine>(r#"{"argz": []}"#).is_err());
    }
}
