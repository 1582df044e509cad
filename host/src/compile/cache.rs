//! The on-disk cache of compiled modules: a module compiled once is not compiled again by
//! the next pool, the next run, or the next process. Entries are keyed by the module's
//! content hash and the compiling engine's
//! [`fingerprint`](crate::sandbox::engine::fingerprint) for the code's metering (wasmtime's
//! own compatibility hash, our instance-slot limits, the metering variant): a new wasmtime or
//! engine configuration misses, a rebuild that changes neither (a doc edit) hits. Entries
//! are sealed with a checksum so a torn or damaged file is recompiled, never loaded.
//!
//! The cache is bounded ([`DEFAULT_LIMIT`], `PoolBuilder::compile_cache_limit`,
//! `$WASMPOOL_CACHE_LIMIT`): an entry's modification time is its last use (a hit sets it),
//! and a store that takes the entries' total over the bound removes the least recently used
//! until it fits again (never the one just stored). `wasmpool cache` shows and clears it.
//!
//! Loading a compiled artifact runs its machine code in the workers, so the directory must be
//! writable by this user only: it is created `0700`, and one that other users can write to
//! is not used.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::module::{Artifact, Export, ModuleId, FILE_ARTIFACT_MIN};
use crate::sandbox::{engine, Metering};

/// One cached compilation.
pub(crate) struct Entry {
    pub artifact: Artifact,
    pub described: Described,
}

/// What a compilation says about a module beside its code (an entry's `.meta` file holds
/// it, with the code's length and checksum).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Described {
    pub exports: Vec<Export>,
    /// The proposals it uses (`compile::proposals`).
    pub proposals: Vec<String>,
    /// The module's function imports the sandbox does not provide (see
    /// `CompileReply::Compiled`): checked against each pool's policy on every load.
    pub unknown_imports: Vec<(String, String)>,
}

/// An entry's `.meta` file, after its own checksum: the code file's length and BLAKE3
/// checksum, and the description.
#[derive(Serialize, Deserialize)]
struct Meta {
    artifact_len: u64,
    artifact_sum: [u8; 32],
    described: Described,
}

/// A cache directory.
#[derive(Clone, Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
    /// Most bytes its entries may take together.
    limit: u64,
}

/// Where a pool keeps its cache and how large it may grow.
#[derive(Clone, Debug)]
pub(crate) struct CacheSettings {
    pub dir: PathBuf,
    pub limit: u64,
}

/// The file name extension of an initializer's snapshot (compiled modules are `cwasm`).
const SNAPSHOT_EXT: &str = "snapshot";

/// The default bound on the cache's entries together: 2 GiB (an interpreter compiled to
/// wasm takes some 300 MB per metering variant).
pub const DEFAULT_LIMIT: u64 = 2 << 30;

/// Environment variable bounding the cache, with a unit (`500MiB`, `4GiB`); the builder's
/// `compile_cache_limit` takes precedence.
pub const LIMIT_ENV: &str = "WASMPOOL_CACHE_LIMIT";

/// The bound in [`LIMIT_ENV`], if set; an error saying why if it is not a size with a unit
/// or is zero.
pub fn limit_from_env() -> Result<Option<u64>, String> {
    let Some(value) = std::env::var_os(LIMIT_ENV) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    parse_limit(&text)
        .map(Some)
        .map_err(|why| format!("${LIMIT_ENV}={text:?}: {why}"))
}

/// A cache bound: a size with a unit (`500MiB`, `2GiB`, `1.5 GB`), more than zero.
fn parse_limit(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err("a size needs a unit, e.g. 500MiB or 2GiB".into());
    }
    let bytes = text
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("not a size (e.g. 500MiB or 2GiB): {e}"))?
        .as_u64();
    if bytes == 0 {
        return Err("must be more than zero (to keep no cache, set no cache directory)".into());
    }
    Ok(bytes)
}

/// What a cache directory holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Compiled modules (one per module and metering variant).
    pub entries: u64,
    /// Their size together.
    pub bytes: u64,
}

/// What `dir` holds (nothing if it does not exist).
pub fn usage(dir: &Path) -> std::io::Result<Usage> {
    let mut usage = Usage::default();
    for (_, len, _) in entries(dir)? {
        usage.entries += 1;
        usage.bytes += len;
    }
    Ok(usage)
}

/// Removes every entry of `dir` (and files left by interrupted stores, and the entries' lock
/// files: a compile under way meanwhile may then be done twice, never read half-written);
/// returns what was removed.
pub fn clear(dir: &Path) -> std::io::Result<Usage> {
    let mut removed = Usage::default();
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for item in listing {
        let item = item?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        let entry = name.ends_with(".cwasm") || name.ends_with(".snapshot");
        if !entry && !name.contains(".tmp") && !name.ends_with(".lock") && !name.ends_with(".meta")
        {
            continue;
        }
        let len = item.metadata()?.len();
        match fs::remove_file(item.path()) {
            Ok(()) if entry => {
                removed.entries += 1;
                removed.bytes += len;
            }
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Every entry of `dir`: path, size, last use.
fn entries(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for item in listing.flatten() {
        let path = item.path();
        if path
            .extension()
            .is_none_or(|e| e != "cwasm" && e != SNAPSHOT_EXT)
        {
            continue;
        }
        // An entry removed meanwhile (another process evicting) is skipped.
        if let Ok(meta) = item.metadata() {
            if meta.is_file() {
                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((path, meta.len(), used));
            }
        }
    }
    Ok(found)
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
    pub(crate) fn open(settings: &CacheSettings) -> Option<Self> {
        let dir = settings.dir.as_path();
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
            limit: settings.limit,
        })
    }

    /// Where the compilation of `id` for `metering` lives: `MODULE-METERING-ENGINE.cwasm`
    /// (the code as wasmtime serialized it, which workers map) beside `….meta` (`None` when
    /// this process cannot make the engine to fingerprint).
    fn path(&self, id: ModuleId, metering: Metering) -> Option<PathBuf> {
        let module: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
        let engine = engine_key(metering)?;
        Some(
            self.dir
                .join(format!("{module}-{}-{engine}.cwasm", metering.tag())),
        )
    }

    /// The cached compilation of `id`, if present and intact; a hit marks it used now. Its
    /// code is read once here, to check it against its checksum; a large one
    /// ([`FILE_ARTIFACT_MIN`]) stays a read-only file that workers map.
    pub(crate) fn get(&self, id: ModuleId, metering: Metering) -> Option<Entry> {
        let path = self.path(id, metering)?;
        let meta = read_sealed(&path.with_extension("meta"))?;
        let meta: Meta = postcard::from_bytes(&meta).ok()?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        if file.metadata().ok()?.len() != meta.artifact_len {
            return None;
        }
        let artifact = if meta.artifact_len >= FILE_ARTIFACT_MIN {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0; 1 << 20];
            loop {
                match file.read(&mut buf).ok()? {
                    0 => break,
                    n => hasher.update(&buf[..n]),
                };
            }
            (*hasher.finalize().as_bytes() == meta.artifact_sum).then_some(())?;
            Artifact::File(file)
        } else {
            let mut bytes = Vec::with_capacity(meta.artifact_len as usize);
            (&mut file)
                .take(meta.artifact_len)
                .read_to_end(&mut bytes)
                .ok()?;
            (*blake3::hash(&bytes).as_bytes() == meta.artifact_sum).then_some(())?;
            let _ = file.set_modified(std::time::SystemTime::now());
            Artifact::Bytes(bytes)
        };
        if let Artifact::File(file) = &artifact {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(Entry {
            artifact,
            described: meta.described,
        })
    }

    /// Waits until no other process or thread compiles `id` for `metering`, then holds that
    /// until the returned file is dropped: an exclusive `flock` on `MODULE-METERING-ENGINE.lock`
    /// beside the entry (on an open file description of its own, so two threads of one
    /// process exclude each other too). `None` when the lock file cannot be made or locked
    /// (then loads compile side by side, as without a cache).
    pub(crate) fn lock(&self, id: ModuleId, metering: Metering) -> Option<fs::File> {
        let path = self.path(id, metering)?.with_extension("lock");
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).ok()?;
        Some(file)
    }

    /// Stores a compilation: its code in a new file renamed into place (readers see the old
    /// file or the whole new one; a file is never written in place, so a descriptor of one
    /// always reads what was checked), then its description. Returns the stored code as a
    /// read-only file when it is large enough for workers to map ([`FILE_ARTIFACT_MIN`]).
    pub(crate) fn put(
        &self,
        id: ModuleId,
        metering: Metering,
        artifact: &[u8],
        described: &Described,
    ) -> Option<fs::File> {
        let path = self.path(id, metering)?;
        let meta = Meta {
            artifact_len: artifact.len() as u64,
            artifact_sum: *blake3::hash(artifact).as_bytes(),
            described: described.clone(),
        };
        let meta = postcard::to_stdvec(&meta).ok()?;
        let tmp = |ext: &str| path.with_extension(format!("{ext}.tmp{}", std::process::id()));
        let (code_tmp, meta_tmp) = (tmp("cwasm"), tmp("meta"));
        let write = |to: &Path, parts: &[&[u8]]| -> std::io::Result<fs::File> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(to)?;
            for part in parts {
                f.write_all(part)?;
            }
            f.sync_data()?;
            Ok(f)
        };
        let stored = || -> std::io::Result<fs::File> {
            let code = write(&code_tmp, &[artifact])?;
            write(&meta_tmp, &[blake3::hash(&meta).as_bytes(), &meta])?;
            fs::rename(&code_tmp, &path)?;
            fs::rename(&meta_tmp, path.with_extension("meta"))?;
            Ok(code)
        };
        let code = match stored() {
            Ok(code) => code,
            Err(_) => {
                let _ = fs::remove_file(&code_tmp);
                let _ = fs::remove_file(&meta_tmp);
                return None;
            }
        };
        self.evict(&path);
        // The file just written, opened again read-only (through our own descriptor, so
        // it is that file whatever happened to the name since): workers get this one.
        use std::os::fd::AsRawFd;
        (artifact.len() as u64 >= FILE_ARTIFACT_MIN)
            .then(|| fs::File::open(format!("/proc/self/fd/{}", code.as_raw_fd())).ok())
            .flatten()
    }

    /// Where the snapshot an initializer made lives (see `Init::key`):
    /// `KEY-METERING-ENGINE.snapshot`, beside the compiled modules and bounded with them.
    fn snapshot_path(&self, key: [u8; 32], metering: Metering) -> Option<PathBuf> {
        Some(
            self.path(ModuleId(key), metering)?
                .with_extension(SNAPSHOT_EXT),
        )
    }

    /// The module an initializer made (its snapshot, `Pool::load_initialized`), if present
    /// and intact; a hit marks it used now.
    pub(crate) fn get_snapshot(&self, key: [u8; 32], metering: Metering) -> Option<Vec<u8>> {
        let mut file = fs::File::open(self.snapshot_path(key, metering)?).ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let (sum, body) = bytes.split_first_chunk::<32>()?;
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let _ = file.set_modified(std::time::SystemTime::now());
        bytes.drain(..32);
        Some(bytes)
    }

    /// Stores the module an initializer made (atomically, like [`Self::put`]); the
    /// snapshot's compiled code is an ordinary entry of its own.
    pub(crate) fn put_snapshot(&self, key: [u8; 32], metering: Metering, wasm: &[u8]) {
        let Some(path) = self.snapshot_path(key, metering) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(blake3::hash(wasm).as_bytes())?;
            f.write_all(wasm)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        };
        if write().is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        self.evict(&path);
    }

    /// Removes the least recently used entries (never `keep`) while the entries together
    /// are over the bound.
    fn evict(&self, keep: &Path) {
        let Ok(mut found) = entries(&self.dir) else {
            return;
        };
        let mut total: u64 = found.iter().map(|(_, len, _)| len).sum();
        found.sort_by_key(|(_, _, used)| *used);
        for (path, len, _) in found {
            if total <= self.limit {
                break;
            }
            if path != keep && fs::remove_file(&path).is_ok() {
                let _ = fs::remove_file(path.with_extension("meta"));
                total -= len;
            }
        }
    }
}

/// The body of a small file that starts with the BLAKE3 checksum of the rest, if it is
/// there and intact.
fn read_sealed(path: &Path) -> Option<Vec<u8>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let (sum, body) = bytes.split_first_chunk::<32>()?;
    (blake3::hash(body).as_bytes() == sum).then(|| body.to_vec())
}

/// The engine part of an entry's name for `metering`, in hex, computed once per process
/// ([`key_of`] its [`engine::fingerprint`], the wire format's number and its compiler's
/// import surface).
fn engine_key(metering: Metering) -> Option<&'static str> {
    static KEYS: [OnceLock<Option<String>>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[metering.index()]
        .get_or_init(|| {
            let engine = engine::engine(false, metering).ok()?;
            let fingerprint = engine::fingerprint_of(&engine, metering);
            let surface = crate::compile::validate::import_surface(&engine).ok()?;
            Some(key_of(fingerprint, crate::protocol::PROTOCOL, surface))
        })
        .as_deref()
}

/// What an entry's validity depends on beside the module, in 32 hex digits: the engine that
/// compiled it (its fingerprint), the format the entry is written in (the wire format's
/// number: an entry holds wire types) and the imports the compiler accepted (its verdict).
/// Another build that differs in any of them misses this build's entries.
fn key_of(fingerprint: [u8; 32], protocol: u32, surface: [u8; 32]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&fingerprint);
    h.update(&protocol.to_le_bytes());
    h.update(&surface);
    h.finalize().as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ExportKind;

    #[test]
    fn entry_names_depend_on_the_engine_the_format_and_the_import_surface() {
        let (f, s) = ([1; 32], [2; 32]);
        let key = key_of(f, 2, s);
        assert_eq!(key.len(), 32);
        assert_eq!(key, key_of(f, 2, s));
        assert_ne!(key, key_of([9; 32], 2, s), "another engine");
        assert_ne!(key, key_of(f, 3, s), "another entry format");
        assert_ne!(
            key,
            key_of(f, 2, [9; 32]),
            "another set of provided imports"
        );
        // This build's own key is the same every time it is computed (a rebuild keeps it).
        let surface = |m| {
            crate::compile::validate::import_surface(&engine::engine(false, m).unwrap()).unwrap()
        };
        assert_eq!(surface(Metering::Fuel), surface(Metering::Fuel));
        assert!(engine_key(Metering::Fuel).is_some());
    }

    fn bytes_of(entry: Entry) -> Vec<u8> {
        match entry.artifact {
            Artifact::Bytes(bytes) => bytes,
            Artifact::File(mut file) => {
                let mut bytes = Vec::new();
                std::io::Seek::rewind(&mut file).unwrap();
                file.read_to_end(&mut bytes).unwrap();
                bytes
            }
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::open(&CacheSettings {
            dir: dir.path().into(),
            limit: DEFAULT_LIMIT,
        })
        .expect("a private temp dir");
        let m = Metering::Epochs;
        let described = Described {
            exports: vec![Export {
                name: "f".into(),
                kind: ExportKind::Task,
            }],
            proposals: vec!["exceptions".into()],
            unknown_imports: vec![("host".into(), "call".into())],
        };
        // A small artifact comes back as bytes, a large one as the file workers map.
        let large = (0..FILE_ARTIFACT_MIN as usize)
            .map(|i| i as u8)
            .collect::<Vec<_>>();
        for (name, artifact) in [(&b"small"[..], vec![1, 2, 3]), (b"large", large)] {
            let id = ModuleId::of(name);
            assert!(cache.get(id, m).is_none());
            let file = cache.put(id, m, &artifact, &described);
            assert_eq!(file.is_some(), artifact.len() as u64 >= FILE_ARTIFACT_MIN);
            assert!(cache.get(id, Metering::Fuel).is_none(), "another variant");
            let back = cache.get(id, m).expect("cached");
            assert_eq!(
                matches!(back.artifact, Artifact::File(_)),
                artifact.len() as u64 >= FILE_ARTIFACT_MIN
            );
            assert_eq!(back.described.exports, described.exports);
            assert_eq!(back.described.proposals, described.proposals);
            assert_eq!(back.described.unknown_imports, described.unknown_imports);
            assert_eq!(bytes_of(back), artifact);
            // The stored file's descriptor is read-only.
            if let Some(file) = file {
                assert!(std::io::Write::write(&mut &file, b"x").is_err());
            }
            let path = cache.path(id, m).unwrap();
            for damaged in [path.clone(), path.with_extension("meta")] {
                let good = fs::read(&damaged).unwrap();
                let mut bytes = good.clone();
                *bytes.last_mut().unwrap() ^= 1;
                fs::write(&damaged, bytes).unwrap();
                assert!(
                    cache.get(id, m).is_none(),
                    "a damaged {} is not used",
                    damaged.display()
                );
                fs::write(&damaged, good).unwrap();
                assert!(cache.get(id, m).is_some());
            }
        }
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = std::env::temp_dir().join(format!("wasmpool-cache-open-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ModuleCache::open(&CacheSettings {
            dir: dir.clone(),
            limit: DEFAULT_LIMIT
        })
        .is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    fn put(cache: &ModuleCache, id: ModuleId, size: usize) {
        cache.put(id, Metering::Epochs, &vec![7; size], &Described::default());
    }

    #[test]
    fn the_least_recently_used_entries_go_when_a_store_overflows_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metering::Epochs;
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| ModuleId::of(x));
        // Room for two entries of 1000 bytes (each a little more on disk), not three.
        let cache = ModuleCache::open(&CacheSettings {
            dir: dir.path().into(),
            limit: 2500,
        })
        .unwrap();
        put(&cache, a, 1000);
        put(&cache, b, 1000);
        // `a` was stored first, but used last.
        let now = std::time::SystemTime::now();
        let set_used = |id, ago: u64| {
            fs::File::open(cache.path(id, m).unwrap())
                .unwrap()
                .set_modified(now - std::time::Duration::from_secs(ago))
                .unwrap()
        };
        set_used(a, 20);
        set_used(b, 10);
        assert!(cache.get(a, m).is_some());
        assert_eq!(usage(dir.path()).unwrap().entries, 2);
        put(&cache, c, 1000);
        assert!(
            cache.get(b, m).is_none(),
            "the least recently used is evicted"
        );
        assert!(cache.get(a, m).is_some() && cache.get(c, m).is_some());
        // One entry over the bound alone stays: it is the one just stored.
        put(&cache, b, 5000);
        assert!(cache.get(b, m).is_some());
        assert_eq!(usage(dir.path()).unwrap().entries, 1);
        let removed = clear(dir.path()).unwrap();
        assert_eq!(removed.entries, 1);
        assert!(removed.bytes >= 5000);
        assert_eq!(usage(dir.path()).unwrap(), Usage::default());
    }

    #[test]
    fn a_bound_needs_a_unit_and_more_than_zero() {
        assert_eq!(parse_limit("2GiB"), Ok(2 << 30));
        assert_eq!(parse_limit(" 500 MiB "), Ok(500 << 20));
        for bad in ["2048", "0GiB", "lots", ""] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }
}
