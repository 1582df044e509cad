//! The `wasmpool` binary: the CLI, and (with a hidden first argument, through
//! [`wasmpool::worker_main`]) a worker process or a compile process.

mod cli;

fn main() {
    wasmpool::worker_main();
    restore_sigpipe();
    std::process::exit(cli::main())
}

/// Lets the CLI die quietly of SIGPIPE when its output is closed early (`wasmpool … | head`),
/// like other Unix tools, instead of panicking on the failed write.
fn restore_sigpipe() {
    // SAFETY: called first thing on the main thread after `worker_main` (which starts no
    // thread in a normal run), before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
