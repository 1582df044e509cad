//! The OS walls around a worker or compile process, raised at its start: no privileges (an
//! unprivileged user when the host is root, no capabilities, not dumpable), die with the
//! host, no inherited file descriptors beyond the protocol pipes, no new privileges,
//! resource limits. (The wasm sandbox is the first wall, not the only one.)

use std::io;

use rustix::process::{getppid, setrlimit, Resource, Rlimit, Signal};
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The user and group a pool's workers and compile processes run as when the host runs as
/// root (see [`PoolBuilder::worker_user`](crate::PoolBuilder::worker_user)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerUser {
    pub uid: u32,
    pub gid: u32,
}

impl WorkerUser {
    /// `nobody` (65534:65534), the default.
    pub const NOBODY: WorkerUser = WorkerUser {
        uid: 65534,
        gid: 65534,
    };

    /// The command-line form a child process is given: `UID:GID`, or `-` for none.
    pub(crate) fn to_arg(user: Option<WorkerUser>) -> String {
        match user {
            Some(u) => format!("{}:{}", u.uid, u.gid),
            None => "-".into(),
        }
    }

    /// Parses the form `to_arg` writes.
    pub fn from_arg(arg: &str) -> io::Result<Option<WorkerUser>> {
        if arg == "-" {
            return Ok(None);
        }
        let parsed = arg
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        match parsed {
            Some((uid, gid)) => Ok(Some(WorkerUser { uid, gid })),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad worker user {arg:?} (expected UID:GID or -)"),
            )),
        }
    }
}

/// Gives up every privilege for good, while the process is still single-threaded (the
/// calls below change the calling thread's credentials only): with `user` (the host runs as
/// root), the supplementary groups are cleared and the group and user ids all become the
/// user's; every capability is removed from the bounding set (while `CAP_SETPCAP` still
/// allows it: a process started without it has nothing to drop that `no_new_privs` does not
/// already make unusable) and from the ambient, effective, permitted and inheritable sets.
/// A credential change clears the parent-death signal: call [`die_with_parent`] after.
pub fn drop_privileges(user: Option<WorkerUser>) -> io::Result<()> {
    use rustix::process::{Gid, Uid};
    use rustix::thread as t;
    let failed = |what: &str, e: rustix::io::Errno| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot drop privileges ({what}): {e}"),
        )
    };
    if let Some(u) = user {
        let gid = Gid::from_raw(u.gid);
        t::set_thread_groups(&[]).map_err(|e| failed("clearing the groups", e))?;
        t::set_thread_res_gid(gid, gid, gid).map_err(|e| failed("setting the group", e))?;
    }
    let held = t::capabilities(None).map_err(|e| failed("reading the capabilities", e))?;
    if held.effective.contains(CapabilitySet::SETPCAP) {
        // Every capability the kernel knows, up to the first number it refuses.
        for cap in 0..64 {
            match t::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << cap))
            {
                Ok(()) => {}
                Err(rustix::io::Errno::INVAL) => break,
                Err(e) => return Err(failed("emptying the bounding set", e)),
            }
        }
    }
    if let Some(u) = user {
        let uid = Uid::from_raw(u.uid);
        t::set_thread_res_uid(uid, uid, uid).map_err(|e| failed("setting the user", e))?;
    }
    match t::clear_ambient_capability_set() {
        // EINVAL: a kernel older than 4.3, without ambient capabilities.
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(failed("clearing the ambient set", e)),
    }
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    t::set_capabilities(None, none).map_err(|e| failed("clearing the capabilities", e))?;
    Ok(())
}

/// Makes the process non-dumpable: no core dump, and a process of the same user can neither
/// ptrace it nor read its memory through `/proc/<pid>/mem` (its `/proc` files become
/// root's). Call it after opening this process's own `/proc/self` files that need the
/// owner's permission (`pagemap`).
pub fn not_dumpable() -> io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(io::Error::from)
}

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
