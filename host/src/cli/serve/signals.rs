//! SIGTERM and SIGINT as an event the server can await, through a self-pipe: the handler
//! writes one byte to a pipe, a thread blocked on its other end tells the runtime.
//!
//! Not `tokio::signal`: its `signal` feature gives every tokio runtime of the binary a
//! signal driver with a socket pair, the one wasmtime-wasi starts inside each worker
//! included, and a worker holds no socket (`tests/isolation.rs`). A handler set here is
//! reset by `execve`, so workers and compile processes keep the default dispositions.

use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use rustix::pipe::{pipe_with, PipeFlags};

/// The pipe's write end, for the handler.
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    let byte = 1u8;
    // SAFETY: write(2) is async-signal-safe; `fd` is the pipe's write end, open for the
    // life of the process (never closed), and the buffer is one valid byte. A full pipe
    // (non-blocking) only loses a byte the reader does not need.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// Ignores SIGPIPE: a client gone mid-answer must be a write error, not the server's death
/// (the CLI restores the default disposition for `wasmpool … | head`). Workers run with it
/// ignored anyway (Rust's runtime ignores it before `worker_main` runs).
pub fn ignore_sigpipe() {
    // SAFETY: sets a signal's disposition to SIG_IGN, a valid one for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Installs the handlers; the receiver resolves at the first SIGTERM or SIGINT.
pub fn termination() -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .context("cannot make the signal pipe")?;
    rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::empty())
        .context("cannot make the signal pipe")?;
    WRITE_END.store(write.into_raw_fd(), Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only calls
        // write(2), which is async-signal-safe, on a descriptor stored before it is set.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot handle SIGTERM");
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wasmpool-signals".into())
        .spawn(move || {
            // The first signal starts the drain; the thread then keeps the pipe's read end
            // open (a later signal's write must not fail) for the life of the process.
            let mut tx = Some(tx);
            let mut byte = [0u8; 1];
            loop {
                match rustix::io::read(&read, &mut byte) {
                    Ok(1) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    _ => break,
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(rx)
}
