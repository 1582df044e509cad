//! The OS walls around a worker or compile process, raised at its start: die with the host,
//! no inherited file descriptors beyond the protocol pipes, no new privileges, resource
//! limits. (The wasm sandbox is the first wall, not the only one.)

use std::io;

use rustix::process::{getppid, setrlimit, Resource, Rlimit, Signal};

/// Most file descriptors a worker may have open.
const MAX_FDS: u64 = 256;

/// Makes the kernel SIGKILL this process when the host dies; exits at once if the host is
/// already gone.
pub fn die_with_parent() {
    let parent = getppid();
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if getppid() != parent {
        std::process::exit(0);
    }
}

/// Closes every file descriptor above stderr that the host leaked into this process, but
/// those in `keep` (which the host placed there on purpose).
pub fn close_inherited_fds(keep: &[i32]) -> io::Result<()> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && !keep.contains(&fd))
        .collect();
    for fd in fds {
        if rustix::io::fcntl_getfd(
            // SAFETY: only used to ask whether the descriptor is open.
            unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) },
        )
        .is_err()
        {
            continue; // the directory listing's own fd, already closed
        }
        // SAFETY: this runs first thing in the process, before any thread or Rust object
        // owns a descriptor above 2: every open one is inherited from the host, and no code
        // here refers to it.
        drop(unsafe { <rustix::fd::OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(fd) });
    }
    Ok(())
}

/// Forbids gaining privileges (setuid binaries, file capabilities) from here on.
pub fn no_new_privs() -> io::Result<()> {
    rustix::thread::set_no_new_privs(true).map_err(io::Error::from)
}

/// Resource limits: no core dumps, a bounded number of open files, and optionally an
/// address-space ceiling (`memory`, bytes).
pub fn limit_resources(memory: Option<u64>) -> io::Result<()> {
    let set = |r: Resource, n: u64| {
        setrlimit(
            r,
            Rlimit {
                current: Some(n),
                maximum: Some(n),
            },
        )
        .map_err(io::Error::from)
    };
    set(Resource::Core, 0)?;
    set(Resource::Nofile, MAX_FDS)?;
    if let Some(bytes) = memory {
        set(Resource::As, bytes)?;
    }
    Ok(())
}

/// The address space this process has mapped, in bytes (`/proc/self/statm`).
pub fn address_space() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/self/statm: {statm:?}")))?;
    Ok(pages * rustix::param::page_size() as u64)
}

/// Makes a write past the file-size limit fail with `EFBIG` (which a command sees) instead
/// of killing the process with `SIGXFSZ`.
pub fn ignore_file_size_signal() {
    // SAFETY: called on the worker's main thread before it starts any other; SIG_IGN is a
    // valid disposition for SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
