//! A binary that embeds the pool is its own worker program (`wasmpool::worker_main()`):
//! `examples/embedded.rs`, run where no `wasmpool` binary can be found, and the handshake
//! that keeps a worker program of another build out.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wasmpool::protocol::{Handshake, EXIT_STARTED_LATE};
use wasmpool::PoolError;

const OUTPUT: &str = "squares: [1, 4, 9, 16]\ncubes: [1, 8, 27, 64]\n";

/// A copy of the example in a directory of its own (`DIR/bin/embedded`: nothing beside it or
/// in its parent), and an empty directory to serve as `PATH`.
fn lone_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    lone_copy_of("embedded")
}

/// [`lone_copy`] of the example `name`.
fn lone_copy_of(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&empty).unwrap();
    let copy = bin.join(name);
    std::fs::copy(common::example(name), &copy).unwrap();
    (dir, copy, empty)
}

/// `program` with no way to find a `wasmpool` binary: no `$WASMPOOL_WORKER`, `PATH` empty.
fn alone(program: &Path, path: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("XDG_CACHE_HOME", common::cache_home());
    c.env_remove("WASMPOOL_WORKER")
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn an_embedding_binary_is_its_own_worker_program() {
    let (_dir, copy, empty) = lone_copy();
    let out = alone(&copy, &empty).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), OUTPUT, "{stderr}");
}

#[test]
fn a_tokio_service_holds_one_pool_meets_its_bound_and_shuts_down_alone() {
    // `examples/tokio_service.rs` checks its own results and exits 1 on a wrong one; it
    // runs here where its own executable is the only worker program there is.
    let (_dir, copy, empty) = lone_copy_of("tokio_service");
    let mut child = alone(&copy, &empty).spawn().unwrap();
    let watchdog = kill_after(child.id(), Duration::from_secs(120));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stdout}{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[0],
        "4000 calls from 16 tasks: sum of squares 21325334000"
    );
    assert!(
        lines[1].starts_with("try_submit refused: the pool's queue is full (64 calls waiting")
            && lines[1].contains("(queued: 64,"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("shut down cleanly: "), "{stdout}");
}

#[test]
fn replacing_the_binary_on_disk_does_not_stop_it_starting_workers() {
    let (_dir, copy, empty) = lone_copy();
    let mut child = alone(&copy, &empty)
        .arg("--wait")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let watchdog = kill_after(child.id(), Duration::from_secs(120));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("waiting") {
        let before = seen.len();
        stdout.read_line(&mut seen).unwrap();
        assert!(seen.len() > before, "the example ended early: {seen}");
    }
    // A deploy: the file is removed and another put in its place.
    std::fs::remove_file(&copy).unwrap();
    std::fs::write(&copy, "#!/bin/sh\nexit 99\n").unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(
        format!("{seen}{rest}"),
        OUTPUT.replace("\ncubes", "\nwaiting for a line on stdin\ncubes"),
        "{stderr}"
    );
}

#[test]
fn a_worker_whose_threads_started_before_worker_main_refuses_to_run() {
    let (_dir, copy, empty) = lone_copy();
    let host = Handshake::ours().unwrap().arg();
    for mode in ["__worker", "__compile"] {
        let out = alone(&copy, &empty)
            .env("EMBEDDED_THREAD_FIRST", "1")
            .args([mode, &host, "-", "1000000", "epochs"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_STARTED_LATE),
            "{mode}: {stderr}"
        );
        assert!(
            stderr.contains("found 2 threads") && stderr.contains("before any thread"),
            "{mode}: {stderr}"
        );
    }
    // Without the early thread the same program serves: here, answering the handshake.
    let out = alone(&copy, &empty).arg("__handshake").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host);
}

#[test]
fn a_pool_refuses_a_worker_program_of_another_build_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Handshake::ours().unwrap();
    let other = Handshake {
        version: "0.0.0-other".into(),
        ..ours.clone()
    };
    for (name, script, worker) in [
        (
            "other",
            format!("#!/bin/sh\necho '{}'\n", other.arg()),
            other.to_string(),
        ),
        (
            "old",
            "#!/bin/sh\necho 'error: unrecognized subcommand' >&2\nexit 2\n".into(),
            "no handshake".into(),
        ),
    ] {
        let program = dir.path().join(name);
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        match common::builder().worker_program(&program).build() {
            Err(e @ PoolError::WorkerMismatch { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&worker)
                        && message.contains(&ours.to_string())
                        && message.contains("worker_main()")
                        && message.contains("WASMPOOL_WORKER"),
                    "{message}"
                );
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(_) => panic!("{name}: a pool of a mismatched worker program was built"),
        }
    }
    // The right program passes.
    common::builder().build().unwrap().shutdown();
}

/// Kills process `pid` if the returned guard is still alive after `limit` (a test that
/// would otherwise hang on a stuck child fails instead).
fn kill_after(pid: u32, limit: Duration) -> crossbeam_channel::Sender<()> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    tx
}
