//! wasmtime in the bench's own process, no IPC: a task as a worker runs it (fresh store with
//! a WASI context, a memory limit, fuel and an epoch deadline; instantiation; the call),
//! with the engine configured exactly as wasmpool's workers configure theirs.

use std::path::Path;

use anyhow::{bail, Context as _};
use wasmtime::{
    Engine, InstancePre, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Val, ValType,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

/// Memory limit of each store: wasmpool's default per-task limit.
const MEMORY: usize = 256 << 20;

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// One engine and one pre-linked module.
pub struct InProcess {
    engine: Engine,
    pre: InstancePre<State>,
}

impl InProcess {
    /// `pooling`: the pooling allocator, as in wasmpool's workers; otherwise wasmtime's
    /// default on-demand allocator.
    pub fn new(wasm: &Path, pooling: bool) -> anyhow::Result<Self> {
        let engine = Engine::new(&wasmpool::sandbox::engine::config(
            pooling,
            wasmpool::sandbox::Metering::Fuel,
        ))?;
        let module = Module::from_file(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)?;
        let pre = linker.instantiate_pre(&module)?;
        Ok(InProcess { engine, pre })
    }

    /// Runs `export(args)` in a fresh store and instance; its single integer result.
    pub fn call(&self, export: &str, args: &[i64]) -> anyhow::Result<i64> {
        let state = State {
            wasi: WasiCtxBuilder::new().build_p1(),
            limits: StoreLimitsBuilder::new().memory_size(MEMORY).build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(super::FUEL)?;
        store.epoch_deadline_trap();
        store.set_epoch_deadline(1);
        let instance = self.pre.instantiate(&mut store)?;
        let func = instance
            .get_func(&mut store, export)
            .with_context(|| format!("no export `{export}`"))?;
        let params: Vec<Val> = func
            .ty(&store)
            .params()
            .zip(args)
            .map(|(ty, &a)| match ty {
                ValType::I32 => Val::I32(a as i32),
                _ => Val::I64(a),
            })
            .collect();
        let mut results = [Val::I64(0)];
        func.call(&mut store, &params, &mut results)?;
        match results[0] {
            Val::I32(x) => Ok(x.into()),
            Val::I64(x) => Ok(x),
            ref other => bail!("`{export}` returned {other:?}"),
        }
    }
}
