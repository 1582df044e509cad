//! A first measurement, printed as JSON lines like the anchors in `../shared/anchors/`:
//! `map` of `square` over 100k inputs with a fresh instance per task, and `submit → wait`
//! latency one task at a time.
//!
//! ```sh
//! cargo build --release && cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1
//! cargo run --release --example measure -- guests/target/wasm32-wasip1/release/math.wasm
//! ```

use std::time::Instant;

use wasmpool::Pool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "guests/target/wasm32-wasip1/release/math.wasm".into());
    let t = Instant::now();
    let pool = Pool::builder().build()?;
    let module = pool.load_file(&path)?;
    let first = pool.submit::<i64>(&module, "square", 3i64).wait()?;
    assert_eq!(first, 9);
    println!(
        r#"{{"bench":"cold_start_first_result","impl":"wasmpool","workers":{},"seconds":{:.4}}}"#,
        pool.workers(),
        t.elapsed().as_secs_f64()
    );

    // Warm up every worker.
    pool.map::<i64, _>(&module, "square", 0..1000i64);
    let n = 100_000i64;
    let mut best = f64::MAX;
    let cpu_before = (cpu_seconds(&pool.worker_pids()), own_cpu_seconds());
    for _ in 0..3 {
        let t = Instant::now();
        let out = pool.map::<i64, _>(&module, "square", 0..n);
        let s = t.elapsed().as_secs_f64();
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, r)| *r == Ok((i * i) as i64)));
        best = best.min(s);
    }
    let workers_cpu = cpu_seconds(&pool.worker_pids()) - cpu_before.0;
    let host_cpu = own_cpu_seconds() - cpu_before.1;
    println!(
        r#"{{"bench":"wasm_map_square_fresh_instance","impl":"wasmpool","n":{n},"seconds":{best:.4},"tasks_per_s":{:.0},"worker_cpu_us_per_task":{:.2},"host_cpu_us_per_task":{:.2}}}"#,
        n as f64 / best,
        workers_cpu * 1e6 / (3 * n) as f64,
        host_cpu * 1e6 / (3 * n) as f64,
    );

    let mut lat = Vec::with_capacity(2000);
    for i in 0..2000i64 {
        let t = Instant::now();
        pool.submit::<i64>(&module, "square", i).wait()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        r#"{{"bench":"wasm_submit_latency","impl":"wasmpool","n":2000,"p50_us":{:.1},"p99_us":{:.1}}}"#,
        lat[1000], lat[1980]
    );

    let t = Instant::now();
    let counts = pool
        .call(&module, "counting")
        .submit_many::<i64, _>([8_000_000i64, 7_000_000]);
    for c in &counts {
        c.wait()?;
    }
    println!(
        r#"{{"bench":"seed_counting_8M_7M","impl":"wasmpool","seconds":{:.3}}}"#,
        t.elapsed().as_secs_f64()
    );
    pool.shutdown();
    Ok(())
}

/// CPU time (user + system) the processes `pids` have used, from `/proc/PID/stat`.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = 100.0; // USER_HZ
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / tick
        })
        .sum()
}

/// CPU time this process (the host) has used.
fn own_cpu_seconds() -> f64 {
    cpu_seconds(&[std::process::id()])
}
