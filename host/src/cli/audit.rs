//! `wasmpool audit`: runs a built-in battery of hostile guests against the configured sandbox
//! and reports, case by case, whether each misbehaviour was contained the way it should be,
//! and how fast. After every case a well-behaved task must still succeed on the same pool.
//!
//! The guests are WAT text embedded in the binary (`cli/audit/*.wat`), so nothing needs to be
//! built. Every case is one row of [`CASES`]: what to run ([`Run`]) and what containment to
//! expect ([`Expect`]).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytesize::ByteSize;
use wasmpool::error::Chain;
use wasmpool::{Limits, LoadError, Module, Pool, Task, TaskError, TaskStats};

use super::{Limit, PoolArgs, EXIT_OK, EXIT_TASK_FAILED};

const HOSTILE_WAT: &str = include_str!("audit/hostile.wat");
const START_LOOP_WAT: &str = include_str!("audit/start_loop.wat");
const BAD_IMPORT_WAT: &str = include_str!("audit/bad_import.wat");
const WELL_BEHAVED_WAT: &str = include_str!("audit/well_behaved.wat");
const DEEP_OUT_WAT: &str = include_str!("audit/deep_out.wat");

/// Directories `audit/deep_out.wat` nests in `/out`.
const DEEP_OUT_LEVELS: usize = 300;

/// The audit's defaults for flags not given: a tight sandbox, so the audit is quick.
const DEFAULT_WORKERS: usize = 2;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_MEMORY: u64 = 64 << 20;

/// Fuel of the case showing that fuel alone stops a loop.
const LOOP_FUEL: u64 = 100_000_000;

/// A case with no result after this long (or 3× its timeout, if longer) has hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// A containment that took longer than this many times its wall-clock limit fails.
const TIMEOUT_SLACK: u32 = 2;

const WASM_PAGE: u64 = 64 << 10;
const WASM_MAX_PAGES: u64 = 65536;

/// Width at which the "what happened" column wraps.
const HAPPENED_WIDTH: usize = 56;

/// `wasmpool audit`'s flags: the pool flags of `run`, with the audit's own defaults.
#[derive(clap::Args)]
#[command(
    mut_arg("workers", |a| a.help("Number of worker processes (default: 2)")),
    mut_arg("fuel", |a| a.help("Fuel per task, e.g. 1000000, 2e9, or `none` (default: none)")),
    mut_arg("timeout", |a| a.help("Wall-clock limit per task, e.g. 500ms, 2s, or `none` (default: 1s)")),
    mut_arg("memory", |a| a.help("Memory limit per task, e.g. 64MiB, or `none` (default: 64MiB)")),
)]
pub struct AuditArgs {
    #[command(flatten)]
    pool: PoolArgs,
}

impl AuditArgs {
    /// The pool flags with the audit's defaults filled in where a flag was not given.
    fn settings(&self) -> PoolArgs {
        let mut s = self.pool.clone();
        s.local.workers = s.local.workers.or(Some(DEFAULT_WORKERS));
        s.fuel = s.fuel.or(Some(Limit(None)));
        s.timeout = s.timeout.or(Some(Limit(Some(DEFAULT_TIMEOUT))));
        s.memory = s.memory.or(Some(Limit(Some(DEFAULT_MEMORY))));
        s
    }
}

/// One hostile behaviour and the containment expected of the sandbox.
struct Case {
    name: &'static str,
    run: Run,
    expect: Expect,
}

/// How a case is staged.
enum Run {
    /// Call `export` (no arguments, an `i64` result) of `guest` under the configured limits
    /// as changed by `limits`.
    Call {
        guest: Guest,
        export: &'static str,
        limits: fn(Limits) -> Limits,
    },
    /// Load `guest` into the pool (loading is what must fail).
    Load(Guest),
    /// Start a task that spins with no limit on a pool of one worker, SIGKILL that worker
    /// while the task runs.
    KillWorker,
    /// On a pool of one worker with a scratch directory of its own, run the command
    /// `audit/deep_out.wat` (300 directories nested in `/out`), then look in the scratch.
    DeepOut,
}

/// The embedded guests.
#[derive(Clone, Copy, Debug)]
enum Guest {
    /// `audit/hostile.wat`: one export per misbehaviour.
    Hostile,
    /// `audit/start_loop.wat`: a start function that never returns.
    StartLoop,
    /// `audit/bad_import.wat`: imports `env::evil`.
    BadImport,
    /// A module declaring more initial memory than the limit (generated from the limit).
    InitialMemoryOverLimit,
    /// Random bytes.
    NotWasm,
    /// A valid module over the workers' instance slots (WAT text).
    OverSlots(&'static str),
}

/// The containment a case expects.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Stopped by what bounds a runaway: `Timeout` when a timeout is set, `FuelExhausted`
    /// when fuel is (either one, when both are).
    Runaway,
    Timeout,
    FuelExhausted,
    MemoryLimit,
    /// A trap whose message contains this text.
    Trap(&'static str),
    Exit(i32),
    /// The task returns this value (the probes return 0 when every attempt was denied).
    Returns(i64),
    /// The task succeeds, its stdout cut at the limit's `stdout_cap` and flagged truncated.
    StdoutCapped,
    /// `WorkerLost` whose message contains this text.
    WorkerLost(&'static str),
    /// `LoadError::UnsupportedImport` when loading.
    UnsupportedImport,
    /// `LoadError::Invalid` when loading.
    Invalid,
    /// `LoadError::OverLimit` when loading.
    OverLimit,
    /// The command's files come back (or `BadOutput` says why not), and nothing it made
    /// stays in the worker's scratch directory.
    NothingLeft,
}

fn same(limits: Limits) -> Limits {
    limits
}

impl Case {
    /// A call of an export of the hostile guest under the configured limits.
    const fn hostile(name: &'static str, export: &'static str, expect: Expect) -> Case {
        Case::call(name, Guest::Hostile, export, expect)
    }

    const fn call(name: &'static str, guest: Guest, export: &'static str, expect: Expect) -> Case {
        Case {
            name,
            run: Run::Call {
                guest,
                export,
                limits: same,
            },
            expect,
        }
    }

    const fn load(name: &'static str, guest: Guest, expect: Expect) -> Case {
        Case {
            name,
            run: Run::Load(guest),
            expect,
        }
    }

    /// The limits the case runs under.
    fn limits(&self, configured: Limits) -> Limits {
        match self.run {
            Run::Call { limits, .. } => limits(configured),
            Run::Load(_) => configured,
            // The spinning victim runs without fuel or timeout: only the kill stops it.
            Run::KillWorker => configured.with_fuel(None).with_timeout(None),
            Run::DeepOut => configured,
        }
    }
}

/// The battery, in the order it runs.
const CASES: &[Case] = &[
    Case::hostile("infinite loop", "spin", Expect::Runaway),
    Case {
        name: "infinite loop, fuel 1e8",
        run: Run::Call {
            guest: Guest::Hostile,
            export: "spin",
            limits: |l| l.with_fuel(Some(LOOP_FUEL)).with_timeout(None),
        },
        expect: Expect::FuelExhausted,
    },
    Case::hostile(
        "sleep in a host call (1 h)",
        "sleep_an_hour",
        Expect::Timeout,
    ),
    Case::hostile("memory growth loop", "grow_forever", Expect::MemoryLimit),
    Case::hostile(
        "large allocation (60000 pages)",
        "grow_huge",
        Expect::MemoryLimit,
    ),
    Case::call(
        "initial memory over the limit",
        Guest::InitialMemoryOverLimit,
        "run",
        Expect::MemoryLimit,
    ),
    Case::hostile(
        "stack overflow",
        "stack_overflow",
        Expect::Trap("call stack"),
    ),
    Case::hostile("unreachable", "unreachable", Expect::Trap("unreachable")),
    Case::hostile(
        "integer division by zero",
        "divide_by_zero",
        Expect::Trap("divide by zero"),
    ),
    Case::hostile(
        "guest panic (stderr + trap)",
        "panic",
        Expect::Trap("panicked: boom"),
    ),
    Case::hostile("proc_exit(7)", "exit_7", Expect::Exit(7)),
    Case::hostile("stdout flood (64 MB)", "flood", Expect::StdoutCapped),
    Case::hostile("reading files", "read_file", Expect::Returns(0)),
    Case::hostile("writing files", "write_file", Expect::Returns(0)),
    Case::hostile(
        "reading env vars and args",
        "env_and_args",
        Expect::Returns(0),
    ),
    Case::hostile("accepting on sockets", "accept_socket", Expect::Returns(0)),
    Case::hostile("reading stdin", "read_stdin", Expect::Returns(0)),
    Case::call(
        "start function loops forever",
        Guest::StartLoop,
        "run",
        Expect::Runaway,
    ),
    Case::load(
        "bad import (env.evil)",
        Guest::BadImport,
        Expect::UnsupportedImport,
    ),
    Case::load("not wasm (random bytes)", Guest::NotWasm, Expect::Invalid),
    Case::load(
        "two memories (over the instance slot)",
        Guest::OverSlots(
            r#"(module (memory 1) (memory 1) (func (export "run") (result i64) (i64.const 0)))"#,
        ),
        Expect::OverLimit,
    ),
    Case::load(
        "three tables (over the instance slot)",
        Guest::OverSlots(
            r#"(module (table 1 funcref) (table 1 funcref) (table 1 funcref) (func (export "run") (result i64) (i64.const 0)))"#,
        ),
        Expect::OverLimit,
    ),
    Case::load(
        "table of 2^20+1 elements",
        Guest::OverSlots(
            r#"(module (table 1048577 funcref) (func (export "run") (result i64) (i64.const 0)))"#,
        ),
        Expect::OverLimit,
    ),
    Case {
        name: "worker killed mid-task",
        run: Run::KillWorker,
        expect: Expect::WorkerLost("signal 9"),
    },
    Case {
        name: "300 directories nested in /out",
        run: Run::DeepOut,
        expect: Expect::NothingLeft,
    },
];

impl Guest {
    fn bytes(self, limits: &Limits) -> Vec<u8> {
        match self {
            Guest::Hostile => HOSTILE_WAT.into(),
            Guest::StartLoop => START_LOOP_WAT.into(),
            Guest::BadImport => BAD_IMPORT_WAT.into(),
            Guest::InitialMemoryOverLimit => {
                // One page over the limit, and at least 2000 pages (125 MiB).
                let pages = limits
                    .memory
                    .map_or(WASM_MAX_PAGES, |m| m / WASM_PAGE + 1)
                    .clamp(2000, WASM_MAX_PAGES);
                format!(
                    "(module (memory {pages}) (func (export \"run\") (result i64) (i64.const 0)))"
                )
                .into_bytes()
            }
            Guest::NotWasm => random_bytes(4096),
            Guest::OverSlots(wat) => wat.into(),
        }
    }
}

/// `len` pseudo-random bytes (xorshift64, fixed seed: the same every run).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

/// What a case came to.
enum Outcome {
    /// The task finished (or failed) with this.
    Task(Result<i64, TaskError>, TaskStats),
    /// Loading the module gave this.
    Load(Result<(), LoadError>),
    /// A command with files: how deep its deepest file was (-1: none came back; or why
    /// none did), and how many entries
    /// stayed in the worker's scratch directory after it.
    Files {
        result: Result<i64, TaskError>,
        left: usize,
    },
    /// No result after this long: nothing contained it. The task was then cancelled.
    Hung(Duration),
    /// The audit could not stage the case.
    Broken(String),
}

impl Expect {
    /// The expected containment, as printed.
    fn describe(self, limits: &Limits) -> String {
        let unset = |what: &str| format!("{what} (no limit set!)");
        match self {
            Expect::Runaway => match (limits.timeout, limits.fuel) {
                (Some(t), None) => format!("Timeout ({})", humantime::format_duration(t)),
                (None, Some(_)) => "FuelExhausted".into(),
                (Some(_), Some(_)) => "Timeout or FuelExhausted".into(),
                (None, None) => unset("Timeout or FuelExhausted"),
            },
            Expect::Timeout => match limits.timeout {
                Some(t) => format!("Timeout ({})", humantime::format_duration(t)),
                None => unset("Timeout"),
            },
            Expect::FuelExhausted => "FuelExhausted".into(),
            Expect::MemoryLimit => match limits.memory {
                Some(m) => format!("MemoryLimit ({})", ByteSize(m)),
                None => unset("MemoryLimit"),
            },
            Expect::Trap(text) => format!("Trap \"{text}\""),
            Expect::Exit(code) => format!("Exit {{ code: {code} }}"),
            Expect::Returns(0) => "returns 0 (denied)".into(),
            Expect::Returns(v) => format!("returns {v}"),
            Expect::StdoutCapped => {
                format!("ok, stdout cut at {}", ByteSize(limits.stdout_cap.into()))
            }
            Expect::WorkerLost(text) => format!("WorkerLost \"{text}\""),
            Expect::UnsupportedImport => "LoadError::UnsupportedImport".into(),
            Expect::Invalid => "LoadError::Invalid".into(),
            Expect::OverLimit => "LoadError::OverLimit".into(),
            Expect::NothingLeft => "files back, scratch emptied".into(),
        }
    }

    /// Whether `outcome`, reached after `took`, is the expected containment; if not, why.
    fn check(self, outcome: &Outcome, took: Duration, limits: &Limits) -> Result<(), String> {
        use TaskError as E;
        if let Outcome::Files { result, left } = outcome {
            let answered = match result {
                Ok(depth) => *depth == DEEP_OUT_LEVELS as i64,
                Err(e) => matches!(e, E::BadOutput { .. }),
            };
            return match self {
                Expect::NothingLeft if answered && *left == 0 => Ok(()),
                _ => Err(String::new()),
            };
        }
        let Outcome::Task(result, stats) = outcome else {
            return match (self, outcome) {
                (
                    Expect::UnsupportedImport,
                    Outcome::Load(Err(LoadError::UnsupportedImport { .. })),
                )
                | (Expect::Invalid, Outcome::Load(Err(LoadError::Invalid { .. })))
                | (Expect::OverLimit, Outcome::Load(Err(LoadError::OverLimit { .. }))) => Ok(()),
                _ => Err(String::new()),
            };
        };
        let expected = match (self, result) {
            (Expect::Runaway, Err(E::Timeout { .. } | E::FuelExhausted { .. }))
            | (Expect::Timeout, Err(E::Timeout { .. }))
            | (Expect::FuelExhausted, Err(E::FuelExhausted { .. }))
            | (Expect::MemoryLimit, Err(E::MemoryLimit { .. })) => true,
            (Expect::Trap(text), Err(E::Trap { message, .. }))
            | (Expect::WorkerLost(text), Err(E::WorkerLost { message, .. })) => {
                message.contains(text)
            }
            (Expect::Exit(want), Err(E::Exit { code })) => want == *code,
            (Expect::Returns(want), Ok(got)) => want == *got,
            (Expect::StdoutCapped, Ok(_)) => {
                stats.output_truncated && stats.stdout.len() == limits.stdout_cap as usize
            }
            _ => false,
        };
        if !expected {
            return Err(String::new());
        }
        match result {
            Err(E::Timeout { limit }) if took > *limit * TIMEOUT_SLACK => Err(format!(
                "took over {TIMEOUT_SLACK}x its {} limit",
                humantime::format_duration(*limit)
            )),
            _ => Ok(()),
        }
    }
}

impl Outcome {
    /// What happened, briefly.
    fn describe(&self) -> String {
        match self {
            Outcome::Task(Ok(v), stats) => {
                let mut s = format!("returned {v}");
                if stats.output_truncated || !stats.stdout.is_empty() {
                    s.push_str(&format!(
                        "; stdout kept {}{}",
                        ByteSize(stats.stdout.len() as u64),
                        if stats.output_truncated {
                            ", truncated"
                        } else {
                            ""
                        }
                    ));
                }
                s
            }
            Outcome::Task(Err(e), _) => match e {
                TaskError::Timeout { limit } => {
                    format!("Timeout (limit {})", humantime::format_duration(*limit))
                }
                TaskError::FuelExhausted { fuel } => format!("FuelExhausted ({fuel} fuel)"),
                TaskError::MemoryLimit { limit, .. } => {
                    format!("MemoryLimit (limit {})", ByteSize(*limit))
                }
                TaskError::Trap { message, .. } => format!("Trap: {message}"),
                TaskError::Exit { code } => format!("Exit {{ code: {code} }}"),
                TaskError::WorkerLost { message, .. } => format!("WorkerLost: {message}"),
                other => format!("{}: {other}", other.kind()),
            },
            Outcome::Load(Ok(())) => "loaded".into(),
            Outcome::Load(Err(e)) => {
                let debug = format!("{e:?}");
                let variant = debug.split(|c: char| !c.is_alphanumeric()).next();
                format!("LoadError::{}: {}", variant.unwrap_or_default(), Chain(e))
            }
            Outcome::Files { result, left } => {
                let got = match result {
                    Ok(-1) => "no file back".to_string(),
                    Ok(n) => format!("its file back from {n} levels down"),
                    Err(e) => format!("{}: {e}", e.kind()),
                };
                format!("{got}; {left} entries left in the scratch directory")
            }
            Outcome::Hung(after) => {
                format!("HUNG: no result after {after:.1?}; cancelled")
            }
            Outcome::Broken(why) => format!("audit could not run the case: {why}"),
        }
    }
}

/// A case run: its outcome and what followed.
struct Trial {
    outcome: Outcome,
    /// Submit (or load) → result.
    took: Duration,
    /// Worker processes replaced while the case ran.
    replaced: usize,
    /// The well-behaved task run right after, on the same pool.
    after: Result<(), String>,
}

/// One line of the report.
struct Row {
    name: &'static str,
    expected: String,
    happened: String,
    took: Duration,
    pass: bool,
}

/// The pool under audit.
struct Audit {
    settings: PoolArgs,
    pool: Pool,
    limits: Limits,
    well_behaved: Module,
}

impl Audit {
    fn start(settings: PoolArgs) -> anyhow::Result<Audit> {
        let pool = settings.builder().build()?;
        let well_behaved = pool
            .load(WELL_BEHAVED_WAT)
            .context("cannot compile the audit's well-behaved guest")?;
        Ok(Audit {
            limits: pool.limits(),
            settings,
            pool,
            well_behaved,
        })
    }

    fn row(&self, case: &Case) -> Row {
        let limits = case.limits(self.limits);
        let trial = match case.run {
            Run::Call { guest, export, .. } => {
                self.on_pool(|pool| match pool.load(guest.bytes(&limits)) {
                    Ok(module) => {
                        let started = Instant::now();
                        let task = pool.call(&module, export).limits(limits).submit(());
                        settle(&task, started, patience(&limits))
                    }
                    Err(e) => (
                        Outcome::Broken(format!("cannot load the guest: {}", Chain(&e))),
                        Duration::ZERO,
                    ),
                })
            }
            Run::Load(guest) => self.on_pool(|pool| {
                let bytes = guest.bytes(&limits);
                let started = Instant::now();
                let loaded = pool.load(bytes).map(drop);
                (Outcome::Load(loaded), started.elapsed())
            }),
            Run::KillWorker => self.kill_worker(limits),
            Run::DeepOut => self.deep_out(limits),
        };
        let mut happened = trial.outcome.describe();
        let mut pass = true;
        if let Err(why) = case.expect.check(&trial.outcome, trial.took, &limits) {
            pass = false;
            if !why.is_empty() {
                happened.push_str(&format!(" -- {why}"));
            }
        }
        if trial.replaced > 0 {
            happened.push_str("; worker replaced");
        }
        if let Err(e) = trial.after {
            pass = false;
            happened.push_str(&format!("; then square(12) FAILED: {e}"));
        }
        Row {
            name: case.name,
            expected: case.expect.describe(&limits),
            happened,
            took: trial.took,
            pass,
        }
    }

    /// Runs `f` on the audited pool, noting the workers replaced meanwhile, then checks
    /// that the pool still serves a well-behaved task.
    fn on_pool(&self, f: impl FnOnce(&Pool) -> (Outcome, Duration)) -> Trial {
        let before = self.pool.worker_pids();
        let (outcome, took) = f(&self.pool);
        let after = self.pool.worker_pids();
        Trial {
            outcome,
            took,
            replaced: before.iter().filter(|p| !after.contains(p)).count(),
            after: still_serves(&self.pool, &self.well_behaved),
        }
    }

    /// On a pool of its own with one worker: a task spins with no limits, its worker is
    /// SIGKILLed while it runs; the task must fail with `WorkerLost` and the pool go on.
    fn kill_worker(&self, limits: Limits) -> Trial {
        let broken = |why: String| Trial {
            outcome: Outcome::Broken(why),
            took: Duration::ZERO,
            replaced: 0,
            after: Ok(()),
        };
        let pool = match self.settings.builder().workers(1).build() {
            Ok(pool) => pool,
            Err(e) => return broken(format!("cannot start a one-worker pool: {}", Chain(&e))),
        };
        let (hostile, square) = match (pool.load(HOSTILE_WAT), pool.load(WELL_BEHAVED_WAT)) {
            (Ok(h), Ok(s)) => (h, s),
            (Err(e), _) | (_, Err(e)) => {
                return broken(format!("cannot load the guests: {}", Chain(&e)))
            }
        };
        // Warm up: the worker is ready and has the guests before the victim is sent.
        if let Err(e) = still_serves(&pool, &square) {
            return broken(format!("the fresh pool does not serve square(12): {e}"));
        }
        let started = Instant::now();
        // No retries: the loss must be reported, not hidden by a re-run.
        let victim: Task<i64> = pool
            .call(&hostile, "spin")
            .limits(limits)
            .max_retries(0)
            .submit(());
        while !victim.is_running() {
            if victim.is_done() || started.elapsed() > PATIENCE {
                victim.cancel();
                return broken("the spinning task never started running".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let pids = pool.worker_pids();
        let [pid] = pids[..] else {
            victim.cancel();
            return broken(format!("expected one worker, found {pids:?}"));
        };
        let killed = rustix::process::Pid::from_raw(pid as i32)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|p| rustix::process::kill_process(p, rustix::process::Signal::KILL));
        if let Err(e) = killed {
            victim.cancel();
            return broken(format!("cannot SIGKILL worker {pid}: {e}"));
        }
        let (outcome, took) = settle(&victim, started, PATIENCE);
        let after = pool.worker_pids();
        Trial {
            outcome,
            took,
            replaced: usize::from(!after.contains(&pid)),
            after: still_serves(&pool, &square),
        }
    }
}

impl Audit {
    /// On a pool of its own (one worker, a scratch directory of its own): the command
    /// `audit/deep_out.wat` nests directories in `/out` deeper than a worker's descriptor
    /// limit; afterwards the worker's scratch directory must be empty.
    fn deep_out(&self, limits: Limits) -> Trial {
        let broken = |why: String| Trial {
            outcome: Outcome::Broken(why),
            took: Duration::ZERO,
            replaced: 0,
            after: Ok(()),
        };
        let base = std::env::temp_dir().join(format!("wasmpool-audit-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&base) {
            return broken(format!("cannot create {}: {e}", base.display()));
        }
        let trial = (|| {
            let pool = self
                .settings
                .builder()
                .workers(1)
                .scratch_dir(base.clone())
                .build()
                .map_err(|e| format!("cannot start a one-worker pool: {}", Chain(&e)))?;
            let (deep, square) = match (pool.load(DEEP_OUT_WAT), pool.load(WELL_BEHAVED_WAT)) {
                (Ok(d), Ok(s)) => (d, s),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(format!("cannot load the guests: {}", Chain(&e)))
                }
            };
            let before = pool.worker_pids();
            let started = Instant::now();
            let task = pool
                .command(&deep)
                .limits(limits)
                .submit(wasmpool::CommandSpec::new().output_dir());
            let result = match task.wait_timeout(patience(&limits)) {
                // How deep the file came back from.
                Some(r) => r.map(|out| {
                    let depth = out.files.iter().map(|f| f.path.matches('/').count()).max();
                    depth.map_or(-1, |d| d as i64)
                }),
                None => {
                    task.cancel();
                    return Err(format!("no answer within {:?}", patience(&limits)));
                }
            };
            let took = started.elapsed();
            // Every entry under the pool's scratch directory but the workers' own.
            let mut left = 0;
            for root in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                for worker in std::fs::read_dir(root.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    left += std::fs::read_dir(worker.path())
                        .into_iter()
                        .flatten()
                        .count();
                }
            }
            let after = pool.worker_pids();
            Ok(Trial {
                outcome: Outcome::Files { result, left },
                took,
                replaced: before.iter().filter(|p| !after.contains(p)).count(),
                after: still_serves(&pool, &square),
            })
        })();
        let _ = wasmpool::worker::scratch::remove_tree(&base);
        trial.unwrap_or_else(broken)
    }
}

/// How long to wait for a case before calling it hung.
fn patience(limits: &Limits) -> Duration {
    limits
        .timeout
        .map_or(PATIENCE, |t| t.saturating_mul(3).max(PATIENCE))
}

/// Waits for `task` (submitted at `started`) at most `patience`; a task still going then is
/// cancelled and reported as hung.
fn settle(task: &Task<i64>, started: Instant, patience: Duration) -> (Outcome, Duration) {
    match task.wait_timeout(patience) {
        Some(result) => (
            Outcome::Task(result, task.stats().unwrap_or_default()),
            started.elapsed(),
        ),
        None => {
            let waited = started.elapsed();
            task.cancel();
            let _ = task.wait_timeout(PATIENCE);
            (Outcome::Hung(waited), waited)
        }
    }
}

/// The well-behaved task: square(12) must give 144.
fn still_serves(pool: &Pool, well_behaved: &Module) -> Result<(), String> {
    let task = pool.submit::<i64>(well_behaved, "square", 12i64);
    match task.wait_timeout(PATIENCE) {
        Some(Ok(144)) => Ok(()),
        Some(Ok(other)) => Err(format!("returned {other}")),
        Some(Err(e)) => Err(e.to_string()),
        None => {
            task.cancel();
            Err(format!("no answer within {PATIENCE:?}"))
        }
    }
}

pub fn audit(args: AuditArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let audit = Audit::start(args.settings())?;
    let l = &audit.limits;
    let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    println!(
        "wasmpool audit: {} hostile cases against timeout {}, fuel {}, memory {}, {} workers \
         (stdout cap {}); after each case square(12) must still succeed on the same pool",
        CASES.len(),
        show(l.timeout.map(|t| humantime::format_duration(t).to_string())),
        show(l.fuel.map(|f| f.to_string())),
        show(l.memory.map(|m| ByteSize(m).to_string())),
        audit.pool.workers(),
        ByteSize(l.stdout_cap.into()),
    );
    println!();

    let progress = std::io::stderr().is_terminal();
    let rows: Vec<Row> = CASES
        .iter()
        .enumerate()
        .map(|(i, case)| {
            if progress {
                eprint!("\r\x1b[K[{}/{}] {}", i + 1, CASES.len(), case.name);
            }
            audit.row(case)
        })
        .collect();
    if progress {
        eprint!("\r\x1b[K");
    }
    audit.pool.shutdown();

    print!("{}", table(&rows));
    let passed = rows.iter().filter(|r| r.pass).count();
    println!();
    if passed == rows.len() {
        println!(
            "{passed}/{} contained, the pool serving square(12) after each ({:.1?} in all)",
            rows.len(),
            started.elapsed()
        );
        Ok(EXIT_OK)
    } else {
        let failed: Vec<&str> = rows.iter().filter(|r| !r.pass).map(|r| r.name).collect();
        println!(
            "{passed}/{} contained; NOT contained as expected: {} ({:.1?} in all)",
            rows.len(),
            failed.join(", "),
            started.elapsed()
        );
        Ok(EXIT_TASK_FAILED)
    }
}

/// The report as aligned plain-text columns; "what happened" wraps onto extra lines.
fn table(rows: &[Row]) -> String {
    const HEADER: [&str; 5] = [
        "behaviour",
        "expected containment",
        "what happened",
        "time to contain",
        "verdict",
    ];
    let lines: Vec<[Vec<String>; 5]> = rows
        .iter()
        .map(|r| {
            [
                vec![r.name.to_string()],
                vec![r.expected.clone()],
                wrap(&r.happened, HAPPENED_WIDTH),
                vec![millis(r.took)],
                vec![if r.pass { "PASS" } else { "FAIL" }.to_string()],
            ]
        })
        .collect();
    let mut width = HEADER.map(|h| h.chars().count());
    for cells in &lines {
        for (w, cell) in width.iter_mut().zip(cells) {
            for line in cell {
                *w = (*w).max(line.chars().count());
            }
        }
    }
    let render = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            // The time column is right-aligned, the others left-aligned.
            match i {
                3 => out.push_str(&format!("{pad}{cell}")),
                4 => out.push_str(cell),
                _ => out.push_str(&format!("{cell}{pad}")),
            }
            if i < 4 {
                out.push_str("  ");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = render(HEADER);
    out.push_str(&render(
        width.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
    ));
    for cells in &lines {
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            out.push_str(&render(
                cells
                    .each_ref()
                    .map(|c| c.get(k).map_or("", String::as_str)),
            ));
        }
    }
    out
}

/// Splits `text` into lines of at most `width` characters at whitespace, which it
/// normalizes (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AuditArgs,
    }

    fn settings(argv: &[&str]) -> PoolArgs {
        Cli::try_parse_from(std::iter::once("audit").chain(argv.iter().copied()))
            .unwrap()
            .args
            .settings()
    }

    #[test]
    fn defaults_apply_only_to_flags_not_given() {
        Cli::command().debug_assert();
        let s = settings(&[]);
        assert_eq!(s.local.workers, Some(2));
        assert_eq!(s.timeout.unwrap().0, Some(Duration::from_secs(1)));
        assert_eq!(s.memory.unwrap().0, Some(64 << 20));
        assert_eq!(s.fuel.unwrap().0, None);
        let s = settings(&["--timeout", "none", "--fuel", "1e6", "--workers", "3"]);
        assert_eq!(s.local.workers, Some(3));
        assert_eq!(s.timeout.unwrap().0, None);
        assert_eq!(s.fuel.unwrap().0, Some(1_000_000));
        assert_eq!(s.memory.unwrap().0, Some(64 << 20));
    }

    /// Every guest compiles (or, for the ones that must not load, is what it claims), and
    /// every call names an export of type `() -> i64`; case names are unique.
    #[test]
    fn the_battery_is_well_formed() {
        let engine = wasmtime::Engine::default();
        let limits = Limits::default();
        let mut names = std::collections::HashSet::new();
        for case in CASES {
            assert!(names.insert(case.name), "duplicate case {}", case.name);
            match case.run {
                Run::Call { guest, export, .. } => {
                    let module = wasmtime::Module::new(&engine, guest.bytes(&limits))
                        .unwrap_or_else(|e| panic!("{}: {e:#}", case.name));
                    let ty = module
                        .get_export(export)
                        .and_then(|e| e.func().cloned())
                        .unwrap_or_else(|| panic!("{}: no function `{export}`", case.name));
                    let results: Vec<String> = ty.results().map(|t| t.to_string()).collect();
                    assert_eq!(ty.params().len(), 0, "{}", case.name);
                    assert_eq!(results, ["i64"], "{}", case.name);
                    for import in module.imports() {
                        assert_eq!(import.module(), "wasi_snapshot_preview1", "{}", case.name);
                    }
                }
                Run::Load(Guest::NotWasm) => {
                    assert!(wasmtime::Module::new(&engine, Guest::NotWasm.bytes(&limits)).is_err())
                }
                Run::Load(guest @ Guest::OverSlots(_)) => {
                    // Valid wasm, refused only by the workers' pooling allocator.
                    let module = wasmtime::Module::new(&engine, guest.bytes(&limits)).unwrap();
                    assert!(module.get_export("run").is_some(), "{}", case.name);
                }
                Run::Load(guest) => {
                    let module = wasmtime::Module::new(&engine, guest.bytes(&limits)).unwrap();
                    assert!(module.imports().any(|i| i.module() == "env"));
                }
                Run::KillWorker => {}
                Run::DeepOut => {
                    let module = wasmtime::Module::new(&engine, DEEP_OUT_WAT).unwrap();
                    assert!(module.get_export("_start").is_some());
                    assert!(DEEP_OUT_WAT.contains(&format!("(i32.const {DEEP_OUT_LEVELS})")));
                }
            }
        }
        let pages_over_64mib =
            Guest::InitialMemoryOverLimit.bytes(&limits.with_memory(Some(64 << 20)));
        assert!(String::from_utf8(pages_over_64mib)
            .unwrap()
            .contains("(memory 2000)"));
        let pages_over_256mib = Guest::InitialMemoryOverLimit.bytes(&limits);
        assert!(String::from_utf8(pages_over_256mib)
            .unwrap()
            .contains("(memory 4097)"));
    }

    /// The probes are not vacuous: given a preopened directory, an environment, arguments
    /// and stdin (none of which the sandbox grants), the same exports do find them.
    #[test]
    fn the_probes_notice_authority_when_there_is_some() {
        use wasmtime_wasi::p1::{add_to_linker_sync, WasiP1Ctx};
        let dir = std::env::temp_dir().join(format!("wasmpool-audit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, HOSTILE_WAT).unwrap();
        let mut linker = wasmtime::Linker::<WasiP1Ctx>::new(&engine);
        add_to_linker_sync(&mut linker, |s| s).unwrap();
        let call = |export: &str| -> i64 {
            let wasi = wasmtime_wasi::WasiCtxBuilder::new()
                .preopened_dir(&dir, "/", wasmtime_wasi::FsPerms::ReadWrite)
                .unwrap()
                .env("SECRET", "1")
                .arg("guest")
                .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new("hi"))
                .build_p1();
            let mut store = wasmtime::Store::new(&engine, wasi);
            let instance = linker.instantiate(&mut store, &module).unwrap();
            let f = instance
                .get_typed_func::<(), i64>(&mut store, export)
                .unwrap();
            f.call(&mut store, ()).unwrap()
        };
        let read = call("read_file");
        assert!(read >= 2, "fd 3 is a preopen and etc/passwd opens: {read}");
        assert!(call("write_file") >= 1);
        assert!(dir.join("wasmpool-audit-escape.txt").exists());
        assert_eq!(call("env_and_args"), 2);
        assert_eq!(call("read_stdin"), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn containment_is_judged_by_kind_detail_and_time() {
        let limits = Limits::default().with_timeout(Some(Duration::from_secs(1)));
        let task = |r: Result<i64, TaskError>| Outcome::Task(r, TaskStats::default());
        let timeout = task(Err(TaskError::Timeout {
            limit: Duration::from_secs(1),
        }));
        let fast = Duration::from_millis(1100);
        assert!(Expect::Timeout.check(&timeout, fast, &limits).is_ok());
        assert!(Expect::Runaway.check(&timeout, fast, &limits).is_ok());
        assert!(Expect::Timeout
            .check(&timeout, Duration::from_millis(2100), &limits)
            .unwrap_err()
            .contains("over 2x"));
        let fuel = task(Err(TaskError::FuelExhausted { fuel: 5 }));
        assert!(Expect::Runaway.check(&fuel, fast, &limits).is_ok());
        assert!(Expect::Timeout.check(&fuel, fast, &limits).is_err());
        let trap = task(Err(TaskError::Trap {
            message: "integer divide by zero in `f`".into(),
            code: Some(wasmpool::TrapCode::IntegerDivisionByZero),
        }));
        assert!(Expect::Trap("divide by zero")
            .check(&trap, fast, &limits)
            .is_ok());
        assert!(Expect::Trap("call stack")
            .check(&trap, fast, &limits)
            .is_err());
        assert!(Expect::Returns(0)
            .check(&task(Ok(0)), fast, &limits)
            .is_ok());
        assert!(Expect::Returns(0)
            .check(&task(Ok(1)), fast, &limits)
            .is_err());
        assert!(Expect::Returns(0)
            .check(&Outcome::Hung(PATIENCE), PATIENCE, &limits)
            .is_err());
        let mut stats = TaskStats::default();
        stats.stdout = vec![b'A'; limits.stdout_cap as usize];
        stats.output_truncated = true;
        let capped = Outcome::Task(Ok(1), stats);
        assert!(Expect::StdoutCapped.check(&capped, fast, &limits).is_ok());
        assert!(Expect::StdoutCapped
            .check(&task(Ok(1)), fast, &limits)
            .is_err());
    }

    #[test]
    fn the_table_aligns_and_wraps() {
        let row = |name, happened: &str, pass| Row {
            name,
            expected: "Trap".into(),
            happened: happened.into(),
            took: Duration::from_millis(3),
            pass,
        };
        let long = "word ".repeat(30);
        let text = table(&[
            row("a", "short", true),
            row("longer name", long.trim(), false),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("behaviour    expected containment  what happened"));
        assert!(lines[2].ends_with("3.0 ms  PASS"), "{text}");
        assert!(lines[3].ends_with("3.0 ms  FAIL"), "{text}");
        assert!(lines.len() > 4, "the long text wraps: {text}");
        assert!(lines[4].trim_start().starts_with("word"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= 120), "{text}");
    }
}
