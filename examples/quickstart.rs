//! The library in one page: a pool, a plain export, an SDK task, limits and typed errors.
//!
//! ```sh
//! cargo build --release && cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1
//! cargo run --release --example quickstart
//! ```

use std::time::Duration;

use wasmpool::{Json, Pool, TaskError};

const GUESTS: &str = "guests/target/wasm32-wasip1/release";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder()
        .workers(2)
        .timeout(Duration::from_secs(5))
        .build()?;
    let math = pool.load_file(format!("{GUESTS}/math.wasm"))?;

    // map: ordered results, spread over the workers, a fresh instance per task.
    let squares: Vec<i64> = pool
        .map(&math, "square", 1..=10i64)
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!("squares: {squares:?}");

    // submit: a Task to wait for (or poll, cancel, or .await).
    let primes = pool.submit::<i64>(&math, "primes", 100_000i64);
    println!("primes below 100000: {}", primes.wait()?);

    // Results as they finish, whatever the input order.
    for (index, fib) in pool.map_unordered::<i64, _>(&math, "fib", [32, 5, 25]) {
        println!("fib input #{index} -> {}", fib?);
    }

    // Limits per call; breaches are typed errors.
    match pool
        .call(&math, "spin")
        .timeout(Duration::from_millis(100))
        .submit::<i64>(())
        .wait()
    {
        Err(TaskError::Timeout { limit }) => println!("spin stopped after its {limit:?} limit"),
        other => println!("unexpected: {other:?}"),
    }

    // SDK tasks take and return serde values.
    let wc = pool.load_file(format!("{GUESTS}/wordcount.wasm"))?;
    let counts: Json<serde_json::Value> = pool
        .submit(
            &wc,
            "wordcount",
            Json(serde_json::json!({"text": "the quick fox and the lazy dog"})),
        )
        .wait()?;
    println!("wordcount: {}", counts.0);
    match pool
        .submit::<Json<i64>>(&wc, "divide", Json(serde_json::json!({"a": 1, "b": 0})))
        .wait()
    {
        Err(TaskError::Guest { message }) => println!("the guest said: {message}"),
        other => println!("unexpected: {other:?}"),
    }

    pool.shutdown();
    Ok(())
}
