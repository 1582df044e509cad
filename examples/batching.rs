//! The entry points that issue 11 §2 sets against `map`, measured in one process and
//! printed as JSON lines: `map` of `square`, the same calls as one `submit` each (streamed,
//! then waited for), `submit_many`, `imap`, `submit_batch` in chunks of 64, and (given the
//! `wasmpool` binary) `wasmpool run` over a file of one JSON line per call, timed from its
//! first output line to its last.
//! Each figure is the median of `REPS` runs; ratios to `map` are printed last.
//!
//! ```sh
//! cargo build --release && cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1
//! WASMPOOL_WORKER=target/release/wasmpool cargo run --release --example batching -- \
//!     guests/target/wasm32-wasip1/release/math.wasm 100000 target/release/wasmpool
//! ```

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

use wasmpool::Pool;

const REPS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let wasm = args
        .next()
        .unwrap_or_else(|| "guests/target/wasm32-wasip1/release/math.wasm".into());
    let n: i64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let cli = args.next();
    let pool = Pool::builder().build()?;
    let m = pool.load_file(&wasm)?;
    let check = |out: Vec<Result<i64, wasmpool::TaskError>>| {
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, r)| *r == Ok((i * i) as i64)));
    };
    pool.map::<i64, _>(&m, "square", 0..1000i64);
    let call = pool.call(&m, "square");
    let mut figures = Vec::new();
    // `f` returns the seconds its work took. CPU time is counted too (this process's
    // threads, its workers, and reaped children such as a `wasmpool run` and its workers):
    // on a busy machine it is the steadier figure.
    let pids = pool.worker_pids();
    let mut measure = |name: &str, f: &mut dyn FnMut() -> f64| {
        let (workers_before, host_before) = (cpu_seconds(&pids), own_and_children_cpu());
        let mut times: Vec<f64> = (0..REPS).map(|_| f()).collect();
        let per_task = |secs: f64| secs * 1e6 / (REPS as f64 * n as f64);
        let workers = per_task(cpu_seconds(&pids) - workers_before);
        let host = per_task(own_and_children_cpu() - host_before);
        times.sort_by(f64::total_cmp);
        let rate = n as f64 / times[REPS / 2];
        println!(
            r#"{{"bench":"{name}","n":{n},"tasks_per_s":{rate:.0},"cpu_us_per_task":{:.2},"workers_cpu_us":{workers:.2},"host_cpu_us":{host:.2}}}"#,
            workers + host
        );
        figures.push((name.to_string(), rate));
    };
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    measure("map", &mut || timed(&mut || check(call.map(0..n))));
    measure("submit_streamed", &mut || {
        timed(&mut || {
            let tasks: Vec<_> = (0..n).map(|i| call.submit::<i64>(i)).collect();
            check(tasks.iter().map(|t| t.wait()).collect());
        })
    });
    measure("submit_many", &mut || {
        timed(&mut || {
            let tasks = call.submit_many::<i64, _>(0..n);
            check(tasks.iter().map(|t| t.wait()).collect());
        })
    });
    measure("imap", &mut || {
        timed(&mut || check(call.imap(0..n).collect()))
    });
    // Chunks of 64 as one `Batch` each, waited for in order, each call with its stats.
    measure("submit_batch", &mut || {
        timed(&mut || {
            let batches: Vec<_> = (0..n)
                .step_by(64)
                .map(|i| call.submit_batch::<i64, _>(i..(i + 64).min(n)))
                .collect();
            check(
                batches
                    .into_iter()
                    .flat_map(|b| b.wait().into_iter().map(|(r, _)| r))
                    .collect(),
            );
        })
    });
    if let Some(cli) = cli {
        let inputs = tempfile_path();
        let mut f = BufWriter::new(std::fs::File::create(&inputs)?);
        for i in 0..n {
            writeln!(f, "{i}")?;
        }
        f.flush()?;
        drop(f);
        measure("cli_run", &mut || {
            let mut child = std::process::Command::new(&cli)
                .args(["run", &wasm, "square", "--inputs"])
                .arg(&inputs)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start wasmpool run");
            let mut out = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            out.read_line(&mut line).expect("first line");
            let t = Instant::now();
            let mut lines = 1;
            line.clear();
            while out.read_line(&mut line).expect("a line") > 0 {
                lines += 1;
                line.clear();
            }
            let secs = t.elapsed().as_secs_f64() * n as f64 / (n - 1) as f64;
            assert!(child.wait().expect("wait").success() && lines == n);
            secs
        });
        let _ = std::fs::remove_file(&inputs);
    }
    let map = figures[0].1;
    for (name, rate) in &figures[1..] {
        println!(r#"{{"bench":"{name}_vs_map","ratio":{:.3}}}"#, rate / map);
    }
    pool.shutdown();
    Ok(())
}

/// CPU time (user + system) the processes `pids` have used, from `/proc/PID/stat`.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0
        })
        .sum()
}

/// CPU time of this process and of its reaped children (and theirs).
fn own_and_children_cpu() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wasmpool-batching-{}.txt", std::process::id()))
}
