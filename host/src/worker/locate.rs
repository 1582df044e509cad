//! Finding the worker program: workers are a program that calls
//! [`worker_main`](crate::worker_main) started with a hidden argument — the host's own
//! executable when it called `worker_main()`, else the `wasmpool` binary — and checking that
//! it is of this library's build.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::PoolError;
use crate::protocol::{Handshake, HANDSHAKE_ARG};

/// Environment variable naming the worker program explicitly.
pub const WORKER_ENV: &str = "WASMPOOL_WORKER";

const BINARY: &str = "wasmpool";

/// Finds the worker program when [`PoolBuilder::worker_program`](crate::PoolBuilder::worker_program)
/// names none, in order: `$WASMPOOL_WORKER`; the current executable, when it called
/// [`worker_main`](crate::worker_main) (through the descriptor opened then); the current
/// executable if it is `wasmpool`; `wasmpool` beside the current executable or in its parent
/// directory (cargo's `target/<profile>/{deps,examples}` layout); `wasmpool` on `PATH`.
pub fn worker_program() -> Result<PathBuf, PoolError> {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os(WORKER_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        searched.push(format!("${WORKER_ENV}={}", p.display()));
    }
    if let Some(me) = crate::child::entry::self_program() {
        return Ok(me);
    }
    searched.push("this executable (it did not call wasmpool::worker_main())".into());
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_stem().is_some_and(|s| s == BINARY) {
            return Ok(exe);
        }
        let dir = exe.parent().unwrap_or(Path::new("."));
        for candidate in [dir.join(BINARY), dir.join("..").join(BINARY)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate.display().to_string());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(BINARY);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        searched.push("PATH".into());
    }
    Err(PoolError::WorkerNotFound {
        searched: searched.join(", "),
    })
}

/// Longest a worker program may take to answer [`check`]'s handshake question.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes sure `program` is of this library's build (its [`Handshake`] equals ours) before a
/// pool starts it: a worker of another build would refuse every task, each time saying so
/// only on stderr. The host's own executable (from [`worker_main`](crate::worker_main)) is
/// not asked: it is this build.
pub(crate) fn check(program: &Path) -> Result<(), PoolError> {
    if crate::child::entry::self_program().as_deref() == Some(program) {
        return Ok(());
    }
    let ours = Handshake::ours().map_err(PoolError::Engine)?;
    let mut child = Command::new(program)
        .arg(HANDSHAKE_ARG)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| PoolError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stdout).take(1 << 10).read_to_end(&mut text);
        let _ = tx.send(text);
    });
    let answer = rx.recv_timeout(HANDSHAKE_TIMEOUT);
    let _ = child.kill();
    let status = child.wait().ok();
    let worker = match answer {
        Ok(text) => match Handshake::parse(&String::from_utf8_lossy(&text)) {
            Some(theirs) if theirs == *ours => return Ok(()),
            Some(theirs) => theirs.to_string(),
            None => format!(
                "no handshake: `{} {HANDSHAKE_ARG}` printed {:?} and {}; a wasmpool from before the handshake, or not a worker program",
                program.display(),
                String::from_utf8_lossy(&text[..text.len().min(100)]).trim(),
                status.map_or("ended".into(), |s| s.to_string())
            ),
        },
        Err(_) => format!(
            "no handshake: `{} {HANDSHAKE_ARG}` did not answer within {HANDSHAKE_TIMEOUT:?}",
            program.display()
        ),
    };
    Err(PoolError::WorkerMismatch {
        program: program.to_path_buf(),
        worker,
        host: ours.to_string(),
    })
}
