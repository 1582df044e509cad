//! The entry point of the processes a pool starts: [`worker_main`], which the `wasmpool`
//! binary and any embedding binary call first in `main`. It is the one place that turns a
//! hidden first argument into a worker, a compile process, a handshake answer or a wall
//! probe.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::child::{compile, serve};
use crate::compile::driver::COMPILE_ARG;
use crate::protocol::{self, Handshake, HANDSHAKE_ARG};
use crate::walls::harden::WorkerUser;
use crate::walls::{probe, seccomp};
use crate::worker::WORKER_ARG;

/// The running executable, opened when [`worker_main`] ran in a normal run: pools start it
/// (as `/proc/self/fd/N`) as their workers and compile processes.
static SELF_EXE: OnceLock<OwnedFd> = OnceLock::new();

/// Makes this executable able to serve as its own pools' worker program. Call it first
/// thing in `main`, before anything starts a thread:
///
/// ```no_run
/// fn main() {
///     wasmpool::worker_main();
///     // Only a normal run gets here: the pool below runs this same executable as its
///     // workers, with no `wasmpool` binary installed anywhere.
///     let pool = wasmpool::Pool::builder().workers(2).build().expect("pool");
///     # drop(pool);
/// }
/// ```
///
/// - **In a normal run** it returns at once, having opened the running executable
///   (`/proc/self/exe`). Pools built afterwards start that file as their workers and compile
///   processes unless [`PoolBuilder::worker_program`](crate::PoolBuilder::worker_program) or
///   `$WASMPOOL_WORKER` names another program (see
///   [`locate::worker_program`](crate::worker::locate::worker_program)). Since it is held
///   open, replacing or deleting the executable on disk (a deploy) does not stop the
///   running process from starting workers, which run the same code as their host. (Where
///   `/proc/self/exe` cannot be opened, pools look for a worker program as if it had not
///   been called.)
/// - **When a pool started this process** as a worker or compile process (hidden first
///   argument `__worker`, `__compile`; also `__handshake` and the test probes) it runs that
///   role and exits: it never returns.
///
/// A worker raises its walls (seccomp filter, Landlock, a change of user) for one thread,
/// so in those roles it first checks that the process has no other thread yet. Called too
/// late — from inside `#[tokio::main]`, whose runtime threads already run — the process
/// says so on stderr and exits with [`protocol::EXIT_STARTED_LATE`]; the pool's error then
/// names the cause. In a normal run it checks nothing: the host's own process raises no
/// walls, and the threads it has do not matter. Build an async runtime after this call
/// (e.g. `tokio::runtime::Runtime::new()` in a plain `fn main`).
// The example is about where the call goes in `main`.
#[allow(clippy::needless_doctest_main)]
pub fn worker_main() {
    let mut args = std::env::args_os().skip(1);
    let mode = args.next();
    match mode.as_deref().and_then(OsStr::to_str) {
        Some(
            mode @ (WORKER_ARG
            | COMPILE_ARG
            | HANDSHAKE_ARG
            | seccomp::PROBE_ARG
            | probe::WALL_PROBE_ARG),
        ) => std::process::exit(run_role(mode, args.collect())),
        _ => remember_self(),
    }
}

/// Whether [`worker_main`] ran in a normal run of this process (and could open its
/// executable): then `/proc/self/fd/N` of that file.
pub(crate) fn self_program() -> Option<PathBuf> {
    SELF_EXE
        .get()
        .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

/// Lowest descriptor the executable is kept at: above those a child's setup uses
/// (stdin, stdout, stderr, [`protocol::CANCEL_FD`]).
const SELF_EXE_MIN_FD: rustix::fd::RawFd = 10;

/// Opens the running executable, once, for reading (an `O_PATH` descriptor cannot be
/// executed through `/proc/self/fd`), at descriptor [`SELF_EXE_MIN_FD`] or above: a child
/// sets up its low descriptors before exec (a worker's cancel pipe goes to fd 3), and
/// `/proc/self/fd/N` names the child's fd N. Close-on-exec keeps it out of every child: a
/// child execs `/proc/self/fd/N`, which the kernel resolves before it closes the
/// descriptor.
fn remember_self() {
    if SELF_EXE.get().is_some() {
        return;
    }
    use rustix::fs::{Mode, OFlags};
    if let Ok(fd) = rustix::fs::open(
        "/proc/self/exe",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        if let Ok(high) = rustix::io::fcntl_dupfd_cloexec(&fd, SELF_EXE_MIN_FD) {
            let _ = SELF_EXE.set(high);
        }
    }
}

/// Runs the role named by `mode` with the arguments after it; returns the exit status.
fn run_role(mode: &str, args: Vec<OsString>) -> i32 {
    if let Some(threads) = other_threads() {
        eprintln!(
            "wasmpool: this process was started as a {what} but wasmpool::worker_main() found {threads} threads running; a worker's walls (seccomp filter, Landlock, change of user) bind one thread, so it refuses to run. Call wasmpool::worker_main() first thing in a plain `fn main`, before any thread or async runtime starts (not inside #[tokio::main])",
            what = if mode == COMPILE_ARG {
                "compile process"
            } else {
                "worker"
            },
        );
        return protocol::EXIT_STARTED_LATE;
    }
    let mut args = args.into_iter();
    let mut next = || args.next().and_then(|a| a.into_string().ok());
    let result = match mode {
        HANDSHAKE_ARG => {
            return match Handshake::ours() {
                Ok(h) => {
                    println!("{}", h.arg());
                    0
                }
                Err(e) => {
                    eprintln!("wasmpool: {e}");
                    3
                }
            }
        }
        WORKER_ARG | COMPILE_ARG => {
            let host = match Handshake::check_build(next().as_deref()) {
                Ok(host) => host,
                Err(message) => {
                    eprintln!("{message}");
                    return protocol::EXIT_VERSION_MISMATCH;
                }
            };
            let user = WorkerUser::from_arg(&next().unwrap_or_default());
            if mode == WORKER_ARG {
                let scratch = next().filter(|s| !s.is_empty()).map(PathBuf::from);
                // A bad one is reported once the engine is checked: a worker of another build
                // must say that first, whatever its arguments.
                let mounts = crate::mount::from_arg(&next().unwrap_or_else(|| "[]".into()));
                user.and_then(|user| serve::serve(&host, user, scratch, mounts))
            } else {
                user.and_then(|user| {
                    let memory = next().unwrap_or_default();
                    let metering = next().unwrap_or_default();
                    let instrument =
                        next().as_deref() == Some(crate::compile::driver::INSTRUMENT_ARG);
                    compile::serve_compile(&host, user, &memory, &metering, instrument)
                })
            }
        }
        seccomp::PROBE_ARG => seccomp::probe_forbidden_syscall(),
        _ => probe::wall_probe(std::iter::from_fn(next).collect()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wasmpool: {e}");
            3
        }
    }
}

/// The number of threads of this process when there is more than one. (`None` also when
/// `/proc` cannot tell: a worker needs `/proc` for more than this and fails clearly then.)
fn other_threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()?;
    (threads > 1).then_some(threads)
}
