//! Initializer snapshots (#13): `Pool::load_initialized` and `--init` run an initializer
//! once per key in a worker, snapshot the state it leaves into a new module (compiled and
//! cached like any other), and start every task from a fresh instance of it. Hostile
//! initializers fail the load with a typed error and leave the pool serving.

mod common;

use std::time::Duration;

use common::{builder, guest_wat};
use wasmpool::{Init, LoadError, Module, Origin, Pool, TaskError};

fn table() -> Vec<u8> {
    std::fs::read(guest_wat("init_table.wat")).unwrap()
}

/// Tasks the pool ran well or runs (a finished one is counted as done a moment after its
/// waiter has its result; until then it is still running).
fn ran(pool: &Pool) -> u64 {
    let stats = pool.stats();
    stats.done + stats.running
}

fn call(pool: &Pool, m: &Module, export: &str) -> i32 {
    pool.submit(m, export, ()).wait().unwrap()
}

#[test]
fn the_initializer_runs_once_and_every_task_starts_from_a_fresh_copy_of_its_state() {
    let pool = builder().build().unwrap();
    let plain = pool.load(table()).unwrap();
    assert_eq!(pool.submit::<i32>(&plain, "lookup", 30).wait(), Ok(0));

    let m = pool.load_initialized(table(), &Init::new("init")).unwrap();
    assert!(!m.same_artifact(&plain));
    // The table the initializer built is there for every task.
    let squares: Vec<i32> = pool
        .map(&m, "lookup", 0..1000)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..1000).map(|i| i * i).collect::<Vec<i32>>());
    // It ran once, after `_initialize` (once too), which is no longer exported.
    for _ in 0..20 {
        assert_eq!(call(&pool, &m, "inits"), 1);
        assert_eq!(call(&pool, &m, "reactor_inits"), 1);
    }
    assert!(m.export("_initialize").is_none());
    assert!(m.export("lookup").is_some());
    // The initializer stays: a task calling it runs it again in its own instance only.
    assert_eq!(pool.submit::<()>(&m, "init", ()).wait(), Ok(()));
    assert_eq!(call(&pool, &m, "inits"), 1);
    // A task that changes the state changes its own instance only, on either worker.
    let bumps: Vec<Result<i32, TaskError>> = (0..40)
        .map(|_| pool.submit(&m, "bump", ()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.wait())
        .collect();
    assert!(bumps.iter().all(|b| *b == Ok(102)), "{bumps:?}");
    assert_eq!(pool.submit::<i32>(&m, "lookup", 0).wait(), Ok(0));
    // The other metering variant (a call with fuel) starts from the same state.
    let fueled: i32 = pool
        .call(&m, "lookup")
        .fuel(1_000_000)
        .submit(9)
        .wait()
        .unwrap();
    assert_eq!(fueled, 81);
}

#[test]
fn a_snapshot_is_taken_once_per_key_and_then_read_from_the_cache() {
    let init = Init::new("init").args(["x"]);
    let first = builder().build().unwrap();
    let m = first.load_initialized(table(), &init).unwrap();
    assert_eq!(ran(&first), 1, "the initializer is one task");
    let again = first.load_initialized(table(), &init).unwrap();
    assert!(again.same_artifact(&m), "the pool keeps it");
    assert_eq!(ran(&first), 1);
    first.shutdown();

    // Another pool over the same cache: no initializer runs, the snapshot's code is read.
    let second = builder().build().unwrap();
    let m2 = second.load_initialized(table(), &init).unwrap();
    assert_eq!(m2.id(), m.id());
    assert!(
        matches!(m2.origin(), Origin::DiskCache(_)),
        "{:?}",
        m2.origin()
    );
    assert_eq!(call(&second, &m2, "argc"), 2);
    assert_eq!(ran(&second), 1, "only the call above ran");
}

#[test]
fn pools_sharing_a_cache_run_an_initializer_once_between_them() {
    // A module of its own (a comment makes other bytes), so no other test took its snapshot.
    let mut bytes = table();
    bytes.extend_from_slice(format!(";; {}\n", std::process::id()).as_bytes());
    let pools: Vec<Pool> = (0..2).map(|_| builder().build().unwrap()).collect();
    let start = std::sync::Barrier::new(2);
    let modules: Vec<Module> = std::thread::scope(|s| {
        let loads: Vec<_> = pools
            .iter()
            .map(|pool| {
                let (bytes, start) = (&bytes, &start);
                s.spawn(move || {
                    start.wait();
                    pool.load_initialized(bytes, &Init::new("init")).unwrap()
                })
            })
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    assert_eq!(modules[0].id(), modules[1].id());
    let total: u64 = pools.iter().map(ran).sum();
    assert_eq!(total, 1, "the initializer ran in one pool only");
}

#[test]
fn other_arguments_or_metering_make_another_snapshot() {
    let pool = builder().build().unwrap();
    let none = pool.load_initialized(table(), &Init::new("init")).unwrap();
    let two = pool
        .load_initialized(table(), &Init::new("init").args(["a", "b"]))
        .unwrap();
    assert_ne!(none.id(), two.id());
    assert_eq!(call(&pool, &none, "argc"), 1);
    assert_eq!(call(&pool, &two, "argc"), 3);
    // A pool whose limits meter fuel runs its initializer under fuel: its own key.
    let fuel = builder().fuel(10_000_000).build().unwrap();
    let metered = fuel.load_initialized(table(), &Init::new("init")).unwrap();
    assert_eq!(ran(&fuel), 1, "the initializer ran again");
    assert_eq!(call(&fuel, &metered, "inits"), 1);
}

/// The initializer's error, from a load that must fail.
fn init_error(pool: &Pool, export: &str) -> TaskError {
    match pool.load_initialized(table(), &Init::new(export)) {
        Err(LoadError::Initializer { export: e, error }) => {
            assert_eq!(e, export);
            *error
        }
        other => panic!("{export}: {other:?}"),
    }
}

#[test]
fn hostile_initializers_fail_the_load_with_a_typed_error_and_hurt_nothing() {
    let pool = builder()
        .timeout(Duration::from_millis(500))
        .memory(8 << 20)
        .build()
        .unwrap();
    assert!(matches!(
        init_error(&pool, "spin"),
        TaskError::Timeout { .. }
    ));
    assert!(matches!(
        init_error(&pool, "flood"),
        TaskError::Timeout { .. }
    ));
    assert!(matches!(init_error(&pool, "trap"), TaskError::Trap { .. }));
    assert!(matches!(
        init_error(&pool, "grow"),
        TaskError::MemoryLimit { .. }
    ));
    assert_eq!(init_error(&pool, "exit"), TaskError::Exit { code: 3 });
    // An exit is the program's end even with status 0: its state is no start for tasks.
    assert_eq!(init_error(&pool, "exit0"), TaskError::Exit { code: 0 });
    assert_eq!(init_error(&pool, "fail"), TaskError::Exit { code: 7 });
    for bad in ["takes_a_param", "missing"] {
        match init_error(&pool, bad) {
            TaskError::BadInput { message } => assert!(message.contains(bad), "{message}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    let e = pool
        .load_initialized(table(), &Init::new("spin"))
        .unwrap_err();
    assert_eq!(e.kind(), "initializer");
    assert!(e.to_string().contains("`spin`"), "{e}");
    // Under fuel, a spinning initializer runs out of it.
    let fuel = builder().fuel(1_000_000).build().unwrap();
    assert!(matches!(
        init_error(&fuel, "spin"),
        TaskError::FuelExhausted { .. }
    ));
    // The pool serves on, and a good initializer still works in it.
    let m = pool.load_initialized(table(), &Init::new("init")).unwrap();
    assert_eq!(pool.submit::<i32>(&m, "lookup", 12).wait(), Ok(144));
    assert_eq!(pool.stats().workers_live, 2);
}

#[test]
fn a_module_whose_state_cannot_be_snapshotted_is_refused_naming_why() {
    let pool = builder().workers(1).build().unwrap();
    // `table.set` changes a table, which a snapshot of memories and globals would lose.
    let wat = r#"(module
      (table 1 funcref)
      (func $f)
      (elem declare func $f)
      (func (export "init") (table.set (i32.const 0) (ref.func $f))))"#;
    match pool.load_initialized(wat, &Init::new("init")) {
        Err(LoadError::Invalid { message }) => {
            assert!(message.contains("cannot be snapshotted"), "{message}");
            assert!(message.contains("table.set"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Loaded as it is, it runs.
    let m = pool.load(wat).unwrap();
    assert_eq!(pool.submit::<()>(&m, "init", ()).wait(), Ok(()));
}

#[test]
fn run_and_exec_take_an_initializer() {
    let path = guest_wat("init_table.wat");
    let out = common::cli()
        .args(["run", path.to_str().unwrap(), "lookup", "--init", "init"])
        .stdin_bytes("7\n31\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(oks(&out), [49, 961]);
    let out = common::cli()
        .args([
            "run",
            path.to_str().unwrap(),
            "argc",
            "--init",
            "init",
            "--init-arg",
            "-c",
            "--init-arg",
            "two words",
        ])
        .stdin_bytes("[]\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(oks(&out), [3]);
    let out = common::cli()
        .args(["run", path.to_str().unwrap(), "lookup", "--init", "trap"])
        .stdin_bytes("7\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("initializer `trap` failed"), "{stderr}");

    // exec: the reactor's `_initialize` ran before the initializer, not again per run
    // (status 11); without --init, each run runs it (10).
    let exec = |init: &[&str]| {
        let mut args = vec!["exec", "--invoke", "status"];
        args.extend_from_slice(init);
        args.push(path.to_str().unwrap());
        common::cli().args(&args).stdin_bytes("").status.code()
    };
    assert_eq!(exec(&["--init", "init"]), Some(11));
    assert_eq!(exec(&[]), Some(10));
}

/// The `ok` values of `run`'s result lines.
fn oks(out: &std::process::Output) -> Vec<i64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["ok"].as_i64().unwrap_or_else(|| panic!("{l}"))
        })
        .collect()
}

/// Runs a command with `stdin` as its input and collects its output.
trait StdinBytes {
    fn stdin_bytes(&mut self, stdin: &str) -> std::process::Output;
}

impl StdinBytes for std::process::Command {
    fn stdin_bytes(&mut self, stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

#[test]
fn an_initializer_takes_its_stdin_as_an_argument_and_tasks_continue_its_session() {
    let pool = builder().workers(2).build().unwrap();
    let wasm = std::fs::read(guest_wat("turns.wat")).unwrap();
    let init = Init::new("turn").stdin("abc").stdin_as_argument("alloc");
    let m = pool.load_initialized(&wasm, &init).unwrap();
    // Each task continues from the log the initializer left, and only from it.
    for text in ["d", "!fg", "d"] {
        let out = pool
            .run_command(
                &m,
                wasmpool::CommandSpec::new()
                    .invoke("turn")
                    .stdin_as_argument("alloc")
                    .stdin(text),
            )
            .wait()
            .unwrap();
        assert_eq!(out.stdout_text(), format!("abc{text}"));
        let code = if text.starts_with('!') {
            3 + text.len() as i32
        } else {
            0
        };
        assert_eq!(out.exit_code, code);
    }
    // Another stdin is another snapshot; without `stdin_as_argument` the export's shape is
    // wrong, and the load fails naming it.
    let other = pool
        .load_initialized(&wasm, &init.clone().stdin("xy"))
        .unwrap();
    assert!(!other.same_artifact(&m));
    match pool.load_initialized(&wasm, &Init::new("turn").stdin("abc")) {
        Err(LoadError::Initializer { error, .. }) => match *error {
            TaskError::BadInput { message } => assert!(message.contains("turn"), "{message}"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // The CLI: --init-stdin with exec's --stdin-as-argument.
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("turns.wat");
    std::fs::write(&wat, &wasm).unwrap();
    let out = common::wasmpool(
        &[
            "exec",
            "--invoke",
            "turn",
            "--stdin-as-argument",
            "alloc",
            "--init",
            "turn",
            "--init-stdin",
            "abc",
            wat.to_str().unwrap(),
        ],
        "!e",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "abc!e", "{out:?}");
    assert_eq!(out.status.code(), Some(5));
}
