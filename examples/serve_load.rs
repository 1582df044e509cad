//! The load figure of `wasmpool serve`: requests/s and p50/p99 latency of `call` of a tiny
//! export (`square` of the math guest) at 1, 16 and 64 concurrent keep-alive clients, beside
//! the same call through the library in-process (`Pool::submit` → `wait` from as many
//! threads), on the same number of workers.
//!
//! ```sh
//! cargo build --release && cargo run --release --example serve_load [-- REQUESTS_PER_CLIENT]
//! ```
//!
//! It starts `target/release/wasmpool serve` on a free loopback port (the binary beside
//! this example's directory), so build it first. It measures; it asserts nothing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: usize = 2;
const CLIENTS: [usize; 3] = [1, 16, 64];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    wasmpool::worker_main();
    let per_client: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("the example runs from target/<profile>/examples")?;
    let wasmpool = release.join("wasmpool");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let math = std::fs::read(root.join("guests/target/wasm32-wasip1/release/math.wasm"))?;

    let mut server = Command::new(&wasmpool)
        .args(["serve", "--listen", "127.0.0.1:0", "--workers"])
        .arg(WORKERS.to_string())
        .args(["--max-queued", "100000"])
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(server.stderr.take().ok_or("no stderr")?);
    let addr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line)? == 0 {
            return Err("wasmpool serve exited before listening".into());
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections_per_host(128)
        .build()
        .into();
    let upload: serde_json::Value = serde_json::from_str(
        &agent
            .post(format!("http://{addr}/v1/modules"))
            .send(&math[..])?
            .body_mut()
            .read_to_string()?,
    )?;
    let id = upload["id"].as_str().ok_or("no id")?.to_string();
    let url = format!("http://{addr}/v1/modules/{id}/call/square");

    let pool = wasmpool::Pool::builder()
        .workers(WORKERS)
        .worker_program(&wasmpool)
        .build()?;
    let module = pool.load(&math)?;

    println!(
        "call of square(i64) at {per_client} requests per client, {WORKERS} workers, keep-alive\n"
    );
    println!(
        "{:>8}  {:>14} {:>9} {:>9}  {:>14} {:>9} {:>9}",
        "clients", "HTTP req/s", "p50", "p99", "in-proc req/s", "p50", "p99"
    );
    for clients in CLIENTS {
        let http = measure(clients, per_client, |i| {
            let body = format!("{{\"input\": {i}}}");
            let mut r = agent.post(&url).send(body.as_bytes()).expect("an answer");
            let text = r.body_mut().read_to_string().expect("a body");
            assert!(text.contains("\"ok\""), "{text}");
        });
        let inproc = measure(clients, per_client, |i| {
            let v: i64 = pool
                .submit(&module, "square", i as i64)
                .wait()
                .expect("a result");
            assert_eq!(v, (i * i) as i64);
        });
        println!(
            "{clients:>8}  {:>14.0} {:>9} {:>9}  {:>14.0} {:>9} {:>9}",
            http.rate,
            fmt(http.p50),
            fmt(http.p99),
            inproc.rate,
            fmt(inproc.p50),
            fmt(inproc.p99)
        );
    }
    pool.shutdown();
    // SAFETY: kill(2) on the server this example started and has not waited for.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait()?;
    Ok(())
}

struct Figure {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// `clients` threads each doing `per_client` calls of `one` back to back; the rate and
/// the latency percentiles over all calls.
fn measure(clients: usize, per_client: usize, one: impl Fn(usize) + Sync) -> Figure {
    let started = Instant::now();
    let mut times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let one = &one;
                s.spawn(move || {
                    (0..per_client)
                        .map(|i| {
                            let t = Instant::now();
                            one(c * per_client + i);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Figure {
        rate: times.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    }
}
