//! A binary that is its own worker program: it calls `wasmpool::worker_main()` first in
//! `main`, so its pools run this same executable as their workers — no `wasmpool` binary
//! needs to be installed, on `PATH` or beside it.
//!
//! ```sh
//! cargo run --release --example embedded            # two batches of squares
//! cargo run --release --example embedded -- --wait  # waits for a line on stdin between them
//! ```
//!
//! With `--wait` it pauses after the first batch until a line arrives on stdin; the second
//! batch needs new workers (each worker runs one task) and a new compile process, which
//! start even if the executable was replaced or deleted meanwhile (a deploy). With
//! `EMBEDDED_THREAD_FIRST` set it starts a thread before `worker_main()`, which a worker
//! refuses (the mistake of calling it inside `#[tokio::main]`).

use std::io::BufRead;

use wasmpool::Pool;

/// Squares, in WebAssembly text (`Pool::load` takes text or binary).
const SQUARE: &str = r#"(module (func (export "square") (param i64) (result i64)
    local.get 0 local.get 0 i64.mul))"#;

/// Cubes, loaded only for the second batch (a compile process starts then).
const CUBE: &str = r#"(module (func (export "cube") (param i64) (result i64)
    local.get 0 local.get 0 i64.mul local.get 0 i64.mul))"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("EMBEDDED_THREAD_FIRST").is_some() {
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    }
    // First: in a worker or compile process this never returns.
    wasmpool::worker_main();

    let wait = std::env::args().skip(1).any(|a| a == "--wait");
    let pool = Pool::builder()
        .workers(2)
        // A fresh worker process per task, so the second batch starts new ones.
        .max_tasks_per_worker(1)
        // Compile every run, so the second batch starts a compile process too.
        .compile_cache(None)
        .build()?;
    let square = pool.load(SQUARE)?;
    let squares: Vec<i64> = pool
        .map(&square, "square", 1..=4i64)
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!("squares: {squares:?}");

    if wait {
        println!("waiting for a line on stdin");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let cube = pool.load(CUBE)?;
    let cubes: Vec<i64> = pool
        .map(&cube, "cube", 1..=4i64)
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!("cubes: {cubes:?}");
    pool.shutdown();
    Ok(())
}
