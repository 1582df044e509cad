//! Per-task resource limits: the one serde-able description of a task's sandbox, used by the
//! pool, the wire protocol and the worker alike.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The limits one task runs under. `None` means unlimited.
///
/// ```
/// use std::time::Duration;
/// let limits = wasmpool::Limits::default()
///     .with_timeout(Some(Duration::from_millis(500)))
///     .with_fuel(Some(10_000_000));
/// assert_eq!(limits.memory, Some(256 << 20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel (deterministic instruction budget) per task. Default: unlimited, and then the
    /// task runs code compiled without fuel metering (up to 3× faster on tight loops); only
    /// the epoch check for the wall-clock limit remains.
    pub fuel: Option<u64>,
    /// Wall-clock limit per task, enforced even while the guest is blocked in a host call.
    /// Default: 60 s.
    pub timeout: Option<Duration>,
    /// Linear memory limit per task, in bytes (tables are bounded alongside). Default: 256 MiB.
    pub memory: Option<u64>,
    /// Captured stdout bytes kept per task; the rest is dropped. Default: 1 MiB.
    pub stdout_cap: u32,
    /// Captured stderr bytes kept per task; the rest is dropped. Default: 1 MiB.
    pub stderr_cap: u32,
    /// Largest input (an SDK task's JSON) a call may carry, in bytes. Default: 64 MiB.
    pub max_input: u32,
    /// Largest output (an SDK task's JSON reply) a task may return, in bytes. Default: 64 MiB.
    pub max_output: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: None,
            timeout: Some(Duration::from_secs(60)),
            memory: Some(256 << 20),
            stdout_cap: 1 << 20,
            stderr_cap: 1 << 20,
            max_input: 64 << 20,
            max_output: 64 << 20,
        }
    }
}

impl Limits {
    /// Limits with nothing bounded but the output captures.
    pub fn unlimited() -> Self {
        Limits {
            fuel: None,
            timeout: None,
            memory: None,
            ..Limits::default()
        }
    }

    /// These limits with another fuel budget.
    pub fn with_fuel(mut self, fuel: Option<u64>) -> Self {
        self.fuel = fuel;
        self
    }

    /// These limits with another wall-clock limit.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// These limits with another memory limit (bytes).
    pub fn with_memory(mut self, memory: Option<u64>) -> Self {
        self.memory = memory;
        self
    }

    /// How long the host waits past the timeout for the worker's own answer before it kills
    /// the worker (a guest blocked in a host call cannot see the epoch interrupt).
    pub(crate) fn kill_grace(timeout: Duration) -> Duration {
        (timeout / 2).clamp(Duration::from_millis(25), Duration::from_secs(2))
    }
}
