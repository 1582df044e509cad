//! Hostile guests are contained: every misbehaviour ends in its typed error within 2× its
//! limit, and the pool goes on serving well-behaved tasks.

mod common;

use std::time::{Duration, Instant};

use common::{builder, guest};
use wasmpool::{Module, Pool, TaskError, TrapCode};

fn hostile_pool() -> (Pool, Module, Module) {
    let pool = builder().build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    (pool, hostile, math)
}

/// Runs `f`, returns its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// A well-behaved task right after must succeed.
fn still_serves(pool: &Pool, math: &Module) {
    assert_eq!(pool.submit::<i64>(math, "square", 12i64).wait(), Ok(144));
}

#[test]
fn an_infinite_loop_times_out_within_twice_its_limit() {
    let (pool, hostile, math) = hostile_pool();
    let limit = Duration::from_millis(500);
    let (r, took) = timed(|| {
        pool.call(&hostile, "spin")
            .timeout(limit)
            .submit::<i64>(())
            .wait()
    });
    assert_eq!(r, Err(TaskError::Timeout { limit }));
    assert!(took < limit * 2, "contained after {took:?}");
    still_serves(&pool, &math);
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let (pool, hostile, math) = hostile_pool();
    let r = pool
        .call(&hostile, "spin")
        .fuel(10_000_000)
        .submit::<i64>(())
        .wait();
    assert_eq!(r, Err(TaskError::FuelExhausted { fuel: 10_000_000 }));
    // Fuel is deterministic: a bounded burn under the budget succeeds and reports its use.
    let task = pool
        .call(&hostile, "burn")
        .fuel(10_000_000)
        .submit::<i64>(1000i64);
    assert_eq!(task.wait(), Ok(1000));
    let used = task.stats().unwrap().fuel_used;
    assert!(used > 1000 && used < 10_000_000, "fuel used: {used}");
    still_serves(&pool, &math);
}

#[test]
fn sleeping_in_a_host_call_times_out_and_the_worker_is_replaced() {
    let (pool, hostile, math) = hostile_pool();
    let limit = Duration::from_millis(500);
    let (r, took) = timed(|| {
        pool.call(&hostile, "sleep_ms")
            .timeout(limit)
            .submit::<i64>(60_000i64)
            .wait()
    });
    assert_eq!(r, Err(TaskError::Timeout { limit }));
    assert!(took < limit * 2, "contained after {took:?}");
    still_serves(&pool, &math);
    // A short sleep under its limit is fine.
    assert_eq!(
        pool.call(&hostile, "sleep_ms")
            .timeout(limit)
            .submit::<i64>(5i64)
            .wait(),
        Ok(5)
    );
}

#[test]
fn memory_growth_past_the_limit_is_a_memory_limit_error() {
    let (pool, hostile, math) = hostile_pool();
    let limit = 32 << 20;
    let r = pool
        .call(&hostile, "grow_forever")
        .memory(limit)
        .submit::<i64>(())
        .wait();
    assert_eq!(
        r,
        Err(TaskError::MemoryLimit {
            limit,
            initial: None
        })
    );
    // The limit is applied to every store: allocating past it fails, under it succeeds.
    let r = pool
        .call(&hostile, "alloc_mb")
        .memory(64 << 20)
        .submit::<i64>(100i64)
        .wait();
    assert_eq!(
        r,
        Err(TaskError::MemoryLimit {
            limit: 64 << 20,
            initial: None
        })
    );
    // A module whose initial memory alone is over the limit is told so.
    let big = pool
        .load(r#"(module (memory 32) (func (export "f")))"#)
        .unwrap();
    match pool.call(&big, "f").memory(1 << 20).submit::<()>(()).wait() {
        Err(e @ TaskError::MemoryLimit { .. }) => {
            assert_eq!(
                e,
                TaskError::MemoryLimit {
                    limit: 1 << 20,
                    initial: Some(2 << 20)
                }
            );
            assert!(e.to_string().contains("initial memory of 2.0 MiB"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(pool
        .call(&hostile, "alloc_mb")
        .memory(64 << 20)
        .submit::<i64>(16i64)
        .wait()
        .is_ok());
    still_serves(&pool, &math);
}

#[test]
fn traps_are_typed_with_the_guests_message() {
    let (pool, hostile, math) = hostile_pool();
    let trap = |export: &str, arg: Option<i64>| {
        let call = pool.call(&hostile, export);
        let r = match arg {
            Some(a) => call.submit::<i64>(a).wait(),
            None => call.submit::<i64>(()).wait(),
        };
        match r {
            Err(TaskError::Trap { message, code }) => (message, code),
            other => panic!("{export}: expected a trap, got {other:?}"),
        }
    };
    let (message, code) = trap("unreachable", None);
    assert!(message.contains("unreachable"));
    assert_eq!(code, Some(TrapCode::UnreachableCodeReached));
    let (message, code) = trap("stack_overflow", Some(1));
    assert!(message.contains("call stack exhausted"));
    assert_eq!(code, Some(TrapCode::StackOverflow));
    let (message, code) = trap("panic", None);
    assert!(
        message.contains("guest panicked on purpose"),
        "the panic message comes from stderr"
    );
    assert_eq!(code, Some(TrapCode::UnreachableCodeReached));
    // Rust checks the divisor itself and panics: an `unreachable` trap, explained by stderr.
    match pool.submit::<i32>(&math, "div", (1, 0)).wait() {
        Err(TaskError::Trap { message, code }) => {
            assert!(message.contains("divide by zero"), "{message}");
            assert_eq!(code, Some(TrapCode::UnreachableCodeReached));
        }
        other => panic!("{other:?}"),
    }
    // The instruction itself traps with its own code.
    let div = pool
        .load(
            r#"(module (func (export "div") (param i32 i32) (result i32)
            local.get 0 local.get 1 i32.div_s))"#,
        )
        .unwrap();
    match pool.submit::<i32>(&div, "div", (1, 0)).wait() {
        Err(TaskError::Trap { code, .. }) => {
            assert_eq!(code, Some(TrapCode::IntegerDivisionByZero))
        }
        other => panic!("{other:?}"),
    }
    still_serves(&pool, &math);
}

#[test]
fn proc_exit_is_an_exit_error() {
    let (pool, hostile, math) = hostile_pool();
    assert_eq!(
        pool.submit::<i32>(&hostile, "exit", 3).wait(),
        Err(TaskError::Exit { code: 3 })
    );
    assert_eq!(
        pool.submit::<i32>(&hostile, "exit", 0).wait(),
        Err(TaskError::Exit { code: 0 })
    );
    still_serves(&pool, &math);
}

#[test]
fn every_task_gets_a_fresh_instance() {
    let (pool, hostile, _) = hostile_pool();
    let counts = pool.map::<i64, ()>(&hostile, "counter", vec![(); 50]);
    assert!(counts.iter().all(|c| *c == Ok(1)), "{counts:?}");
}

#[test]
fn files_environment_and_arguments_are_invisible() {
    // The host process has environment variables; the guest must not see any.
    assert!(std::env::vars_os().count() > 0);
    let (pool, hostile, _) = hostile_pool();
    for export in ["read_file", "write_file", "env_count", "args_count"] {
        assert_eq!(
            pool.submit::<i64>(&hostile, export, ()).wait(),
            Ok(0),
            "{export}"
        );
    }
    assert!(!std::path::Path::new("/tmp/wasmpool-escape.txt").exists());
}

#[test]
fn stdout_and_stderr_are_captured_and_capped() {
    let (pool, hostile, _) = hostile_pool();
    let task = pool.submit::<i64>(&hostile, "hello", ());
    assert_eq!(task.wait(), Ok(42));
    let stats = task.stats().unwrap();
    assert_eq!(stats.stdout, b"hello from guest\n");
    assert_eq!(stats.stderr, b"warning from guest\n");
    assert!(!stats.output_truncated);

    let flood = pool.submit::<i64>(&hostile, "flood", 10_000_000i64);
    assert_eq!(
        flood.wait(),
        Ok(10_000_000),
        "the guest's writes all 'succeed'"
    );
    let stats = flood.stats().unwrap();
    assert_eq!(stats.stdout.len(), pool.limits().stdout_cap as usize);
    assert!(stats.output_truncated);
}

#[test]
fn a_start_function_that_loops_forever_times_out() {
    let (pool, _, math) = hostile_pool();
    let looping_start = pool
        .load(r#"(module (func $s (loop $l br $l)) (start $s) (func (export "f") (result i32) i32.const 1))"#)
        .unwrap();
    let limit = Duration::from_millis(200);
    let (r, took) = timed(|| {
        pool.call(&looping_start, "f")
            .timeout(limit)
            .submit::<i32>(())
            .wait()
    });
    assert_eq!(r, Err(TaskError::Timeout { limit }));
    assert!(took < limit * 2, "contained after {took:?}");
    still_serves(&pool, &math);
}

#[test]
fn hostile_tasks_do_not_disturb_the_others() {
    let (pool, hostile, math) = hostile_pool();
    let limit = Duration::from_millis(500);
    let bad = [
        pool.call(&hostile, "spin").timeout(limit).submit::<i64>(()),
        pool.call(&hostile, "sleep_ms")
            .timeout(limit)
            .submit::<i64>(60_000i64),
        pool.call(&hostile, "grow_forever")
            .memory(16 << 20)
            .submit::<i64>(()),
    ];
    let good = pool.map::<i64, _>(&math, "square", 0..500i64);
    for (i, r) in good.into_iter().enumerate() {
        assert_eq!(r, Ok((i * i) as i64));
    }
    assert!(matches!(bad[0].wait(), Err(TaskError::Timeout { .. })));
    assert!(matches!(bad[1].wait(), Err(TaskError::Timeout { .. })));
    assert!(matches!(bad[2].wait(), Err(TaskError::MemoryLimit { .. })));
}

#[test]
fn a_task_blocked_in_a_host_call_is_the_only_one_its_worker_takes_down() {
    // One worker, many short tasks queued on it around one that sleeps in a host call (the
    // epoch cannot stop it: the host kills the worker). The tasks that finished just before
    // it keep their results, the ones after it run on the new worker.
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    pool.map::<i64, ()>(&hostile, "counter", vec![(); 300]);
    let limit = Duration::from_millis(300);
    let before: Vec<_> = (0..100)
        .map(|_| pool.submit::<i64>(&hostile, "counter", ()))
        .collect();
    let sleeper = pool
        .call(&hostile, "sleep_ms")
        .timeout(limit)
        .submit::<i64>(60_000i64);
    let after: Vec<_> = (0..100)
        .map(|_| pool.submit::<i64>(&hostile, "counter", ()))
        .collect();
    assert_eq!(sleeper.wait(), Err(TaskError::Timeout { limit }));
    for (i, t) in before.iter().chain(&after).enumerate() {
        assert_eq!(t.wait(), Ok(1), "task {i}");
    }
}

#[test]
fn a_worker_killed_mid_task_loses_only_that_task() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let probe = pool.submit::<i64>(&hostile, "counter", ());
    probe.wait().unwrap();
    let pid = probe.stats().unwrap().worker;

    let victim = pool.call(&hostile, "spin").timeout(None).submit::<i64>(());
    let behind = pool
        .call(&hostile, "counter")
        .submit_many::<i64, ()>(vec![(); 5]);
    while !victim.is_running() {
        assert_eq!(victim.wait_timeout(Duration::from_millis(5)), None);
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    match victim.wait() {
        Err(TaskError::WorkerLost { message, .. }) => {
            assert!(message.contains("signal 9"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    for t in behind {
        assert_eq!(
            t.wait(),
            Ok(1),
            "queued tasks run on the replacement worker"
        );
    }
}

#[test]
fn workers_run_under_seccomp_and_no_new_privs() {
    let pool = builder().build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    // Both workers have served a task, so both are past their start.
    pool.map::<i64, ()>(&hostile, "counter", vec![(); 20]);
    let host_fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    for pid in pool.worker_pids() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status.contains("Seccomp:\t2"),
            "worker {pid} has no seccomp filter:\n{status}"
        );
        assert!(
            status.contains("NoNewPrivs:\t1"),
            "worker {pid} may gain privileges"
        );
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(env.is_empty(), "worker {pid} inherited an environment");
        // Beyond stdin/stdout (the protocol pipes), stderr (shared with the host, whatever
        // it is), fd 3 (the cancel pipe, whose other end this process holds) and fd 4 (the
        // socket on which it receives compiled modules' files, receive only), only what
        // the worker opened itself: /proc/self/statm and /proc/self/pagemap (wasmtime's
        // slot resets) and the WASI runtime's event fds and memfds; nothing else the test
        // process (its host) had open.
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let entry = entry.unwrap();
            let fd: u32 = entry.file_name().to_str().unwrap().parse().unwrap();
            if fd <= 2 {
                continue;
            }
            let target = std::fs::read_link(entry.path()).unwrap();
            let target = target.to_string_lossy();
            let own = target.starts_with("anon_inode:")
                || target.starts_with("/memfd:")
                || target == format!("/proc/{pid}/statm")
                || target == format!("/proc/{pid}/pagemap")
                || (fd == 3
                    && target.starts_with("pipe:")
                    && host_fds.iter().any(|h| *h == target))
                || (fd == 4 && target.starts_with("socket:"));
            assert!(own, "worker {pid} holds fd {fd} -> {target}");
        }
        // Where the kernel has PAGEMAP_SCAN, the worker must have opened its pagemap despite
        // every wall (as nobody, not dumpable, it no longer could: its slot resets then
        // cleared memory instead, 3.5× the cost of a small task).
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            let pagemap = format!("/proc/{pid}/pagemap");
            let holds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|t| t.to_string_lossy() == pagemap);
            assert!(holds, "worker {pid} has no {pagemap} open");
        }
    }
}

#[test]
fn a_forbidden_syscall_kills_the_worker_process_not_the_host() {
    use std::os::unix::process::ExitStatusExt;
    // The probe installs the worker's filter, then calls socket().
    let out = common::cli().arg("__seccomp-probe").output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
}

#[test]
fn workers_die_with_a_host_that_is_sigkilled() {
    use std::io::Write;
    // A host process (the CLI) running a task that never ends.
    let mut host = common::cli()
        .args([
            "run",
            guest("hostile").to_str().unwrap(),
            "spin",
            "--timeout",
            "none",
            "--workers",
            "2",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    host.stdin.take().unwrap().write_all(b"null\n").unwrap();
    let children = |pid: u32| -> Vec<u32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        out
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers = loop {
        let found = children(host.id());
        if found.len() >= 2 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the host never started its workers"
        );
        std::thread::yield_now();
    };
    host.kill().unwrap();
    host.wait().unwrap();
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    while workers.iter().any(alive) {
        assert!(
            Instant::now() < deadline,
            "workers {workers:?} outlived their host"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_frozen_worker_is_killed_by_the_host_watchdog() {
    let pool = builder().workers(1).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    still_serves(&pool, &math);
    let pid = pool.worker_pids()[0];
    let limit = Duration::from_millis(500);
    let task = pool
        .call(&math, "counting")
        .timeout(limit)
        .submit::<i64>(i64::MAX);
    while !task.is_running() {
        assert_eq!(task.wait_timeout(Duration::from_millis(5)), None);
    }
    // SIGSTOP freezes the whole worker, its own deadline timer included.
    let t = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::STOP,
    )
    .unwrap();
    assert_eq!(task.wait(), Err(TaskError::Timeout { limit }));
    assert!(t.elapsed() < limit * 2, "contained after {:?}", t.elapsed());
    assert!(
        !pool.worker_pids().contains(&pid),
        "the frozen worker was replaced"
    );
    still_serves(&pool, &math);
}

/// Writes a fake worker program into a fresh directory: `__compile` goes to the real
/// program; as a worker it says `Ready`, waits for the first request byte, answers with a
/// frame that does not decode, and then lives on (30 s) without a word.
fn garbage_worker() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "wasmpool-test-garbage-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = dir.join("ready");
    let mut frame = Vec::new();
    wasmpool::protocol::encode(&wasmpool::protocol::Reply::Ready { pid: 0 }, &mut frame).unwrap();
    std::fs::write(&ready, frame).unwrap();
    let script = dir.join("worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$1\" in __compile|__handshake) exec '{}' \"$@\";; esac\n\
             /bin/cat '{}'\n\
             /bin/dd bs=1 count=1 of=/dev/null 2>/dev/null\n\
             printf '\\004\\000\\000\\000\\377\\377\\377\\377'\n\
             exec /bin/sleep 30\n",
            common::WORKER,
            ready.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    script
}

#[test]
fn a_worker_that_sends_a_bad_frame_is_killed_and_its_task_is_lost_alone() {
    let pool = builder()
        .workers(1)
        .worker_program(garbage_worker())
        .build()
        .unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let pids = pool.worker_pids();
    let (result, took) = timed(|| {
        pool.submit::<i64>(&math, "square", 3i64)
            .wait_timeout(Duration::from_secs(10))
    });
    match result {
        Some(Err(TaskError::WorkerLost { message, .. })) => {
            assert!(message.contains("malformed"), "{message}")
        }
        other => panic!("after {took:?}: {other:?}"),
    }
    // The worker was killed (not waited for while it lives on) and replaced.
    let pid = pids[0];
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "worker {pid} still runs"
    );
    let (replacement, _) = timed(|| pool.worker_pids());
    assert_eq!(replacement.len(), 1);
    assert_ne!(replacement, pids);
    // Shutdown returns although the replacement never exits by itself.
    let ((), took) = timed(|| pool.shutdown());
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

/// The state letter of process `pid` (`R`, `S`, `T`, …) from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn a_worker_stopped_and_continued_mid_task_finishes_it() {
    let pool = builder().workers(1).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let probe = pool.submit::<i64>(&hostile, "counter", ());
    probe.wait().unwrap();
    let pid = probe.stats().unwrap().worker;
    let signal = |sig| {
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
            .unwrap()
    };
    // A generous limit: only the stop and continue are under test, not the deadline.
    let task = pool
        .call(&hostile, "sleep_ms")
        .timeout(Duration::from_secs(60))
        .submit::<i64>(1500i64);
    while !task.is_running() {
        assert_eq!(task.wait_timeout(Duration::from_millis(5)), None);
    }
    // Asleep in its host call: every thread of the worker is blocked in a system call that
    // a stop interrupts (timed futex waits and sleeps resume through restart_syscall).
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(pid) != Some('S') {
        assert!(Instant::now() < deadline, "the worker never went to sleep");
        std::thread::yield_now();
    }
    signal(rustix::process::Signal::STOP);
    while process_state(pid) != Some('T') {
        assert!(Instant::now() < deadline, "the worker never stopped");
        std::thread::yield_now();
    }
    // Stopped for a moment, well inside the task's sleep; then continued.
    assert_eq!(task.wait_timeout(Duration::from_millis(100)), None);
    signal(rustix::process::Signal::CONT);
    assert_eq!(task.wait(), Ok(1500));
    assert_eq!(
        task.stats().unwrap().worker,
        pid,
        "the same worker finished it"
    );
    assert_eq!(pool.worker_pids(), [pid]);
    still_serves(&pool, &math_of(&pool));
}

fn math_of(pool: &Pool) -> Module {
    pool.load_file(guest("math")).unwrap()
}

#[test]
fn an_escaped_worker_cannot_change_host_files_or_read_other_processes_limits() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = std::env::temp_dir().join(format!("wasmpool-wallprobe-{}", std::process::id()));
    let scratch = base.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let target = base.join("target");
    std::fs::write(&target, "host secret").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    // A process with exactly a worker's walls makes the calls itself. It stays the host's
    // user (`-`, as with `worker_user(None)`): owning the file, only the walls can stop it.
    let out = common::cli()
        .args(["__wallprobe", "-"])
        .arg(&scratch)
        .arg(&target)
        .output()
        .unwrap();
    let after = std::fs::metadata(&target).unwrap();
    std::fs::remove_dir_all(&base).unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errno = |call: &str| report[call]["errno"].as_i64().unwrap_or(-1);
    for call in [
        "fchmodat",
        "fchmodat2",
        "chmod",
        "utimensat",
        "utimes",
        "utime",
        "futimesat",
        "chown",
        "lchown",
        "fchownat",
        "fchmod",
        "fchown",
        "prlimit64_pid1",
    ] {
        assert_eq!(errno(call), libc::EPERM as i64, "{call}: {report}");
    }
    // The walls let it work in its scratch directory and read its own limits, and
    // Landlock keeps it from opening the file.
    assert!(
        report["openat_own"]["ret"].as_i64().unwrap() >= 0,
        "{report}"
    );
    assert_eq!(report["prlimit64_self"]["ret"], 0, "{report}");
    assert_eq!(errno("openat_target"), libc::EACCES as i64, "{report}");
    assert_eq!(after.mode(), before.mode(), "mode changed: {report}");
    assert_eq!(after.mtime(), before.mtime(), "times changed: {report}");
    assert_eq!(
        after.mtime_nsec(),
        before.mtime_nsec(),
        "times changed: {report}"
    );
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
}

/// The value of a `Name:\t…` line of `/proc/<pid>/status`.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        .trim()
        .to_string()
}

#[test]
fn workers_hold_no_capabilities_and_leave_root_behind() {
    use std::os::unix::fs::MetadataExt;
    let pool = builder().build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    pool.map::<i64, ()>(&hostile, "counter", vec![(); 20]);
    let root = rustix::process::geteuid().is_root();
    for pid in pool.worker_pids() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(
                status_field(&status, set),
                "0000000000000000",
                "{set} of {pid}"
            );
        }
        if root {
            // Started by root, the worker could empty its bounding set, and became nobody
            // (all its ids), with no supplementary groups.
            assert_eq!(status_field(&status, "CapBnd"), "0000000000000000");
            for ids in ["Uid", "Gid"] {
                let all: Vec<String> = status_field(&status, ids)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                assert_eq!(all, ["65534"; 4], "{ids} of {pid}");
            }
            assert_eq!(status_field(&status, "Groups"), "");
            // Not dumpable: its /proc files stay root's, so nobody's other processes cannot
            // read its memory.
            let mem = std::fs::metadata(format!("/proc/{pid}/mem")).unwrap();
            assert_eq!(mem.uid(), 0, "worker {pid} is dumpable");
        }
    }
}

#[test]
fn an_escaped_worker_reads_a_read_only_mount_and_nothing_more() {
    let base = tempfile::tempdir().unwrap();
    let (scratch, mount) = (base.path().join("scratch"), base.path().join("mount"));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("file"), "shared data").unwrap();
    let target = base.path().join("target");
    std::fs::write(&target, "host secret").unwrap();
    // The host's own user (`-`): file permissions would let it do everything below, so
    // whatever is refused is refused by the walls (Landlock), not by the file system.
    let out = std::process::Command::new(common::WORKER)
        .args(["__wallprobe", "-"])
        .arg(&scratch)
        .arg(&target)
        .arg(&mount)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errno = |call: &str| report[call]["errno"].as_i64().unwrap_or(-1);
    assert!(
        report["openat_mount_read"]["ret"].as_i64().unwrap() >= 0,
        "the mount is readable: {report}"
    );
    assert_eq!(
        errno("openat_mount_create"),
        libc::EACCES as i64,
        "{report}"
    );
    assert_eq!(errno("openat_target"), libc::EACCES as i64, "{report}");
    // Hard links out of the mount into the worker's own directory, and from outside into
    // the mount: Landlock refuses both (no Refer right across its rules; no right to make
    // files in the mount).
    for call in ["linkat_mount_to_scratch", "linkat_target_to_mount"] {
        assert!(
            [libc::EXDEV, libc::EACCES].contains(&(errno(call) as i32)),
            "{call}: {report}"
        );
    }
    assert!(!mount.join("new").exists() && !mount.join("target-link").exists());
    assert!(!scratch.join("linked").exists());
}
