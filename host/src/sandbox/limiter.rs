//! The per-task memory limit: a store limiter that turns a growth past the limit into a trap
//! (not wasm's silent `-1`), and remembers that it did so the task reports `MemoryLimit`.

use wasmtime::ResourceLimiter;

/// Most elements one table may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Memory limiter of one task's store.
pub struct MemoryLimiter {
    limit: Option<u64>,
    /// Set when the guest asked for more than `limit`.
    pub hit: bool,
    /// The largest size a linear memory of the store was given, in bytes (its initial size
    /// included: wasmtime asks the limiter when it creates a memory too).
    pub peak: u64,
    /// The size of the module's memory when creating it was refused: its initial size alone
    /// is over the limit.
    pub initial_over: Option<u64>,
    /// Set once the store's memory exists (wasmtime asks the limiter when it creates a
    /// memory too: that first request is the initial size).
    created: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of linear memory (`None`: the wasm32 maximum).
    pub fn new(limit: Option<u64>) -> Self {
        MemoryLimiter {
            limit,
            hit: false,
            peak: 0,
            initial_over: None,
            created: false,
        }
    }
}

/// The error a refused growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes reached (the guest asked for {desired} bytes)")]
pub struct MemoryLimitReached {
    pub limit: u64,
    pub desired: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let creating = !std::mem::replace(&mut self.created, true);
        match self.limit {
            Some(limit) if desired as u64 > limit => {
                self.hit = true;
                if creating {
                    self.initial_over = Some(desired as u64);
                }
                Err(MemoryLimitReached {
                    limit,
                    desired: desired as u64,
                }
                .into())
            }
            _ => {
                self.peak = self.peak.max(desired as u64);
                Ok(true)
            }
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_largest_growth_allowed() {
        let mut limiter = MemoryLimiter::new(Some(10 << 20));
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.memory_growing(1 << 20, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 2 << 20, None).unwrap());
        assert!(limiter.memory_growing(4 << 20, 20 << 20, None).is_err());
        assert_eq!(limiter.peak, 4 << 20, "refused growth is not a peak");
        assert!(limiter.hit);
    }
}
