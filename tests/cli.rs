//! The `wasmpool` binary: JSON lines in and out, exit codes, `inspect`, `demo`.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{guest, wasmpool};
use serde_json::Value;

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect()
}

fn path(name: &str) -> String {
    guest(name).to_str().unwrap().to_string()
}

#[test]
fn run_prints_results_in_input_order_and_exits_0() {
    let input: String = (0..300).map(|i| format!("{i}\n")).collect();
    let out = wasmpool(&["run", &path("math"), "square", "--workers", "2"], &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = lines(&out);
    assert_eq!(got.len(), 300);
    for (i, line) in got.iter().enumerate() {
        assert_eq!(line["ok"], (i * i) as i64);
        // No fuel limit: the code runs without fuel metering.
        assert_eq!(line["fuel"], 0);
        assert!(line["duration_us"].is_u64());
    }
}

#[test]
fn run_gives_each_line_its_own_output_and_fuel_while_lines_travel_in_batches() {
    // `run` sends short calls to the workers in batches: each line still gets its own
    // output, fuel and error, never its batch's. `f(n)` burns `n` loop turns (fuel grows
    // with `n`), prints `odd` for odd `n`, and traps for 13.
    let module = common::guest_wat("print_or_trap.wat");
    let n = 2000;
    let input: String = (0..n).map(|i| format!("{i}\n")).collect();
    let out = wasmpool(
        &[
            "run",
            module.to_str().unwrap(),
            "f",
            "--workers",
            "2",
            "--fuel",
            "100000000",
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(1), "line 13 fails");
    let got = lines(&out);
    assert_eq!(got.len(), n);
    // The last fuel of an even and of an odd line (odd ones pay for the print too).
    let mut last_fuel = [0, 0];
    for (i, line) in got.iter().enumerate() {
        if i == 13 {
            assert_eq!(line["error"]["kind"], "trap", "{line}");
            continue;
        }
        assert_eq!(line["ok"], (i * i) as i64, "{line}");
        let fuel = line["fuel"].as_u64().unwrap();
        let last = &mut last_fuel[i % 2];
        assert!(fuel > *last, "line {i}: fuel {fuel} after {last}");
        *last = fuel;
        let printed = line.get("stdout").and_then(Value::as_str);
        assert_eq!(printed, (i % 2 == 1).then_some("odd\n"), "{line}");
    }
}

#[test]
fn run_answers_each_line_while_its_input_is_still_open() {
    // A pipe that stays open (a producer still at work, or someone typing): each line's
    // result comes before the next line is written, not after the input ends.
    use std::io::{BufRead, BufReader, Write};
    let mut child = common::cli()
        .args(["run", &path("math"), "square", "--workers", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmpool");
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    for n in [3i64, 4, 5] {
        writeln!(stdin, "{n}").unwrap();
        stdin.flush().unwrap();
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a result while the input is still open");
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["ok"], n * n, "{line}");
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn run_takes_every_flag_and_reports_failures_with_exit_1() {
    let dir = std::env::temp_dir().join(format!("wasmpool-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inputs = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    std::fs::write(&inputs, "5\n\n[1,2]\n{broken\n7\n").unwrap();
    let out = wasmpool(
        &[
            "run",
            &path("math"),
            "square",
            "--inputs",
            inputs.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--workers",
            "1",
            "--fuel",
            "1e9",
            "--timeout",
            "2s",
            "--memory",
            "64MiB",
            "--max-tasks-per-worker",
            "2",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let got: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        got.len(),
        4,
        "blank lines are skipped, every other line answered"
    );
    assert_eq!(got[0]["ok"], 25);
    assert_eq!(got[1]["error"]["kind"], "bad_input");
    assert!(got[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 3"));
    assert_eq!(got[2]["error"]["kind"], "bad_input");
    assert!(got[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(got[3]["ok"], 49);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_contains_hostile_lines_and_keeps_the_rest() {
    let out = wasmpool(
        &["run", &path("hostile"), "sleep_ms", "--timeout", "300ms"],
        "1\n100000\n2\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    assert_eq!(got[0]["ok"], 1);
    assert_eq!(got[1]["error"]["kind"], "timeout");
    assert_eq!(got[2]["ok"], 2);

    let out = wasmpool(
        &["run", &path("hostile"), "spin", "--fuel", "1000000"],
        "null\n",
    );
    assert_eq!(lines(&out)[0]["error"]["kind"], "fuel_exhausted");
    let out = wasmpool(
        &["run", &path("hostile"), "grow_forever", "--memory", "8MiB"],
        "null\n",
    );
    assert_eq!(lines(&out)[0]["error"]["kind"], "memory_limit");
    let out = wasmpool(&["run", &path("hostile"), "hello"], "null\n");
    let line = &lines(&out)[0];
    assert_eq!(line["stdout"], "hello from guest\n");
    assert_eq!(line["stderr"], "warning from guest\n");
}

#[test]
fn run_passes_json_to_sdk_tasks() {
    let out = wasmpool(
        &["run", &path("wordcount"), "wordcount"],
        "{\"text\": \"b a b\"}\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&out)[0]["ok"]["words"], 3);
    let out = wasmpool(
        &["run", &path("wordcount"), "divide"],
        "{\"a\": 1, \"b\": 0}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out)[0]["error"]["kind"], "guest");
    // JSON of the wrong shape for the task: the SDK says so, and it is the input's fault.
    let out = wasmpool(
        &["run", &path("wordcount"), "divide"],
        "{\"a\": 1, \"b\": 2}\n{\"a\": \"one\", \"b\": 2}\n\"just text\"\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    assert_eq!(got[0]["ok"], 0);
    for line in &got[1..] {
        assert_eq!(line["error"]["kind"], "bad_input", "{line}");
        let message = line["error"]["message"].as_str().unwrap();
        assert!(message.contains("cannot decode its input"), "{message}");
    }
}

#[test]
fn usage_and_module_errors_exit_125_in_every_command() {
    let this_file = file!();
    let out = wasmpool(&["run", this_file, "square"], "1\n");
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid module"));

    let out = wasmpool(&["run", &path("math"), "nope"], "1\n");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no export `nope`") && err.contains("square(i64) -> (i64)"),
        "{err}"
    );

    let out = wasmpool(
        &["run", &path("math"), "square", "--timeout", "soon"],
        "1\n",
    );
    assert_eq!(out.status.code(), Some(125));
    let out = wasmpool(
        &["run", &path("math"), "square", "--inputs", "/nonexistent"],
        "",
    );
    assert_eq!(out.status.code(), Some(125));

    // The same code for a usage error (a flag no command has) and a module error (a file that
    // is not wasm, or a module without what the command needs) in each command.
    let math = path("math");
    let cases: [(&[&str], &str); 9] = [
        (
            &["run", &math, "square", "--no-such-flag"],
            "--no-such-flag",
        ),
        (&["exec", &math, "--no-such-flag"], "--no-such-flag"),
        (&["inspect", &math, "--no-such-flag"], "--no-such-flag"),
        (&["audit", "--no-such-flag"], "--no-such-flag"),
        (&["run", this_file, "square"], "invalid module"),
        (&["exec", this_file], "invalid module"),
        (&["inspect", this_file], "invalid module"),
        (&["exec", &math], "no `_start` export"),
        (
            &[
                "exec",
                "--input",
                "/nonexistent/missing.txt",
                &program("wc"),
            ],
            "missing.txt",
        ),
    ];
    for (args, says) in cases {
        let out = wasmpool(args, "1\n");
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
    // --help is not an error, and says what each exit status means.
    for command in ["run", "exec", "inspect", "audit"] {
        let out = wasmpool(&[command, "--help"], "");
        assert_eq!(out.status.code(), Some(0), "{command}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Exit status") && help.contains("125"),
            "{command}: {help}"
        );
    }
}

#[test]
fn a_missing_file_is_named_once_with_its_cause_once() {
    let missing = "/nonexistent/missing.wasm";
    for args in [
        vec!["run", missing, "square"],
        vec!["exec", missing],
        vec!["inspect", missing],
        vec!["exec", "--input", "/nonexistent/missing.txt", missing],
    ] {
        let out = wasmpool(&args, "");
        let err = stderr(&out);
        assert_eq!(err.matches(missing).count(), 1, "{args:?}: {err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
    }
    let out = wasmpool(
        &[
            "exec",
            "--input",
            "/nonexistent/missing.txt",
            &program("wc"),
        ],
        "",
    );
    let err = stderr(&out);
    assert_eq!(err.matches("missing.txt").count(), 2, "{err}"); // the /in name and the path
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(out.status.code(), Some(125), "{err}");
}

#[test]
fn exec_says_what_the_sandbox_has_when_a_host_path_is_refused() {
    let hint = "only /in/<name> for each --input PATH";
    let transform = program("transform");
    let out = wasmpool(&["exec", &transform, "--", "/etc/passwd", "/out/x"], "");
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the program's own status: {err}"
    );
    assert!(
        err.contains("Capabilities insufficient") && err.contains(hint),
        "{err}"
    );
    // Not for a program that fails otherwise.
    let out = wasmpool(&["exec", &transform], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains(hint), "{}", stderr(&out));
    // In a batch, with -v, counted.
    let dir = scratch("refused");
    let specs = dir.join("specs.jsonl");
    std::fs::write(
        &specs,
        "{\"args\": [\"/etc/passwd\", \"/out/x\"]}\n{\"args\": [\"/etc/hosts\", \"/out/x\"]}\n",
    )
    .unwrap();
    let specs = specs.to_str().unwrap();
    let out = wasmpool(&["exec", &transform, "--specs", specs, "-v"], "");
    assert!(
        stderr(&out).contains("2 runs were refused a path"),
        "{}",
        stderr(&out)
    );
    let out = wasmpool(&["exec", &transform, "--specs", specs], "");
    assert!(!stderr(&out).contains(hint), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_says_program_arguments_go_after_dashes() {
    let wc = program("wc");
    let out = wasmpool(&["exec", &wc, "data.txt"], "");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("go after `--`: wasmpool exec {wc} -- data.txt")),
        "{err}"
    );
    // Flags of ours stay before `--` (with their values), the program's move after it, in
    // order, before those already there.
    let out = wasmpool(
        &["exec", &wc, "--timeout", "5s", "a b", "-n", "--", "c"],
        "",
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("wasmpool exec {wc} --timeout 5s -- 'a b' -n c")),
        "{err}"
    );
    // The suggested command works.
    let out = wasmpool(
        &["exec", &wc, "--timeout", "5s", "--", "data.txt"],
        "one two\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // An argument that is not UTF-8 is shown as best it can be, without a panic.
    let out = common::cli()
        .args(["exec", &wc])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"x\xff"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A misspelt flag of ours is not taken for the program's.
    let out = wasmpool(&["exec", &wc, "--inptu", "x"], "");
    assert!(!stderr(&out).contains("go after"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--input"), "{}", stderr(&out));
}

#[test]
fn inspect_lists_exports_with_signatures() {
    let out = wasmpool(&["inspect", &path("math")], "");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("add(i32, i32) -> (i32)"), "{text}");
    assert!(text.contains("hypot(f64, f64) -> (f64)"), "{text}");
    let out = wasmpool(&["inspect", &path("wordcount")], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("wordcount(json) -> json  [SDK task]"));
}

#[test]
fn inspect_lists_the_proposals_a_module_uses() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("proposals.wat");
    // Exceptions (a tag, try_table), tail calls (return_call), bulk memory (memory.fill).
    std::fs::write(
        &wat,
        r#"(module
            (tag $e (param i32))
            (memory 1)
            (func $f (param i32) (result i32) local.get 0)
            (func (export "g") (result i32)
                (memory.fill (i32.const 0) (i32.const 0) (i32.const 4))
                (block $h (result i32)
                    (try_table (result i32) (catch $e $h) (return_call $f (i32.const 1))))))"#,
    )
    .unwrap();
    let out = wasmpool(&["inspect", wat.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("proposals: bulk-memory, exceptions, tail-call\n"),
        "{text}"
    );
    // A module of the first version lists none.
    let plain = dir.path().join("plain.wat");
    std::fs::write(
        &plain,
        r#"(module (func (export "f") (result i32) i32.const 1))"#,
    )
    .unwrap();
    let out = wasmpool(&["inspect", plain.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("f() -> (i32)") && !text.contains("proposals") && !text.contains("imports"),
        "{text}"
    );
    // A module importing what the sandbox does not provide is inspected, not refused: the
    // imports are named, with the flag that lets it load.
    let hooked = dir.path().join("hooked.wat");
    std::fs::write(
        &hooked,
        r#"(module (import "host" "call" (func (param i32) (result i32)))
            (func (export "f") (result i32) i32.const 1))"#,
    )
    .unwrap();
    let out = wasmpool(&["inspect", hooked.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.contains("imports the sandbox does not provide")
            && text.contains("--unknown-imports trap")
            && text.contains("\n    host::call\n")
            && text.contains("f() -> (i32)"),
        "{text}"
    );
}

#[test]
fn demo_tells_its_story_beside_python_or_says_it_skipped_it() {
    let out = wasmpool(&["demo", "--workers", "2"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for says in [
        "1. Two CPU-bound tasks in parallel: counting down from 8 million and from 7 million.",
        "(both reached zero)",
        "2. 100,000 tiny tasks",
        "the squares add up to 333328333350000",
        "A task that crashes (divides by zero): guest trapped",
        "ran out of fuel",
        "exceeded its wall-clock limit of 200ms",
        "Afterwards the pool still answers: 12 squared is 144.",
        "wasmpool audit",
        "wasmpool exec prog.wasm -- ARGS",
    ] {
        assert!(text.contains(says), "{says:?} missing:\n{text}");
    }
    // Each figure has Python's beside it, measured now, or says it was skipped.
    let python_lines = text
        .lines()
        .filter(|l| l.trim_start().starts_with("Python multiprocessing.Pool"))
        .count();
    assert_eq!(python_lines, 2, "{text}");
    // Without python3, the comparison is skipped, not made up.
    let out = common::cli()
        .args(["demo", "--workers", "2"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.matches("skipped (python3 not found").count(),
        2,
        "{text}"
    );
    // Its help is in plain words.
    let out = wasmpool(&["--help"], "");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Python's multiprocessing.Pool") && !help.contains("seed"),
        "{help}"
    );
}

#[test]
fn audit_contains_every_hostile_case() {
    let out = wasmpool(&["audit"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("FAIL"), "{text}");
    for case in [
        "infinite loop",
        "infinite loop, fuel 1e8",
        "sleep in a host call (1 h)",
        "memory growth loop",
        "large allocation (60000 pages)",
        "initial memory over the limit",
        "stack overflow",
        "unreachable",
        "integer division by zero",
        "guest panic (stderr + trap)",
        "proc_exit(7)",
        "stdout flood (64 MB)",
        "reading files",
        "writing files",
        "reading env vars and args",
        "accepting on sockets",
        "reading stdin",
        "start function loops forever",
        "bad import (env.evil)",
        "not wasm (random bytes)",
        "two memories (over the instance slot)",
        "three tables (over the instance slot)",
        "table of 2^20+1 elements",
        "worker killed mid-task",
        "300 directories nested in /out",
    ] {
        assert!(text.contains(case), "case `{case}` missing:\n{text}");
    }
    assert!(text.contains("25/25 contained"), "{text}");
}

fn program(name: &str) -> String {
    common::c_program(name).to_str().unwrap().to_string()
}

#[test]
fn exec_runs_one_program_with_our_stdin_and_its_exit_code() {
    let out = wasmpool(&["exec", &program("wc")], "to be or not\nto be\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 6 19\n");
    assert_eq!(out.status.code(), Some(0));

    let out = wasmpool(&["exec", &program("exitcode"), "--", "7"], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exiting with 7\n");
    assert_eq!(out.status.code(), Some(7));

    let out = wasmpool(&["exec", "--timeout", "200ms", &program("spin")], "");
    assert_eq!(out.status.code(), Some(124));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wall-clock limit of 200ms"));

    let dir = std::env::temp_dir().join(format!("wasmpool-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("words.txt");
    std::fs::write(&input, "shout").unwrap();
    let out_dir = dir.join("out");
    let out = wasmpool(
        &[
            "exec",
            "--input",
            input.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
            &program("transform"),
            "--",
            "/in/words.txt",
            "/out/loud.txt",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("loud.txt")).unwrap(),
        "SHOUT"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Collatz steps of `n`, as guests/c/collatz.c counts them.
fn collatz(mut n: u64) -> u64 {
    let mut steps = 0;
    while n > 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

/// What collatz.c gives for an input file: an error kind, or an exit code and (for exit 0)
/// the total its stdout ends with.
type Collatz = Result<(i64, Option<u64>), &'static str>;

/// Input files `p<i>.txt` (`i` zero-padded to `width`) for collatz.c in a fresh temporary
/// directory `name`: file `i` holds `per_file` numbers and, as `odd(i)` says, a line that
/// loops forever ("timeout": a negative number) or one that is not a number ("exit 2").
fn collatz_files(
    name: &str,
    count: u64,
    per_file: u64,
    width: usize,
    odd: impl Fn(u64) -> Option<&'static str>,
) -> (std::path::PathBuf, Vec<Collatz>) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected = Vec::new();
    for i in 0..count {
        let numbers: Vec<u64> = (1..=per_file).map(|k| i * per_file + k).collect();
        let mut text: String = numbers.iter().map(|n| format!("{n}\n")).collect();
        let outcome = match odd(i) {
            Some("timeout") => {
                text.push_str("-1\n");
                Err("timeout")
            }
            Some(_) => {
                text.push_str("oops\n");
                Ok((2, None))
            }
            None => Ok((0, Some(numbers.iter().map(|&n| collatz(n)).sum::<u64>()))),
        };
        std::fs::write(dir.join(format!("p{i:0width$}.txt")), text).unwrap();
        expected.push(outcome);
    }
    (dir, expected)
}

/// Checks `exec --each`'s JSON lines against [`collatz_files`]' expectations, in order.
fn check_collatz_lines(got: &[Value], expected: &[Collatz], dir: &std::path::Path, width: usize) {
    assert_eq!(got.len(), expected.len());
    for (i, (line, want)) in got.iter().zip(expected).enumerate() {
        assert_eq!(line["input"], format!("{}/p{i:0width$}.txt", dir.display()));
        match want {
            Err(kind) => assert_eq!(line["error"]["kind"], *kind, "{line}"),
            Ok((code, total)) => {
                assert_eq!(line["exit_code"], *code, "{line}");
                if let Some(total) = total {
                    let stdout = line["stdout"].as_str().unwrap();
                    assert!(stdout.ends_with(&format!("total {total}\n")), "{line}");
                }
            }
        }
    }
}

#[test]
fn exec_each_sends_queued_runs_to_a_worker_together_each_with_its_own_outcome() {
    // One worker and 60 short runs queued at once: the dispatcher sends them in `Calls`
    // frames (its trace says "calls finished" only for those), and each run still has its
    // own stdin, exit code, output and deadline: a loop in the middle times out alone.
    let (dir, expected) = collatz_files("wasmpool-each-calls", 60, 5, 2, |i| match i {
        29 => Some("timeout"),
        13 | 44 => Some("exit 2"),
        _ => None,
    });
    let pattern = format!("{}/*.txt", dir.display());
    let out = common::cli()
        .args([
            "exec",
            &program("collatz"),
            "--each",
            &pattern,
            "--workers",
            "1",
            "--timeout",
            "300ms",
        ])
        .env("RUST_LOG", "warn,wasmpool::dispatch=trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("calls finished"),
        "no run travelled in a Calls frame:\n{stderr}"
    );
    check_collatz_lines(&lines(&out), &expected, &dir, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_each_runs_200_files_in_order_with_loops_contained() {
    // Files 0..200: most sum Collatz steps; every 50th loops forever (a negative number),
    // every 40th (not 50th) holds a line that is not a number (exit status 2).
    let (dir, expected) = collatz_files("wasmpool-each", 200, 20, 3, |i| {
        if i % 50 == 7 {
            Some("timeout")
        } else if i % 40 == 3 {
            Some("exit 2")
        } else {
            None
        }
    });
    let pattern = format!("{}/*.txt", dir.display());
    for mode in ["--file", "--stdin"] {
        let out = wasmpool(
            &[
                "exec",
                &program("collatz"),
                "--each",
                &pattern,
                mode,
                "--workers",
                "2",
                "--timeout",
                "300ms",
            ],
            "",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        check_collatz_lines(&lines(&out), &expected, &dir, 3);
        // The summary counts each outcome.
        assert!(stderr.contains("200 run(s)"), "{stderr}");
        for (outcome, n) in [("exit 0", 191), ("exit 2", 5), ("timeout", 4)] {
            assert!(
                stderr
                    .lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>()
                        == [outcome.split(' ').collect::<Vec<_>>(), vec![&n.to_string()]].concat()),
                "no `{outcome} {n}` in the summary:\n{stderr}"
            );
        }
    }

    // A JSONL file of specs drives the same runs.
    let specs = dir.join("specs.jsonl");
    std::fs::write(
        &specs,
        format!(
            "{{\"stdin\": \"6\\n7\\n\"}}\n{{\"args\": [\"/in/p\"], \"inputs\": {{\"p\": \"{}\"}}}}\n{{\"argz\": 1}}\n",
            dir.join("p001.txt").display()
        ),
    )
    .unwrap();
    let out = wasmpool(
        &[
            "exec",
            &program("collatz"),
            "--specs",
            specs.to_str().unwrap(),
        ],
        "",
    );
    let got = lines(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["stdout"], "8\n16\ntotal 24\n");
    assert!(got[1]["stdout"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}\n", collatz(21))));
    assert_eq!(got[2]["error"]["kind"], "bad_input");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh empty directory under the system's temporary directory.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmpool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `wasmpool` with `args`; its stdin is a pipe we hold open and never write to when
/// `open_stdin`, else empty. Fails the test if it has not exited within `bound`.
fn wasmpool_within(args: &[&str], open_stdin: bool, bound: Duration) -> Output {
    let mut child = common::cli()
        .args(args)
        .stdin(if open_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmpool");
    let held = child.stdin.take();
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wasmpool {args:?} still ran after {bound:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(held);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_exit_statuses_outside_a_byte_never_read_as_success() {
    for (code, status) in [("256", 1), ("512", 1), ("-256", 1), ("255", 255), ("0", 0)] {
        let out = wasmpool(&["exec", &program("exitcode"), "--", code], "");
        assert_eq!(out.status.code(), Some(status), "proc_exit({code})");
        if status == 1 {
            assert!(
                stderr(&out).contains(&format!("wasmpool: the program exited with status {code}")),
                "{}",
                stderr(&out)
            );
        }
    }
    // With -v, a program's own status is named as such.
    let out = wasmpool(&["exec", "-v", &program("exitcode"), "--", "124"], "");
    assert_eq!(out.status.code(), Some(124));
    assert!(
        stderr(&out).contains("wasmpool: exit code 124"),
        "{}",
        stderr(&out)
    );

    // The JSON lines of a batch carry the true status.
    let dir = scratch("exit-status");
    let specs = dir.join("specs.jsonl");
    std::fs::write(
        &specs,
        "{\"args\": [\"256\"]}\n{\"args\": [\"-256\"]}\n{\"args\": [\"0\"]}\n",
    )
    .unwrap();
    let out = wasmpool(
        &[
            "exec",
            &program("exitcode"),
            "--specs",
            specs.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    assert_eq!(
        got.iter()
            .map(|l| l["exit_code"].clone())
            .collect::<Vec<_>>(),
        [256, -256, 0]
    );
    assert!(stderr(&out).contains("exit 256"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_never_follows_a_link_planted_in_the_out_dir() {
    let dir = scratch("planted");
    let (out_dir, outside) = (dir.join("out"), dir.join("outside"));
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("loud.txt")).unwrap();
    let input = dir.join("words.txt");
    std::fs::write(&input, "shout").unwrap();
    let transform = program("transform");
    let out = wasmpool(
        &[
            "exec",
            "--input",
            input.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
            &transform,
            "--",
            "/in/words.txt",
            "/out/loud.txt",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");

    // The same through --specs, with the run's directory itself a planted link.
    std::os::unix::fs::symlink(&outside, out_dir.join("specs.jsonl_1")).unwrap();
    let specs = dir.join("specs.jsonl");
    std::fs::write(
        &specs,
        format!(
            "{{\"args\": [\"/in/w\", \"/out/victim.txt\"], \"inputs\": {{\"w\": \"{}\"}}}}\n",
            input.display()
        ),
    )
    .unwrap();
    let out = wasmpool(
        &[
            "exec",
            &transform,
            "--specs",
            specs.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = lines(&out);
    assert_eq!(got[0]["exit_code"], 0, "{}", got[0]);
    assert_eq!(got[0]["error"]["kind"], "save_failed", "{}", got[0]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_each_gives_every_input_its_own_directory_and_survives_a_save_error() {
    let dir = scratch("each-dirs");
    let inputs = dir.join("in");
    for (sub, text) in [("a", "first"), ("b", "second"), ("c", "third")] {
        std::fs::create_dir_all(inputs.join(sub)).unwrap();
        std::fs::write(inputs.join(sub).join("x.txt"), text).unwrap();
    }
    let out_dir = dir.join("out");
    // Run 2's result file clashes with a directory already there.
    std::fs::create_dir_all(out_dir.join("2-x.txt/r.txt")).unwrap();
    let pattern = format!("{}/*/x.txt", inputs.display());
    let out = wasmpool(
        &[
            "exec",
            &program("transform"),
            "--each",
            &pattern,
            "--file",
            "--out-dir",
            out_dir.to_str().unwrap(),
            "--",
            "{}",
            "/out/r.txt",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = lines(&out);
    assert_eq!(got.len(), 3, "{}", stderr(&out));
    for (i, text) in [(1, "FIRST"), (3, "THIRD")] {
        let run_dir = out_dir.join(format!("{i}-x.txt"));
        assert_eq!(got[i - 1]["out_dir"], run_dir.to_str().unwrap());
        assert!(got[i - 1].get("error").is_none(), "{}", got[i - 1]);
        assert_eq!(
            std::fs::read_to_string(run_dir.join("r.txt")).unwrap(),
            text
        );
    }
    assert_eq!(got[1]["exit_code"], 0);
    assert_eq!(got[1]["error"]["kind"], "save_failed", "{}", got[1]);
    let summary = stderr(&out);
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["save_failed", "1"]),
        "{summary}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_bounds_stdin_by_the_timeout_and_refuses_fifo_inputs() {
    // A stdin that never ends: stopped at the run's wall-clock limit, like the program.
    let out = wasmpool_within(
        &["exec", "--timeout", "1s", &program("wc")],
        true,
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stdin did not end within"),
        "{}",
        stderr(&out)
    );

    // A FIFO given as an input file is refused, not opened (that would wait for a writer).
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let out = wasmpool_within(
        &["exec", "--input", fifo.to_str().unwrap(), &program("wc")],
        false,
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_each_skips_symbolic_links_unless_asked() {
    let dir = scratch("each-links");
    let (inputs, secret) = (dir.join("in"), dir.join("secret"));
    std::fs::create_dir_all(inputs.join("real")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(inputs.join("real/a.txt"), "just words").unwrap();
    std::fs::write(secret.join("key.txt"), "host secret").unwrap();
    std::os::unix::fs::symlink(secret.join("key.txt"), inputs.join("real/b.txt")).unwrap();
    std::os::unix::fs::symlink(&secret, inputs.join("linked")).unwrap();
    let pattern = format!("{}/*/*.txt", inputs.display());
    for mode in ["--stdin", "--file"] {
        let out = wasmpool(&["exec", &program("wc"), "--each", &pattern, mode], "");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got = lines(&out);
        let seen: Vec<&str> = got.iter().map(|l| l["input"].as_str().unwrap()).collect();
        assert_eq!(
            seen,
            [inputs.join("real/a.txt").to_str().unwrap()],
            "{mode}"
        );
        assert!(stderr(&out).contains("skipped 2"), "{}", stderr(&out));

        let out = wasmpool(
            &[
                "exec",
                &program("wc"),
                "--each",
                &pattern,
                mode,
                "--follow-symlinks",
            ],
            "",
        );
        assert_eq!(lines(&out).len(), 3, "{}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limit_flags_out_of_range_or_without_a_unit_are_usage_errors_in_every_command() {
    let math = path("math");
    let cases: [(&[&str], &str); 5] = [
        (&["--timeout", "500000000000y"], "maximum"),
        (&["--timeout", "0s"], "timeout of 0"),
        (&["--memory", "64"], "no unit"),
        (&["--memory", "0"], "no unit"),
        (&["--memory", "0B"], "memory of 0"),
    ];
    for (flags, says) in cases {
        for command in [
            vec!["run", &math, "square"],
            vec!["exec", &math],
            vec!["audit"],
        ] {
            let args: Vec<&str> = command
                .iter()
                .copied()
                .chain(flags.iter().copied())
                .collect();
            let out = wasmpool(&args, "3\n");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
        }
    }
    let out = wasmpool(&["run", &math, "square", "--memory", "64"], "3\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("64MiB"),
        "suggests a size with a unit"
    );
    let out = wasmpool(&["run", &math, "square", "--memory", "64MiB"], "3\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines(&out)[0]["ok"], 9);
}

#[test]
fn many_more_workers_than_cpus_are_warned_about_not_refused() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let many = (4 * cpus + 1).to_string();
    // A missing input file ends the run before any worker starts.
    let args = [
        "run",
        "m.wasm",
        "f",
        "--workers",
        &many,
        "--inputs",
        "/nonexistent/in",
    ];
    let out = wasmpool(&args, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: --workers {many} is more than 4 per CPU")),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/in"),
        "the run went on: {stderr}"
    );
    let few = (4 * cpus).to_string();
    let args = [
        "run",
        "m.wasm",
        "f",
        "--workers",
        &few,
        "--inputs",
        "/nonexistent/in",
    ];
    let stderr = String::from_utf8_lossy(&wasmpool(&args, "").stderr).into_owned();
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn cache_shows_where_the_compile_cache_is_what_it_holds_and_clears_it() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("wasmpool");
    let cache = |args: &[&str], limit: Option<&str>| {
        let mut c = common::cli();
        c.arg("cache").args(args).env("XDG_CACHE_HOME", home.path());
        match limit {
            Some(l) => c.env("WASMPOOL_CACHE_LIMIT", l),
            None => c.env_remove("WASMPOOL_CACHE_LIMIT"),
        };
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), stdout, stderr)
    };
    let (code, empty, _) = cache(&[], None);
    assert_eq!(code, Some(0));
    assert!(
        empty.contains(&format!("location: {}", dir.display()))
            && empty.contains("entries:  0 (0 B)")
            && empty.contains("limit:    2.0 GiB (the default"),
        "{empty}"
    );
    let pool = common::builder()
        .compile_cache(dir.clone())
        .build()
        .unwrap();
    pool.load_file(guest("math")).unwrap();
    pool.shutdown();
    let (code, info, _) = cache(&["info"], Some("500MiB"));
    assert_eq!(code, Some(0));
    assert!(
        info.contains("entries:  1 (") && info.contains("500.0 MiB (from $WASMPOOL_CACHE_LIMIT)"),
        "{info}"
    );
    let (code, cleared, _) = cache(&["clear"], None);
    assert_eq!(code, Some(0));
    assert!(cleared.starts_with("removed 1 entries ("), "{cleared}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let (code, _, stderr) = cache(&[], Some("2048"));
    assert_eq!(code, Some(125));
    assert!(stderr.contains("needs a unit"), "{stderr}");
}

#[test]
fn verbose_logs_worker_life_to_stderr() {
    let quiet = wasmpool(&["run", &path("math"), "square", "--workers", "1"], "3\n");
    assert!(quiet.status.success());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("worker spawned"),
        "only warnings and errors without -v"
    );
    let args = ["-v", "run", &path("math"), "square", "--workers", "1"];
    let verbose = wasmpool(&args[..], "3\n4\n");
    assert!(verbose.status.success());
    assert_eq!(String::from_utf8_lossy(&verbose.stdout).lines().count(), 2);
    let log = String::from_utf8_lossy(&verbose.stderr);
    assert!(log.contains("worker spawned"), "{log}");
    assert!(log.contains("slot=0"), "{log}");
    assert!(!log.contains("\u{1b}["), "no colours into a pipe: {log}");
    // `exec` keeps its own `-v`.
    let exec = wasmpool(&["exec", "-v", &program("exitcode"), "--", "0"], "");
    let err = String::from_utf8_lossy(&exec.stderr);
    assert!(exec.status.success(), "{err}");
}

#[test]
fn exec_spec_lines_carry_their_own_limits_in_units_and_bad_ones_fail_alone() {
    let dir = std::env::temp_dir().join(format!("wasmpool-spec-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let specs = dir.join("specs.jsonl");
    std::fs::write(
        &specs,
        concat!(
            "{\"timeout_ms\": 50}\n",
            "{\"fuel\": 1000000}\n",
            "{\"timeout_ms\": 0}\n",
            "{\"memory_bytes\": 5000000000}\n",
            "{\"timeout\": 50}\n",
        ),
    )
    .unwrap();
    // The pool's default timeout is long: only the first line's own 50 ms can stop it soon.
    let out = wasmpool(
        &[
            "exec",
            &program("spin"),
            "--timeout",
            "60s",
            "--specs",
            specs.to_str().unwrap(),
        ],
        "",
    );
    let got = lines(&out);
    assert_eq!(got.len(), 5, "{out:?}");
    assert_eq!(got[0]["error"]["kind"], "timeout", "{}", got[0]);
    // Its neighbour has the default timeout and its own fuel.
    assert_eq!(got[1]["error"]["kind"], "fuel_exhausted", "{}", got[1]);
    for (i, limit) in [
        (2, "timeout"),
        (3, "memory"),
        (4, "unknown field `timeout`"),
    ] {
        assert_eq!(got[i]["error"]["kind"], "bad_input", "{}", got[i]);
        let message = got[i]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("spec line {}", i + 1)) && message.contains(limit),
            "{message}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_sets_the_guests_environment_with_env() {
    let probe = format!("{}/tests/guests/env_probe.wat", env!("CARGO_MANIFEST_DIR"));
    let out = wasmpool(
        &["run", &probe, "bytes", "--env", "A=1", "--env", "B=22"],
        "null\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["ok"], 9, "A=1\\0B=22\\0");
    let bad = wasmpool(&["run", &probe, "bytes", "--env", "NOEQUALS"], "null\n");
    assert_eq!(bad.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not KEY=VALUE"));
}
