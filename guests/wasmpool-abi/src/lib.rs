//! The wasmpool guest ABI, version 1: the one place that says how the host calls an
//! SDK task inside a guest module. The host (`wasmpool`) and the guest SDK
//! (`wasmpool-guest`) both depend on this crate; `guests/ABI.md` documents the same
//! contract for guests written in other languages.
//!
//! A call goes like this:
//! 1. the host calls the guest's [`ALLOC_EXPORT`] with the input length and writes the
//!    input bytes (one JSON value, UTF-8) at the returned pointer in [`MEMORY_EXPORT`];
//! 2. the host calls the task export, named [`TASK_EXPORT_PREFIX`]` + name`, with
//!    `(ptr: i32, len: i32) -> i64`;
//! 3. the returned `i64` packs the pointer and length of the guest's reply
//!    ([`pack`] / [`unpack`]); the reply's first byte is a status tag ([`STATUS_OK`],
//!    [`STATUS_ERR`] or [`STATUS_BAD_INPUT`]) and the rest is the payload: a JSON value for
//!    `STATUS_OK`, a UTF-8 error message for the other two.
//!
//! ```
//! let packed = wasmpool_abi::pack(0x1000, 17);
//! assert_eq!(wasmpool_abi::unpack(packed), (0x1000, 17));
//! assert_eq!(wasmpool_abi::task_export_name("wordcount"), "wasmpool.task.wordcount");
//! ```
#![no_std]

extern crate alloc;

use alloc::string::String;

/// ABI version described by this crate.
pub const ABI_VERSION: u32 = 1;

/// Name of the guest's linear memory export.
pub const MEMORY_EXPORT: &str = "memory";

/// Name of the guest's allocator export: `(len: i32) -> i32`, returning a pointer to
/// `len` writable bytes that stay valid for the rest of the call.
pub const ALLOC_EXPORT: &str = "wasmpool_alloc";

/// Every SDK task is exported as this prefix followed by the task's name.
pub const TASK_EXPORT_PREFIX: &str = "wasmpool.task.";

/// First byte of a reply: the task succeeded, the payload is its JSON output.
pub const STATUS_OK: u8 = 0;

/// First byte of a reply: the task returned an error, the payload is its UTF-8 message.
pub const STATUS_ERR: u8 = 1;

/// First byte of a reply: the input did not decode into what the task takes, so the task
/// did not run; the payload is a UTF-8 message saying why. The host reports it as bad input
/// (the caller's fault), not as the task's error. Added to version 1 without changing it:
/// a guest that sends [`STATUS_ERR`] for such input still works (its callers see a task
/// error), and only a host older than this status would find it unknown.
pub const STATUS_BAD_INPUT: u8 = 2;

/// The export name under which an SDK task called `name` is exported.
pub fn task_export_name(name: &str) -> String {
    let mut s = String::with_capacity(TASK_EXPORT_PREFIX.len() + name.len());
    s.push_str(TASK_EXPORT_PREFIX);
    s.push_str(name);
    s
}

/// The SDK task name behind an export name, if the export is an SDK task.
pub fn task_name(export: &str) -> Option<&str> {
    export.strip_prefix(TASK_EXPORT_PREFIX)
}

/// Packs a reply's guest pointer and length into the task export's `i64` result:
/// pointer in the high 32 bits, length in the low 32 bits.
pub const fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Unpacks a task export's `i64` result into `(ptr, len)`.
pub const fn unpack(packed: i64) -> (u32, u32) {
    let v = packed as u64;
    ((v >> 32) as u32, v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_extremes() {
        for (p, l) in [(0, 0), (u32::MAX, u32::MAX), (1, u32::MAX), (u32::MAX, 0)] {
            assert_eq!(unpack(pack(p, l)), (p, l));
        }
    }

    #[test]
    fn task_names_round_trip() {
        let e = task_export_name("wc");
        assert_eq!(task_name(&e), Some("wc"));
        assert_eq!(task_name("square"), None);
    }
}
