//! The `wasmpool` binary: the CLI, and (with a hidden first argument) a worker process or a
//! compile process.

mod cli;

use wasmpool::protocol;
use wasmpool::worker::{compile, seccomp, serve, WORKER_ARG};

fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some(WORKER_ARG) => {
            protocol::check_version(args.next().as_deref());
            serve::serve()
        }
        Some(compile::COMPILE_ARG) => {
            protocol::check_version(args.next().as_deref());
            compile::serve_compile(&args.next().unwrap_or_default())
        }
        Some(seccomp::PROBE_ARG) => seccomp::probe_forbidden_syscall(),
        _ => std::process::exit(cli::main()),
    };
    if let Err(e) = result {
        eprintln!("wasmpool: {e}");
        std::process::exit(3);
    }
}
