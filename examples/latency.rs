//! Submit → wait latency, one task at a time (p50, p99 over 2000 samples, after a warm-up):
//! `cargo run --release --example latency [-- MODULE]`.
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "guests/target/wasm32-wasip1/release/math.wasm".into());
    let pool = wasmpool::Pool::builder().build()?;
    let module = pool.load_file(&path)?;
    let call = pool.call(&module, "square");
    for i in 0..500i64 {
        call.submit::<i64>(i).wait()?;
    }
    let mut lat: Vec<f64> = (0..2000i64)
        .map(|i| {
            let t = Instant::now();
            let r = call.submit::<i64>(i).wait();
            assert_eq!(r, Ok(i * i));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!("p50 {:.1} µs, p99 {:.1} µs", lat[1000], lat[1980]);
    Ok(())
}
