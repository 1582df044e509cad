//! Compiling untrusted bytes outside the host: a short-lived compile process
//! (`wasmpool __compile HANDSHAKE USER MEMORY METERING`) per module load and code variant, with its own wall-clock and memory limit.
//! Cranelift cannot be interrupted and a crafted module can make it run long or allocate
//! much; here that costs one killed process and a `LoadError`, never the host or a worker.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::error::LoadError;
use crate::module::Export;
use crate::protocol::{self, CompileReply};
use crate::sandbox::Metering;
use crate::walls::harden;
use crate::worker::process::{block_sigpipe, child_command, describe_exit};

/// The hidden argument that turns the `wasmpool` binary into a compile process.
pub const COMPILE_ARG: &str = "__compile";

/// Limits of one compilation.
#[derive(Clone, Copy, Debug)]
pub struct CompileLimits {
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Address-space limit of the compile process, in bytes.
    pub memory: u64,
}

/// What a compile process gives back for a module it compiled.
pub(crate) struct Compiled {
    pub artifact: Vec<u8>,
    pub exports: Vec<Export>,
    /// The proposals it uses.
    pub proposals: Vec<String>,
    /// Its function imports the sandbox does not provide.
    pub unknown_imports: Vec<(String, String)>,
}

/// The compile process's stderr kept for error messages.
const STDERR_KEEP: usize = 4 << 10;

/// The compile process's argument that makes it compile the module instrumented for an
/// initializer snapshot (Wizer's `instrument`: every memory and mutable global exported)
/// instead of the module itself.
pub const INSTRUMENT_ARG: &str = "instrument";

/// Compiles `bytes` (instrumented for a snapshot first when `instrument` is set) for
/// `metering` in a compile process started from `program` (as `user`, when the host is
/// root).
pub(crate) fn compile(
    program: &Path,
    user: Option<harden::WorkerUser>,
    bytes: &[u8],
    metering: Metering,
    limits: CompileLimits,
    instrument: bool,
) -> Result<Compiled, LoadError> {
    let failed = |message: String| LoadError::CompileFailed { message };
    let mut command = child_command(program, COMPILE_ARG, user)
        .map_err(|e| failed(format!("cannot start the compile process: {e}")))?;
    command.arg(limits.memory.to_string()).arg(metering.tag());
    if instrument {
        command.arg(INSTRUMENT_ARG);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().map_err(|e| {
        failed(format!(
            "cannot start the compile process {}: {e}",
            program.display()
        ))
    })?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");

    let input = bytes.to_vec();
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| failed(format!("cannot start a thread: {e}")))
    };
    // Closing stdin (dropping it) tells the compile process the module is complete.
    spawn(
        "wasmpool-compile-in",
        Box::new(move || {
            block_sigpipe();
            drop(stdin.write_all(&input))
        }),
    )?;
    spawn(
        "wasmpool-compile-out",
        Box::new(move || {
            let mut buf = Vec::new();
            let _ = reply_tx.send(protocol::read::<_, CompileReply>(&mut stdout, &mut buf));
        }),
    )?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr)
            .take(STDERR_KEEP as u64)
            .read_to_end(&mut text);
        String::from_utf8_lossy(&text).trim().to_string()
    });

    let reply = reply_rx.recv_timeout(limits.timeout);
    if reply.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().ok();
    let stderr = stderr_reader.join().unwrap_or_default();
    match reply {
        Ok(Ok(Some(CompileReply::Compiled {
            artifact,
            exports,
            proposals,
            unknown_imports,
        }))) => Ok(Compiled {
            artifact,
            exports,
            proposals,
            unknown_imports,
        }),
        Ok(Ok(Some(CompileReply::Invalid { message }))) => Err(LoadError::Invalid { message }),
        Ok(Ok(Some(CompileReply::OverLimit { message }))) => Err(LoadError::OverLimit { message }),
        Ok(Ok(Some(CompileReply::UnsupportedImport { module, name }))) => {
            Err(LoadError::UnsupportedImport { module, name })
        }
        Err(_) => Err(LoadError::CompileTimeout {
            limit: limits.timeout,
        }),
        // An allocation that failed under the process's address-space limit: the compiler's
        // (Rust aborts, "memory allocation of N bytes failed") or reading the module (an
        // `io::ErrorKind::OutOfMemory` the process reports as "out of memory").
        Ok(_) if stderr.contains("memory allocation of") || stderr.ends_with(": out of memory") => {
            Err(LoadError::CompileMemory {
                limit: limits.memory,
            })
        }
        Ok(_) => Err(failed(format!(
            "{}; stderr: {stderr}",
            describe_exit("compile process", pid, status)
        ))),
    }
}
