//! Captured guest stdout/stderr: an in-memory pipe that keeps the first `cap` bytes and drops
//! the rest, so a guest that floods its output costs bounded memory and still finishes. A
//! streaming pipe forwards what it is written (the first `cap` bytes) instead of keeping it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::command::{OutputChunk, STREAM_CHUNK_BYTES};
use crate::protocol::{TaskId, TaskStats};

/// How many bytes one write may hand us at a time.
const PERMIT: usize = 64 << 10;

/// Sends one piece of a task's output to the host as it is written.
pub type Forward = Arc<dyn Fn(TaskId, OutputChunk) + Send + Sync>;

/// A capped in-memory output pipe; clones share the buffer.
#[derive(Clone)]
pub struct CappedPipe {
    state: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    /// Bytes accepted so far (kept or forwarded).
    written: usize,
    truncated: bool,
    /// Forward instead of keeping: where, for which task, and whether this is stderr.
    forward: Option<(Forward, TaskId, bool)>,
}

impl CappedPipe {
    /// A pipe keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedPipe {
            state: Arc::new(Mutex::new(Captured {
                cap,
                ..Captured::default()
            })),
        }
    }

    /// A pipe forwarding the first `cap` bytes written to it through `forward`.
    pub fn streaming(cap: usize, forward: Forward, task: TaskId, stderr: bool) -> Self {
        let pipe = CappedPipe::new(cap);
        pipe.state.lock().unwrap_or_else(|p| p.into_inner()).forward =
            Some((forward, task, stderr));
        pipe
    }

    fn push(&self, data: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let room = s.cap - s.written;
        if data.len() > room {
            s.truncated = true;
        }
        let keep = data.len().min(room);
        s.written += keep;
        match &s.forward {
            Some(_) if keep == 0 => {}
            Some((forward, task, stderr)) => {
                for piece in data[..keep].chunks(STREAM_CHUNK_BYTES) {
                    let bytes = piece.to_vec();
                    forward(
                        *task,
                        if *stderr {
                            OutputChunk::Stderr(bytes)
                        } else {
                            OutputChunk::Stdout(bytes)
                        },
                    );
                }
            }
            None => s.bytes.extend_from_slice(&data[..keep]),
        }
    }

    /// A copy of what was captured so far.
    pub fn snapshot(&self) -> Vec<u8> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes
            .clone()
    }

    /// A task's stats from its two pipes (taken) and its counters; the worker loop fills in
    /// which worker it was.
    pub fn stats(
        stdout: &CappedPipe,
        stderr: &CappedPipe,
        fuel_used: u64,
        duration: std::time::Duration,
    ) -> TaskStats {
        let (stdout, out_cut) = stdout.take();
        let (stderr, err_cut) = stderr.take();
        TaskStats {
            worker: 0,
            worker_rss: 0,
            peak_memory: 0,
            fuel_used,
            duration,
            stdout,
            stderr,
            output_truncated: out_cut || err_cut,
        }
    }

    /// The captured bytes and whether any were dropped.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut s.bytes), s.truncated)
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_cap_bytes_and_flags_the_rest() {
        let mut p = CappedPipe::new(5);
        OutputStream::write(&mut p, Bytes::from_static(b"abc")).unwrap();
        OutputStream::write(&mut p, Bytes::from_static(b"defg")).unwrap();
        assert_eq!(p.take(), (b"abcde".to_vec(), true));
    }

    #[test]
    fn a_streaming_pipe_forwards_up_to_its_cap_and_keeps_nothing() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let forward: Forward = Arc::new(move |task, chunk| tx.send((task, chunk)).unwrap());
        let mut p = CappedPipe::streaming(4, forward, 7, true);
        OutputStream::write(&mut p, Bytes::from_static(b"abc")).unwrap();
        OutputStream::write(&mut p, Bytes::from_static(b"def")).unwrap();
        OutputStream::write(&mut p, Bytes::from_static(b"g")).unwrap();
        drop(p.take());
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            got,
            [
                (7, OutputChunk::Stderr(b"abc".to_vec())),
                (7, OutputChunk::Stderr(b"d".to_vec()))
            ]
        );
        assert_eq!(p.take(), (Vec::new(), true));
    }
}
