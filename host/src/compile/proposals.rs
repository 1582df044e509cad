//! Which WebAssembly proposals a module uses beyond the first version of the standard, read
//! from its types, memories, tables, tags and every instruction (each of wasmparser's
//! operators belongs to one proposal). Runs in the compile process, on a thread beside
//! wasmtime's compile of the same bytes (whose answer is used only if the compile succeeds);
//! the answer is cached with the compilation and shown by `wasmpool inspect`.

use std::collections::BTreeSet;

use wasmparser::{
    BlockType, CompositeInnerType, Operator, Parser, Payload, RefType, TypeRef, ValType,
};

/// Proposal names as in their repositories' names, less the underscores of wasmparser's
/// (`bulk-memory`, `tail-call`, `exceptions`, `multi-memory`, `simd`, …), sorted; empty for
/// a module of the first version only, or bytes that do not parse (text is parsed first).
pub(crate) fn used(bytes: &[u8]) -> Vec<String> {
    let Ok(binary) = wat::parse_bytes(bytes) else {
        return Vec::new();
    };
    let mut found = BTreeSet::new();
    // A module whose bytes do not parse gets what was found before the fault (the
    // compiler has refused it already).
    let _ = scan(&binary, &mut found);
    found.into_iter().map(|p| p.replace('_', "-")).collect()
}

fn scan(bytes: &[u8], found: &mut BTreeSet<&'static str>) -> wasmparser::Result<()> {
    let (mut memories, mut tables) = (0, 0);
    let mut memory = |m: wasmparser::MemoryType, found: &mut BTreeSet<&'static str>| {
        memories += 1;
        if memories > 1 {
            found.insert("multi_memory");
        }
        if m.memory64 {
            found.insert("memory64");
        }
        if m.shared {
            found.insert("threads");
        }
    };
    let mut table = |t: wasmparser::TableType, found: &mut BTreeSet<&'static str>| {
        tables += 1;
        if tables > 1 {
            found.insert("reference_types");
        }
        if t.table64 {
            found.insert("memory64");
        }
        ref_type(t.element_type, found);
    };
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = group?;
                    if group.is_explicit_rec_group() {
                        found.insert("gc");
                    }
                    for sub in group.types() {
                        if !sub.is_final || sub.supertype_idx.is_some() {
                            found.insert("gc");
                        }
                        match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                if f.results().len() > 1 {
                                    found.insert("multi_value");
                                }
                                for t in f.params().iter().chain(f.results()) {
                                    val_type(*t, found);
                                }
                            }
                            CompositeInnerType::Array(_) | CompositeInnerType::Struct(_) => {
                                found.insert("gc");
                            }
                            CompositeInnerType::Cont(_) => {
                                found.insert("stack_switching");
                            }
                        }
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import?.ty {
                        TypeRef::Memory(m) => memory(m, found),
                        TypeRef::Table(t) => table(t, found),
                        TypeRef::Tag(_) => {
                            found.insert("exceptions");
                        }
                        TypeRef::Global(g) => val_type(g.content_type, found),
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for m in reader {
                    memory(m?, found);
                }
            }
            Payload::TableSection(reader) => {
                for t in reader {
                    table(t?.ty, found);
                }
            }
            Payload::GlobalSection(reader) => {
                for g in reader {
                    val_type(g?.ty.content_type, found);
                }
            }
            Payload::TagSection(_) => {
                found.insert("exceptions");
            }
            Payload::CodeSectionEntry(body) => {
                for local in body.get_locals_reader()? {
                    val_type(local?.1, found);
                }
                let mut ops = body.get_operators_reader()?;
                while !ops.eof() {
                    let op = ops.read()?;
                    if let Operator::Block { blockty }
                    | Operator::Loop { blockty }
                    | Operator::If { blockty }
                    | Operator::TryTable {
                        try_table: wasmparser::TryTable { ty: blockty, .. },
                    } = &op
                    {
                        match blockty {
                            BlockType::FuncType(_) => {
                                found.insert("multi_value");
                            }
                            BlockType::Type(t) => val_type(*t, found),
                            BlockType::Empty => {}
                        }
                    }
                    match proposal_of(&op) {
                        "mvp" => {}
                        proposal => {
                            found.insert(proposal);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn val_type(t: ValType, found: &mut BTreeSet<&'static str>) {
    match t {
        ValType::V128 => {
            found.insert("simd");
        }
        ValType::Ref(r) => ref_type(r, found),
        _ => {}
    }
}

fn ref_type(r: RefType, found: &mut BTreeSet<&'static str>) {
    if r == RefType::EXTERNREF {
        found.insert("reference_types");
    } else if r != RefType::FUNCREF {
        found.insert("gc");
    }
}

/// The proposal each operator comes from (`mvp` for the first version), as wasmparser lists
/// them.
macro_rules! define_proposal_of {
    ($( @$proposal:ident $op:ident $({ $($arg:ident: $argty:ty),* })? => $visit:ident ($($ann:tt)*))*) => {
        fn proposal_of(op: &Operator<'_>) -> &'static str {
            #[allow(unreachable_patterns)]
            match op {
                $( Operator::$op { .. } => stringify!($proposal), )*
                _ => "mvp",
            }
        }
    };
}
wasmparser::for_each_operator!(define_proposal_of);

#[cfg(test)]
mod tests {
    use super::used;

    #[test]
    fn proposals_are_named_from_instructions_and_types() {
        assert!(used(b"(module (func (result i32) i32.const 1))").is_empty());
        let wat = r#"(module
            (tag $e (param i32))
            (memory 1)
            (func $f (param i32) (result i32) local.get 0)
            (func (export "g") (result i32)
                (memory.fill (i32.const 0) (i32.const 0) (i32.const 4))
                (block $h (result i32)
                    (try_table (result i32) (catch $e $h) (return_call $f (i32.const 1))))))"#;
        assert_eq!(
            used(wat.as_bytes()),
            ["bulk-memory", "exceptions", "tail-call"]
        );
        let wat = "(module (memory 1) (memory 1) (func (result v128) v128.const i64x2 0 0))";
        assert_eq!(used(wat.as_bytes()), ["multi-memory", "simd"]);
    }
}
