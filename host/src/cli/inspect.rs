//! `wasmpool inspect MODULE`: what a module exports and how each export is called.

use std::path::Path;

use super::{load_module, EXIT_OK};

pub fn inspect(path: &Path) -> anyhow::Result<i32> {
    // Imports the sandbox does not provide are listed, not refused: inspecting a module is
    // how one finds out it needs `--unknown-imports trap`.
    let pool = wasmpool::Pool::builder()
        .workers(1)
        .unknown_imports(wasmpool::UnknownImports::Trap)
        .build()?;
    let module = load_module(&pool, path)?;
    println!(
        "module {}  ({} bytes, id {})",
        path.display(),
        module.size(),
        module.id()
    );
    if !module.proposals().is_empty() {
        println!("  proposals: {}", module.proposals().join(", "));
    }
    if !module.unknown_imports().is_empty() {
        println!(
            "  imports the sandbox does not provide (the module loads with --unknown-imports trap; a call of one traps):"
        );
        for (m, name) in module.unknown_imports() {
            println!("    {m}::{name}");
        }
    }
    if module.exports().is_empty() {
        println!("  no callable exports");
    }
    for export in module.exports() {
        println!("  {export}");
    }
    pool.shutdown();
    Ok(EXIT_OK)
}
