//! The one wasmtime configuration shared by the host (which compiles) and the workers (which
//! run): artifacts compiled by one load in the other only because both come from here.

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Most instances a worker keeps slots for. A worker runs one task at a time; a few spare
/// slots let a new store start while the previous one is still being torn down.
const POOL_INSTANCES: u32 = 4;

/// Largest linear memory a task may be given: the whole wasm32 address space. The per-task
/// memory limit is enforced by the store's limiter below this.
const MAX_MEMORY: usize = 4 << 30;

/// The engine configuration. `pooling` selects the pooling instance allocator (workers); the
/// host compiles with the on-demand allocator, which does not change compiled code.
pub fn config(pooling: bool) -> Config {
    let mut c = Config::new();
    c.consume_fuel(true);
    c.epoch_interruption(true);
    c.wasm_threads(false);
    c.max_wasm_stack(1 << 20);
    if pooling {
        let mut p = PoolingAllocationConfig::default();
        p.total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES * 2)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(2)
            .max_memory_size(MAX_MEMORY)
            .table_elements(super::MAX_TABLE_ELEMENTS)
            .max_core_instance_size(16 << 20)
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Creates an engine with [`config`].
pub fn engine(pooling: bool) -> wasmtime::Result<Engine> {
    Engine::new(&config(pooling))
}
