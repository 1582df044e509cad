//! Guest modules: validated and compiled once by the host, identified by content hash, and
//! described by their exports. Workers receive the compiled artifact, never the source.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use wasmtime::{ExternType, ValType as WasmValType};

use crate::protocol::CompileReply;
use crate::sandbox::{Compiler, Metering};
use crate::value::ValType;

/// A module's content hash (BLAKE3 of its bytes): the key of every module cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleId(pub [u8; 32]);

impl ModuleId {
    /// The id of a module's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleId(*blake3::hash(bytes).as_bytes())
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
    pub(crate) artifacts: [OnceLock<Arc<Vec<u8>>>; 2],
    pub(crate) exports: Vec<Export>,
    pub(crate) origin: Origin,
}

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

    /// The code compiled for `metering`, if it has been.
    pub(crate) fn artifact(&self, metering: Metering) -> Option<&Arc<Vec<u8>>> {
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
        artifact: Vec<u8>,
        exports: Vec<Export>,
        origin: Origin,
    ) -> Module {
        let artifacts = [OnceLock::new(), OnceLock::new()];
        let _ = artifacts[metering.index()].set(Arc::new(artifact));
        Module {
            inner: Arc::new(ModuleInner {
                id: ModuleId::of(bytes),
                bytes: bytes.into(),
                artifacts,
                exports,
                origin,
            }),
        }
    }
}

/// Validates and compiles `bytes` (binary wasm or text format) and checks that every import
/// is one the sandbox provides. Runs inside a compile process, never in the host.
pub(crate) fn compile(compiler: &Compiler, bytes: &[u8]) -> CompileReply {
    let invalid = |message: String| CompileReply::Invalid { message };
    if let Some(message) = not_wasm(bytes) {
        return invalid(message);
    }
    let module = match wasmtime::Module::new(&compiler.engine, bytes) {
        Ok(m) => m,
        Err(e) => return invalid(format!("{e:#}")),
    };
    let mut unknown_imports = Vec::new();
    for import in module.imports() {
        let key = (import.module().to_string(), import.name().to_string());
        if compiler.provided.contains(&key) {
            continue;
        }
        if !matches!(import.ty(), ExternType::Func(_)) {
            return CompileReply::UnsupportedImport {
                module: key.0,
                name: key.1,
            };
        }
        unknown_imports.push(key);
    }
    // Names match; this also checks the imports' types. Unknown functions are linked as a
    // worker links them when the pool lets them in: to traps.
    let linked = if unknown_imports.is_empty() {
        compiler.linker.instantiate_pre(&module).map(drop)
    } else {
        let mut linker = compiler.linker.clone();
        linker
            .define_unknown_imports_as_traps(&module)
            .and_then(|()| linker.instantiate_pre(&module).map(drop))
    };
    if let Err(e) = linked {
        return invalid(format!("{e:#}"));
    }
    let artifact = match module.serialize() {
        Ok(artifact) => artifact,
        Err(e) => return invalid(format!("cannot serialize the compiled module: {e:#}")),
    };
    // Loaded as a worker will load it: wasmtime checks it against the pooling allocator's
    // limits then, and a module over them must fail here, not in every worker.
    // SAFETY: `artifact` was serialized just above by this process's compiler, whose engine
    // configuration differs from `slots`' only in the instance allocator (as in workers).
    if let Err(e) = unsafe { wasmtime::Module::deserialize(&compiler.slots, &artifact) } {
        return CompileReply::OverLimit {
            message: format!("{e:#}"),
        };
    }
    CompileReply::Compiled {
        artifact,
        exports: describe_exports(&module),
        unknown_imports,
    }
}

/// The first bytes of a file, as text when they are printable (`"hell"`), else in hex
/// (`7f 45 4c 46`).
fn describe_start(start: &[u8]) -> String {
    let hex: Vec<String> = start.iter().map(|b| format!("{b:02x}")).collect();
    if start.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?} ({})", String::from_utf8_lossy(start), hex.join(" "))
    } else {
        hex.join(" ")
    }
}

/// Says why `bytes` cannot be a module at all, before handing them to the compiler (which
/// would otherwise report a WAT syntax error for any non-binary input).
pub(crate) fn not_wasm(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.is_empty() {
        return Some("the module is empty (0 bytes)".into());
    }
    if bytes.starts_with(MAGIC) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if text.trim_start().starts_with('(') || text.trim_start().starts_with(";;") => None,
        _ => Some(format!(
            "not a WebAssembly module: it starts with {} instead of the magic bytes \\0asm, and is not WAT text",
            describe_start(&bytes[..bytes.len().min(4)])
        )),
    }
}

fn describe_exports(module: &wasmtime::Module) -> Vec<Export> {
    let mut out = Vec::new();
    for export in module.exports() {
        let ExternType::Func(ty) = export.ty() else {
            continue;
        };
        let name = export.name();
        if name == wasmpool_abi::ALLOC_EXPORT || name == "_initialize" {
            // The ABI's allocator and the C runtime's reactor hook are not tasks.
            continue;
        }
        if let Some(task) = wasmpool_abi::task_name(name) {
            out.push(Export {
                name: task.to_string(),
                kind: ExportKind::Task,
            });
            continue;
        }
        let params: Option<Vec<ValType>> = ty.params().map(|t| val_type(&t)).collect();
        let results: Option<Vec<ValType>> = ty.results().map(|t| val_type(&t)).collect();
        let kind = match (params, results) {
            (Some(params), Some(results)) => ExportKind::Numeric { params, results },
            _ => ExportKind::Unsupported {
                signature: format!("{ty}"),
            },
        };
        out.push(Export {
            name: name.to_string(),
            kind,
        });
    }
    out
}

fn val_type(t: &WasmValType) -> Option<ValType> {
    match t {
        WasmValType::I32 => Some(ValType::I32),
        WasmValType::I64 => Some(ValType::I64),
        WasmValType::F32 => Some(ValType::F32),
        WasmValType::F64 => Some(ValType::F64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::not_wasm;

    #[test]
    fn non_modules_are_named_as_such() {
        assert!(not_wasm(b"").unwrap().contains("empty"));
        let text = not_wasm(b"hello world").unwrap();
        assert!(text.contains("magic bytes"), "{text}");
        // Printable bytes are shown as the text they are (they were `[68, 65, 6c, 6c]`).
        assert!(
            text.contains(r#"starts with "hell" (68 65 6c 6c)"#),
            "{text}"
        );
        assert!(not_wasm(b"\x7fELF\x02")
            .unwrap()
            .contains("starts with 7f 45 4c 46 "));
        assert_eq!(not_wasm(b"\0asm\x01\0\0\0"), None);
        assert_eq!(not_wasm(b"  (module)"), None);
    }
}
