//! Uploaded modules, named by the full hex of their content hash ([`ModuleId::to_hex`]).
//!
//! A module is compiled through [`Pool::load_async`] (in the sandboxed compile process, on a
//! thread of the library's own: the runtime is never blocked) and held in memory. With
//! `--modules-dir` its bytes are also written there (`<id>.wasm`, by a rename, so a file
//! is whole or absent), and a module asked for after a restart is loaded from there; the
//! file's modification time is its last use. The modules' total size is bounded by
//! `--modules-limit`: past it, the least recently used are evicted, from memory (and the
//! pool, [`Pool::unload`]) and from the directory. A task already running a module that is
//! evicted or deleted finishes: it holds its own handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use wasmpool::{LoadError, Module, ModuleId, Pool};

pub struct Store {
    pool: Pool,
    dir: Option<PathBuf>,
    limit: u64,
    held: Mutex<HashMap<ModuleId, Held>>,
}

struct Held {
    module: Module,
    /// When it was last used: its rank for eviction from memory.
    used: Instant,
    /// When its file's modification time was last set (at most once a minute).
    touched: Instant,
}

/// How often at most a module's file has its modification time set on use.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What an upload did.
pub enum Uploaded {
    /// The module was new here.
    Created(Module),
    /// The same bytes were uploaded before.
    Existing(Module),
}

impl Store {
    pub fn open(pool: Pool, dir: Option<PathBuf>, limit: u64) -> anyhow::Result<Store> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --modules-dir {}", dir.display()))?;
        }
        Ok(Store {
            pool,
            dir,
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<ModuleId, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many modules are in memory.
    pub fn len(&self) -> usize {
        self.held().len()
    }

    fn file(&self, id: ModuleId) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.wasm", id.to_hex())))
    }

    /// The module in memory, marked used.
    fn in_memory(&self, id: ModuleId) -> Option<Module> {
        let mut held = self.held();
        let h = held.get_mut(&id)?;
        let now = Instant::now();
        h.used = now;
        if now.duration_since(h.touched) >= TOUCH_EVERY {
            h.touched = now;
            if let Some(path) = self.file(id) {
                tokio::task::spawn_blocking(move || touch(&path));
            }
        }
        Some(h.module.clone())
    }

    fn insert(&self, module: Module) {
        let now = Instant::now();
        self.held().insert(
            module.id(),
            Held {
                module,
                used: now,
                touched: now,
            },
        );
    }

    /// Compiles and keeps `bytes`; the same bytes again give the same module.
    pub async fn upload(&self, bytes: Vec<u8>) -> Result<Uploaded, LoadError> {
        let id = ModuleId::of(&bytes);
        if let Some(m) = self.in_memory(id) {
            return Ok(Uploaded::Existing(m));
        }
        let file = self.file(id);
        let on_disk = file.as_ref().is_some_and(|f| f.is_file());
        let bytes = std::sync::Arc::new(bytes);
        let module = self.pool.load_async(bytes.as_slice()).await?;
        self.insert(module.clone());
        if let Some(path) = file {
            let dir = self.dir.clone().expect("a file has a directory");
            let (limit, keep) = (self.limit, id);
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<ModuleId>> {
                if !on_disk {
                    write_whole(&path, &bytes)?;
                } else {
                    touch(&path);
                }
                Ok(evict_files(&dir, limit, keep))
            })
            .await;
            match written {
                Ok(Ok(evicted)) => self.forget(&evicted),
                Ok(Err(e)) => {
                    tracing::warn!("cannot keep module {} in --modules-dir: {e}", id.to_hex())
                }
                Err(e) => tracing::warn!("the module writer stopped: {e}"),
            }
        }
        self.evict_memory(id);
        Ok(if on_disk {
            Uploaded::Existing(module)
        } else {
            Uploaded::Created(module)
        })
    }

    /// The module `id`: in memory, else (with `--modules-dir`) loaded from there.
    pub async fn get(&self, id: ModuleId) -> Result<Option<Module>, LoadError> {
        if let Some(m) = self.in_memory(id) {
            return Ok(Some(m));
        }
        let Some(path) = self.file(id) else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).ok()?;
            // A file changed on disk is not that module any more.
            if ModuleId::of(&bytes) != id {
                tracing::warn!("{} does not hold its module; removed", path.display());
                let _ = std::fs::remove_file(&path);
                return None;
            }
            touch(&path);
            Some(bytes)
        })
        .await
        .ok()
        .flatten();
        let Some(bytes) = read else {
            return Ok(None);
        };
        let module = self.pool.load_async(bytes).await?;
        self.insert(module.clone());
        self.evict_memory(id);
        Ok(Some(module))
    }

    /// Forgets the module `id` (memory, pool and directory); whether it was here.
    pub async fn delete(&self, id: ModuleId) -> bool {
        let in_memory = self.held().remove(&id).is_some();
        self.pool.unload(id);
        let on_disk = match self.file(id) {
            Some(path) => tokio::task::spawn_blocking(move || std::fs::remove_file(path).is_ok())
                .await
                .unwrap_or(false),
            None => false,
        };
        in_memory || on_disk
    }

    fn forget(&self, ids: &[ModuleId]) {
        let mut held = self.held();
        for id in ids {
            held.remove(id);
            self.pool.unload(*id);
        }
    }

    /// Evicts the least recently used modules from memory until their sizes total at most
    /// the limit, keeping `keep` (just used).
    fn evict_memory(&self, keep: ModuleId) {
        let mut held = self.held();
        let mut total: u64 = held.values().map(|h| h.module.size() as u64).sum();
        while total > self.limit {
            let Some((&id, _)) = held
                .iter()
                .filter(|(id, _)| **id != keep)
                .min_by_key(|(_, h)| h.used)
            else {
                break;
            };
            if let Some(h) = held.remove(&id) {
                total -= h.module.size() as u64;
            }
            self.pool.unload(id);
            // Without a directory, an evicted module is gone for good.
        }
    }
}

/// Sets a file's modification time to now: its last use.
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Writes `bytes` as `path`, whole or not at all (a temporary file renamed into place).
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

/// A new file in `dir` with a name of its own.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".upload-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// Removes the least recently used module files in `dir` (oldest modification time
/// first) until their sizes total at most `limit`, never `keep`'s; the ids removed.
fn evict_files(dir: &Path, limit: u64, keep: ModuleId) -> Vec<ModuleId> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(SystemTime, u64, ModuleId, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let id = ModuleId::from_hex(name.to_str()?.strip_suffix(".wasm")?)?;
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, meta.len(), id, e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort_by_key(|f| f.0);
    let mut evicted = Vec::new();
    for (_, size, id, path) in files {
        if total <= limit {
            break;
        }
        if id == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
            evicted.push(id);
        }
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_past_the_limit_go_oldest_first_but_never_the_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ModuleId> = (0..4u8).map(|i| ModuleId::of(&[i])).collect();
        for (i, id) in ids.iter().enumerate() {
            let path = dir.path().join(format!("{}.wasm", id.to_hex()));
            std::fs::write(&path, [0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64))
                .unwrap();
        }
        // Not a module file: never counted nor removed.
        std::fs::write(dir.path().join("notes.txt"), [0u8; 1000]).unwrap();
        // 400 bytes held, 250 allowed: the two oldest go, unless one is kept.
        assert_eq!(evict_files(dir.path(), 250, ids[3]), vec![ids[0], ids[1]]);
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(evict_files(dir.path(), 50, ids[2]), vec![ids[3]]);
        assert!(dir
            .path()
            .join(format!("{}.wasm", ids[2].to_hex()))
            .exists());
    }
}
