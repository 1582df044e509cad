//! The `wasmpool` binary: the CLI, and (with a hidden first argument) a worker process or a
//! compile process.

mod cli;

use wasmpool::protocol;
use wasmpool::worker::harden::WorkerUser;
use wasmpool::worker::{compile, probe, seccomp, serve, WORKER_ARG};

fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some(WORKER_ARG) => {
            protocol::check_version(args.next().as_deref());
            WorkerUser::from_arg(&args.next().unwrap_or_default())
                .and_then(|user| serve::serve(user, args.next().map(std::path::PathBuf::from)))
        }
        Some(compile::COMPILE_ARG) => {
            protocol::check_version(args.next().as_deref());
            WorkerUser::from_arg(&args.next().unwrap_or_default()).and_then(|user| {
                let memory = args.next().unwrap_or_default();
                compile::serve_compile(user, &memory, &args.next().unwrap_or_default())
            })
        }
        Some(seccomp::PROBE_ARG) => seccomp::probe_forbidden_syscall(),
        Some(probe::WALL_PROBE_ARG) => probe::wall_probe(args.collect()),
        _ => {
            restore_sigpipe();
            std::process::exit(cli::main())
        }
    };
    if let Err(e) = result {
        eprintln!("wasmpool: {e}");
        std::process::exit(3);
    }
}

/// Lets the CLI die quietly of SIGPIPE when its output is closed early (`wasmpool … | head`),
/// like other Unix tools, instead of panicking on the failed write.
fn restore_sigpipe() {
    // SAFETY: called first thing on the main thread, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
