//! The host's side of one worker's request pipe. The dispatcher writes frames straight into
//! the pipe (non-blocking: one system call, and the worker wakes at once); whatever does not
//! fit goes to a backlog that a writer thread drains as the worker reads, so the dispatcher
//! never blocks on a full pipe and frames stay in order.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::io::{write, Errno};

/// Where the dispatcher sends one worker's request frames.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    pipe: OwnedFd,
    state: Mutex<State>,
    /// Signals the writer thread: a backlog to drain, or the end.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Bytes not written yet, in order.
    backlog: Vec<u8>,
    /// The writer thread holds bytes taken from the backlog and is writing them.
    writing: bool,
    /// No more frames: the writer ends once the backlog is out (closing the pipe).
    closed: bool,
    /// A write failed: the worker is gone (its reader thread reports how).
    broken: bool,
}

impl Outbox {
    /// Takes over the worker's stdin and starts its writer thread (named `name`).
    pub(crate) fn start(pipe: impl Into<OwnedFd>, name: String) -> std::io::Result<Outbox> {
        let pipe = pipe.into();
        let flags = fcntl_getfl(&pipe)?;
        fcntl_setfl(&pipe, flags | OFlags::NONBLOCK)?;
        let shared = Arc::new(Shared {
            pipe,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            super::process::block_sigpipe();
            writer.drain()
        })?;
        Ok(Outbox { shared })
    }

    /// Sends `frames` (whole encoded frames) after everything sent before.
    pub(crate) fn send(&self, frames: &[u8]) {
        let mut state = self.shared.lock();
        if state.broken || state.closed {
            return;
        }
        let mut rest = frames;
        if state.backlog.is_empty() && !state.writing {
            match write_some(&self.shared.pipe, rest) {
                Ok(n) => rest = &rest[n..],
                Err(_) => {
                    state.broken = true;
                    return;
                }
            }
        }
        if !rest.is_empty() {
            state.backlog.extend_from_slice(rest);
            drop(state);
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Outbox {
    /// Ends the stream: once what was sent is written, the pipe closes and the worker, at
    /// the end of its input, exits.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: writes the backlog as the worker makes room, until closed.
    fn drain(&self) {
        let mut state = self.lock();
        loop {
            if state.broken || (state.closed && state.backlog.is_empty()) {
                return;
            }
            if state.backlog.is_empty() {
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let bytes = std::mem::take(&mut state.backlog);
            state.writing = true;
            drop(state);
            let result = write_all(&self.pipe, &bytes);
            state = self.lock();
            state.writing = false;
            if result.is_err() {
                state.broken = true;
            }
        }
    }
}

/// Writes what fits now; 0 when the pipe is full.
fn write_some(pipe: &OwnedFd, bytes: &[u8]) -> Result<usize, Errno> {
    loop {
        match write(pipe, bytes) {
            Ok(n) => return Ok(n),
            Err(Errno::AGAIN) => return Ok(0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes`, waiting for room as needed.
fn write_all(pipe: &OwnedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        let n = write_some(pipe, bytes)?;
        bytes = &bytes[n..];
        if n == 0 {
            let mut fds = [PollFd::new(pipe, PollFlags::OUT)];
            match poll(&mut fds, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn frames_larger_than_the_pipe_arrive_whole_and_in_order() {
        let (reader, writer) = std::io::pipe().unwrap();
        let outbox = Outbox::start(writer, "test-writer".into()).unwrap();
        // Several pipes' worth, sent while nobody reads: the send never blocks.
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10_000 + i as usize]).collect();
        for c in &chunks {
            outbox.send(c);
        }
        drop(outbox);
        let mut got = Vec::new();
        let mut reader = reader;
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, chunks.concat());
    }

    #[test]
    fn a_closed_reader_breaks_the_outbox_without_blocking() {
        let (reader, writer) = std::io::pipe().unwrap();
        let outbox = Outbox::start(writer, "test-writer".into()).unwrap();
        drop(reader);
        for _ in 0..100 {
            outbox.send(&[0; 100_000]);
        }
        assert!(outbox.shared.lock().broken);
    }
}
