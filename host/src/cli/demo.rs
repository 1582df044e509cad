//! `wasmpool demo`: what the pool does, in a few seconds and plain words — two CPU-bound
//! tasks in parallel and 100,000 tiny ones, each beside the same work in Python's
//! `multiprocessing.Pool` (measured now, when `python3` is there), then a crash and two
//! runaway tasks contained while the pool goes on serving.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmpool::{Pool, TaskError};

use super::{EXIT_OK, EXIT_TASK_FAILED};

/// The demo guest, embedded in the binary.
const DEMO_WAT: &str = include_str!("demo.wat");

/// The two countdowns run in parallel, and the number of tiny tasks.
const COUNTDOWNS: [i64; 2] = [8_000_000, 7_000_000];
const SQUARES: i64 = 100_000;

/// The same work in Python's `multiprocessing.Pool` (argument: the number of processes);
/// prints the seconds each part took and the results, as JSON.
const PYTHON: &str = r#"
import json, sys, time
import multiprocessing

def counting(n):
    while n > 0:
        n -= 1
    return n

def square(x):
    return x * x

if __name__ == "__main__":
    workers, countdowns, squares = int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        t = time.perf_counter()
        counts = pool.map(counting, countdowns, chunksize=1)
        counting_s = time.perf_counter() - t
        t = time.perf_counter()
        total = sum(pool.map(square, range(squares)))
        squares_s = time.perf_counter() - t
    print(json.dumps({"counting": counting_s, "squares": squares_s, "counts": counts, "sum": total}))
"#;

/// How long the Python comparison may take before it is given up.
const PYTHON_PATIENCE: Duration = Duration::from_secs(60);

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
    let workers = pool.workers();
    println!(
        "A pool of {workers} worker processes, ready in {}. Each task runs in a fresh WebAssembly \
         instance inside one of them, under limits on time, memory and instructions.",
        ms(started.elapsed())
    );
    let python = python_figures(workers);

    println!();
    println!(
        "1. Two CPU-bound tasks in parallel: counting down from 8 million and from 7 million."
    );
    let t = Instant::now();
    let counts: Vec<i64> = pool
        .map::<i64, _>(&module, "counting", COUNTDOWNS)
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = t.elapsed();
    let reached = if counts.iter().all(|&n| n == 0) {
        "both reached zero".to_string()
    } else {
        format!("they ended at {counts:?}, not zero")
    };
    println!("   wasmpool: {} ({reached})", ms(elapsed));
    match &python {
        Ok(py) => println!(
            "   Python multiprocessing.Pool({workers}), the same loops in Python: {}",
            ms(py.counting)
        ),
        Err(why) => println!("   Python multiprocessing.Pool: skipped ({why})"),
    }

    println!();
    println!(
        "2. {} tiny tasks (square a number), each in a fresh instance of its own.",
        thousands(SQUARES as u64)
    );
    let t = Instant::now();
    let squares: Vec<i64> = pool
        .map::<i64, _>(&module, "square", 0..SQUARES)
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = t.elapsed();
    let sum: i128 = squares.iter().map(|&x| x as i128).sum();
    println!(
        "   wasmpool: {} ({} tasks per second; the squares add up to {sum})",
        ms(elapsed),
        thousands((SQUARES as f64 / elapsed.as_secs_f64()) as u64)
    );
    match &python {
        Ok(py) => println!(
            "   Python multiprocessing.Pool({workers}).map, plain function calls: {}",
            ms(py.squares)
        ),
        Err(why) => println!("   Python multiprocessing.Pool: skipped ({why})"),
    }

    println!();
    println!("3. Tasks that go wrong are stopped; the pool goes on.");
    let mut contained = true;
    let t = Instant::now();
    let crash = pool.submit::<i64>(&module, "crash", 0i64).wait();
    contained &= report("A task that crashes (divides by zero)", crash, t, |e| {
        matches!(e, TaskError::Trap { .. })
    });
    let t = Instant::now();
    let fuel_limited = pool
        .call(&module, "spin")
        .fuel(100_000_000)
        .submit::<i64>(())
        .wait();
    contained &= report(
        "A runaway loop, given 100 million instructions' worth of fuel",
        fuel_limited,
        t,
        |e| matches!(e, TaskError::FuelExhausted { .. }),
    );
    let t = Instant::now();
    let time_limited = pool
        .call(&module, "spin")
        .timeout(Duration::from_millis(200))
        .submit::<i64>(())
        .wait();
    contained &= report("The same loop, given 200 ms", time_limited, t, |e| {
        matches!(e, TaskError::Timeout { .. })
    });
    match pool.submit::<i64>(&module, "square", 12i64).wait() {
        Ok(n) => println!("   Afterwards the pool still answers: 12 squared is {n}."),
        Err(e) => {
            println!("   Afterwards the pool FAILED a plain task: {e}");
            contained = false;
        }
    }

    pool.shutdown();
    println!();
    println!("Done in {}. Next:", ms(started.elapsed()));
    println!("  wasmpool audit                     runs a battery of hostile guests against the sandbox, each contained");
    println!("  wasmpool exec prog.wasm -- ARGS    runs a whole program compiled to WASI (C, Rust, ...) in it");
    Ok(if contained { EXIT_OK } else { EXIT_TASK_FAILED })
}

/// Prints what happened to a task that was meant to fail as `expected` says.
fn report(
    what: &str,
    result: Result<i64, TaskError>,
    started: Instant,
    expected: impl Fn(&TaskError) -> bool,
) -> bool {
    match result {
        Err(e) if expected(&e) => {
            println!("   {what}: {e} (after {})", ms(started.elapsed()));
            true
        }
        other => {
            println!("   {what}: NOT stopped as expected: {other:?}");
            false
        }
    }
}

/// The Python pool's times for the same two parts.
struct PythonFigures {
    counting: Duration,
    squares: Duration,
}

/// Runs [`PYTHON`] with `workers` processes; why not, when it cannot.
fn python_figures(workers: usize) -> Result<PythonFigures, String> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .arg(workers.to_string())
        .arg(format!("[{}, {}]", COUNTDOWNS[0], COUNTDOWNS[1]))
        .arg(SQUARES.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("python3 not found: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no output from python3")?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = tx.send(stdout.read_to_string(&mut text).map(|_| text));
    });
    let text = match rx.recv_timeout(PYTHON_PATIENCE) {
        Ok(Ok(text)) => text,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "python3 gave no answer within {}",
                ms(PYTHON_PATIENCE)
            ));
        }
    };
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("python3 failed ({status})"));
    }
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("python3's answer: {e}"))?;
    let seconds = |key: &str| {
        v[key]
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("python3's answer has no `{key}`"))
    };
    let expected_sum: i128 = (0..SQUARES as i128).map(|x| x * x).sum();
    if v["sum"].as_u64().map(i128::from) != Some(expected_sum) {
        return Err("python3's squares do not add up".into());
    }
    Ok(PythonFigures {
        counting: seconds("counting")?,
        squares: seconds("squares")?,
    })
}

/// A duration in milliseconds, or seconds from 10 s on.
fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `n` with a comma between thousands.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_plainly() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ms(Duration::from_millis(57)), "57 ms");
        assert_eq!(ms(Duration::from_secs(12)), "12.0 s");
    }
}
