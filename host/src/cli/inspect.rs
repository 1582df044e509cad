//! `wasmpool inspect MODULE`: what a module exports and how each export is called.

use std::path::Path;

use super::{load_module, EXIT_OK};

pub fn inspect(path: &Path) -> anyhow::Result<i32> {
    let pool = wasmpool::Pool::builder().workers(1).build()?;
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
    if module.exports().is_empty() {
        println!("  no callable exports");
    }
    for export in module.exports() {
        println!("  {export}");
    }
    pool.shutdown();
    Ok(EXIT_OK)
}
