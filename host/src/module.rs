//! Guest modules: validated and compiled once by the host, identified by content hash, and
//! described by their exports. Workers receive the compiled artifact, never the source.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::compile::cache::Described;
use crate::sandbox::Metering;
use crate::value::ValType;

/// A module's content hash (BLAKE3 of its bytes): the key of every module cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleId(pub [u8; 32]);

impl ModuleId {
    /// The id of a module's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleId(*blake3::hash(bytes).as_bytes())
    }

    /// The whole hash in lowercase hex (64 characters), where `Display` shows only its
    /// first 16: a name for the module that a service or a file can use.
    ///
    /// ```
    /// let id = wasmpool::ModuleId::of(b"(module)");
    /// assert_eq!(id.to_hex().len(), 64);
    /// assert!(id.to_hex().starts_with(&id.to_string()));
    /// assert_eq!(wasmpool::ModuleId::from_hex(&id.to_hex()), Some(id));
    /// ```
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The id written by [`ModuleId::to_hex`]; `None` for anything but 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut id = [0u8; 32];
        for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).ok()?;
            if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *out = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(ModuleId(id))
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// How an export is called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExportKind {
    /// A plain function over numbers.
    Numeric {
        params: Vec<ValType>,
        results: Vec<ValType>,
    },
    /// An SDK task (see `guests/ABI.md`), taking and returning JSON.
    Task,
    /// A function with reference-typed or vector params or results: not callable.
    Unsupported { signature: String },
}

/// One callable export of a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// The name a caller uses: the export name, or the task name for SDK tasks.
    pub name: String,
    /// How it is called.
    pub kind: ExportKind,
}

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[ValType]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.kind {
            ExportKind::Numeric { params, results } => {
                write!(f, "{}({}) -> ({})", self.name, list(params), list(results))
            }
            ExportKind::Task => write!(f, "{}(json) -> json  [SDK task]", self.name),
            ExportKind::Unsupported { signature } => {
                write!(
                    f,
                    "{}{}  [not callable: unsupported types]",
                    self.name, signature
                )
            }
        }
    }
}

/// A loaded guest module: cheap to clone, shared by every call that uses it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = wasmpool::Pool::builder().build()?;
/// let module = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
/// for export in module.exports() {
///     println!("{export}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub(crate) id: ModuleId,
    /// The module's bytes, kept to compile its other [`Metering`] variant when a call first
    /// needs it.
    pub(crate) bytes: Arc<[u8]>,
    /// Compiled code per [`Metering`] (indexed by `Metering::index`), each compiled once.
    pub(crate) artifacts: [OnceLock<Arc<Artifact>>; 2],
    pub(crate) exports: Vec<Export>,
    /// The WebAssembly proposals the module uses beyond the first version.
    pub(crate) proposals: Vec<String>,
    /// Its function imports the sandbox does not provide, linked to traps.
    pub(crate) unknown_imports: Vec<(String, String)>,
    pub(crate) origin: Origin,
}

/// A module's compiled code, as workers get it.
#[derive(Debug)]
pub(crate) enum Artifact {
    /// In memory: sent to each worker over its request pipe (small modules, and pools
    /// without a compile cache).
    Bytes(Vec<u8>),
    /// A file of the compile cache, opened read-only and checked against its checksum when
    /// the pool loaded it: each worker maps it from a descriptor the host passes
    /// (`Request::LoadFile`), so a large module is neither copied to every worker nor kept
    /// in the host's memory. Cache files are never written in place (a store writes a new
    /// file and renames it over the old one), so the checked contents are what workers map.
    File(std::fs::File),
}

/// The size from which a compiled module cached on disk reaches workers as its file rather
/// than its bytes. Each such module a worker loads holds a descriptor there (at most 256
/// files are open in a worker), and smaller ones cost little to copy.
pub(crate) const FILE_ARTIFACT_MIN: u64 = 4 << 20;

/// What a pool does with a module's function imports that the sandbox does not provide
/// (`PoolBuilder::unknown_imports`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownImports {
    /// The module is not loaded: [`LoadError::UnsupportedImport`](crate::LoadError) names
    /// the first such import. The default.
    #[default]
    Refuse,
    /// Each is linked to a function that traps when called (a `TaskError::Trap` whose
    /// message names the import), so a module whose optional host hooks go unused loads
    /// and runs. Imports that are not functions (memories, tables, globals) are refused
    /// either way.
    Trap,
}

impl UnknownImports {
    /// `refuse` or `trap` (the command line's form).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "refuse" => Ok(UnknownImports::Refuse),
            "trap" => Ok(UnknownImports::Trap),
            _ => Err(format!("`{text}` is not `refuse` or `trap`")),
        }
    }
}

/// Where a loaded module's compiled code came from, and what it cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Compiled by a compile process in this long.
    Compiled(std::time::Duration),
    /// Read from the on-disk compile cache in this long.
    DiskCache(std::time::Duration),
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.inner.id)
            .field("exports", &self.inner.exports.len())
            .finish()
    }
}

impl Module {
    /// The module's content hash.
    pub fn id(&self) -> ModuleId {
        self.inner.id
    }

    /// The callable exports, in the module's order.
    pub fn exports(&self) -> &[Export] {
        &self.inner.exports
    }

    /// The export a caller names `name`, if any.
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.inner.exports.iter().find(|e| e.name == name)
    }

    /// Whether `other` is the same loaded module (one compilation shared by both handles).
    pub fn same_artifact(&self, other: &Module) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Size of the module's bytes.
    pub fn size(&self) -> usize {
        self.inner.bytes.len()
    }

    /// The WebAssembly proposals the module uses beyond the first version of the standard
    /// (`"bulk-memory"`, `"exceptions"`, `"multi-memory"`, `"simd"`, `"tail-call"`, …),
    /// sorted, found by reading its types and instructions when it was compiled.
    pub fn proposals(&self) -> &[String] {
        &self.inner.proposals
    }

    /// The function imports (module, name) the sandbox does not provide, which a pool with
    /// [`UnknownImports::Trap`] links to functions that trap when called (a pool that refuses
    /// them does not load the module); empty for most modules.
    pub fn unknown_imports(&self) -> &[(String, String)] {
        &self.inner.unknown_imports
    }

    /// The code compiled for `metering`, if it has been.
    pub(crate) fn artifact(&self, metering: Metering) -> Option<&Arc<Artifact>> {
        self.inner.artifacts[metering.index()].get()
    }

    /// Where the compiled code came from (a compile process or the disk cache) and what it
    /// cost.
    pub fn origin(&self) -> Origin {
        self.inner.origin
    }

    /// Makes the handle of a module compiled from `bytes` (for `metering`).
    pub(crate) fn new(
        bytes: &[u8],
        metering: Metering,
        artifact: Artifact,
        described: Described,
        origin: Origin,
    ) -> Module {
        Module::with_id(
            ModuleId::of(bytes),
            bytes,
            metering,
            artifact,
            described,
            origin,
        )
    }

    /// [`Module::new`] for code named `id` rather than by its bytes' hash (the module
    /// instrumented for a snapshot, compiled from `bytes`: see `init::instrumented_id`).
    pub(crate) fn with_id(
        id: ModuleId,
        bytes: &[u8],
        metering: Metering,
        artifact: Artifact,
        described: Described,
        origin: Origin,
    ) -> Module {
        let Described {
            exports,
            proposals,
            unknown_imports,
        } = described;
        let artifacts = [OnceLock::new(), OnceLock::new()];
        let _ = artifacts[metering.index()].set(Arc::new(artifact));
        Module {
            inner: Arc::new(ModuleInner {
                id,
                bytes: bytes.into(),
                artifacts,
                exports,
                proposals,
                unknown_imports,
                origin,
            }),
        }
    }
}
