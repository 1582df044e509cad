//! The host's handle on one worker process: spawning it with a clean environment, a writer
//! thread feeding its stdin (so the dispatcher never blocks on a full pipe), a reader thread
//! turning its stdout into dispatcher events, and killing and reaping it.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crossbeam_channel::{unbounded, Sender};

use crate::dispatch::Event;
use crate::error::PoolError;
use crate::protocol::{self, Reply};
use crate::worker::scratch::{self, ScratchRoot};

/// The hidden argument that turns the `wasmpool` binary into a worker.
pub const WORKER_ARG: &str = "__worker";

/// Identifies one incarnation of a worker slot: events from an older incarnation are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerRef {
    pub slot: usize,
    pub generation: u64,
}

/// How workers are started: the program, and the pool's scratch directory (if it has one)
/// under which each worker gets a directory of its own.
#[derive(Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub scratch: Option<ScratchRoot>,
}

/// A running worker process.
pub struct WorkerProcess {
    child: Child,
    frames: Option<Sender<Vec<u8>>>,
    /// Its scratch directory, removed once it is reaped.
    scratch: Option<PathBuf>,
}

impl WorkerProcess {
    /// Starts `program __worker VERSION [SCRATCH]` for `who`; its replies arrive on `events`.
    pub(crate) fn spawn(
        launch: &Launch,
        who: WorkerRef,
        events: Sender<Event>,
    ) -> Result<Self, PoolError> {
        let program = launch.program.as_path();
        // Without a directory the worker runs commands without files, and says so.
        let scratch = launch
            .scratch
            .as_ref()
            .and_then(|root| root.worker_dir(who).ok());
        let mut command = child_command(program, WORKER_ARG);
        command.args(&scratch);
        let mut child =
            command
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|source| PoolError::Spawn {
                    program: program.to_path_buf(),
                    source,
                })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");

        let (frames, pending) = unbounded::<Vec<u8>>();
        let spawn_err = |source| PoolError::Spawn {
            program: program.to_path_buf(),
            source,
        };
        std::thread::Builder::new()
            .name(format!("wasmpool-w{}-writer", who.slot))
            .spawn(move || {
                let mut w = BufWriter::with_capacity(64 << 10, stdin);
                while let Ok(frame) = pending.recv() {
                    if w.write_all(&frame).is_err() {
                        return;
                    }
                    while let Ok(frame) = pending.try_recv() {
                        if w.write_all(&frame).is_err() {
                            return;
                        }
                    }
                    if w.flush().is_err() {
                        return;
                    }
                }
                // Dropping the pipe closes the worker's stdin: it exits.
            })
            .map_err(spawn_err)?;
        std::thread::Builder::new()
            .name(format!("wasmpool-w{}-reader", who.slot))
            .spawn(move || {
                let mut r = BufReader::with_capacity(64 << 10, stdout);
                let mut buf = Vec::new();
                loop {
                    // Block for one reply, then take every further reply already buffered:
                    // one event (one wake-up of the dispatcher) per batch.
                    let mut batch = Vec::new();
                    let ended = loop {
                        match protocol::read::<_, Reply>(&mut r, &mut buf) {
                            Ok(Some(reply)) => batch.push(reply),
                            Ok(None) | Err(_) => break true,
                        }
                        if !protocol::frame_buffered(r.buffer()) {
                            break false;
                        }
                    };
                    if !batch.is_empty() && events.send(Event::Replies(who, batch)).is_err() {
                        return;
                    }
                    if ended {
                        let _ = events.send(Event::Exited(who));
                        return;
                    }
                }
            })
            .map_err(spawn_err)?;
        Ok(WorkerProcess {
            child,
            frames: Some(frames),
            scratch,
        })
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Queues one encoded frame for the worker's stdin.
    pub fn send(&self, frame: Vec<u8>) {
        if let Some(frames) = &self.frames {
            // A closed channel means the writer saw the worker die; the reader reports it.
            let _ = frames.send(frame);
        }
    }

    /// Asks the worker to exit once it has finished what it was sent.
    pub fn close(&mut self) {
        self.frames = None;
    }

    /// Kills the worker (SIGKILL) and reaps it.
    pub fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.reap()
    }

    /// Reaps a worker whose protocol stream has ended: it only closes its stdout by exiting,
    /// so this wait is short.
    pub fn reap(mut self) -> Option<ExitStatus> {
        self.close();
        let status = self.child.wait().ok();
        if let Some(dir) = self.scratch.take() {
            scratch::remove_worker_dir(&dir);
        }
        status
    }
}

/// How every child of the host (worker or compile process) starts: `program MODE VERSION`,
/// an empty environment, piped stdin and stdout (the protocol), and a process group of its
/// own, so a terminal's Ctrl-C reaches the host, which then stops its children in order.
pub(crate) fn child_command(program: &Path, mode: &str) -> Command {
    let mut command = Command::new(program);
    command
        .arg(mode)
        .arg(protocol::VERSION.to_string())
        .env_clear()
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    command
}

/// Describes how a child process (`what`: "worker", "compile process") ended, for
/// `WorkerLost` and `LoadError` messages.
pub fn describe_exit(what: &str, pid: u32, status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (_, Some(sig)) => format!(
                "{what} {pid} was killed by signal {sig} ({})",
                signal_name(sig)
            ),
            (Some(protocol::EXIT_VERSION_MISMATCH), _) => format!(
                "{what} {pid} is a wasmpool program of another build than this library (exit status {}); rebuild it (`cargo build --release`) or point WASMPOOL_WORKER at a matching one",
                protocol::EXIT_VERSION_MISMATCH
            ),
            (Some(code), _) => format!("{what} {pid} exited with status {code}"),
            _ => format!("{what} {pid} ended: {s}"),
        },
        None => format!("{what} {pid} ended (status unknown)"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        31 => "SIGSYS",
        _ => "signal",
    }
}
