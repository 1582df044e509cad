//! The one wasmtime configuration shared by the host (which compiles) and the workers (which
//! run): artifacts compiled by one load in the other only because both come from here.

use serde::{Deserialize, Serialize};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::Limits;

/// How a module's code is compiled. Fuel metering is compiled into the code and costs up to
/// 3× on tight loops, so a call without a fuel limit runs code compiled without it; the
/// epoch check (wall-clock deadline, cancel) is in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metering {
    /// Fuel metering and epoch checks: for calls with a fuel limit.
    Fuel,
    /// Epoch checks only: for calls without one.
    Epochs,
}

impl Metering {
    /// Both, in [`Metering::index`] order.
    pub const ALL: [Metering; 2] = [Metering::Fuel, Metering::Epochs];

    /// The code a call under `limits` needs.
    pub fn of(limits: &Limits) -> Metering {
        if limits.fuel.is_some() {
            Metering::Fuel
        } else {
            Metering::Epochs
        }
    }

    /// A dense index, for per-variant arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short tag, for file names and command lines.
    pub fn tag(self) -> &'static str {
        match self {
            Metering::Fuel => "fuel",
            Metering::Epochs => "epochs",
        }
    }

    /// The variant named by [`Metering::tag`].
    pub fn from_tag(tag: &str) -> Option<Metering> {
        Metering::ALL.into_iter().find(|m| m.tag() == tag)
    }
}

/// Most instances a worker keeps slots for. A worker runs one task at a time; a few spare
/// slots let a new store start while the previous one is still being torn down.
const POOL_INSTANCES: u32 = 4;

/// Largest linear memory a task may be given: the whole wasm32 address space. The per-task
/// memory limit is enforced by the store's limiter below this.
const MAX_MEMORY: usize = 4 << 30;

/// Written memory a slot reset copies back rather than drops (see [`config`]).
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine configuration. `pooling` selects the pooling instance allocator (workers); the
/// host compiles with the on-demand allocator, which does not change compiled code.
pub fn config(pooling: bool, metering: Metering) -> Config {
    let mut c = Config::new();
    c.consume_fuel(metering == Metering::Fuel);
    c.epoch_interruption(true);
    c.wasm_threads(false);
    c.max_wasm_stack(1 << 20);
    if pooling {
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
    }
    c
}

/// The workers' instance slots (pooling allocator).
fn pooling_config() -> PoolingAllocationConfig {
    let mut p = PoolingAllocationConfig::default();
    p.total_core_instances(POOL_INSTANCES)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES * 2)
        .total_component_instances(0)
        // Stacks for async calls, which workers never make: the default (1000) costs a
        // guard-page mprotect each when a worker starts, per engine.
        .total_stacks(1)
        .max_memories_per_module(1)
        .max_tables_per_module(2)
        .max_memory_size(MAX_MEMORY)
        .table_elements(super::MAX_TABLE_ELEMENTS)
        .max_core_instance_size(16 << 20)
        // A slot is reset by finding the pages the task wrote (the PAGEMAP_SCAN ioctl,
        // Linux 6.7+) and copying the originals back over them, up to this much;
        // only beyond it are pages dropped with madvise, a system call that zaps page
        // tables and flushes TLBs (a fifth of a small task's time in the worker).
        // Without the ioctl, wasmtime would memset this much blindly: `child::serve`
        // opens `/proc/self/pagemap` before the walls, and the filter allows the ioctl.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    p
}

/// Creates an engine with [`config`].
pub fn engine(pooling: bool, metering: Metering) -> wasmtime::Result<Engine> {
    Engine::new(&config(pooling, metering))
}

/// What must be equal for an artifact compiled in one process to be used in another, for
/// code of `metering`: wasmtime's own [`Engine::precompile_compatibility_hash`] (its version,
/// target, compiler flags, tunables, wasm features) of the compiling engine, plus what that
/// hash leaves out but a compilation's outcome depends on — the workers' instance slots, which
/// the compile process checks every module against — and the metering variant. It keys the
/// compile cache and is part of the worker handshake; a change of source that touches
/// neither (a doc edit) leaves it as it is.
pub fn fingerprint(metering: Metering) -> wasmtime::Result<[u8; 32]> {
    Ok(fingerprint_of(&engine(false, metering)?, metering))
}

/// [`fingerprint`] of an engine already made with [`config`] for `metering`.
pub fn fingerprint_of(engine: &Engine, metering: Metering) -> [u8; 32] {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.update(format!("{:?}", pooling_config()).as_bytes());
    h.0.update(metering.tag().as_bytes());
    *h.0.finalize().as_bytes()
}

/// Both variants' [`fingerprint`]s in one, in hex: the engine part of the worker handshake.
pub fn digest() -> wasmtime::Result<String> {
    let mut both = Vec::new();
    for m in Metering::ALL {
        both.push(fingerprint(m)?);
    }
    Ok(digest_of(both))
}

/// [`digest`] of fingerprints already computed, in [`Metering::ALL`] order.
pub fn digest_of(fingerprints: impl IntoIterator<Item = [u8; 32]>) -> String {
    let mut h = blake3::Hasher::new();
    for f in fingerprints {
        h.update(&f);
    }
    h.finalize().as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Feeds a [`std::hash::Hash`] into BLAKE3: the result is the same in every process and
/// every build (std's hashers promise neither).
struct Blake3Hasher(blake3::Hasher);

impl std::hash::Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let mut first = [0; 8];
        first.copy_from_slice(&self.0.finalize().as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_stable_and_names_the_variant() {
        let t = std::time::Instant::now();
        let fuel = fingerprint(Metering::Fuel).unwrap();
        eprintln!("one engine: {:?}", t.elapsed());
        assert_eq!(
            fuel,
            fingerprint(Metering::Fuel).unwrap(),
            "two engines built alike"
        );
        assert_ne!(fuel, fingerprint(Metering::Epochs).unwrap());
        for m in Metering::ALL {
            assert_eq!(
                fingerprint_of(&engine(true, m).unwrap(), m),
                fingerprint(m).unwrap(),
                "the workers' engine compiles alike"
            );
        }
    }
}
