//! The host's handle on one worker process: spawning it with a clean environment, its
//! request pipe (`Outbox`), the thread reading its replies (`replies`), and killing and
//! reaping it (the blocking part on the `reaper`'s threads, never the dispatcher's).

use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::dispatch::Event;
use crate::error::PoolError;
use crate::pool::task::Completion;
use crate::protocol::{self, TaskId};
use crate::walls::harden::WorkerUser;
use crate::worker::replies::{read_replies, Answers};
use crate::worker::requests::Outbox;
use crate::worker::scratch::ScratchRoot;

/// The hidden argument that turns the `wasmpool` binary into a worker.
pub const WORKER_ARG: &str = "__worker";

/// Identifies one incarnation of a worker slot: events from an older incarnation are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerRef {
    pub slot: usize,
    pub generation: u64,
}

/// How workers are started: the program, the user they run as (when the host is root), and
/// the pool's scratch directory (if it has one) under which each worker gets a directory of
/// its own.
#[derive(Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub user: Option<WorkerUser>,
    pub scratch: Option<ScratchRoot>,
    /// The pool's mounts (resolved): every worker's Landlock ruleset allows them.
    pub mounts: Vec<crate::mount::Mount>,
}

/// A running worker process.
pub struct WorkerProcess {
    child: Child,
    /// Its request pipe; `None` once closed.
    outbox: Option<Outbox>,
    /// Its cancel pipe (non-blocking).
    cancels: OwnedFd,
    /// Its descriptor socket (non-blocking, send only): compiled modules' files.
    descriptors: UnixDatagram,
    /// Tasks sent and not answered: the reader thread delivers their outcomes.
    answers: Answers,
    /// Its scratch directory, removed once it is reaped (by whoever [`Self::end`] hands it
    /// to).
    scratch: Option<PathBuf>,
}

impl WorkerProcess {
    /// Starts `program __worker HANDSHAKE USER [SCRATCH]` for `who`; its replies arrive on `events`.
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
        let spawn_err = |source| PoolError::Spawn {
            program: program.to_path_buf(),
            source,
        };
        let mut command = child_command(program, WORKER_ARG, launch.user).map_err(spawn_err)?;
        // `SCRATCH MOUNTS`: an empty SCRATCH for none; MOUNTS as JSON.
        command
            .arg(scratch.as_deref().unwrap_or(Path::new("")))
            .arg(crate::mount::to_arg(&launch.mounts));
        let (cancel_read, cancels) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| spawn_err(e.into()))?;
        rustix::fs::fcntl_setfl(&cancels, rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| spawn_err(e.into()))?;
        let cancel_fd = cancel_read.as_raw_fd();
        // The descriptor socket: the worker may only receive on its end, the host only send.
        let (descriptors, their_end) = UnixDatagram::pair().map_err(spawn_err)?;
        their_end.shutdown(Shutdown::Write).map_err(spawn_err)?;
        descriptors.shutdown(Shutdown::Read).map_err(spawn_err)?;
        descriptors.set_nonblocking(true).map_err(spawn_err)?;
        let their_fd = their_end.as_raw_fd();
        // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
        // are allowed: fcntl and dup2 are. It places the cancel pipe at `CANCEL_FD` and the
        // descriptor socket at `DESCRIPTOR_FD`, open across exec (dup2 clears
        // close-on-exec), by way of copies above both (closed on exec), so that neither
        // overwrites the other wherever they were.
        unsafe {
            command.pre_exec(move || {
                let cancel = libc::fcntl(cancel_fd, libc::F_DUPFD_CLOEXEC, 10);
                let socket = libc::fcntl(their_fd, libc::F_DUPFD_CLOEXEC, 10);
                if cancel < 0
                    || socket < 0
                    || libc::dup2(cancel, protocol::CANCEL_FD) < 0
                    || libc::dup2(socket, protocol::DESCRIPTOR_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(spawn_err)?;
        drop(cancel_read);
        drop(their_end);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");

        let outbox =
            Outbox::start(stdin, format!("wasmpool-w{}-writer", who.slot)).map_err(spawn_err)?;
        let answers = Answers::default();
        let replies = answers.clone();
        std::thread::Builder::new()
            .name(format!("wasmpool-w{}-reader", who.slot))
            .spawn(move || read_replies(stdout, who, &replies, &events))
            .map_err(spawn_err)?;
        Ok(WorkerProcess {
            child,
            outbox: Some(outbox),
            cancels,
            descriptors,
            answers,
            scratch,
        })
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Registers tasks about to be sent, `(wire id, completion, calls)` each, so their
    /// replies reach their completions directly.
    pub(crate) fn expect(&self, tasks: impl Iterator<Item = (TaskId, Arc<Completion>, u64)>) {
        self.answers.expect(tasks);
    }

    /// Sends encoded frames to the worker's stdin. (A dead worker's pipe takes nothing; its
    /// reader thread reports the death.)
    pub fn send(&self, frames: &[u8]) {
        if let Some(outbox) = &self.outbox {
            outbox.send(frames);
        }
    }

    /// Passes the worker `file`, the code of `module` for `metering` (see
    /// [`protocol::DESCRIPTOR_FD`]), ahead of the `LoadFile` frame that asks it to map it.
    pub fn pass_file(
        &self,
        file: &std::fs::File,
        module: crate::module::ModuleId,
        metering: crate::sandbox::Metering,
    ) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        protocol::send_descriptor(self.descriptors.as_fd(), file.as_fd(), module, metering)
    }

    /// Asks the worker to stop `task` now if it runs, or to skip it when it comes. A cancel
    /// that does not fit in the pipe (thousands unread) is dropped: the dispatcher kills a
    /// worker whose cancelled task does not stop in time anyway.
    pub fn cancel(&self, task: TaskId) {
        let mut frame = Vec::new();
        if protocol::encode(&protocol::RequestRef::Cancel { task }, &mut frame).is_ok() {
            let _ = rustix::io::write(&self.cancels, &frame);
        }
    }

    /// Asks the worker to exit once it has finished what it was sent.
    pub fn close(&mut self) {
        self.outbox = None;
    }

    /// Sends SIGKILL (it does not wait: [`Self::end`] reaps).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Ends the process: closes its request pipe, waits up to `grace` for it to exit, kills
    /// it if it has not, and reaps it. Returns how it ended and its scratch directory, for
    /// the caller to remove. Blocks: called on a reaper thread.
    pub(crate) fn end(mut self, grace: Duration) -> (Option<ExitStatus>, Option<PathBuf>) {
        self.close();
        let status = match self.wait_for(grace) {
            Some(status) => Some(status),
            None => {
                self.kill();
                self.child.wait().ok()
            }
        };
        (status, self.scratch.take())
    }

    /// Waits up to `grace` for the process to exit; `None` if it still runs.
    fn wait_for(&mut self, grace: Duration) -> Option<ExitStatus> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let deadline = Instant::now() + grace;
        // A pidfd becomes readable when the process exits (Linux 5.3); without one, look
        // every 10 ms.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::PidfdFlags::empty(),
        )
        .ok();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.child.try_wait().ok().flatten();
            }
            match &pidfd {
                Some(fd) => {
                    let timeout = Timespec::try_from(left).ok();
                    let _ = poll(&mut [PollFd::new(fd, PollFlags::IN)], timeout.as_ref());
                }
                None => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
        }
    }
}

/// How every child of the host (worker or compile process) starts: `program MODE HANDSHAKE
/// USER` (the host's [`protocol::Handshake`]; `UID:GID` to become, or `-`), an empty
/// environment, piped stdin and stdout (the protocol), and a process group of its own, so a
/// terminal's Ctrl-C reaches the host, which then stops its children in order. Fails only
/// when the host cannot make its own engine (for the handshake).
pub(crate) fn child_command(
    program: &Path,
    mode: &str,
    user: Option<WorkerUser>,
) -> std::io::Result<Command> {
    let handshake = protocol::Handshake::ours().map_err(std::io::Error::other)?;
    let mut command = Command::new(program);
    command
        .arg(mode)
        .arg(handshake.arg())
        .arg(WorkerUser::to_arg(user))
        .env_clear()
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    Ok(command)
}

/// Blocks SIGPIPE in the calling thread, which writes to children's pipes: a write to a
/// child that died then fails with EPIPE (its reader reports the death) instead of killing
/// the host where SIGPIPE is fatal (the CLI restores its default; so may an embedder).
pub(crate) fn block_sigpipe() {
    // SAFETY: changes only the calling thread's signal mask, from a set initialized by
    // sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
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
                "{what} {pid} is a wasmpool program of another build than this library ({}), and refused to run (exit status {}; it printed its own on stderr); {}",
                protocol::Handshake::ours().map_or_else(|e| e, |h| h.to_string()),
                protocol::EXIT_VERSION_MISMATCH,
                protocol::MISMATCH_HINT
            ),
            (Some(protocol::EXIT_STARTED_LATE), _) => format!(
                "{what} {pid} refused to run: its program called wasmpool::worker_main() after starting threads (exit status {}); call it first thing in a plain `fn main`, before any thread or async runtime starts",
                protocol::EXIT_STARTED_LATE
            ),
            (Some(protocol::EXIT_STUCK), _) => format!(
                "{what} {pid} stopped itself: a call of a batch was stuck in a host call past its time limit"
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_refusing_worker_is_described_with_the_cause_and_the_cure() {
        let exit = |code: i32| Some(ExitStatus::from_raw(code << 8));
        let mismatch = describe_exit("worker", 7, exit(protocol::EXIT_VERSION_MISMATCH));
        let ours = protocol::Handshake::ours().unwrap().to_string();
        assert!(
            mismatch.contains(&ours) && mismatch.contains("worker_main()"),
            "{mismatch}"
        );
        let late = describe_exit("worker", 7, exit(protocol::EXIT_STARTED_LATE));
        assert!(
            late.contains("after starting threads") && late.contains("fn main"),
            "{late}"
        );
    }
}
