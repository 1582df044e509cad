//! The pool's API against real worker processes and real guests: map order, submit / wait /
//! wait_timeout / cancel / drop / detach, SDK tasks, bad input, module loading, recycling, shutdown.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{builder, guest, guest_wat, pool_with};
use wasmpool::protocol::Handshake;
use wasmpool::{CommandSpec, Json, LoadError, OutputChunk, TaskError, Value};

#[test]
fn map_returns_results_in_input_order() {
    let (pool, math) = pool_with("math");
    let out = pool.map::<i64, _>(&math, "square", 0..2000i64);
    assert_eq!(out.len(), 2000);
    for (i, r) in out.into_iter().enumerate() {
        assert_eq!(r, Ok((i * i) as i64));
    }
}

#[test]
fn calls_streamed_together_keep_their_own_output_and_stats() {
    // One worker and a stream of submits: the calls travel coalesced, and each still has
    // the output it printed (and a call that printed nothing has none).
    let pool = builder().workers(1).build().expect("start the pool");
    let hostile = pool.load_file(guest("hostile")).expect("load the guest");
    let hello = pool.call(&hostile, "hello");
    let quiet = pool.call(&hostile, "counter");
    let mut tasks = Vec::new();
    for i in 0..300 {
        let call = if i % 100 < 50 { &hello } else { &quiet };
        tasks.push((i % 100 < 50, call.submit::<i64>(())));
    }
    for (printed, task) in tasks {
        task.wait().expect("the call ran");
        let stats = task.stats().expect("stats of a finished task");
        if printed {
            assert_eq!(stats.stdout, b"hello from guest\n");
            assert_eq!(stats.stderr, b"warning from guest\n");
        } else {
            assert!(stats.stdout.is_empty() && stats.stderr.is_empty());
        }
        assert!(!stats.output_truncated);
        assert!(stats.duration > Duration::ZERO);
    }
}

#[test]
fn a_batch_keeps_each_calls_own_result_output_and_stats() {
    let pool = builder().build().unwrap();
    let module = pool.load_file(guest_wat("print_or_trap.wat")).unwrap();
    let call = pool.call(&module, "f").fuel(10_000_000);
    // Plain numbers, and one input of the wrong type in the middle.
    let mut inputs: Vec<Value> = (0..200i64).map(Value::I64).collect();
    inputs[100] = Value::F64(0.5);
    let batch = call.submit_batch::<i64, _>(inputs.clone());
    assert_eq!(batch.len(), 200);
    let results = batch.wait();
    assert_eq!(results.len(), 200);
    let mut fuels = HashSet::new();
    for (i, (result, stats)) in results.into_iter().enumerate() {
        if i == 100 {
            assert!(
                matches!(result, Err(TaskError::BadInput { .. })),
                "{result:?}"
            );
            assert_eq!(stats.fuel_used, 0, "refused before it ran");
            continue;
        }
        // The same call as a task of its own: the same result, output and fuel.
        let alone = call.submit::<i64>(inputs[i]);
        let alone_result = alone.wait();
        let alone_stats = alone.stats().unwrap();
        assert_eq!(result, alone_result, "call {i}");
        if i == 13 {
            assert!(matches!(result, Err(TaskError::Trap { .. })), "{result:?}");
        } else {
            assert_eq!(result, Ok((i * i) as i64));
        }
        assert_eq!(stats.fuel_used, alone_stats.fuel_used, "fuel of call {i}");
        assert_eq!(stats.stdout, alone_stats.stdout, "stdout of call {i}");
        // 13 traps before it prints.
        let odd: &[u8] = if i % 2 == 1 && i != 13 { b"odd\n" } else { b"" };
        assert_eq!(stats.stdout, odd, "call {i}");
        assert!(
            stats.duration > Duration::ZERO && stats.worker != 0,
            "call {i}: {stats:?}"
        );
        fuels.insert(stats.fuel_used);
    }
    // Fuel grows with the loop: each call was metered apart, not the batch as a whole.
    assert!(fuels.len() > 150, "{} distinct fuel figures", fuels.len());
}

#[test]
fn a_batch_whose_worker_is_lost_runs_its_calls_again_so_only_the_culprit_fails() {
    // One call sleeps in a host call past its limit: the worker is killed under the whole
    // batch. Its calls run again one task each, so only the sleeper fails.
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let limit = Duration::from_millis(300);
    let call = pool.call(&hostile, "sleep_ms").timeout(limit);
    let inputs = [0i64, 1, 2, 60_000, 4, 5];
    let results = call.submit_batch::<i64, _>(inputs).wait();
    for ((result, stats), input) in results.into_iter().zip(inputs) {
        if input == 60_000 {
            assert_eq!(result, Err(TaskError::Timeout { limit }));
        } else {
            assert_eq!(result, Ok(input));
            assert!(stats.worker != 0, "{stats:?}");
        }
    }
}

#[test]
fn dropping_an_unfinished_batch_cancels_its_calls_and_frees_the_worker() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let limit = Duration::from_secs(30);
    let batch = pool
        .call(&hostile, "spin")
        .timeout(limit)
        .submit_batch::<i64, _>([(), ()]);
    assert!(!batch.wait_timeout(Duration::from_millis(50)));
    assert!(!batch.is_done());
    drop(batch);
    let next = pool.submit::<i64>(&hostile, "counter", ());
    assert_eq!(
        next.wait_timeout(FREED_WITHIN),
        Some(Ok(1)),
        "the dropped batch kept the only worker (its limit is {limit:?})"
    );
}

#[test]
fn map_spreads_work_over_every_worker() {
    let (pool, math) = pool_with("math");
    let tasks = pool
        .call(&math, "counting")
        .submit_many::<i64, _>(vec![3_000_000i64; 8]);
    let workers: HashSet<u32> = tasks
        .iter()
        .map(|t| {
            assert_eq!(t.wait(), Ok(0));
            t.stats().unwrap().worker
        })
        .collect();
    assert_eq!(workers.len(), 2, "both workers ran tasks");
}

#[test]
fn starmap_passes_several_arguments_and_converts_types() {
    let (pool, math) = pool_with("math");
    let sums = pool.starmap::<i32, _>(&math, "add", vec![(1, 2), (40, 2), (-5, 5)]);
    assert_eq!(sums, vec![Ok(3), Ok(42), Ok(0)]);
    // i64 arguments that fit convert to the export's i32 parameters.
    assert_eq!(pool.submit::<i32>(&math, "add", (2i64, 3i64)).wait(), Ok(5));
    let h = pool.submit::<f64>(&math, "hypot", (3, 4)).wait();
    assert_eq!(h, Ok(5.0));
    let scaled = pool.submit::<f32>(&math, "scale", (1.5f32, 2.0f32)).wait();
    assert_eq!(scaled, Ok(3.0));
    let raw = pool.submit::<Vec<Value>>(&math, "square", 9i64).wait();
    assert_eq!(raw, Ok(vec![Value::I64(81)]));
}

#[test]
fn map_unordered_yields_every_index_once_fastest_first() {
    let (pool, math) = pool_with("math");
    // One slow task first, then quick ones: the quick ones come out before it.
    let mut inputs = vec![60_000_000i64];
    inputs.extend(std::iter::repeat_n(10, 20));
    let got: Vec<(usize, Result<i64, TaskError>)> =
        pool.map_unordered(&math, "counting", inputs).collect();
    assert_eq!(got.len(), 21);
    let indices: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices.len(), 21);
    assert!(got.iter().all(|(_, r)| *r == Ok(0)));
    assert_ne!(got[0].0, 0, "the slow task did not finish first");
}

#[test]
fn imap_yields_in_order() {
    let (pool, math) = pool_with("math");
    let got: Vec<i64> = pool
        .imap::<i64, _>(&math, "square", [3i64, 1, 2])
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, vec![9, 1, 4]);
}

#[test]
fn wait_timeout_returns_without_stopping_the_task() {
    let (pool, math) = pool_with("math");
    let task = pool.submit::<i64>(&math, "counting", 200_000_000i64);
    assert_eq!(task.wait_timeout(Duration::from_millis(1)), None);
    assert!(!task.is_done());
    assert_eq!(task.wait(), Ok(0), "the task went on and finished");
    assert!(task.is_done());
    assert_eq!(
        task.wait_timeout(Duration::ZERO),
        Some(Ok(0)),
        "a finished task can be read again"
    );
}

#[test]
fn cancel_stops_a_running_task_and_a_queued_one_never_runs() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let running = pool.call(&hostile, "spin").timeout(None).submit::<i64>(());
    let queued = pool.submit::<i64>(&hostile, "counter", ());
    // Wait until the spin is running, then cancel both.
    while !running.is_running() {
        assert_eq!(running.wait_timeout(Duration::from_millis(5)), None);
    }
    let t = Instant::now();
    queued.cancel();
    running.cancel();
    assert!(matches!(running.wait(), Err(TaskError::Cancelled { .. })));
    assert!(matches!(queued.wait(), Err(TaskError::Cancelled { .. })));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        t.elapsed()
    );
    // The pool still works.
    assert_eq!(pool.submit::<i64>(&hostile, "counter", ()).wait(), Ok(1));
}

#[test]
fn cancels_reach_tasks_already_sent_to_the_worker_without_killing_it() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    // Short tasks first: the dispatcher then sends several tasks to the worker at once.
    pool.map::<i64, ()>(&hostile, "counter", vec![(); 200]);
    let pids = pool.worker_pids();
    let running = pool.call(&hostile, "spin").timeout(None).submit::<i64>(());
    let behind: Vec<_> = (0..3)
        .map(|_| pool.submit::<i64>(&hostile, "counter", ()))
        .collect();
    while !running.is_running() {
        assert_eq!(running.wait_timeout(Duration::from_millis(5)), None);
    }
    for task in &behind {
        task.cancel();
    }
    running.cancel();
    assert!(matches!(running.wait(), Err(TaskError::Cancelled { .. })));
    for task in &behind {
        assert!(
            matches!(task.wait(), Err(TaskError::Cancelled { .. })),
            "{:?}",
            task.wait()
        );
    }
    // The worker stopped the spin itself (through its cancel pipe): it was not killed.
    assert_eq!(pool.worker_pids(), pids);
    assert_eq!(pool.submit::<i64>(&hostile, "counter", ()).wait(), Ok(1));
}

/// How long a test waits for something a dropped task's cancel makes happen at once: far
/// under the 30 s limit of the spins the cancel must stop.
const FREED_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn dropping_a_running_task_cancels_it_and_frees_its_worker() {
    // What `tokio::time::timeout(d, task)` does when it gives up: it drops the task.
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let limit = Duration::from_secs(30);
    let spin = pool.call(&hostile, "spin").timeout(limit).submit::<i64>(());
    while !spin.is_running() {
        assert_eq!(spin.wait_timeout(Duration::from_millis(5)), None);
    }
    let pids = pool.worker_pids();
    drop(spin);
    let next = pool.submit::<i64>(&hostile, "counter", ());
    assert_eq!(
        next.wait_timeout(FREED_WITHIN),
        Some(Ok(1)),
        "the dropped spin kept the only worker (its limit is {limit:?})"
    );
    // The worker interrupted the spin itself (through its cancel pipe): it was not killed.
    assert_eq!(vec![next.stats().unwrap().worker], pids);
}

#[test]
fn dropping_a_queued_task_removes_it_before_it_runs() {
    // One worker, busy with a spin (a fresh worker takes one task at a time): the command
    // behind it waits in the pool's queue. Its output channel ends when the task does.
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let program = pool.load_file(guest_wat("write_loop.wat")).unwrap();
    let spin = pool
        .call(&hostile, "spin")
        .timeout(Duration::from_secs(30))
        .submit::<i64>(());
    while !spin.is_running() {
        assert_eq!(spin.wait_timeout(Duration::from_millis(5)), None);
    }
    let (queued, mut output) = pool.command(&program).submit_streaming(CommandSpec::new());
    drop(queued);
    // The stream's end, read on a thread of its own so that the wait is bounded.
    let (ended_tx, ended) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || ended_tx.send(output.next()));
    assert_eq!(
        ended.recv_timeout(FREED_WITHIN),
        Ok(None),
        "the dropped command was not cancelled while queued (or it ran)"
    );
    spin.cancel();
    assert!(matches!(spin.wait(), Err(TaskError::Cancelled { .. })));
}

#[test]
fn dropping_map_unordered_cancels_the_tasks_it_has_not_yielded() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let spins = pool
        .call(&hostile, "spin")
        .timeout(Duration::from_secs(30))
        .map_unordered::<i64, _>(vec![(); 3]);
    drop(spins);
    assert_eq!(
        pool.submit::<i64>(&hostile, "counter", ())
            .wait_timeout(FREED_WITHIN),
        Some(Ok(1)),
        "the spins of the dropped AsCompleted kept the only worker"
    );
}

#[test]
fn a_detached_task_runs_to_completion() {
    // The program writes 64 MiB to stdout; nobody reads the stream before the task is
    // detached, so it is still running then (blocked on the full channel). Detached, it
    // finishes: the stream delivers every byte. (Dropped, it would be cancelled and the
    // stream cut short.)
    let pool = builder().workers(1).build().unwrap();
    let program = pool.load_file(guest_wat("write_loop.wat")).unwrap();
    let limits = wasmpool::Limits {
        stdout_cap: u32::MAX,
        timeout: Some(Duration::from_secs(30)),
        ..pool.limits()
    };
    let (task, output) = pool
        .command(&program)
        .limits(limits)
        .submit_streaming(CommandSpec::new());
    assert!(!task.is_done());
    task.detach();
    let mut total = 0;
    for chunk in output {
        match chunk {
            OutputChunk::Stdout(bytes) => total += bytes.len(),
            OutputChunk::Stderr(_) => panic!("nothing was written to stderr"),
        }
    }
    assert_eq!(total, 64 << 20);
}

#[test]
fn a_task_cancelled_behind_a_long_one_is_skipped_without_killing_the_worker() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    // Short tasks first: the dispatcher then sends several tasks to the worker at once.
    let warm: Vec<_> = (0..50)
        .map(|_| pool.submit::<i64>(&hostile, "counter", ()))
        .collect();
    for task in &warm {
        assert_eq!(task.wait(), Ok(1));
    }
    let pids = pool.worker_pids();
    let long = pool.submit::<i64>(&hostile, "sleep_ms", 600i64);
    let behind = pool.submit::<i64>(&hostile, "counter", ());
    while !long.is_running() {
        assert_eq!(long.wait_timeout(Duration::from_millis(5)), None);
    }
    behind.cancel();
    // It was sent to the worker already (a queued task would fail at once): the worker
    // skips it when it gets there, long after the cancel.
    assert_eq!(
        behind.wait_timeout(Duration::from_millis(200)),
        None,
        "the task was still queued; the test needs it sent to the worker"
    );
    assert_eq!(long.wait(), Ok(600));
    assert!(
        matches!(behind.wait(), Err(TaskError::Cancelled { .. })),
        "{:?}",
        behind.wait()
    );
    assert_eq!(
        pool.worker_pids(),
        pids,
        "the worker was killed for nothing"
    );
    assert_eq!(pool.submit::<i64>(&hostile, "counter", ()).wait(), Ok(1));
}

#[test]
fn sdk_tasks_take_and_return_serde_values() {
    #[derive(serde::Serialize)]
    struct WcIn<'a> {
        text: &'a str,
    }
    #[derive(serde::Deserialize, Debug)]
    struct WcOut {
        words: u64,
        lines: u64,
        top: Vec<(String, u64)>,
    }
    let (pool, wc) = pool_with("wordcount");
    let out: Json<WcOut> = pool
        .submit(
            &wc,
            "wordcount",
            Json(WcIn {
                text: "the cat\nthe hat\nthe end",
            }),
        )
        .wait()
        .unwrap();
    assert_eq!(out.0.words, 6);
    assert_eq!(out.0.lines, 3);
    assert_eq!(out.0.top[0], ("the".to_string(), 3));

    let echoed: Json<serde_json::Value> = pool
        .submit(&wc, "echo", Json(serde_json::json!({"k": [1, 2]})))
        .wait()
        .unwrap();
    assert_eq!(echoed.0, serde_json::json!({"k": [1, 2]}));
}

#[test]
fn a_guest_error_is_typed_and_carries_the_guests_message() {
    let (pool, wc) = pool_with("wordcount");
    let ok: Json<i64> = pool
        .submit(&wc, "divide", Json(serde_json::json!({"a": 9, "b": 3})))
        .wait()
        .unwrap();
    assert_eq!(ok.0, 3);
    let err = pool
        .submit::<Json<i64>>(&wc, "divide", Json(serde_json::json!({"a": 7, "b": 0})))
        .wait();
    assert_eq!(
        err.unwrap_err(),
        TaskError::Guest {
            message: "cannot divide 7 by zero".into()
        }
    );
}

#[test]
fn bad_input_is_reported_per_call_without_running_anything() {
    let (pool, math) = pool_with("math");
    let wc = pool.load_file(guest("wordcount")).unwrap();
    let cases = [
        pool.submit::<i64>(&math, "nope", 1i64).wait(),
        pool.submit::<i64>(&math, "square", (1i64, 2i64)).wait(),
        pool.submit::<i64>(&math, "add", (1.5f64, 2)).wait(),
        pool.submit::<i64>(&math, "square", Json(1)).wait(),
        pool.submit::<i64>(&wc, "wordcount", 3i64).wait(),
    ];
    let expected = [
        "no export `nope`",
        "takes 1 argument",
        "argument 1 of `add` is i32",
        "plain export",
        "SDK task",
    ];
    for (got, want) in cases.iter().zip(expected) {
        match got {
            Err(TaskError::BadInput { message }) => {
                assert!(message.contains(want), "{message:?} lacks {want:?}")
            }
            other => panic!("expected BadInput containing {want:?}, got {other:?}"),
        }
    }
    // JSON of the wrong shape reaches the guest SDK, which says the input did not decode:
    // bad input, the caller's fault, not the task's error. In a batch (`map`) too.
    let wrong_shape = [
        pool.submit::<Json<i64>>(&wc, "divide", Json("not an object"))
            .wait(),
        pool.map::<Json<i64>, _>(&wc, "divide", [Json(serde_json::json!({"a": 1}))])
            .remove(0),
    ];
    for (undecodable, says) in wrong_shape
        .into_iter()
        .zip(["invalid type", "missing field `b`"])
    {
        match undecodable {
            Err(TaskError::BadInput { message }) => assert!(
                message.contains("SDK task `divide` cannot decode its input")
                    && message.contains(says),
                "{message}"
            ),
            other => panic!("expected BadInput, got {other:?}"),
        }
    }
    // The guest's own `Err` is still `Guest`.
    let own = pool
        .submit::<Json<i64>>(&wc, "divide", Json(serde_json::json!({"a": 1, "b": 0})))
        .wait();
    assert!(matches!(own, Err(TaskError::Guest { .. })), "{own:?}");
    // Asking for the wrong output type is a typed error too.
    let wrong = pool.submit::<Json<String>>(&math, "square", 2i64).wait();
    assert!(
        matches!(wrong, Err(TaskError::BadOutput { .. })),
        "{wrong:?}"
    );
}

#[test]
fn loading_bad_modules_fails_with_load_errors() {
    let pool = builder().workers(1).build().unwrap();
    match pool.load(b"\0asm but not really") {
        Err(LoadError::Invalid { message }) => assert!(!message.is_empty()),
        other => panic!("{other:?}"),
    }
    match pool.load_file(file!()) {
        Err(LoadError::Invalid { .. }) => {}
        other => panic!("a Rust source file loaded: {other:?}"),
    }
    match pool.load_file("/nonexistent/x.wasm") {
        Err(LoadError::Io { .. }) => {}
        other => panic!("{other:?}"),
    }
    let imports_env = r#"(module (import "env" "secret" (func)) (func (export "f")))"#;
    match pool.load(imports_env) {
        Err(LoadError::UnsupportedImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "secret"))
        }
        other => panic!("{other:?}"),
    }
    let small = builder().workers(1).max_module_size(16).build().unwrap();
    assert!(matches!(
        small.load_file(guest("math")),
        Err(LoadError::TooLarge { .. })
    ));
    // The pool still serves work after all that.
    let m = pool
        .load(r#"(module (func (export "one") (result i32) i32.const 1))"#)
        .unwrap();
    assert_eq!(pool.submit::<i32>(&m, "one", ()).wait(), Ok(1));
}

#[test]
fn compilation_runs_under_its_own_time_and_memory_limits() {
    // A function of 1.6M instructions: seconds of Cranelift time, far over 200 ms.
    let body = "local.get 0 i32.const 7 i32.mul i32.const 3 i32.add local.set 0 ".repeat(400_000);
    let slow_to_compile =
        format!(r#"(module (func (export "f") (param i32) (result i32) {body} local.get 0))"#);
    let limit = Duration::from_millis(200);
    let pool = builder()
        .workers(1)
        .compile_timeout(limit)
        .compile_cache(None)
        .build()
        .unwrap();
    let t = Instant::now();
    match pool.load(&slow_to_compile) {
        Err(LoadError::CompileTimeout { limit: l }) => assert_eq!(l, limit),
        other => panic!("{other:?}"),
    }
    // Stopped at its limit, not after the seconds the compile takes: the bound leaves room
    // for starting and reaping the process on a machine whose cores the other tests of
    // this binary keep busy.
    assert!(
        t.elapsed() < limit + Duration::from_secs(1),
        "stopped after {:?}",
        t.elapsed()
    );
    // The pool is unharmed: it loads and runs an ordinary module (a small one: its compile
    // must fit the same 200 ms while the other tests of this binary load both cores).
    let m = pool
        .load(r#"(module (func (export "square") (param i64) (result i64) local.get 0 local.get 0 i64.mul))"#)
        .unwrap();
    assert_eq!(pool.submit::<i64>(&m, "square", 5i64).wait(), Ok(25));

    let small = builder()
        .workers(1)
        .compile_memory(32 << 20)
        .compile_cache(None)
        .build()
        .unwrap();
    match small.load_file(guest("math")) {
        Err(LoadError::CompileMemory { limit }) => assert_eq!(limit, 32 << 20),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_pool_loads_from_the_disk_cache() {
    let dir = std::env::temp_dir().join(format!("wasmpool-disk-cache-{}", std::process::id()));
    let first = builder()
        .workers(1)
        .compile_cache(dir.clone())
        .build()
        .unwrap();
    let m = first.load_file(guest("math")).unwrap();
    assert!(
        matches!(m.origin(), wasmpool::Origin::Compiled(_)),
        "{:?}",
        m.origin()
    );
    drop(first);
    let second = builder()
        .workers(1)
        .compile_cache(dir.clone())
        .build()
        .unwrap();
    let m = second.load_file(guest("math")).unwrap();
    assert!(
        matches!(m.origin(), wasmpool::Origin::DiskCache(_)),
        "{:?}",
        m.origin()
    );
    assert_eq!(second.submit::<i64>(&m, "square", 6i64).wait(), Ok(36));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_same_bytes_load_once() {
    let pool = builder().workers(1).build().unwrap();
    let a = pool.load_file(guest("math")).unwrap();
    let b = pool.load_file(guest("math")).unwrap();
    assert_eq!(a.id(), b.id());
    assert!(
        a.same_artifact(&b),
        "the second load reused the first compilation"
    );
}

#[test]
fn an_unloaded_module_is_forgotten_but_its_handles_keep_working() {
    let pool = builder().workers(1).build().unwrap();
    let a = pool.load_file(guest("math")).unwrap();
    assert!(pool.unload(a.id()));
    assert!(!pool.unload(a.id()), "unloaded once");
    // The handle held still runs; a new load is a new module (from the disk cache).
    assert_eq!(pool.submit::<i64>(&a, "square", 4i64).wait(), Ok(16));
    let b = pool.load_file(guest("math")).unwrap();
    assert_eq!(a.id(), b.id());
    assert!(
        !a.same_artifact(&b),
        "the pool no longer held the first load"
    );
    assert_eq!(b.id().to_hex().len(), 64);
    assert_eq!(wasmpool::ModuleId::from_hex(&b.id().to_hex()), Some(b.id()));
    assert_eq!(wasmpool::ModuleId::from_hex(&"g".repeat(64)), None);
    assert_eq!(wasmpool::ModuleId::from_hex("abc"), None);
}

#[test]
fn workers_are_replaced_after_max_tasks_and_nothing_is_lost() {
    let pool = builder()
        .workers(1)
        .max_tasks_per_worker(5)
        .build()
        .unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let tasks = pool.call(&math, "square").submit_many::<i64, _>(0..23i64);
    let mut pids = HashSet::new();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.wait(), Ok((i * i) as i64));
        pids.insert(t.stats().unwrap().worker);
    }
    assert_eq!(pids.len(), 5, "23 tasks at 5 per worker need 5 workers");
}

#[test]
fn workers_over_their_memory_ceiling_are_replaced_without_losing_work() {
    // A ceiling of one byte: every worker is over it after its first task.
    let pool = builder().workers(1).max_worker_rss(1).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let tasks = pool.call(&math, "square").submit_many::<i64, _>(0..6i64);
    let mut pids = HashSet::new();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.wait(), Ok((i * i) as i64));
        let stats = t.stats().unwrap();
        assert!(stats.worker_rss > 0, "workers report their memory");
        pids.insert(stats.worker);
    }
    assert_eq!(pids.len(), 6, "each task ran in a fresh worker");
}

#[test]
fn a_task_whose_worker_dies_is_retried_when_asked() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let task = pool
        .call(&hostile, "sleep_ms")
        .max_retries(1)
        .submit::<i64>(300i64);
    while !task.is_running() {
        assert_eq!(task.wait_timeout(Duration::from_millis(5)), None);
    }
    let pid = pool.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert_eq!(
        task.wait(),
        Ok(300),
        "the task ran again on the replacement worker"
    );
    assert_ne!(task.stats().unwrap().worker, pid);
}

#[test]
fn inputs_and_outputs_over_their_caps_are_typed_errors() {
    let (pool, wc) = pool_with("wordcount");
    let big = "x".repeat(10_000);
    let defaults = pool.limits();
    let input_cap = wasmpool::Limits {
        max_input: 1000,
        ..defaults
    };
    let r = pool
        .call(&wc, "echo")
        .limits(input_cap)
        .submit::<Json<String>>(Json(&big))
        .wait();
    assert!(
        matches!(r, Err(TaskError::BadInput { ref message }) if message.contains("max_input")),
        "{r:?}"
    );
    let output_cap = wasmpool::Limits {
        max_output: 1000,
        ..defaults
    };
    let r = pool
        .call(&wc, "echo")
        .limits(output_cap)
        .submit::<Json<String>>(Json(&big[..900]))
        .wait();
    assert!(r.is_ok(), "under the cap: {r:?}");
    let r = pool
        .call(&wc, "echo")
        .limits(output_cap)
        .submit::<Json<String>>(Json(&big[..5000]))
        .wait();
    assert!(
        matches!(r, Err(TaskError::BadOutput { ref message }) if message.contains("max_output")),
        "{r:?}"
    );
}

#[test]
fn shutdown_drains_and_terminate_cancels() {
    let (pool, math) = pool_with("math");
    let tasks = pool
        .call(&math, "counting")
        .submit_many::<i64, _>(vec![1_000_000i64; 6]);
    pool.shutdown();
    assert!(
        tasks.iter().all(|t| t.wait() == Ok(0)),
        "shutdown finished every task"
    );

    let (pool, math) = pool_with("math");
    let tasks = pool
        .call(&math, "counting")
        .submit_many::<i64, _>(vec![2_000_000_000i64; 6]);
    let t = Instant::now();
    pool.terminate();
    assert!(t.elapsed() < Duration::from_secs(2));
    for task in &tasks {
        assert!(
            matches!(task.wait(), Err(TaskError::Cancelled { .. })),
            "{:?}",
            task.wait()
        );
    }
}

#[test]
fn shutdown_runs_the_tasks_behind_one_whose_worker_was_killed() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    // Asleep in a host call: only killing the worker stops it.
    let blocked = pool
        .call(&hostile, "sleep_ms")
        .timeout(Duration::from_millis(100))
        .submit::<i64>(5_000i64);
    let behind = pool.submit::<i64>(&hostile, "counter", ());
    while !blocked.is_running() {
        assert_eq!(blocked.wait_timeout(Duration::from_millis(5)), None);
    }
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pool.shutdown();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown returns once the queued task ran on a new worker");
    assert!(
        matches!(blocked.wait(), Err(TaskError::Timeout { .. })),
        "{:?}",
        blocked.wait()
    );
    assert_eq!(behind.wait(), Ok(1));
}

#[test]
fn no_worker_process_outlives_its_pool() {
    for drain in [true, false] {
        let (pool, math) = pool_with("math");
        let tasks = pool.call(&math, "square").submit_many::<i64, _>(0..200i64);
        let pids: HashSet<u32> = tasks
            .iter()
            .map(|t| {
                t.wait().unwrap();
                t.stats().unwrap().worker
            })
            .collect();
        assert!(!pids.is_empty());
        if drain {
            pool.shutdown()
        } else {
            drop(pool)
        }
        for pid in pids {
            // Reaped, not a zombie: the process entry is gone.
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "worker {pid} survived"
            );
        }
    }
}

#[test]
fn a_task_is_a_future() {
    let (pool, math) = pool_with("math");
    let task = pool.submit::<i64>(&math, "square", 11i64);
    assert_eq!(block_on(task), Ok(121));
}

/// A minimal executor: polls the future, parking the thread until its waker fires.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn a_worker_of_another_build_refuses_to_run() {
    let ours = Handshake::ours().unwrap();
    let other_engine = Handshake {
        engine: "0".repeat(32),
        ..ours.clone()
    };
    let other_version = Handshake {
        version: "0.0.0-other".into(),
        ..ours.clone()
    };
    for mode in ["__worker", "__compile"] {
        for (host, said) in [
            ("12345".to_string(), "\"12345\""),
            (other_version.arg(), "wasmpool 0.0.0-other"),
            (other_engine.arg(), "engine 0000"),
        ] {
            let out = common::cli()
                .args([mode, &host, "-", "1000000", "epochs"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(wasmpool::protocol::EXIT_VERSION_MISMATCH),
                "{mode} {host}: {stderr}"
            );
            assert!(
                stderr.contains("another build")
                    && stderr.contains(said)
                    && stderr.contains(&format!("engine {}", ours.engine))
                    && stderr.contains("worker_main()"),
                "{mode} {host}: {stderr}"
            );
        }
    }
}

#[test]
fn calls_without_a_fuel_limit_run_unmetered_code_beside_metered_calls() {
    let (pool, math) = common::pool_with("math");
    assert_eq!(pool.limits().fuel, None);
    let free = pool.submit::<i64>(&math, "count", 1000i64);
    let metered = pool
        .call(&math, "count")
        .fuel(10_000_000)
        .submit::<i64>(1000i64);
    assert_eq!((free.wait(), metered.wait()), (Ok(0), Ok(0)));
    assert_eq!(
        free.stats().unwrap().fuel_used,
        0,
        "no metering without a fuel limit"
    );
    assert!(metered.stats().unwrap().fuel_used > 1000);
    // Both kinds interleave on the same workers.
    let results: Vec<_> = (0..40i64)
        .map(|i| {
            let call = pool.call(&math, "square");
            if i % 2 == 0 {
                call.fuel(1_000_000)
            } else {
                call
            }
            .submit::<i64>(i)
        })
        .collect();
    for (i, t) in results.iter().enumerate() {
        assert_eq!(t.wait(), Ok((i * i) as i64));
    }
}

#[test]
fn reusing_instances_maps_in_order_with_per_call_errors_and_limits() {
    let (pool, math) = common::pool_with("math");
    let n = 50_000i64;
    let squares = pool
        .call(&math, "square")
        .reuse_instance(0)
        .map::<i64, _>(0..n);
    assert_eq!(squares.len(), n as usize);
    for (i, r) in squares.iter().enumerate() {
        assert_eq!(*r, Ok((i * i) as i64));
    }

    // A trapping call fails alone; the calls after it run in a fresh instance.
    let pairs: Vec<(i32, i32)> = (0..30)
        .map(|i| (i * 10, if i % 7 == 3 { 0 } else { 2 }))
        .collect();
    let out = pool
        .call(&math, "div")
        .reuse_instance(8)
        .map::<i32, _>(pairs.clone());
    for ((a, b), r) in pairs.iter().zip(&out) {
        match b {
            0 => assert_eq!(r.as_ref().unwrap_err().kind(), "trap", "{r:?}"),
            _ => assert_eq!(*r, Ok(a / b)),
        }
    }
    // Inputs rejected up front keep their place.
    let mixed = pool
        .call(&math, "square")
        .reuse_instance(4)
        .map::<i64, _>(vec![
            wasmpool::Value::I64(3),
            wasmpool::Value::F64(1.5),
            wasmpool::Value::I64(4),
        ]);
    assert_eq!(mixed[0], Ok(9));
    assert_eq!(mixed[1].as_ref().unwrap_err().kind(), "bad_input");
    assert_eq!(mixed[2], Ok(16));
}

#[test]
fn reused_instances_share_state_within_a_chunk_but_limits_stay_per_call() {
    let (pool, hostile) = common::pool_with("hostile");
    // The weaker isolation, made visible: a global counter goes on counting within a chunk.
    let counts = pool
        .call(&hostile, "counter")
        .reuse_instance(5)
        .map::<i64, _>(vec![(); 10]);
    let counts: Vec<i64> = counts.into_iter().map(Result::unwrap).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]);

    // Fuel is per call: the runaway call exhausts its own budget, its neighbours finish.
    let burns = pool
        .call(&hostile, "burn")
        .fuel(5_000_000)
        .reuse_instance(3)
        .map::<i64, _>(vec![10i64, 1_000_000_000, 10]);
    assert!(burns[0].is_ok() && burns[2].is_ok(), "{burns:?}");
    assert_eq!(burns[1].as_ref().unwrap_err().kind(), "fuel_exhausted");
    // So is the wall clock.
    let limit = std::time::Duration::from_millis(200);
    let sleeps = pool
        .call(&hostile, "spin")
        .timeout(limit)
        .reuse_instance(2)
        .map::<i64, _>(vec![(), ()]);
    for r in &sleeps {
        assert_eq!(*r, Err(wasmpool::TaskError::Timeout { limit }));
    }
}

#[test]
fn a_large_map_still_runs_every_call_in_a_fresh_instance() {
    // 2000 calls travel in batches; a counter that survived from one call to the next
    // would answer 2, 3, ...
    let pool = builder().workers(2).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let counts = pool.map::<i64, ()>(&hostile, "counter", vec![(); 2000]);
    assert!(counts.iter().all(|c| *c == Ok(1)), "{:?}", &counts[..20]);
    // Limits stay per call: one call out of fuel among many that fit.
    let math = pool.load_file(guest("math")).unwrap();
    let mut inputs = vec![10i64; 500];
    inputs[321] = 50_000_000;
    let primes = pool
        .call(&math, "primes")
        .fuel(20_000_000)
        .map::<i64, _>(inputs);
    for (i, r) in primes.iter().enumerate() {
        if i == 321 {
            assert!(matches!(r, Err(TaskError::FuelExhausted { .. })), "{r:?}");
        } else {
            assert_eq!(*r, Ok(4), "call {i}");
        }
    }
}

#[test]
fn a_call_stuck_in_a_host_call_fails_alone_in_a_large_map() {
    // The stuck call's batch loses its worker (it exits by itself once the call is past
    // its limit); its calls run again one task each, and only the stuck one fails.
    let pool = builder().workers(2).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let limit = Duration::from_millis(300);
    let mut inputs = vec![0i64; 600];
    inputs[417] = 60_000;
    let t = Instant::now();
    let out = pool
        .call(&hostile, "sleep_ms")
        .timeout(limit)
        .map::<i64, _>(inputs);
    for (i, r) in out.iter().enumerate() {
        if i == 417 {
            assert_eq!(*r, Err(TaskError::Timeout { limit }));
        } else {
            assert_eq!(*r, Ok(0), "call {i}");
        }
    }
    // Two rounds of limit + grace, not 600 × the limit.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn large_maps_keep_bad_inputs_in_place_and_lay_several_arguments_flat() {
    let pool = builder().workers(2).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let inputs: Vec<Vec<Value>> = (0..1000i64)
        .map(|i| match i {
            100 => vec![],                // wrong count
            200 => vec![Value::F64(0.5)], // does not convert to i64
            _ => vec![Value::I64(i)],
        })
        .collect();
    for out in [
        pool.map::<i64, _>(&math, "square", inputs.clone()),
        pool.call(&math, "square")
            .reuse_instance(0)
            .map::<i64, _>(inputs.clone()),
    ] {
        for (i, r) in out.iter().enumerate() {
            match i {
                100 | 200 => assert!(matches!(r, Err(TaskError::BadInput { .. })), "{i}: {r:?}"),
                _ => assert_eq!(*r, Ok((i * i) as i64), "call {i}"),
            }
        }
    }
    // Two arguments per call, laid end to end.
    let pairs: Vec<(i32, i32)> = (0..3000).map(|i| (i, 2 * i)).collect();
    let sums = pool.starmap::<i32, _>(&math, "add", pairs);
    assert!(sums.iter().enumerate().all(|(i, s)| *s == Ok(3 * i as i32)));
}

#[test]
fn a_timeout_too_large_for_the_clock_fails_its_call_and_the_pool_goes_on() {
    let (pool, math) = pool_with("math");
    // A task already queued when the bad calls arrive must not be lost with them.
    let earlier = pool.submit::<i64>(&math, "counting", 3_000_000i64);
    let huge = pool.call(&math, "square").timeout(Duration::MAX);
    let single = huge.submit::<i64>(3i64);
    let mapped = huge.map::<i64, _>(0..200i64);
    let bounded = Duration::from_secs(30);
    let refused = |outcome: Option<Result<i64, TaskError>>| match outcome {
        Some(Err(TaskError::BadInput { message })) => {
            assert!(message.contains("timeout"), "says which limit: {message}");
        }
        other => panic!("expected BadInput for the huge timeout, got {other:?}"),
    };
    refused(single.wait_timeout(bounded));
    assert_eq!(mapped.len(), 200);
    for r in mapped {
        refused(Some(r));
    }
    // The pool goes on: the earlier task and later calls run.
    assert_eq!(earlier.wait_timeout(bounded), Some(Ok(0)));
    let later = pool.call(&math, "square").submit_many::<i64, _>(0..50i64);
    for (i, t) in later.iter().enumerate() {
        assert_eq!(t.wait_timeout(bounded), Some(Ok((i * i) as i64)));
    }
    // As a pool default, the same limit is a configuration error.
    let err = builder().timeout(Duration::MAX).build().unwrap_err();
    assert!(
        matches!(&err, wasmpool::PoolError::Config(m) if m.contains("timeout")),
        "{err}"
    );
}

#[test]
fn waiting_longer_than_the_clock_can_count_is_waiting_without_a_deadline() {
    // `Instant::now() + Duration::MAX` panicked in the caller's thread.
    let (pool, math) = pool_with("math");
    let task = pool.submit::<i64>(&math, "square", 6i64);
    assert_eq!(task.wait_timeout(Duration::MAX), Some(Ok(36)));
}

#[test]
fn a_compile_cache_bound_of_zero_is_a_configuration_error() {
    let err = builder().compile_cache_limit(0).build().unwrap_err();
    assert!(
        matches!(&err, wasmpool::PoolError::Config(m) if m.contains("compile_cache_limit")),
        "{err}"
    );
}

#[test]
fn stats_count_calls_by_outcome_and_worker_restarts() {
    let pool = builder().workers(1).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let squares = pool.map::<i64, _>(&math, "square", 0..100i64);
    assert!(squares.iter().all(Result::is_ok));
    let quotients = pool.starmap::<i32, _>(&math, "div", vec![(6, 3), (1, 0), (4, 2)]);
    assert_eq!(quotients[1].as_ref().unwrap_err().kind(), "trap");
    let spin = pool.call(&math, "spin").fuel(10_000).submit::<i64>(());
    assert_eq!(spin.wait().unwrap_err().kind(), "fuel_exhausted");
    let crashed = pool.call(&hostile, "sleep_ms").submit::<i64>(60_000i64);
    while !crashed.is_running() {
        assert_eq!(crashed.wait_timeout(Duration::from_millis(5)), None);
    }
    let pid = pool.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert_eq!(crashed.wait().unwrap_err().kind(), "worker_lost");
    assert_eq!(pool.submit::<i64>(&math, "square", 3i64).wait(), Ok(9));
    // A call is counted once the dispatcher hears of it, a moment after its waiter does.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = pool.stats();
        if stats.done + stats.failed_total() >= 106 || Instant::now() > deadline {
            break stats;
        }
        std::thread::yield_now();
    };
    assert_eq!(stats.done, 100 + 2 + 1, "{stats:?}");
    assert_eq!(stats.failed_total(), 3, "{stats:?}");
    for kind in ["trap", "fuel_exhausted", "worker_lost"] {
        assert_eq!(stats.failed.get(kind), Some(&1), "{kind}: {stats:?}");
    }
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert_eq!((stats.workers_live, stats.workers_restarted), (1, 1));
    let new_pid = pool.worker_pids()[0];
    assert_eq!(stats.worker_rss.len(), 1);
    assert_eq!(stats.worker_rss[0].0, new_pid);
    assert!(stats.worker_rss_total() > 1 << 20, "{stats:?}");
}

#[test]
fn a_tasks_stats_carry_its_peak_memory() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let small = pool.submit::<i64>(&hostile, "alloc_mb", 0i64);
    let big = pool.submit::<i64>(&hostile, "alloc_mb", 16i64);
    assert!(small.wait().is_ok() && big.wait().is_ok());
    let small = small.stats().unwrap().peak_memory;
    let big = big.stats().unwrap().peak_memory;
    assert!(
        small > 0 && small.is_multiple_of(65536),
        "whole wasm pages: {small}"
    );
    assert!(
        big >= small + (16 << 20) && big < small + (64 << 20),
        "{small} then {big}"
    );
    // A fresh instance each time: the next task starts from the initial size again.
    let again = pool.submit::<i64>(&hostile, "alloc_mb", 0i64);
    assert!(again.wait().is_ok());
    assert_eq!(again.stats().unwrap().peak_memory, small);
}

#[test]
fn a_calls_environment_reaches_its_guest_and_nothing_else_does() {
    let pool = builder().build().unwrap();
    let probe = pool.load_file(guest_wat("env_probe.wat")).unwrap();
    let call = pool.call(&probe, "bytes").env("A", "1").env("B", "22");
    // `A=1\0B=22\0`, in a plain call and in each call of a batch.
    assert_eq!(call.submit::<i32>(()).wait(), Ok(9));
    let batch = call.map::<i32, _>(vec![(); 200]);
    assert!(batch.iter().all(|r| *r == Ok(9)), "{:?}", &batch[..3]);
    // Without `env`, deny-by-default: no variable at all.
    assert_eq!(pool.submit::<i32>(&probe, "count", ()).wait(), Ok(0));
    // The environment counts toward max_input.
    let big = pool
        .call(&probe, "count")
        .limits(wasmpool::Limits {
            max_input: 64,
            ..pool.limits()
        })
        .env("K", "x".repeat(100));
    assert!(matches!(
        big.submit::<i32>(()).wait(),
        Err(TaskError::BadInput { .. })
    ));
}

/// Calls submitted together travel to a worker in one frame (the dispatcher coalesces
/// them), yet each is a task of its own: its own outcome, fuel and stats.
#[test]
fn calls_submitted_together_each_get_their_own_outcome_and_stats() {
    let pool = builder().workers(1).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    // A first call, so the worker is known to be quick and takes many at once.
    let div = pool.call(&math, "div");
    assert_eq!(div.submit::<i32>((7, 7)).wait(), Ok(1));
    let tasks = div.submit_many::<i32, _>((0..300).map(|i| (i, i32::from(i != 150))));
    let pid = pool.worker_pids()[0];
    for (i, task) in tasks.iter().enumerate() {
        match task.wait() {
            // (A Rust guest's `/` by zero panics: an `unreachable` trap.)
            Err(TaskError::Trap { .. }) if i == 150 => {}
            other => assert_eq!(other, Ok(i as i32), "call {i}"),
        }
        let stats = task.stats().unwrap();
        assert_eq!(stats.worker, pid, "call {i}");
    }
    // Fuel is each call's own.
    let count = pool.call(&math, "count").fuel(10_000_000);
    let tasks = count.submit_many::<i64, _>((1..=100).map(|i| i * 1000));
    let fuel: Vec<u64> = tasks
        .iter()
        .map(|t| {
            t.wait().unwrap();
            t.stats().unwrap().fuel_used
        })
        .collect();
    assert!(fuel.windows(2).all(|w| w[0] < w[1]), "{fuel:?}");
    assert_eq!(pool.worker_pids(), [pid], "no worker was replaced");
}

/// A call past its time limit among calls that travel together times out alone, stopped in
/// its worker (which goes on), and the calls after it run.
#[test]
fn a_call_past_its_time_limit_among_coalesced_calls_times_out_alone() {
    let pool = builder().workers(1).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let count = pool
        .call(&math, "count")
        .timeout(Duration::from_millis(200));
    assert!(count.submit::<i64>(10).wait().is_ok());
    let pid = pool.worker_pids()[0];
    let n = |i: i64| if i == 20 { i64::MAX } else { 100 + i };
    let tasks = count.submit_many::<i64, _>((0..40).map(n));
    for (i, task) in tasks.iter().enumerate() {
        match task.wait() {
            Err(TaskError::Timeout { .. }) if i == 20 => {}
            other => assert!(other.is_ok(), "call {i}: {other:?}"),
        }
    }
    assert_eq!(
        pool.worker_pids(),
        [pid],
        "stopped in its worker, not killed"
    );
}
