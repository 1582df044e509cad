//! Chaos: a map of 10k tasks while another thread SIGKILLs a random worker every 50 ms.
//! Every input gets exactly one output (its result, or `WorkerLost` for a task that was
//! running when its worker died), in order, without a hang; the pool serves new work after.

mod common;

use std::time::{Duration, Instant};

use common::builder;
use crossbeam_channel::RecvTimeoutError;
use wasmpool::TaskError;

/// `slow_id(x, n)` burns `n` loop iterations and returns `x`: results identify their input.
const SLOW_ID: &str = r#"(module
  (func (export "slow_id") (param $x i64) (param $n i64) (result i64)
    (block $done (loop $l
      (br_if $done (i64.le_s (local.get $n) (i64.const 0)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $l)))
    (local.get $x)))"#;

#[test]
fn a_map_survives_workers_killed_every_50ms() {
    let pool = builder().build().unwrap();
    let module = pool.load(SLOW_ID).unwrap();
    let n = 10_000i64;
    let deadline = Duration::from_secs(240);

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (results_tx, results_rx) = crossbeam_channel::bounded(1);
    let started = Instant::now();
    let (results, kills) = std::thread::scope(|s| {
        let pool = &pool;
        let module = &module;
        s.spawn(move || {
            let inputs = (0..n).map(|i| (i, 500_000i64));
            let _ = results_tx.send(pool.starmap::<i64, _>(module, "slow_id", inputs));
        });
        let killer = s.spawn(move || {
            let mut kills = 0u32;
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            while let Err(RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(Duration::from_millis(50))
            {
                let pids = pool.worker_pids();
                if pids.is_empty() {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pid = pids[(seed % pids.len() as u64) as usize];
                let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    kills += 1;
                }
            }
            kills
        });
        let results = results_rx.recv_timeout(deadline);
        drop(stop_tx);
        let kills = killer.join().unwrap();
        (
            results.expect("the map finished before the test's deadline"),
            kills,
        )
    });

    assert_eq!(results.len(), n as usize, "one output per input");
    let mut lost = 0;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(x) => assert_eq!(*x, i as i64, "output {i} is its own input's"),
            Err(TaskError::WorkerLost { message, .. }) => {
                assert!(message.contains("signal 9"), "{message}");
                lost += 1;
            }
            Err(other) => panic!("input {i}: unexpected {other:?}"),
        }
    }
    eprintln!(
        "chaos: {n} tasks in {:.1?}, {kills} workers killed, {lost} tasks lost with their worker, {} succeeded",
        started.elapsed(),
        n as usize - lost
    );
    assert!(kills > 0, "the chaos thread killed workers");
    assert!(
        lost <= kills as usize,
        "at most the running task dies with each worker"
    );
    assert_eq!(
        pool.submit::<i64>(&module, "slow_id", (7i64, 10i64)).wait(),
        Ok(7)
    );
}
