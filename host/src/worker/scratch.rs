//! Scratch directories, on the host's side: one private directory per pool, and one per
//! worker process under it, where that worker stages its command tasks' `/in` and `/out`
//! (and to which Landlock confines it). A worker's directory is removed when the host reaps
//! it, the pool's when the pool ends, so a killed worker leaves nothing behind.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::WorkerRef;

/// A pool's scratch directory (mode 0700), removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchRoot {
    path: PathBuf,
}

impl ScratchRoot {
    /// Creates a fresh private directory under `base` (e.g. the system's temporary
    /// directory).
    pub fn create(base: &Path) -> io::Result<ScratchRoot> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
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
        Ok(ScratchRoot { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the (empty, private) directory of one worker process.
    pub fn worker_dir(&self, who: WorkerRef) -> io::Result<PathBuf> {
        let dir = self.path.join(format!("w{}-{}", who.slot, who.generation));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(dir)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes a worker's directory once its process is gone.
pub(crate) fn remove_worker_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            eprintln!("wasmpool: cannot remove {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn directories_are_private_and_removed_with_the_root() {
        let root = ScratchRoot::create(&std::env::temp_dir()).unwrap();
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
}
