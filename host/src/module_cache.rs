//! The on-disk cache of compiled modules: a module compiled once is not compiled again by
//! the next pool, the next run, or the next process. Entries are keyed by the module's
//! content hash and the compiling engine's
//! [`fingerprint`](crate::sandbox::engine::fingerprint) for the code's metering (wasmtime's
//! own compatibility hash, our instance-slot limits, the metering variant): a new wasmtime or
//! engine configuration misses, a rebuild that changes neither (a doc edit) hits. Entries
//! are sealed with a checksum so a torn or damaged file is recompiled, never loaded.
//!
//! Loading a compiled artifact runs its machine code in the workers, so the directory must be
//! writable by this user only: it is created `0700`, and one that other users can write to
//! is not used.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::module::{Export, ModuleId};
use crate::sandbox::{engine, Metering};

/// One cached compilation.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    pub artifact: Vec<u8>,
    pub exports: Vec<Export>,
}

/// A cache directory.
#[derive(Clone, Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmpool`, else `$HOME/.cache/wasmpool`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmpool"))
}

impl ModuleCache {
    /// Opens (creating if needed) a private cache directory; `None` if it cannot be used
    /// safely (then the pool just compiles every module).
    pub(crate) fn open(dir: &Path) -> Option<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ok()?;
        let meta = fs::metadata(dir).ok()?;
        let private = meta.uid() == rustix::process::geteuid().as_raw()
            && meta.permissions().mode() & 0o022 == 0;
        private.then(|| ModuleCache {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the compilation of `id` for `metering` lives: `MODULE-METERING-ENGINE.cwasm`
    /// (`None` when this process cannot make the engine to fingerprint).
    fn path(&self, id: ModuleId, metering: Metering) -> Option<PathBuf> {
        let module: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
        let engine = engine_key(metering)?;
        Some(
            self.dir
                .join(format!("{module}-{}-{engine}.cwasm", metering.tag())),
        )
    }

    /// The cached compilation of `id`, if present and intact.
    pub(crate) fn get(&self, id: ModuleId, metering: Metering) -> Option<Entry> {
        let bytes = fs::read(self.path(id, metering)?).ok()?;
        let (sum, body) = bytes.split_first_chunk::<32>()?;
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        postcard::from_bytes(body).ok()
    }

    /// Stores a compilation (atomically: readers see the old state or the whole new file).
    pub(crate) fn put(&self, id: ModuleId, metering: Metering, entry: &Entry) {
        let Ok(body) = postcard::to_stdvec(entry) else {
            return;
        };
        let Some(path) = self.path(id, metering) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(blake3::hash(&body).as_bytes())?;
            f.write_all(&body)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        };
        if write().is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// The engine part of an entry's name for `metering`, in hex: the first half of its
/// [`engine::fingerprint`], computed once per process.
fn engine_key(metering: Metering) -> Option<&'static str> {
    static KEYS: [OnceLock<Option<String>>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[metering.index()]
        .get_or_init(|| {
            let f = engine::fingerprint(metering).ok()?;
            Some(f[..16].iter().map(|b| format!("{b:02x}")).collect())
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ExportKind;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir = std::env::temp_dir().join(format!("wasmpool-cache-test-{}", std::process::id()));
        let cache = ModuleCache::open(&dir).expect("a private temp dir");
        let id = ModuleId::of(b"module");
        let m = Metering::Epochs;
        assert!(cache.get(id, m).is_none());
        let entry = Entry {
            artifact: vec![1, 2, 3],
            exports: vec![Export {
                name: "f".into(),
                kind: ExportKind::Task,
            }],
        };
        cache.put(id, m, &entry);
        assert!(cache.get(id, Metering::Fuel).is_none(), "another variant");
        let back = cache.get(id, m).expect("cached");
        assert_eq!(
            (back.artifact, back.exports),
            (entry.artifact, entry.exports)
        );
        let path = cache.path(id, m).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(cache.get(id, m).is_none(), "a damaged entry is not used");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = std::env::temp_dir().join(format!("wasmpool-cache-open-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ModuleCache::open(&dir).is_none());
        fs::remove_dir_all(dir).unwrap();
    }
}
