//! WASI command tasks: real C programs (guests/c, built with clang and wasi-libc) run with
//! arguments, stdin, environment, `/in` and `/out`, in worker processes.

mod common;

use std::time::{Duration, Instant};

use common::{builder, c_program, guest, pool_with_program};
use wasmpool::{
    CommandOutput, CommandSpec, Limits, Module, OutputChunk, Pool, TaskError, TaskSpec,
};

#[test]
fn a_program_reads_stdin_and_prints() {
    let (pool, wc) = pool_with_program("wc");
    let out = pool
        .command(&wc)
        .fuel(1_000_000_000)
        .submit(CommandSpec::new().stdin("to be or not\nto be\n"))
        .wait()
        .unwrap();
    assert_eq!(out.stdout_text(), "2 6 19\n");
    assert_eq!(out.exit_code, 0);
    assert!(out.success() && out.stderr.is_empty() && out.files.is_empty());
    assert!(out.fuel_used > 0 && out.duration > Duration::ZERO);
}

#[test]
fn input_files_are_read_only_under_in_and_out_files_come_back() {
    let (pool, transform) = pool_with_program("transform");
    let out = pool
        .run_command(
            &transform,
            CommandSpec::new()
                .args(["/in/data/text.txt", "/out/upper.txt"])
                .input("data/text.txt", "hello, sandbox\n")
                .output_dir(),
        )
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr_text());
    assert_eq!(out.stdout_text(), "15\n");
    assert_eq!(out.file("upper.txt"), Some(&b"HELLO, SANDBOX\n"[..]));
    assert_eq!(out.files.len(), 1);

    // /in cannot be written, and without output_dir there is no /out.
    let out = pool
        .run_command(
            &transform,
            CommandSpec::new().args(["/in/a", "/in/b"]).input("a", "x"),
        )
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 2);
    assert!(
        out.stderr_text().starts_with("transform: /in/b: "),
        "{}",
        out.stderr_text()
    );
    let out = pool
        .run_command(
            &transform,
            CommandSpec::new().args(["/in/a", "/out/b"]).input("a", "x"),
        )
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 2);
    assert!(
        out.stderr_text().starts_with("transform: /out/b: "),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn input_files_can_come_from_host_paths() {
    let (pool, transform) = pool_with_program("transform");
    let host = std::env::temp_dir().join(format!("wasmpool-input-{}.txt", std::process::id()));
    std::fs::write(&host, "from the host").unwrap();
    let out = pool
        .run_command(
            &transform,
            CommandSpec::new()
                .args(["/in/x", "/out/y"])
                .input_file("x", &host)
                .output_dir(),
        )
        .wait()
        .unwrap();
    std::fs::remove_file(&host).unwrap();
    assert_eq!(out.file("y"), Some(&b"FROM THE HOST"[..]));

    let missing = pool
        .run_command(
            &transform,
            CommandSpec::new().input_file("x", "/nonexistent/wasmpool/x"),
        )
        .wait()
        .unwrap_err();
    assert_eq!(missing.kind(), "bad_input");
    assert!(
        missing.to_string().contains("/nonexistent/wasmpool/x"),
        "{missing}"
    );
}

#[test]
fn host_files_over_the_input_cap_are_refused_before_they_are_read() {
    let (pool, wc) = pool_with_program("wc");
    // A sparse file of 1 TiB: it takes no disk, but reading it whole would take forever
    // (or fail to allocate).
    let host = std::env::temp_dir().join(format!("wasmpool-huge-{}.bin", std::process::id()));
    std::fs::File::create(&host)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let err = pool
        .command(&wc)
        .limits(Limits {
            max_input: 1 << 20,
            ..pool.limits()
        })
        .submit(CommandSpec::new().input_file("huge", &host))
        .wait()
        .unwrap_err();
    std::fs::remove_file(&host).unwrap();
    assert_eq!(err.kind(), "bad_input");
    let message = err.to_string();
    assert!(
        message.contains("1099511627776 bytes") && message.contains("input cap"),
        "{message}"
    );
}

#[test]
fn arguments_and_environment_count_against_the_input_cap() {
    let (pool, exitcode) = pool_with_program("exitcode");
    let call = pool.command(&exitcode).limits(Limits {
        max_input: 1000,
        ..pool.limits()
    });
    let small = call.submit(CommandSpec::new().arg("5"));
    assert_eq!(small.wait().unwrap().exit_code, 5);
    for big in [
        CommandSpec::new().arg("5").arg("x".repeat(1000)),
        CommandSpec::new().env("K", "v".repeat(1000)),
        CommandSpec::new().args(vec![String::new(); 1000]),
    ] {
        let err = call.submit(big).wait().unwrap_err();
        assert_eq!(err.kind(), "bad_input");
        assert!(err.to_string().contains("Limits::max_input"), "{err}");
    }
}

#[test]
fn exit_codes_are_results_unless_checked() {
    let (pool, exitcode) = pool_with_program("exitcode");
    let out = pool
        .run_command(&exitcode, CommandSpec::new().argv0("exitcode").arg("3"))
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout_text(), "exiting with 3\n");
    assert!(!out.success());

    // Statuses shells reserve (126 and above) are exit codes like any other.
    let out = pool
        .run_command(&exitcode, CommandSpec::new().arg("255"))
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 255);
    // So are those beyond a byte: the status is the program's whole `proc_exit` argument.
    for code in [256, 512, -256] {
        let out = pool
            .run_command(&exitcode, CommandSpec::new().arg(code.to_string()))
            .wait()
            .unwrap();
        assert_eq!(out.exit_code, code);
        assert!(!out.success());
    }

    let task = pool.run_command(&exitcode, CommandSpec::new().arg("3").check());
    assert_eq!(task.wait(), Err(TaskError::Exit { code: 3 }));
    // What it printed before failing stays available.
    assert_eq!(task.stats().unwrap().stdout, b"exiting with 3\n");
    assert_eq!(
        pool.run_command(&exitcode, CommandSpec::new().check())
            .wait()
            .unwrap()
            .exit_code,
        0
    );
}

#[test]
fn a_program_sees_only_what_it_is_given() {
    let (pool, probe) = pool_with_program("probe");
    let out = pool
        .run_command(
            &probe,
            CommandSpec::new()
                .env("GREETING", "hi")
                .input("visible.txt", "x")
                .output_dir(),
        )
        .wait()
        .unwrap();
    let text = out.stdout_text();
    assert_eq!(out.exit_code, 0, "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with("env ") && !l.starts_with("dirent "))
    {
        assert!(
            line.contains(": denied ("),
            "the program reached {line:?}:\n{text}"
        );
    }
    let env: Vec<&str> = text.lines().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env, ["env GREETING=hi"]);
    assert!(!text.contains("root:"), "{text}");
}

#[test]
fn runaway_programs_meet_the_same_limits_as_exports() {
    let (pool, spin) = pool_with_program("spin");
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let err = pool
        .command(&spin)
        .timeout(limit)
        .submit(CommandSpec::new())
        .wait()
        .unwrap_err();
    assert_eq!(err, TaskError::Timeout { limit });
    assert!(
        started.elapsed() < 2 * limit,
        "took {:?}",
        started.elapsed()
    );
    let err = pool
        .command(&spin)
        .fuel(10_000_000)
        .submit(CommandSpec::new())
        .wait()
        .unwrap_err();
    assert_eq!(err.kind(), "fuel_exhausted");

    // The pool goes on serving.
    let wc = pool.load_file(c_program("wc")).unwrap();
    let out = pool
        .run_command(&wc, CommandSpec::new().stdin("a b"))
        .wait()
        .unwrap();
    assert_eq!(out.stdout_text(), "0 2 3\n");
}

#[test]
fn output_files_are_capped() {
    let (pool, transform) = pool_with_program("transform");
    let limits = Limits {
        max_output: 1000,
        ..pool.limits()
    };
    let spec = |n: usize| {
        CommandSpec::new()
            .args(["/in/x", "/out/y"])
            .input("x", vec![b'a'; n])
            .output_dir()
    };
    let out = pool
        .command(&transform)
        .limits(limits)
        .submit(spec(1000))
        .wait()
        .unwrap();
    assert_eq!(out.file("y").map(<[u8]>::len), Some(1000));
    // Over the cap: writing past it fails inside the program (EFBIG), as on a full quota,
    // and the file stops at the cap.
    let out = pool
        .command(&transform)
        .limits(limits)
        .submit(spec(5000))
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 2);
    assert!(
        out.stderr_text().contains("File too large"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(out.file("y").map(<[u8]>::len), Some(1000));
}

#[test]
fn many_runs_map_in_order() {
    let (pool, exitcode) = pool_with_program("exitcode");
    let specs = (0..60).map(|i| CommandSpec::new().arg((i % 7).to_string()));
    let results = pool.map_commands(&exitcode, specs);
    for (i, r) in results.iter().enumerate() {
        let out = r.as_ref().unwrap();
        assert_eq!(out.exit_code, (i % 7) as i32);
        assert_eq!(out.stdout_text(), format!("exiting with {}\n", i % 7));
    }
    // A program's run is never a call of a shared instance (`CommandCall` has no
    // `reuse_instance`; through a plain `Call` of `_start` it is refused).
    let batched = pool
        .call(&exitcode, "_start")
        .reuse_instance(4)
        .map::<CommandOutput, _>((0..3).map(|_| CommandSpec::new()));
    for r in batched {
        let err = r.unwrap_err();
        assert_eq!(err.kind(), "bad_input");
        assert!(err.to_string().contains("map_commands"), "{err}");
    }
}

#[test]
fn calls_that_are_not_commands_are_refused() {
    let pool = builder().build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let err = pool
        .run_command(&math, CommandSpec::new())
        .wait()
        .unwrap_err();
    assert_eq!(err.kind(), "bad_input");
    assert!(err.to_string().contains("not a WASI command"), "{err}");
    let err = pool
        .call(&math, "square")
        .submit::<CommandOutput>(CommandSpec::new())
        .wait()
        .unwrap_err();
    assert!(
        err.to_string().contains("not a command entry point"),
        "{err}"
    );
    let err = pool
        .run_command(&math, CommandSpec::new().input("../x", ""))
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("`..`"), "{err}");
}

#[test]
fn task_directories_are_removed_and_the_scratch_goes_with_the_pool() {
    let base = std::env::temp_dir().join(format!("wasmpool-scratch-test-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let pool = builder().scratch_dir(base.clone()).build().unwrap();
    let transform = pool.load_file(c_program("transform")).unwrap();
    let specs = (0..20).map(|i| {
        CommandSpec::new()
            .args(["/in/x", "/out/y"])
            .input("x", format!("{i}"))
            .output_dir()
    });
    assert!(pool
        .map_commands(&transform, specs)
        .iter()
        .all(|r| r.is_ok()));
    let entries = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let roots = entries(&base);
    assert_eq!(roots.len(), 1, "{roots:?}");
    for worker_dir in entries(&roots[0]) {
        assert!(
            entries(&worker_dir).is_empty(),
            "left behind in {worker_dir:?}"
        );
    }
    drop(pool);
    assert!(entries(&base).is_empty());
    std::fs::remove_dir(&base).unwrap();

    // Without a scratch directory, commands still run, but not with files.
    let pool = builder().scratch_dir(None).build().unwrap();
    let transform = pool.load_file(c_program("transform")).unwrap();
    let err = pool
        .run_command(&transform, CommandSpec::new().output_dir())
        .wait()
        .unwrap_err();
    assert_eq!(err.kind(), "bad_input");
    assert!(err.to_string().contains("files"), "{err}");
    let exitcode = pool.load_file(c_program("exitcode")).unwrap();
    assert_eq!(
        pool.run_command(&exitcode, CommandSpec::new().arg("4"))
            .wait()
            .unwrap()
            .exit_code,
        4
    );
}

#[test]
fn streamed_output_arrives_in_order_and_is_not_kept() {
    let (pool, transform) = pool_with_program("transform");
    let (task, output) = pool
        .command(&transform)
        .submit_streaming(CommandSpec::new().args(["/in/missing", "/out/x"]));
    let chunks: Vec<OutputChunk> = output.collect();
    let out = task.wait().unwrap();
    assert_eq!(out.exit_code, 2);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let stderr: Vec<u8> = chunks
        .iter()
        .flat_map(|c| match c {
            OutputChunk::Stderr(b) => b.clone(),
            OutputChunk::Stdout(_) => panic!("nothing was written to stdout"),
        })
        .collect();
    assert_eq!(
        String::from_utf8(stderr).unwrap(),
        "transform: /in/missing: Capabilities insufficient\n"
    );

    // (There is no /in: the spec has no input files.)
    // The stream stops at the cap, like captured output.
    let exitcode = pool.load_file(c_program("exitcode")).unwrap();
    let limits = Limits {
        stdout_cap: 4,
        ..pool.limits()
    };
    let (task, output) = pool
        .command(&exitcode)
        .limits(limits)
        .submit_streaming(CommandSpec::new().arg("1"));
    let streamed: Vec<OutputChunk> = output.collect();
    assert_eq!(streamed, [OutputChunk::Stdout(b"exit".to_vec())]);
    let out = task.wait().unwrap();
    assert!(out.output_truncated);
    assert_eq!(out.exit_code, 1);
}

/// A one-worker pool whose scratch directories live in a fresh directory of the test's
/// (returned, to look into), and the `tree` program loaded into it.
fn tree_pool_in(name: &str) -> (Pool, Module, std::path::PathBuf) {
    let base = std::env::temp_dir().join(format!("wasmpool-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let pool = builder()
        .workers(1)
        .scratch_dir(base.clone())
        .build()
        .unwrap();
    let tree = pool.load_file(c_program("tree")).unwrap();
    (pool, tree, base)
}

#[test]
fn deep_and_crowded_out_trees_are_bounded_and_never_left_behind() {
    let (pool, tree, base) = tree_pool_in("tree-test");
    let run = |args: &[&str]| {
        let task = pool.run_command(
            &tree,
            CommandSpec::new().args(args.iter().copied()).output_dir(),
        );
        let result = task.wait();
        (result, task.stats().map(|s| s.worker))
    };
    // What is left in the worker's scratch directory after a run: nothing.
    let left_behind = || -> Vec<std::path::PathBuf> {
        let roots: Vec<_> = std::fs::read_dir(&base).unwrap().flatten().collect();
        assert_eq!(roots.len(), 1);
        std::fs::read_dir(roots[0].path())
            .unwrap()
            .flatten()
            .flat_map(|w| std::fs::read_dir(w.path()).unwrap().flatten())
            .map(|e| e.path())
            .collect()
    };

    // Deeper than the worker's 256 descriptors: collected and removed all the same.
    let (out, worker) = run(&["deep", "300"]);
    let out = out.unwrap();
    assert_eq!(out.exit_code, 0, "{}", out.stderr_text());
    let deepest = format!("{}f", "d/".repeat(300));
    assert_eq!(out.file(&deepest), Some(&b"bottom"[..]));
    assert_eq!(out.files.len(), 1);
    assert_eq!(left_behind(), Vec::<std::path::PathBuf>::new());

    // Deeper than a path can name: a clear error, and still removed.
    let (err, _) = run(&["deep", "30", "200"]);
    let err = err.unwrap_err();
    assert_eq!(err.kind(), "bad_output");
    assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
    assert_eq!(left_behind(), Vec::<std::path::PathBuf>::new());

    assert_eq!(left_behind(), Vec::<std::path::PathBuf>::new());
    let (out, again) = run(&["wide", "100"]);
    assert_eq!(out.unwrap().files.len(), 100);
    assert_eq!(again, worker, "the same worker serves on");
    drop(pool);
    std::fs::remove_dir_all(&base).unwrap();
}

/// The scratch directories of the workers of the one pool whose scratch is under `base`.
fn worker_dirs(base: &std::path::Path) -> Vec<std::path::PathBuf> {
    let root = std::fs::read_dir(base)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn a_worker_whose_task_files_were_not_all_removed_is_replaced() {
    let (pool, tree, base) = tree_pool_in("retire-test");
    let run = || {
        let task = pool.run_command(&tree, CommandSpec::new().args(["wide", "3"]).output_dir());
        assert_eq!(task.wait().unwrap().files.len(), 3);
        task.stats().unwrap().worker
    };
    let first = run();
    let dirs = worker_dirs(&base);
    assert_eq!(dirs.len(), 1);
    // Something the worker could not remove (here: put there from outside) is still in
    // its scratch directory after a task: the task's result stands, the worker is replaced,
    // and its directory goes with it.
    std::fs::write(dirs[0].join("stray"), "x").unwrap();
    assert_eq!(run(), first, "the task ran on the same worker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.worker_pids().contains(&first) || dirs[0].exists() {
        assert!(Instant::now() < deadline, "the worker was not replaced");
        std::thread::yield_now();
    }
    assert_ne!(run(), first);
    drop(pool);
    std::fs::remove_dir_all(&base).unwrap();
}

/// What the dispatchers of this test binary's pools trace (`wasmpool::dispatch`, at
/// `trace`), from the first call on: a subscriber for the whole process, set once.
fn dispatch_trace() -> String {
    use std::sync::{Arc, Mutex, OnceLock};
    #[derive(Clone)]
    struct Log(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOG: OnceLock<Log> = OnceLock::new();
    let log = LOG.get_or_init(|| {
        let log = Log(Arc::default());
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("wasmpool::dispatch=trace")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    });
    String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned()
}

#[test]
fn a_worker_whose_files_were_left_by_a_coalesced_run_is_replaced() {
    dispatch_trace();
    let (pool, tree, base) = tree_pool_in("retire-calls-test");
    let spec = || CommandSpec::new().args(["wide", "3"]).output_dir();
    // Whether the runs travel together depends on how short the dispatcher found them: on
    // a loaded machine they may not, and the worker is then replaced after a single run,
    // which is not what this test is about; it tries again with the new worker.
    for _attempt in 0..10 {
        // Runs one at a time until the dispatcher knows they are short (its average of
        // their times forgets the first, slow one, a fifth at a time).
        let mut worker = 0;
        for _ in 0..25 {
            let task = pool.run_command(&tree, spec());
            assert_eq!(task.wait().unwrap().files.len(), 3);
            worker = task.stats().unwrap().worker;
        }
        let dirs = worker_dirs(&base);
        assert_eq!(dirs.len(), 1);
        // Something left in the scratch directory (put there from outside), found after a
        // run of a `Calls` frame: the runs' results stand, the worker is replaced.
        std::fs::write(dirs[0].join("stray"), "x").unwrap();
        let outs = pool.map_commands(&tree, (0..3).map(|_| spec()));
        for out in outs {
            assert_eq!(out.unwrap().files.len(), 3);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.worker_pids().contains(&worker) || dirs[0].exists() {
            assert!(Instant::now() < deadline, "the worker was not replaced");
            std::thread::yield_now();
        }
        let trace = dispatch_trace();
        let pid = format!("pid={worker} ");
        let singles = trace
            .lines()
            .filter(|l| l.contains("task finished") && l.contains(&pid))
            .count();
        if singles == 25 {
            // Every run after the warm-up travelled in a `Calls` frame.
            assert!(trace
                .lines()
                .any(|l| l.contains("calls finished") && l.contains(&pid)));
            drop(pool);
            std::fs::remove_dir_all(&base).unwrap();
            return;
        }
    }
    panic!("the runs never travelled together:\n{}", dispatch_trace());
}

#[test]
fn a_task_spec_from_json_runs_with_its_files_and_limits() {
    let (pool, transform) = pool_with_program("transform");
    let spec = TaskSpec::from_json(
        r#"{"args": ["/in/t.txt", "/out/u.txt"], "output_dir": true,
            "inputs": {"t.txt": {"base64": "aGksIHNwZWMK"}}, "timeout_ms": 5000, "max_retries": 1}"#,
    )
    .unwrap();
    let out = pool.run_spec(&transform, &spec).wait().unwrap();
    assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr_text());
    assert_eq!(out.file("u.txt"), Some(&b"HI, SPEC\n"[..]));

    // Its limits are the run's: fuel from the spec stops a spinning program.
    let spin = pool.load_file(c_program("spin")).unwrap();
    let spec = TaskSpec::from_json(r#"{"fuel": 10000000}"#).unwrap();
    let err = pool.run_spec(&spin, &spec).wait().unwrap_err();
    assert_eq!(err.kind(), "fuel_exhausted");
    // And a plain call takes a spec's limits too.
    let math = pool.load_file(guest("math")).unwrap();
    let err = pool
        .call(&math, "spin")
        .spec(&TaskSpec::new().fuel(1_000_000))
        .submit::<i64>(())
        .wait()
        .unwrap_err();
    assert_eq!(err.kind(), "fuel_exhausted");
}
