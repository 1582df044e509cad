//! Scratch directories, on the host's side: one private directory per pool, and one per
//! worker process under it, where that worker stages its command tasks' `/in` and `/out`
//! (and to which Landlock confines it). A worker's directory is removed when the host reaps
//! it, the pool's when the pool ends, so a killed worker leaves nothing behind; what a
//! SIGKILLed host left is swept by the next pool that starts under the same directory.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::WorkerRef;
use crate::walls::harden::WorkerUser;

/// A pool's scratch directory, removed with everything in it when dropped. It is private
/// (mode 0700), or, when workers run as another user (`user`), that user may search it but
/// not list it (0711), and each worker's directory is the user's own.
#[derive(Debug)]
pub struct ScratchRoot {
    path: PathBuf,
    user: Option<WorkerUser>,
}

impl ScratchRoot {
    /// Creates a fresh private directory under `base` (e.g. the system's temporary
    /// directory), for workers running as `user` (`None`: as the host's user).
    pub fn create(base: &Path, user: Option<WorkerUser>) -> io::Result<ScratchRoot> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        sweep_stale(base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!(
            "wasmpool-{}-{}-{nanos:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        if user.is_some() {
            // Set, not asked of mkdir: the umask does not take the search bit away.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))?;
        }
        Ok(ScratchRoot { path, user })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the (empty, private) directory of one worker process, owned by the user it
    /// runs as.
    pub fn worker_dir(&self, who: WorkerRef) -> io::Result<PathBuf> {
        let dir = self.path.join(format!("w{}-{}", who.slot, who.generation));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        if let Some(u) = self.user {
            std::os::unix::fs::lchown(&dir, Some(u.uid), Some(u.gid))?;
        }
        Ok(dir)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Removes the scratch directories under `base` that this user's pools left when their host
/// died without cleaning up (its process is gone). Only private directories named like ours
/// (0700, or 0711 for workers of another user) are touched; links are not followed.
fn sweep_stale(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("wasmpool-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        let ours = meta.is_dir() && meta.uid() == me && (mode == 0o700 || mode == 0o711);
        if ours && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// Removes a worker's directory once its process is gone.
pub(crate) fn remove_worker_dir(dir: &Path) {
    if let Err(e) = remove_tree(dir) {
        eprintln!("wasmpool: cannot remove {}: {e}", dir.display());
    }
}

/// Removes `path` and everything beneath it (nothing if it does not exist), following no
/// links, with at most three descriptors open however deep the tree: a guest's `/out` may
/// nest directories far past a process's descriptor limit (and the length of a path), which
/// `std::fs::remove_dir_all` (a descriptor per level) cannot remove. Used by the host (a
/// reaped worker's directory, the pool's) and by the worker (a task's directory); nothing
/// else may be changing the tree meanwhile.
///
/// It walks down through the first directory that is not empty, removes what it finds, and
/// climbs back through `..` when a directory is empty: memory and descriptors stay constant,
/// and each directory is read about twice.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use rustix::fs::{openat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
    use rustix::io::Errno;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let gone = |r: Result<(), Errno>| match r {
        Err(Errno::NOENT) => Ok(()),
        other => other,
    };
    let top = match openat(CWD, path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        // A file or a link, not a directory: it goes alone.
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return Ok(gone(unlinkat(CWD, path, AtFlags::empty()))?)
        }
        Err(e) => return Err(e.into()),
    };
    let mut dir = Dir::new(top)?;
    let mut depth = 0usize;
    loop {
        // One pass over `dir`: remove its files, links and empty directories; stop at the
        // first directory that is not empty, to go down into it.
        let mut removed = false;
        let mut down = None;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let fd = dir.fd()?;
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => {
                    let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
                    FileType::from_raw_mode(st.st_mode) == FileType::Directory
                }
                _ => false,
            };
            if !is_dir {
                gone(unlinkat(fd, name, AtFlags::empty()))?;
                removed = true;
                continue;
            }
            match gone(unlinkat(fd, name, AtFlags::REMOVEDIR)) {
                Ok(()) => removed = true,
                Err(Errno::NOTEMPTY | Errno::EXIST) => {
                    down = Some(openat(fd, name, flags, Mode::empty())?);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        dir = match down {
            Some(child) => {
                depth += 1;
                Dir::new(child)?
            }
            // Entries removed while reading may have hidden others: read it again.
            None if removed => {
                dir.rewind();
                dir
            }
            // Empty: the top one is removed below; any other, by its parent's next pass.
            None if depth == 0 => break,
            None => {
                depth -= 1;
                Dir::new(openat(dir.fd()?, c"..", flags, Mode::empty())?)?
            }
        };
    }
    drop(dir);
    Ok(gone(unlinkat(CWD, path, AtFlags::REMOVEDIR))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_private_and_removed_with_the_root() {
        let root = ScratchRoot::create(&std::env::temp_dir(), None).unwrap();
        let dir = root
            .worker_dir(WorkerRef {
                slot: 1,
                generation: 2,
            })
            .unwrap();
        std::fs::write(dir.join("x"), "y").unwrap();
        let mode = std::fs::metadata(root.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = root.path().to_path_buf();
        drop(root);
        assert!(!path.exists());
    }

    #[test]
    fn directories_of_dead_hosts_are_swept() {
        let base = std::env::temp_dir().join(format!("wasmpool-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = base.join(format!("wasmpool-{dead}-0-00000000"));
        let alive = base.join(format!("wasmpool-{}-9-00000000", std::process::id()));
        let foreign = base.join(format!("wasmpool-{dead}-public"));
        for dir in [&stale, &alive, &foreign] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&alive, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(stale.join("x"), "y").unwrap();
        let root = ScratchRoot::create(&base, None).unwrap();
        assert!(!stale.exists(), "a dead host's directory is swept");
        assert!(alive.exists() && foreign.exists(), "others are left alone");
        drop(root);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn trees_deeper_than_the_descriptor_limit_are_removed() {
        let base = std::env::temp_dir().join(format!("wasmpool-tree-test-{}", std::process::id()));
        // Deeper than a worker's 256 descriptors and longer than PATH_MAX, with files and
        // links at every level and a wide directory at the bottom.
        let mut dir = rustix::fs::openat(
            rustix::fs::CWD,
            std::env::temp_dir(),
            rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let name = base.file_name().unwrap();
        let long = std::ffi::OsString::from("d".repeat(100));
        for level in 0..600 {
            let here = if level == 0 { name } else { long.as_os_str() };
            rustix::fs::mkdirat(&dir, here, rustix::fs::Mode::RWXU).unwrap();
            dir = rustix::fs::openat(
                &dir,
                here,
                rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            let file = rustix::fs::openat(
                &dir,
                "f",
                rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::RUSR,
            )
            .unwrap();
            drop(file);
            rustix::fs::symlinkat("/etc/passwd", &dir, "l").unwrap();
        }
        for i in 0..300 {
            rustix::fs::mkdirat(&dir, format!("e{i}"), rustix::fs::Mode::RWXU).unwrap();
        }
        drop(dir);
        remove_tree(&base).unwrap();
        assert!(!base.exists());
        assert!(
            std::path::Path::new("/etc/passwd").exists(),
            "links are not followed"
        );
        remove_tree(&base).unwrap();
    }
}
