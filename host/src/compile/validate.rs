//! Validation and compilation of untrusted bytes, inside a compile process: not wasm at all,
//! invalid, an import the sandbox does not provide, over the workers' instance-slot limits —
//! each a [`CompileReply`] the host turns into a `LoadError`; else the artifact and the
//! module's exports.

use std::collections::HashSet;

use wasmtime::{Engine, ExternType, Linker, Store, ValType as WasmValType};
use wasmtime_wasi::WasiCtxBuilder;

use crate::module::{Export, ExportKind};
use crate::protocol::CompileReply;
use crate::sandbox::{engine, linker, Metering, TaskState, WasiSetup};
use crate::value::ValType;

/// The host's compiler: validates, compiles and checks imports (see `Module::compile`).
pub struct Compiler {
    /// The workers' engine (pooling allocator): compiling with it checks the module against
    /// the limits of the workers' instance slots, as a worker loading it would. (The
    /// allocator does not change compiled code: `engine::fingerprint` is the same.)
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<TaskState>,
    /// `(module, name)` of every function the linker provides.
    pub(crate) provided: HashSet<(String, String)>,
}

impl Compiler {
    /// Creates a compile process's engine for code of `metering`: the workers' (it never
    /// instantiates, but its instance slots are what a module must fit).
    pub fn new(metering: Metering) -> wasmtime::Result<Self> {
        let engine = engine::engine(true, metering)?;
        let linker = linker(&engine)?;
        let mut store = Store::new(
            &engine,
            TaskState::new(None, WasiSetup::Now(Box::new(WasiCtxBuilder::new()))),
        );
        let provided = linker
            .iter(&mut store)
            .map(|(m, n, _)| (m.to_string(), n.to_string()))
            .collect();
        Ok(Compiler {
            engine,
            linker,
            provided,
        })
    }
}

/// A digest of what a module compiled by `engine`'s compiler may import: every function the
/// sandbox provides, by module, name and type, in order. A compilation's verdict depends on
/// it (an import not in it is refused), so the on-disk cache keys entries by it too: a build
/// whose sandbox provides other imports never takes this build's entries, nor the reverse.
pub(crate) fn import_surface(engine: &Engine) -> wasmtime::Result<[u8; 32]> {
    let linker = linker(engine)?;
    let mut store = Store::new(
        engine,
        TaskState::new(None, WasiSetup::Now(Box::new(WasiCtxBuilder::new()))),
    );
    let items: Vec<(String, String, wasmtime::Extern)> = linker
        .iter(&mut store)
        .map(|(m, n, e)| (m.to_string(), n.to_string(), e))
        .collect();
    let mut provided: Vec<String> = items
        .iter()
        .map(|(m, n, e)| format!("{m}\0{n}\0{:?}\n", e.ty(&store)))
        .collect();
    provided.sort();
    Ok(*blake3::hash(provided.concat().as_bytes()).as_bytes())
}

/// Validates and compiles `bytes` (binary wasm or text format) and checks that every import
/// is one the sandbox provides. Runs inside a compile process, never in the host.
pub(crate) fn compile(compiler: &Compiler, bytes: &[u8]) -> CompileReply {
    let invalid = |message: String| CompileReply::Invalid { message };
    if let Some(message) = not_wasm(bytes) {
        return invalid(message);
    }
    // The proposals are read beside the compile, which leaves a core idle in its serial
    // parts (for a 105 MB module, half a second of the wall-clock time).
    let (compiled, proposals) = std::thread::scope(|scope| {
        let proposals = scope.spawn(|| super::proposals::used(bytes));
        let compiled = wasmtime::Module::new(&compiler.engine, bytes);
        (compiled, proposals.join())
    });
    let module = match compiled {
        Ok(m) => m,
        // wasmtime checks every module it creates against the pooling allocator's limits:
        // over the workers' instance slots (memories, tables, instance size), not invalid.
        Err(e) if over_slots(&e) => {
            return CompileReply::OverLimit {
                message: format!("{e:#}"),
            }
        }
        Err(e) => return invalid(format!("{e:#}")),
    };
    let Ok(proposals) = proposals else {
        return invalid("reading the module's proposals failed".into());
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
    CompileReply::Compiled {
        artifact,
        exports: describe_exports(&module),
        proposals,
        unknown_imports,
    }
}

/// Whether wasmtime refused a module for the pooling allocator's limits (each of its checks
/// says the module "does not fit in pooling allocator requirements").
fn over_slots(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|cause| cause.to_string().contains("pooling allocator requirements"))
}

/// `bytes` instrumented for an initializer snapshot (Wizer's `instrument`: the module with
/// each of its memories and mutable globals exported under `__wizer_*` names, so a worker
/// can read them after the initializer ran), or why it cannot be snapshotted: Wizer's
/// checks refuse imported memories, globals and tables, mutable globals of reference type,
/// and instructions that change tables or drop segments, whose effect a snapshot of
/// memories and globals would lose. (WAT text is parsed first.)
pub(crate) fn instrument(bytes: &[u8]) -> Result<Vec<u8>, CompileReply> {
    if let Some(message) = not_wasm(bytes) {
        return Err(CompileReply::Invalid { message });
    }
    let binary = wat::parse_bytes(bytes).map_err(|e| CompileReply::Invalid {
        message: format!("{e}"),
    })?;
    // Wizer's passes index with `unwrap` in places; whatever they do with hostile bytes,
    // a panic here is this compile process's failure, never the host's.
    match std::panic::catch_unwind(|| wasmtime_wizer::Wizer::new().instrument(&binary)) {
        Ok(Ok((_, instrumented))) => Ok(instrumented),
        Ok(Err(e)) => Err(CompileReply::Invalid {
            message: format!("the module cannot be snapshotted: {e:#}"),
        }),
        Err(_) => Err(CompileReply::Invalid {
            message: "the module cannot be snapshotted: Wizer's instrumentation panicked".into(),
        }),
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
