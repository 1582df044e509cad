//! `wasmpool demo`: the main job on a built-in guest — the seed's counting(8M) and
//! counting(7M) pair in parallel, a map of squares, and a runaway task contained.

use std::time::{Duration, Instant};

use anyhow::Context;
use wasmpool::{Pool, TaskError};

use super::{EXIT_OK, EXIT_TASK_FAILED};

/// The demo guest, embedded in the binary.
const DEMO_WAT: &str = include_str!("demo.wat");

pub fn demo(workers: Option<usize>) -> anyhow::Result<i32> {
    let started = Instant::now();
    let mut builder = Pool::builder();
    if let Some(n) = workers {
        builder = builder.workers(n);
    }
    let pool = builder.build()?;
    let module = pool
        .load(DEMO_WAT)
        .context("cannot compile the built-in demo guest")?;
    let origin = match module.origin() {
        wasmpool::Origin::Compiled(t) => format!("compiled in {t:.1?}"),
        wasmpool::Origin::DiskCache(t) => format!("read from the compile cache in {t:.1?}"),
    };
    println!(
        "pool of {} worker processes ready in {:.1?} (demo module {origin}, {} exports)",
        pool.workers(),
        started.elapsed(),
        module.exports().len()
    );

    let t = Instant::now();
    // Under a fuel limit, so that the fuel they burn is metered and shown.
    let tasks = pool
        .call(&module, "counting")
        .fuel(1_000_000_000)
        .submit_many::<i64, _>([8_000_000i64, 7_000_000]);
    let counts: Vec<_> = tasks.iter().map(|t| t.wait()).collect::<Result<_, _>>()?;
    let fuel: u64 = tasks
        .iter()
        .filter_map(|t| t.stats())
        .map(|s| s.fuel_used)
        .sum();
    println!(
        "counting(8M), counting(7M) under fuel 1e9 -> {counts:?} in {:.1?} ({fuel} fuel used)",
        t.elapsed()
    );

    let n = 100_000i64;
    let t = Instant::now();
    let squares = pool.map::<i64, _>(&module, "square", 0..n);
    let elapsed = t.elapsed();
    let squares: Vec<i64> = squares.into_iter().collect::<Result<_, _>>()?;
    let sum: i128 = squares.iter().map(|&x| x as i128).sum();
    println!(
        "map(square, 0..{n}) -> sum {sum}, last {} in {:.1?} ({:.0} tasks/s, fresh instance per task)",
        squares[squares.len() - 1],
        elapsed,
        n as f64 / elapsed.as_secs_f64()
    );

    let mut contained = true;
    let t = Instant::now();
    let fuel_limited = pool
        .call(&module, "spin")
        .fuel(100_000_000)
        .submit::<i64>(())
        .wait();
    contained &= report("spin() with 1e8 fuel", fuel_limited, t, |e| {
        matches!(e, TaskError::FuelExhausted { .. })
    });
    let t = Instant::now();
    let time_limited = pool
        .call(&module, "spin")
        .timeout(Duration::from_millis(200))
        .submit::<i64>(())
        .wait();
    contained &= report("spin() with a 200ms timeout", time_limited, t, |e| {
        matches!(e, TaskError::Timeout { .. })
    });

    pool.shutdown();
    println!("total {:.1?}", started.elapsed());
    Ok(if contained { EXIT_OK } else { EXIT_TASK_FAILED })
}

fn report(
    what: &str,
    result: Result<i64, TaskError>,
    started: Instant,
    expected: impl Fn(&TaskError) -> bool,
) -> bool {
    match result {
        Err(e) if expected(&e) => {
            println!("{what} -> contained after {:.1?}: {e}", started.elapsed());
            true
        }
        other => {
            println!("{what} -> NOT contained as expected: {other:?}");
            false
        }
    }
}
