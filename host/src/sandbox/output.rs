//! Captured guest stdout/stderr: an in-memory pipe that keeps the first `cap` bytes and drops
//! the rest, so a guest that floods its output costs bounded memory and still finishes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How many bytes one write may hand us at a time.
const PERMIT: usize = 64 << 10;

/// A capped in-memory output pipe; clones share the buffer.
#[derive(Clone)]
pub struct CappedPipe {
    state: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
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

    fn push(&self, data: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let room = s.cap - s.bytes.len();
        if data.len() > room {
            s.truncated = true;
        }
        let keep = data.len().min(room);
        s.bytes.extend_from_slice(&data[..keep]);
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
}
