//! The hidden `__wallprobe USER SCRATCH TARGET [MOUNT]`: a process that raises exactly a
//! worker's walls, with the same functions in the same order ([`serve::raise_walls`], then
//! [`seccomp::install`]), and then makes the system calls a guest that escaped wasmtime
//! would make against a host file outside its scratch directory (`TARGET`), and, given a
//! `MOUNT` directory (mounted read-only, holding a file `file`), against it: read its file,
//! create a file in it, hard-link its file into the scratch directory and `TARGET` into it.
//! It prints what the kernel answered to each, as one JSON object
//! `{"call": {"ret": R, "errno": E}}`, for `tests/isolation.rs`. It changes nothing when the
//! walls hold.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::child::serve;
use crate::mount::Mount;
use crate::walls::harden::WorkerUser;
use crate::walls::seccomp;

/// The hidden argument that runs [`wall_probe`].
pub const WALL_PROBE_ARG: &str = "__wallprobe";

/// Raises a worker's walls, then probes them (see the module's documentation); `args` are
/// `USER SCRATCH TARGET [MOUNT]`.
pub fn wall_probe(mut args: Vec<String>) -> io::Result<()> {
    let mount = (args.len() == 4).then(|| args.pop()).flatten();
    let [user, scratch, target] = <[String; 3]>::try_from(args).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: wasmpool __wallprobe USER SCRATCH TARGET [MOUNT]",
        )
    })?;
    let mounts: Vec<Mount> = mount.iter().map(|m| Mount::read_only(m, "/mnt")).collect();
    let user = WorkerUser::from_arg(&user)?;
    let scratch = PathBuf::from(scratch);
    let own = path(&scratch.join("probe"))?;
    let meta = std::fs::metadata(&target)?;
    let target = path(target.as_ref())?;
    // Changes that would do no harm if a wall were missing, yet show: the others' execute
    // bit toggled, the owner and group the file has.
    let mode = ((std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777) ^ 0o001) as libc::c_long;
    let (uid, gid) = (
        std::os::unix::fs::MetadataExt::uid(&meta) as libc::c_long,
        std::os::unix::fs::MetadataExt::gid(&meta) as libc::c_long,
    );
    let mount_paths = match &mount {
        Some(m) => {
            let m = std::path::Path::new(m);
            Some([
                path(&m.join("file"))?,
                path(&m.join("new"))?,
                path(&scratch.join("linked"))?,
                path(&m.join("target-link"))?,
            ])
        }
        None => None,
    };
    let (scratch, _rss) = serve::raise_walls(user, Some(scratch), &mounts)?;
    seccomp::install(matches!(scratch, crate::sandbox::Scratch::Dir(_)))?;

    let mut report = BTreeMap::new();
    let mut answer = |call: &str, ret: libc::c_long| {
        let errno = if ret < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        report.insert(
            call.to_string(),
            serde_json::json!({"ret": ret, "errno": errno}),
        );
    };
    let t = target.as_ptr();
    let (cwd, null) = (libc::AT_FDCWD as libc::c_long, std::ptr::null::<u8>());
    // SAFETY (every call below): the path arguments are NUL-terminated strings that outlive
    // the call, the times arguments are null (meaning "now"), and the limit's out-pointer
    // points to a writable `rlimit64`; the other arguments are plain integers.
    unsafe {
        answer(
            "fchmodat",
            libc::syscall(libc::SYS_fchmodat, cwd, t, mode, 0),
        );
        answer(
            "fchmodat2",
            libc::syscall(libc::SYS_fchmodat2, cwd, t, mode, 0),
        );
        answer("chmod", libc::syscall(libc::SYS_chmod, t, mode));
        answer(
            "utimensat",
            libc::syscall(libc::SYS_utimensat, cwd, t, null, 0),
        );
        answer("utimes", libc::syscall(libc::SYS_utimes, t, null));
        answer("utime", libc::syscall(libc::SYS_utime, t, null));
        answer(
            "futimesat",
            libc::syscall(libc::SYS_futimesat, cwd, t, null),
        );
        answer("chown", libc::syscall(libc::SYS_chown, t, uid, gid));
        answer("lchown", libc::syscall(libc::SYS_lchown, t, uid, gid));
        answer(
            "fchownat",
            libc::syscall(libc::SYS_fchownat, cwd, t, uid, gid, 0),
        );
        // A file of its own, in its scratch directory, for the calls on a descriptor.
        let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC) as libc::c_long;
        let fd = libc::syscall(libc::SYS_openat, cwd, own.as_ptr(), flags, 0o600);
        answer("openat_own", fd);
        answer("fchmod", libc::syscall(libc::SYS_fchmod, fd, mode));
        answer("fchown", libc::syscall(libc::SYS_fchown, fd, uid, gid));
        let mut limit: libc::rlimit64 = std::mem::zeroed();
        let out = &mut limit as *mut libc::rlimit64;
        let nofile = libc::RLIMIT_NOFILE as libc::c_long;
        answer(
            "prlimit64_pid1",
            libc::syscall(libc::SYS_prlimit64, 1, nofile, null, out),
        );
        answer(
            "prlimit64_self",
            libc::syscall(libc::SYS_prlimit64, 0, nofile, null, out),
        );
        let read_only = (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_long;
        answer(
            "openat_target",
            libc::syscall(libc::SYS_openat, cwd, t, read_only),
        );
        let mut st: libc::stat = std::mem::zeroed();
        let st_out = &mut st as *mut libc::stat;
        answer(
            "newfstatat_target",
            libc::syscall(libc::SYS_newfstatat, cwd, t, st_out, 0),
        );
        if let Some([file, new, linked, target_link]) = &mount_paths {
            answer(
                "openat_mount_read",
                libc::syscall(libc::SYS_openat, cwd, file.as_ptr(), read_only),
            );
            answer(
                "openat_mount_create",
                libc::syscall(libc::SYS_openat, cwd, new.as_ptr(), flags, 0o600),
            );
            answer(
                "linkat_mount_to_scratch",
                libc::syscall(
                    libc::SYS_linkat,
                    cwd,
                    file.as_ptr(),
                    cwd,
                    linked.as_ptr(),
                    0,
                ),
            );
            answer(
                "linkat_target_to_mount",
                libc::syscall(libc::SYS_linkat, cwd, t, cwd, target_link.as_ptr(), 0),
            );
        }
    }
    let mut stdout = io::stdout().lock();
    serde_json::to_writer(&mut stdout, &report)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

fn path(p: &std::path::Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}
