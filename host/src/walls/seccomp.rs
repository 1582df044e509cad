//! The seccomp wall: once a worker (or compile process) has started, it may only make the
//! system calls that running wasm needs. Anything that reaches out — `execve`, sockets
//! (but `recvmsg` on the descriptor socket the host gave it),
//! `ptrace`, `kill`, new processes — kills the process (`SIGSYS`), which the host reports as
//! `WorkerLost` and replaces. File-system calls fail with `EACCES` instead, since library
//! code probes the file system and copes with a refusal — unless Landlock confines the
//! process to its scratch directory (`walls::landlock`): then they are allowed, for the
//! files of command tasks. Calls that change a file's metadata (mode, owner, times), which
//! Landlock does not govern, always fail with `EPERM`.
//!
//! Only x86-64 has a filter for now; elsewhere [`install`] does nothing and says so.

use std::io;

/// Installs the filter on every thread of this process; `files` allows the file-system
/// calls (only when Landlock confines them).
#[cfg(target_arch = "x86_64")]
pub fn install(files: bool) -> io::Result<()> {
    use std::collections::BTreeMap;

    use seccompiler::{
        apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
        SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
    };

    fn err(e: impl std::fmt::Debug) -> io::Error {
        io::Error::other(format!("seccomp: {e:?}"))
    }
    let arg_eq = |arg: u8, value: u64| -> io::Result<SeccompRule> {
        SeccompRule::new(vec![SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::Eq,
            value,
        )
        .map_err(err)?])
        .map_err(err)
    };
    let pid = std::process::id() as u64;
    let thread_flag = libc::CLONE_THREAD as u64;

    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    // New threads only, never new processes.
    allowed.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(thread_flag),
            thread_flag,
        )
        .map_err(err)?])
        .map_err(err)?],
    );
    // Signals to itself only (abort), naming its threads, reading its own limits.
    allowed.insert(libc::SYS_tgkill, vec![arg_eq(0, pid)?]);
    allowed.insert(libc::SYS_prctl, vec![arg_eq(0, libc::PR_SET_NAME as u64)?]);
    // prlimit64 on itself only (pid 0; a pid_t, so the low 32 bits): reading its own limits,
    // lowering and restoring its file-size limit around a command. Any other pid is refused
    // with EPERM by the filter below, so this one lets it through.
    let cond = |arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, len, op, value).map_err(err)
    };
    let itself = || cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0);
    let other_process = || cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0);
    let read_own = SeccompRule::new(vec![
        itself()?,
        cond(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)?,
    ])
    .map_err(err)?;
    let own_file_size = SeccompRule::new(vec![
        itself()?,
        cond(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::RLIMIT_FSIZE as u64,
        )?,
    ])
    .map_err(err)?;
    let to_refuse = SeccompRule::new(vec![other_process()?]).map_err(err)?;
    allowed.insert(
        libc::SYS_prlimit64,
        vec![read_own, own_file_size, to_refuse],
    );
    // Finding the pages a task wrote, on the `/proc/self/pagemap` opened before the walls.
    allowed.insert(libc::SYS_ioctl, vec![arg_eq(1, PAGEMAP_SCAN)?]);
    // Receiving compiled modules' file descriptors from the host, on the one socket it
    // gave (receive only: its sending side is shut); no other socket call.
    allowed.insert(
        libc::SYS_recvmsg,
        vec![arg_eq(0, crate::protocol::DESCRIPTOR_FD as u64)?],
    );
    if files {
        for &nr in REFUSED.iter().chain(FILES) {
            allowed.insert(nr, Vec::new());
        }
    }
    // Refused with EACCES, EPERM or ENOSYS: allowed by this filter so the others decide.
    let refused_calls: &[i64] = if files { &[] } else { REFUSED };
    for &nr in refused_calls
        .iter()
        .chain(METADATA)
        .chain([&libc::SYS_clone3])
    {
        allowed.insert(nr, Vec::new());
    }
    let allow_list = SeccompFilter::new(
        allowed,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;

    // clone3 hides its flags in memory, out of a filter's reach: answer ENOSYS so the C
    // library falls back to clone, whose flags the rule above checks.
    let failing_with = |calls: &[i64], errno: i32| {
        let rules: BTreeMap<i64, Vec<SeccompRule>> =
            calls.iter().map(|&nr| (nr, Vec::new())).collect();
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            TargetArch::x86_64,
        )
        .map_err(err)
    };
    let clone3 = failing_with(&[libc::SYS_clone3], libc::ENOSYS)?;
    let refused = failing_with(refused_calls, libc::EACCES)?;
    let metadata = failing_with(METADATA, libc::EPERM)?;
    let other_limits = SeccompFilter::new(
        [(
            libc::SYS_prlimit64,
            vec![SeccompRule::new(vec![other_process()?]).map_err(err)?],
        )]
        .into_iter()
        .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;

    // The allow-list goes last: installing a filter needs prctl(PR_SET_NO_NEW_PRIVS), which
    // the allow-list forbids.
    for filter in [clone3, refused, metadata, other_limits, allow_list] {
        let program: BpfProgram = filter.try_into().map_err(err)?;
        apply_filter_all_threads(&program).map_err(err)?;
    }
    Ok(())
}

/// Installs nothing: no filter is written for this architecture yet.
#[cfg(not(target_arch = "x86_64"))]
pub fn install(_files: bool) -> io::Result<()> {
    Ok(())
}

/// `_IOWR('f', 16, struct pm_scan_arg)`: the PAGEMAP_SCAN ioctl (`linux/fs.h`), with which
/// wasmtime finds the pages of a slot that a task wrote.
#[cfg(target_arch = "x86_64")]
const PAGEMAP_SCAN: u64 = (3 << 30) | (96 << 16) | ((b'f' as u64) << 8) | 16;

/// System calls a running worker needs, allowed with any arguments.
#[cfg(target_arch = "x86_64")]
const ALLOWED: &[i64] = &[
    // I/O on the protocol pipes and stderr
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_fcntl,
    libc::SYS_lseek,
    libc::SYS_pread64,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // memory: the allocator, code memory, the pooling allocator's slots and CoW images
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_membarrier,
    // threads and synchronisation
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // signals: wasmtime's trap handling
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    // resuming a sleep or timed wait after a stop and continue (SIGSTOP/SIGCONT, a
    // debugger or a cgroup freezer)
    libc::SYS_restart_syscall,
    // time, sleep, randomness (WASI clocks, poll_oneoff, random_get)
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    // the WASI runtime's event loop
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_uname,
];

/// File-system look-ups: refused with `EACCES` unless Landlock is in force. Landlock
/// governs the opens among them (`open`, `openat`; `getdents64` needs a directory opened
/// first) but not the metadata look-ups (`stat`, `lstat`, `newfstatat`, `statx`, `access`,
/// `faccessat`, `faccessat2`, `readlink`, `readlinkat`), which WASI's `path_filestat_get`
/// and `path_readlink` need: under Landlock those answer for any path this process's user
/// may search (see SECURITY.md).
#[cfg(target_arch = "x86_64")]
const REFUSED: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
];

/// Calls that change a file's mode, owner or times: Landlock does not govern them (it
/// confines opening, creating, removing and renaming, not metadata), so they are refused
/// with `EPERM` whether or not Landlock is in force. (WASI's `fd_filestat_set_times` and
/// `path_filestat_set_times` fail with it.)
#[cfg(target_arch = "x86_64")]
const METADATA: &[i64] = &[
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_utimensat,
];

/// File-system calls beyond [`REFUSED`] that command tasks' files need (creating, writing,
/// renaming, removing, syncing), allowed only under Landlock.
#[cfg(target_arch = "x86_64")]
const FILES: &[i64] = &[
    libc::SYS_openat2,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fadvise64,
    libc::SYS_fstatfs,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_flock,
    libc::SYS_getcwd,
];

/// The hidden argument that runs [`probe_forbidden_syscall`].
pub const PROBE_ARG: &str = "__seccomp-probe";

/// Makes a system call the filter forbids (`socket`), for tests of the filter: the process
/// must die of `SIGSYS` here.
pub fn probe_forbidden_syscall() -> io::Result<()> {
    install(true)?;
    // SAFETY: `socket` takes plain integers and touches no memory of ours.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    Err(io::Error::other(format!(
        "socket() was allowed (returned {fd}): the seccomp filter is not in force"
    )))
}
