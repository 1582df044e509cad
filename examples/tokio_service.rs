//! A tokio program that holds one pool for its whole life, the way a service would: the pool
//! is its own executable's workers (`worker_main()`, so no `wasmpool` binary is needed
//! anywhere), modules load without blocking the runtime (`load_async`), many tasks submit
//! with `.await` (`submit_async`, waiting for room in the bounded queue without holding a
//! thread), `try_submit` answers `QueueFull` at the bound instead of waiting (what a server
//! turns into `429 Too Many Requests`), and the pool shuts down cleanly at the end.
//!
//! ```sh
//! cargo run --release --example tokio_service
//! ```

use std::time::Duration;

use wasmpool::{Pool, Task, TaskError};

/// The bound on calls waiting in the pool.
const MAX_QUEUED: usize = 64;
/// Client tasks, and the calls each of them makes.
const CLIENTS: i64 = 16;
const CALLS_EACH: i64 = 250;

/// A tiny module in WebAssembly text: a square, and a loop that only a limit stops.
const MODULE: &str = r#"(module
    (func (export "square") (param i64) (result i64)
        local.get 0 local.get 0 i64.mul)
    (func (export "spin") (result i64)
        (loop $forever (br $forever)) i64.const 0))"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First, before the runtime starts its threads: in a worker process this never returns.
    wasmpool::worker_main();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder()
        .workers(2)
        .max_queued(MAX_QUEUED)
        .timeout(Duration::from_secs(10))
        .build()?;
    let module = pool.load_async(MODULE).await?;

    // Many clients, each awaiting its own calls; the pool is shared by clones.
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let square = pool.call(&module, "square");
        clients.spawn(async move {
            let mut sum = 0i64;
            for i in 0..CALLS_EACH {
                let x = client * CALLS_EACH + i;
                sum += square.submit_async::<i64>(x).await.await?;
            }
            Ok::<i64, TaskError>(sum)
        });
    }
    let mut total = 0i64;
    while let Some(sum) = clients.join_next().await {
        total += sum??;
    }
    let n = CLIENTS * CALLS_EACH;
    let expected: i64 = (0..n).map(|x| x * x).sum();
    if total != expected {
        return Err(format!("sum of squares {total}, expected {expected}").into());
    }
    println!("{n} calls from {CLIENTS} tasks: sum of squares {total}");

    // Back-pressure: with both workers held by runaways, the queue fills to its bound and
    // `try_submit` says so at once instead of waiting.
    // (First the pool settles: a worker's last replies may reach waiters before the pool
    // has booked them, and a runaway placed then would go to the worker that looks idle.)
    let mut settled = false;
    for _ in 0..100_000 {
        let stats = pool.stats();
        if stats.running == 0 && stats.queued == 0 {
            settled = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    if !settled {
        return Err("the pool never settled after the clients' calls".into());
    }
    let runaways: Vec<Task<i64>> = (0..2)
        .map(|_| pool.call(&module, "spin").submit::<i64>(()))
        .collect();
    let square = pool.call(&module, "square");
    let mut accepted = Vec::new();
    let full = loop {
        match square.try_submit::<i64>(accepted.len() as i64) {
            Ok(task) => accepted.push(task),
            // Refused: the calls admitted so far are waiting. (`stats` is answered after
            // every call sent before it, so a worker with room for more has taken them by
            // then, and room came back: go on submitting.)
            Err(full) if pool.stats().queued == MAX_QUEUED as u64 => break full,
            Err(_) => {}
        }
        if accepted.len() > 100 * MAX_QUEUED {
            return Err("the queue never filled".into());
        }
    };
    let queued = pool.stats().queued;
    println!(
        "try_submit refused: {full} (queued: {queued}, accepted before: {})",
        accepted.len()
    );
    if queued != MAX_QUEUED as u64 {
        return Err(format!("refused with {queued} queued, bound {MAX_QUEUED}").into());
    }
    // Dropping the runaways cancels them; everything accepted then runs.
    drop(runaways);
    for (i, task) in accepted.into_iter().enumerate() {
        let i = i as i64;
        if task.await? != i * i {
            return Err(format!("wrong square of {i}").into());
        }
    }
    println!("every accepted call finished once the runaways were cancelled");

    // `shutdown` waits for the workers to stop: off the runtime's threads.
    let stats = pool.stats();
    tokio::task::spawn_blocking(move || pool.shutdown()).await?;
    println!(
        "shut down cleanly: {} done, {} failed",
        stats.done,
        stats.failed_total()
    );
    Ok(())
}
