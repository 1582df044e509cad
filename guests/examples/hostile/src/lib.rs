//! wasmpool test guest: misbehaving exports for isolation tests.
//!
//! Every export takes and returns plain numbers, so the host calls it directly. Each
//! one does something a sandboxed task must not be able to get away with — run
//! forever, eat memory, overflow the stack, trap, exit the process, flood stdout,
//! probe the file system, environment and arguments — or checks that state does not
//! leak between calls (`counter`).
//!
//! Export names are also symbol names in the final link, and `exit` is also the C
//! library's `exit`; see [`exit`] for how this crate gets an export of that name.

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Loops forever without calling anything; never returns.
#[no_mangle]
pub extern "C" fn spin() -> i64 {
    let mut i: i64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Runs `n` loop iterations (fuel consumed is proportional to `n`) and returns `n`.
#[no_mangle]
pub extern "C" fn burn(n: i64) -> i64 {
    let mut left = n;
    while left > 0 {
        left = black_box(left - 1);
    }
    n
}

/// Sleeps `ms` milliseconds (negative means 0) with WASI `poll_oneoff` and returns
/// `ms`.
#[no_mangle]
pub extern "C" fn sleep_ms(ms: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms.max(0) as u64));
    ms
}

/// Grows linear memory by 16 pages (1 MiB) at a time until a grow is refused, then
/// returns the number of grows that succeeded.
#[no_mangle]
pub extern "C" fn grow_forever() -> i64 {
    let mut grown: i64 = 0;
    loop {
        if core::arch::wasm32::memory_grow(0, 16) == usize::MAX {
            return grown;
        }
        grown += 1;
    }
}

/// Allocates `mb` MiB (negative means 0) on the heap, touches every 4 KiB page, and
/// returns the sum of a few of the bytes written. Traps ("memory allocation of N
/// bytes failed") when the allocation cannot be satisfied.
#[no_mangle]
pub extern "C" fn alloc_mb(mb: i64) -> i64 {
    let size = usize::try_from(mb.max(0))
        .ok()
        .and_then(|mb| mb.checked_mul(1 << 20))
        .unwrap_or_else(|| panic!("alloc_mb: {mb} MiB do not fit in a 32-bit address space"));
    let mut buf = black_box(vec![0u8; size]);
    for (page, i) in (0..size).step_by(4096).enumerate() {
        buf[i] = (page % 251) as u8 + 1;
    }
    let buf = black_box(buf);
    [0, size / 2, size.saturating_sub(4096)]
        .into_iter()
        .filter(|&i| i < size)
        .map(|i| i64::from(buf[i & !4095]))
        .sum()
}

/// Executes wasm's `unreachable` instruction: an immediate trap.
#[no_mangle]
pub extern "C" fn unreachable() -> i64 {
    core::arch::wasm32::unreachable()
}

/// Recurses without bound until the call stack is exhausted; never returns. `n` only
/// seeds the values each frame keeps.
#[no_mangle]
pub extern "C" fn stack_overflow(n: i64) -> i64 {
    recurse(n)
}

/// One frame of [`stack_overflow`]: a small `black_box`ed local array that stays live
/// across the recursive call, and an addition after it, so the recursion is neither
/// a tail call nor turned into a loop. The array is small so that the wasm call stack
/// (not the shadow stack in linear memory) is what overflows first.
#[inline(never)]
fn recurse(n: i64) -> i64 {
    let frame = black_box([n, n ^ 1, n ^ 2, n ^ 3]);
    // An opaque condition rather than none at all, which rustc would reject as
    // unconditional recursion; `black_box(true)` is always true.
    let below = if black_box(true) {
        recurse(frame[0].wrapping_add(1))
    } else {
        0
    };
    below.wrapping_add(frame[(n & 3) as usize])
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI's `proc_exit`, imported directly: `std::process::exit` would call the C
    /// library's `exit`, and the symbol `exit` is the export below.
    #[link_name = "proc_exit"]
    fn wasi_proc_exit(code: i32) -> !;
}

extern "C" {
    /// The module's constructors, a function the linker (wasm-ld) synthesizes; this
    /// module has none, so calling it does nothing.
    fn __wasm_call_ctors();
}

/// Exits the whole wasm program with `code` (WASI `proc_exit`); never returns.
///
/// Exporting a function named `exit` needs a defined symbol `exit`, which clashes
/// with wasi-libc's `exit`: when a module never calls `__wasm_call_ctors` itself,
/// wasm-ld treats it as a "command", wraps every export to call libc's
/// `__wasm_call_dtors` afterwards, and so links libc's `exit.c` — whose `exit` then
/// silently replaces this one (the export disappears). Referencing
/// `__wasm_call_ctors` here tells wasm-ld the module runs its constructors itself,
/// so it neither wraps the exports nor links libc's `exit`. Nothing is lost: there
/// are no constructors, and libc's destructors only flush C stdio, which Rust does
/// not use.
#[no_mangle]
pub extern "C" fn exit(code: i32) -> i32 {
    let _ = std::io::stdout().flush();
    // SAFETY: `__wasm_call_ctors` runs the (no) constructors and returns; `proc_exit`
    // takes any exit code and ends the program.
    unsafe {
        __wasm_call_ctors();
        wasi_proc_exit(code)
    }
}

/// Panics: the message goes to stderr, then the instance aborts (traps).
#[no_mangle]
pub extern "C" fn panic() -> i64 {
    panic!("guest panicked on purpose")
}

static COUNTER: AtomicI64 = AtomicI64::new(0);

/// Increments a global counter and returns its new value: always 1 when every call
/// gets a fresh instance.
#[no_mangle]
pub extern "C" fn counter() -> i64 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}

/// Prints `hello from guest` to stdout and `warning from guest` to stderr; returns 42.
#[no_mangle]
pub extern "C" fn hello() -> i64 {
    println!("hello from guest");
    eprintln!("warning from guest");
    42
}

/// Writes `n` bytes of `x` to stdout in 64 KiB writes, stopping at the first write
/// that fails or writes nothing, and returns the number of bytes the writes reported
/// as written.
#[no_mangle]
pub extern "C" fn flood(n: i64) -> i64 {
    const CHUNK: usize = 64 * 1024;
    let chunk = vec![b'x'; CHUNK];
    let mut stdout = std::io::stdout().lock();
    let mut written: i64 = 0;
    while written < n {
        let want = (n - written).min(CHUNK as i64) as usize;
        match stdout.write(&chunk[..want]) {
            Ok(0) | Err(_) => break,
            Ok(k) => written += k as i64,
        }
    }
    let _ = stdout.flush();
    written
}

/// Tries to read outside the sandbox: `/etc/passwd`, the directories `/` and `.`, and
/// `/proc/self/environ`. Returns 1 if any of them succeeds, 0 if all fail.
#[no_mangle]
pub extern "C" fn read_file() -> i64 {
    let attempts = [
        std::fs::read("/etc/passwd").is_ok(),
        std::fs::read_dir("/").is_ok(),
        std::fs::read_dir(".").is_ok(),
        std::fs::read("/proc/self/environ").is_ok(),
    ];
    i64::from(attempts.contains(&true))
}

/// Tries to create and write `/tmp/wasmpool-escape.txt` and `./wasmpool-escape.txt`.
/// Returns 1 if either succeeds, 0 if both fail.
#[no_mangle]
pub extern "C" fn write_file() -> i64 {
    let contents = b"written by the wasmpool hostile guest\n";
    let attempts = [
        std::fs::write("/tmp/wasmpool-escape.txt", contents).is_ok(),
        std::fs::write("./wasmpool-escape.txt", contents).is_ok(),
    ];
    i64::from(attempts.contains(&true))
}

/// The number of environment variables the guest can see.
#[no_mangle]
pub extern "C" fn env_count() -> i64 {
    std::env::vars_os().count() as i64
}

/// The number of command-line arguments the guest can see (program name included).
#[no_mangle]
pub extern "C" fn args_count() -> i64 {
    std::env::args_os().count() as i64
}
