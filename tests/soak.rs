//! Soak: one million tasks, 1 % of them hostile, through one pool. Every task gets its own
//! answer, and the host's memory stays flat. Slow, so behind `--ignored`:
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{builder, guest};
use wasmpool::{Input, Output, Value};

fn host_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

#[test]
#[ignore = "a million tasks: run with --ignored"]
fn a_million_tasks_with_one_percent_hostile() {
    let pool = builder().timeout(Duration::from_secs(2)).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let total = 1_000_000u64;
    let batch = 100_000u64;
    let start_rss = host_rss();
    let started = Instant::now();
    let mut failures = std::collections::BTreeMap::<&'static str, u64>::new();
    for b in 0..total / batch {
        let mut tasks = Vec::with_capacity(batch as usize);
        for i in b * batch..(b + 1) * batch {
            let task = match i % 100 {
                // 1 in 100 misbehaves, in four different ways.
                0 => match (i / 100) % 4 {
                    0 => pool
                        .call(&hostile, "spin")
                        .fuel(1_000_000)
                        .submit::<Output>(()),
                    1 => pool
                        .call(&hostile, "grow_forever")
                        .memory(8 << 20)
                        .submit(()),
                    2 => pool.submit(&hostile, "unreachable", ()),
                    _ => pool.submit(&hostile, "exit", 1),
                },
                _ => pool.submit(&math, "square", Input::Numbers(vec![Value::I64(i as i64)])),
            };
            tasks.push((i, task));
        }
        for (i, task) in tasks {
            match (i % 100, task.wait()) {
                (0, Err(e)) => *failures.entry(e.kind()).or_default() += 1,
                (0, Ok(out)) => panic!("hostile task {i} succeeded: {out:?}"),
                (_, Ok(out)) => assert_eq!(out, Output::Numbers(vec![Value::I64((i * i) as i64)])),
                (_, Err(e)) => panic!("task {i} failed: {e}"),
            }
        }
        eprintln!(
            "soak: {} tasks, host RSS {} MiB",
            (b + 1) * batch,
            host_rss() >> 20
        );
    }
    let end_rss = host_rss();
    eprintln!(
        "soak: {total} tasks in {:.1?}, hostile contained: {failures:?}, host RSS start {} MiB, end {} MiB",
        started.elapsed(),
        start_rss >> 20,
        end_rss >> 20
    );
    assert_eq!(failures.values().sum::<u64>(), total / 100);
    for kind in ["fuel_exhausted", "memory_limit", "trap", "exit"] {
        assert_eq!(failures[kind], total / 400, "{kind}");
    }
    assert!(
        end_rss < start_rss + (200 << 20),
        "host memory grew from {start_rss} to {end_rss}"
    );
}
