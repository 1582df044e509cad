//! Guest SDK for wasmpool: write a task as a plain Rust function, export it with
//! [`#[task]`](task), build the crate as a `cdylib` for `wasm32-wasip1`, and the
//! wasmpool host can run it with JSON input and output.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use wasmpool_guest::task;
//!
//! #[derive(Deserialize)]
//! struct Pair {
//!     a: i64,
//!     b: i64,
//! }
//!
//! #[derive(Serialize)]
//! struct Sum {
//!     sum: i64,
//! }
//!
//! /// Exported as `wasmpool.task.add`: `{"a": 1, "b": 2}` → `{"sum": 3}`.
//! #[task]
//! fn add(input: Pair) -> Sum {
//!     Sum { sum: input.a.wrapping_add(input.b) }
//! }
//!
//! /// Exported as `wasmpool.task.checked_div`; an `Err` becomes a task error whose
//! /// message is the error's `Display` text.
//! #[task(name = "checked_div")]
//! fn div(input: Pair) -> Result<i64, String> {
//!     input.a.checked_div(input.b).ok_or_else(|| format!("cannot divide {} by {}", input.a, input.b))
//! }
//! ```
//!
//! with, in the guest's `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! wasmpool-guest = { path = "../wasmpool-guest" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! (Without a direct `serde` dependency, derive through the re-export:
//! `#[derive(wasmpool_guest::serde::Deserialize)]` plus
//! `#[serde(crate = "wasmpool_guest::serde")]`.)
//!
//! # What the SDK does
//!
//! It implements the wasmpool guest ABI (see `guests/ABI.md` and the `wasmpool-abi`
//! crate): it exports `wasmpool_alloc`, through which the host places the input in
//! guest memory, and `#[task]` exports each task as `wasmpool.task.<name>` with the
//! signature `(ptr: i32, len: i32) -> i64`. That export decodes the input as JSON,
//! calls your function, and replies with a status byte followed by the JSON output
//! ([`STATUS_OK`](wasmpool_abi::STATUS_OK)) or an error message
//! ([`STATUS_ERR`](wasmpool_abi::STATUS_ERR)). Input that does not decode into the
//! function's input type is not passed to it: the reply is
//! [`STATUS_BAD_INPUT`](wasmpool_abi::STATUS_BAD_INPUT) with the decoder's message, which
//! the host reports as bad input (`TaskError::BadInput`), not as the task's error.
//!
//! Memory is never freed: the host runs every call in a fresh instance, so leaking
//! is both correct and the cheapest allocator strategy. A panic aborts the instance
//! (wasm traps with `unreachable`; the panic message goes to stderr), and the host
//! reports it as a trap rather than as a task error — return `Err` for expected
//! failures.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasmpool_abi::{STATUS_BAD_INPUT, STATUS_ERR, STATUS_OK};

pub use serde;
pub use serde_json;
pub use wasmpool_abi as abi;
pub use wasmpool_guest_macros::task;

/// The ABI's allocator export: returns a pointer to `len` writable bytes (`len` is
/// read as unsigned). The bytes are zeroed and never freed. The pointer is never
/// null or dangling, also for `len == 0`. Traps if the memory cannot grow enough.
#[no_mangle]
pub extern "C" fn wasmpool_alloc(len: i32) -> i32 {
    leak_zeroed(len as u32 as usize) as usize as i32
}

/// Allocates `len` zeroed bytes (at least one, so the pointer is a real allocation)
/// that are never freed.
fn leak_zeroed(len: usize) -> *mut u8 {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 8)
        .unwrap_or_else(|_| panic!("wasmpool_alloc: cannot allocate {len} bytes"));
    // SAFETY: the layout's size is not zero.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    ptr
}

/// Converts a task function's return value into its output or its error message.
///
/// Implemented for every `T: Serialize` (always a success, output `T`) and for
/// `Result<O, E>` with `E: Display` (output `O`, or an error carrying `E`'s
/// `Display` text). `#[task]` picks the second when the return type is spelled
/// `...Result<O, ...>`.
pub trait IntoTaskResult<O> {
    /// The output on success, the error message on failure.
    fn into_task_result(self) -> Result<O, String>;
}

impl<T: Serialize> IntoTaskResult<T> for T {
    fn into_task_result(self) -> Result<T, String> {
        Ok(self)
    }
}

impl<O, E: Display> IntoTaskResult<O> for Result<O, E> {
    fn into_task_result(self) -> Result<O, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The body of every `#[task]` export (not a public API): decodes the `len` input
/// bytes at `ptr` as JSON, calls `f`, and returns the packed pointer and length of
/// the reply (status byte + JSON output or error message), which is never freed. Input
/// that does not decode is a [`STATUS_BAD_INPUT`] reply, and `f` is not called.
///
/// `ptr` and `len` must describe readable guest memory, as the host guarantees for
/// memory it got from [`wasmpool_alloc`]; this function is only meant to be called
/// by the code `#[task]` generates.
#[doc(hidden)]
pub fn __run<I, O, R>(ptr: i32, len: i32, f: fn(I) -> R) -> i64
where
    I: DeserializeOwned,
    O: Serialize,
    R: IntoTaskResult<O>,
{
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let reply = if len != 0 && ptr == 0 {
        error_reply(STATUS_ERR, "wasmpool-guest: the input pointer is null")
    } else {
        let input: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: the host wrote `len` bytes at `ptr` (memory it got from
            // `wasmpool_alloc`, zeroed at allocation, so initialized) and does not
            // touch them during the call.
            unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
        };
        match serde_json::from_slice::<I>(input) {
            Err(e) => error_reply(STATUS_BAD_INPUT, e),
            Ok(input) => match f(input).into_task_result() {
                Ok(output) => {
                    let mut reply = vec![STATUS_OK];
                    match serde_json::to_writer(&mut reply, &output) {
                        Ok(()) => reply,
                        Err(e) => error_reply(
                            STATUS_ERR,
                            format_args!("wasmpool-guest: cannot encode output: {e}"),
                        ),
                    }
                }
                Err(message) => error_reply(STATUS_ERR, message),
            },
        }
    };
    let reply: &'static mut [u8] = reply.leak();
    wasmpool_abi::pack(reply.as_ptr() as usize as u32, reply.len() as u32)
}

/// A reply of `status` ([`STATUS_ERR`] or [`STATUS_BAD_INPUT`]) carrying `message`.
fn error_reply(status: u8, message: impl Display) -> Vec<u8> {
    use std::io::Write;
    let mut reply = vec![status];
    // Writing into a Vec fails only if a Display impl reports an error; the message
    // is then whatever it wrote so far.
    let _ = write!(reply, "{message}");
    reply
}
