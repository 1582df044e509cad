//! Finding the worker program: workers are the `wasmpool` binary started with a hidden
//! argument, so a library user's process (a test, an example, a service) must find it.

use std::path::{Path, PathBuf};

use crate::error::PoolError;

/// Environment variable naming the worker program explicitly.
pub const WORKER_ENV: &str = "WASMPOOL_WORKER";

const BINARY: &str = "wasmpool";

/// Finds the worker program, in order: `$WASMPOOL_WORKER`; the current executable if it is
/// `wasmpool`; `wasmpool` beside the current executable or in its parent directory (cargo's
/// `target/<profile>/{deps,examples}` layout); `wasmpool` on `PATH`.
pub fn worker_program() -> Result<PathBuf, PoolError> {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os(WORKER_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        searched.push(format!("${WORKER_ENV}={}", p.display()));
    }
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
