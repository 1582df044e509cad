//! The `wasmpool` binary: the CLI, and (with a hidden first argument) a worker process.

mod cli;

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == wasmpool::worker::WORKER_ARG)
    {
        if let Err(e) = wasmpool::worker::serve::serve() {
            eprintln!("wasmpool worker: {e:#}");
            std::process::exit(3);
        }
        return;
    }
    std::process::exit(cli::main());
}
