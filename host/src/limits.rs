//! Per-task resource limits: the one serde-able description of a task's sandbox, used by the
//! pool, the wire protocol and the worker alike.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::TaskError;

/// Longest wall-clock limit a task may have: 365 days. Anything longer is refused rather
/// than added to a clock (a deadline must be representable, and a task meant to run longer
/// than a year is better run with `timeout: None`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(MAX_TIMEOUT_DAYS * 24 * 60 * 60);
const MAX_TIMEOUT_DAYS: u64 = 365;

/// Largest memory limit: 4 GiB, the whole address space of a wasm32 memory.
pub const MAX_MEMORY: u64 = 4 << 30;

/// A limit outside its valid range, refused by [`Limits::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{limit} {message}")]
pub struct LimitError {
    /// The field of [`Limits`] at fault, e.g. `timeout`.
    pub limit: &'static str,
    /// Why its value is refused.
    pub message: String,
}

/// The limits one task runs under. `None` means unlimited. Each field's valid range is
/// checked by [`Limits::validate`] wherever limits enter the pool (the builder, each call,
/// the CLI's flags).
///
/// ```
/// use std::time::Duration;
/// let limits = wasmpool::Limits::default()
///     .with_timeout(Some(Duration::from_millis(500)))
///     .with_fuel(Some(10_000_000));
/// assert_eq!(limits.memory, Some(256 << 20));
/// ```
///
/// Limits have two serde forms. A human-readable format (JSON) gets explicit units in every
/// name, and refuses unknown fields:
/// `{"fuel": n|null, "timeout_ms": n|null, "memory_bytes": n|null, "stdout_cap_bytes": n,
/// "stderr_cap_bytes": n, "max_input_bytes": n, "max_output_bytes": n}` (a timeout that is
/// not a whole number of milliseconds is rounded up to the next one, so it never becomes 0).
/// A binary format (postcard, the wire between host and workers) gets the fields as they
/// are, losslessly.
///
/// ```
/// let json = serde_json::to_value(wasmpool::Limits::default()).unwrap();
/// assert_eq!(json["timeout_ms"], 60_000);
/// assert_eq!(json["memory_bytes"], 256 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (deterministic instruction budget) per task. Default: unlimited, and then the
    /// task runs code compiled without fuel metering (up to 3× faster on tight loops); only
    /// the epoch check for the wall-clock limit remains. Valid: `None` or at least 1 (zero
    /// fuel would fail every task before its first instruction).
    pub fuel: Option<u64>,
    /// Wall-clock limit per task, enforced even while the guest is blocked in a host call.
    /// Default: 60 s. Valid: `None` (unlimited), or more than zero and at most
    /// [`MAX_TIMEOUT`] (365 days).
    pub timeout: Option<Duration>,
    /// Linear memory limit per task, in bytes (tables are bounded alongside). Default:
    /// 256 MiB. Valid: `None` (the wasm32 maximum, 4 GiB), or 1 byte up to [`MAX_MEMORY`]
    /// (4 GiB); a module whose initial memory is over the limit fails to instantiate.
    pub memory: Option<u64>,
    /// Captured stdout bytes kept per task; the rest is dropped. Default: 1 MiB. Valid: any;
    /// 0 keeps no output (the task still runs and is marked `output_truncated` if it wrote).
    pub stdout_cap: u32,
    /// Captured stderr bytes kept per task; the rest is dropped. Default: 1 MiB. Valid: any,
    /// as for `stdout_cap`.
    pub stderr_cap: u32,
    /// Largest input (an SDK task's JSON, a command's arguments, environment, stdin and
    /// files) a call may carry, in bytes. Default: 64 MiB. Valid: at least 1 (no JSON input
    /// fits in 0 bytes).
    pub max_input: u32,
    /// Largest output (an SDK task's JSON reply) a task may return, in bytes. Default:
    /// 64 MiB. Valid: at least 1 (no JSON reply fits in 0 bytes).
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

    /// Checks every limit against its valid range (documented on each field): the pool
    /// refuses a default that fails here with [`PoolError::Config`](crate::PoolError), and a
    /// call's tasks with [`TaskError::BadInput`](crate::TaskError).
    ///
    /// ```
    /// use std::time::Duration;
    /// use wasmpool::Limits;
    /// assert!(Limits::default().validate().is_ok());
    /// let huge = Limits::default().with_timeout(Some(Duration::MAX));
    /// assert_eq!(huge.validate().unwrap_err().limit, "timeout");
    /// ```
    pub fn validate(&self) -> Result<(), LimitError> {
        let refuse = |limit, message: String| Err(LimitError { limit, message });
        if self.fuel == Some(0) {
            return refuse(
                "fuel",
                "of 0 would fail every task at once; use at least 1, or none for unlimited".into(),
            );
        }
        match self.timeout {
            Some(t) if t.is_zero() => {
                return refuse(
                    "timeout",
                    "of 0 would stop every task at once; use more than zero, or none for unlimited"
                        .into(),
                )
            }
            Some(t) if t > MAX_TIMEOUT => {
                return refuse(
                    "timeout",
                    format!(
                    "of {} is over the maximum of {MAX_TIMEOUT_DAYS} days; use none for unlimited",
                    humantime::format_duration(t),
                ),
                )
            }
            _ => {}
        }
        match self.memory {
            Some(0) => return refuse(
                "memory",
                "of 0 bytes fails every module that has a memory; use at least one page (64KiB)"
                    .into(),
            ),
            Some(m) if m > MAX_MEMORY => {
                return refuse(
                    "memory",
                    format!(
                        "of {m} bytes is over the wasm32 maximum of 4 GiB ({MAX_MEMORY} bytes)"
                    ),
                )
            }
            _ => {}
        }
        if self.max_input == 0 {
            return refuse(
                "max_input",
                "of 0 bytes refuses every input; use at least 1".into(),
            );
        }
        if self.max_output == 0 {
            return refuse(
                "max_output",
                "of 0 bytes refuses every reply; use at least 1".into(),
            );
        }
        Ok(())
    }

    /// When a task started at `start` must have answered, making `calls` calls of
    /// `timeout` each, before its worker is killed: `start + timeout × calls + grace`.
    /// `None` when that instant cannot be represented (limits that pass
    /// [`Limits::validate`] always give `Some`).
    pub(crate) fn kill_deadline(start: Instant, timeout: Duration, calls: u32) -> Option<Instant> {
        start
            .checked_add(timeout.checked_mul(calls)?)?
            .checked_add(Limits::kill_grace(timeout))
    }

    /// `start + timeout`: when a call started at `start` runs out of time; refused with
    /// `BadInput` when the clock cannot hold that instant (never for validated limits).
    pub(crate) fn deadline(start: Instant, timeout: Duration) -> Result<Instant, TaskError> {
        start
            .checked_add(timeout)
            .ok_or_else(|| Limits::unrepresentable(timeout))
    }

    /// The error of a task whose timeout is too large to add to the clock.
    pub(crate) fn unrepresentable(timeout: Duration) -> TaskError {
        TaskError::bad_input(format!(
            "the timeout of {timeout:?} is too large to add to the clock (at most {MAX_TIMEOUT_DAYS} days is valid)"
        ))
    }

    /// How long the host waits past the timeout for the worker's own answer before it kills
    /// the worker (a guest blocked in a host call cannot see the epoch interrupt).
    pub(crate) fn kill_grace(timeout: Duration) -> Duration {
        (timeout / 2).clamp(Duration::from_millis(25), Duration::from_secs(2))
    }
}

/// [`Limits`] in a binary format: the fields as they are (what the wire carries).
#[derive(Serialize, Deserialize)]
#[serde(rename = "Limits")]
struct WireLimits {
    fuel: Option<u64>,
    timeout: Option<Duration>,
    memory: Option<u64>,
    stdout_cap: u32,
    stderr_cap: u32,
    max_input: u32,
    max_output: u32,
}

/// [`Limits`] in a human-readable format: a unit in every name.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Limits", deny_unknown_fields)]
struct JsonLimits {
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
    stdout_cap_bytes: u32,
    stderr_cap_bytes: u32,
    max_input_bytes: u32,
    max_output_bytes: u32,
}

/// `t` in whole milliseconds, rounded up (a nonzero timeout never becomes 0).
fn ceil_millis(t: Duration) -> u64 {
    let ms = t.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

impl Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = *self;
        if s.is_human_readable() {
            JsonLimits {
                fuel: l.fuel,
                timeout_ms: l.timeout.map(ceil_millis),
                memory_bytes: l.memory,
                stdout_cap_bytes: l.stdout_cap,
                stderr_cap_bytes: l.stderr_cap,
                max_input_bytes: l.max_input,
                max_output_bytes: l.max_output,
            }
            .serialize(s)
        } else {
            WireLimits {
                fuel: l.fuel,
                timeout: l.timeout,
                memory: l.memory,
                stdout_cap: l.stdout_cap,
                stderr_cap: l.stderr_cap,
                max_input: l.max_input,
                max_output: l.max_output,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Limits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let j = JsonLimits::deserialize(d)?;
            Ok(Limits {
                fuel: j.fuel,
                timeout: j.timeout_ms.map(Duration::from_millis),
                memory: j.memory_bytes,
                stdout_cap: j.stdout_cap_bytes,
                stderr_cap: j.stderr_cap_bytes,
                max_input: j.max_input_bytes,
                max_output: j.max_output_bytes,
            })
        } else {
            let w = WireLimits::deserialize(d)?;
            Ok(Limits {
                fuel: w.fuel,
                timeout: w.timeout,
                memory: w.memory,
                stdout_cap: w.stdout_cap,
                stderr_cap: w.stderr_cap,
                max_input: w.max_input,
                max_output: w.max_output,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_has_a_unit_in_every_name_and_round_trips() {
        let limits = Limits {
            fuel: Some(7),
            timeout: Some(Duration::from_millis(1500)),
            memory: None,
            stdout_cap: 1,
            stderr_cap: 2,
            max_input: 3,
            max_output: 4,
        };
        let json = serde_json::to_value(limits).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "fuel": 7, "timeout_ms": 1500, "memory_bytes": null,
                "stdout_cap_bytes": 1, "stderr_cap_bytes": 2,
                "max_input_bytes": 3, "max_output_bytes": 4,
            })
        );
        assert_eq!(serde_json::from_value::<Limits>(json).unwrap(), limits);
        // Below a millisecond rounds up: a timeout never turns into none or zero.
        let tiny = limits.with_timeout(Some(Duration::from_nanos(1)));
        assert_eq!(serde_json::to_value(tiny).unwrap()["timeout_ms"], 1);
    }

    #[test]
    fn json_form_refuses_unknown_fields_and_names_without_units() {
        let mut json = serde_json::to_value(Limits::default()).unwrap();
        json["timeout"] = 5.into();
        let err = serde_json::from_value::<Limits>(json).unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn wire_form_is_lossless() {
        let limits = Limits::default().with_timeout(Some(Duration::new(3, 123_456_789)));
        let bytes = postcard::to_stdvec(&limits).unwrap();
        assert_eq!(postcard::from_bytes::<Limits>(&bytes).unwrap(), limits);
    }

    fn refused(limits: Limits) -> &'static str {
        limits.validate().expect_err("refused").limit
    }

    #[test]
    fn validate_takes_the_defaults_and_every_bound() {
        assert_eq!(Limits::default().validate(), Ok(()));
        assert_eq!(Limits::unlimited().validate(), Ok(()));
        let edges = Limits {
            fuel: Some(1),
            timeout: Some(MAX_TIMEOUT),
            memory: Some(MAX_MEMORY),
            stdout_cap: 0,
            stderr_cap: 0,
            max_input: 1,
            max_output: 1,
        };
        assert_eq!(edges.validate(), Ok(()));
        let small = edges
            .with_timeout(Some(Duration::from_nanos(1)))
            .with_memory(Some(1));
        assert_eq!(small.validate(), Ok(()));
    }

    #[test]
    fn validate_refuses_each_limit_out_of_range_by_name() {
        let d = Limits::default();
        assert_eq!(refused(d.with_fuel(Some(0))), "fuel");
        assert_eq!(refused(d.with_timeout(Some(Duration::ZERO))), "timeout");
        assert_eq!(refused(d.with_timeout(Some(Duration::MAX))), "timeout");
        let just_over = MAX_TIMEOUT + Duration::from_nanos(1);
        assert_eq!(refused(d.with_timeout(Some(just_over))), "timeout");
        assert_eq!(refused(d.with_memory(Some(0))), "memory");
        assert_eq!(refused(d.with_memory(Some(MAX_MEMORY + 1))), "memory");
        assert_eq!(refused(Limits { max_input: 0, ..d }), "max_input");
        assert_eq!(refused(Limits { max_output: 0, ..d }), "max_output");
        let message = d.with_timeout(Some(Duration::MAX)).validate().unwrap_err();
        assert!(message.to_string().starts_with("timeout of "), "{message}");
        assert!(
            message.to_string().contains("maximum of 365 days"),
            "{message}"
        );
    }

    #[test]
    fn kill_deadline_is_none_when_the_clock_cannot_hold_it() {
        let now = Instant::now();
        assert_eq!(Limits::kill_deadline(now, Duration::MAX, 1), None);
        assert_eq!(
            Limits::kill_deadline(now, MAX_TIMEOUT, u32::MAX).map(|_| ()),
            Some(())
        );
        let second = Duration::from_secs(1);
        assert_eq!(
            Limits::kill_deadline(now, second, 3),
            Some(now + 3 * second + Limits::kill_grace(second))
        );
    }
}
