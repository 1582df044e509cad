//! A steady load to profile (`perf record -a -g -- target/release/examples/map_profile MODE`):
//! `map` (fresh instance per call, batched), `submit` (one task per call) or `reuse`
//! (`reuse_instance`) of `square`, for a few seconds.
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "map".into());
    let pool = wasmpool::Pool::builder().build()?;
    let m = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
    let call = pool.call(&m, "square");
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed().as_secs_f64() < 3.0 {
        let out: Vec<Result<i64, _>> = match mode.as_str() {
            "submit" => {
                let tasks: Vec<_> = (0..20_000i64).map(|i| call.submit::<i64>(i)).collect();
                tasks.iter().map(|t| t.wait()).collect()
            }
            "reuse" => pool
                .call(&m, "square")
                .reuse_instance(0)
                .map(0..2_000_000i64),
            _ => call.map(0..100_000i64),
        };
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, r)| *r == Ok((i * i) as i64)));
        n += out.len();
    }
    println!(
        "{mode}: {:.0} tasks/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}
