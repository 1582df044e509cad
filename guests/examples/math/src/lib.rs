//! wasmpool example guest: plain numeric exports, no SDK.
//!
//! Every export here takes and returns only `i32`/`i64`/`f32`/`f64`, so the host can
//! call it directly with numbers (no JSON, no `wasmpool_alloc`). Several exports are
//! CPU-bound on purpose, for benchmarks and fuel/timeout tests.
//!
//! Export names are also symbol names in the final link, so they must not collide
//! with C library functions that std uses: this is why `hypot` below is computed
//! by hand instead of calling `f64::hypot` (which would call libm's `hypot`, i.e.
//! this very function, forever).

use core::hint::black_box;

/// `x * x`, wrapping on overflow.
#[no_mangle]
pub extern "C" fn square(x: i64) -> i64 {
    x.wrapping_mul(x)
}

/// `a + b`, wrapping on overflow.
#[no_mangle]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

/// The classic CPU-bound loop, `n` iterations of `while n > 0 { n -= 1 }`.
/// `black_box` on the counter keeps the optimizer from computing the result
/// without looping.
#[inline(always)]
fn count_down(mut n: i64) -> i64 {
    while n > 0 {
        n = black_box(n - 1);
    }
    n
}

/// Counts `n` down to zero one step at a time and returns the final counter: 0, or
/// `n` itself when `n` is negative.
#[no_mangle]
pub extern "C" fn counting(n: i64) -> i64 {
    count_down(n)
}

/// The same loop as [`counting`] under the name a benchmark anchors on; returns 0.
#[no_mangle]
pub extern "C" fn count(n: i64) -> i64 {
    black_box(count_down(n));
    0
}

/// Loops forever without calling anything; never returns. Only fuel, epoch
/// interruption, or killing the worker stops it.
#[no_mangle]
pub extern "C" fn spin() -> i64 {
    let mut i: i64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// The number of primes below `n`, by trial division.
#[no_mangle]
pub extern "C" fn primes(n: i64) -> i64 {
    let mut found = 0;
    let mut k: i64 = 2;
    while k < n {
        let mut d: i64 = 2;
        let mut prime = true;
        while d * d <= k {
            if k % d == 0 {
                prime = false;
                break;
            }
            d += 1;
        }
        if prime {
            found += 1;
        }
        k += 1;
    }
    found
}

/// Naive recursive Fibonacci (`fib(0) = 0`, `fib(1) = 1`, wrapping on overflow):
/// exponentially many calls on purpose.
#[no_mangle]
pub extern "C" fn fib(n: i32) -> i64 {
    fib_rec(n)
}

#[inline(never)]
fn fib_rec(n: i32) -> i64 {
    if n < 2 {
        // fib of a negative n is 0, like fib(0).
        return i64::from(n.max(0));
    }
    // `black_box` on the second result keeps LLVM from turning that call into a loop
    // (accumulator recursion elimination): both calls stay real calls.
    fib_rec(n - 1).wrapping_add(black_box(fib_rec(n - 2)))
}

/// `a / b`, truncating toward zero.
///
/// Dividing by zero (or `i32::MIN / -1`) traps. Note: it traps through a Rust panic
/// ("attempt to divide by zero", written to stderr), which aborts with wasm's
/// `unreachable` instruction, not through `i32.div_s`'s own "integer divide by zero"
/// trap: stable Rust has no sound way to emit an unchecked `i32.div_s`. The host
/// sees a trap either way.
#[no_mangle]
pub extern "C" fn div(a: i32, b: i32) -> i32 {
    black_box(a) / black_box(b)
}

/// `sqrt(a² + b²)` without undue overflow or underflow (see the crate docs for why
/// this does not call `f64::hypot`). Infinite if either argument is infinite, NaN
/// if either is NaN and neither is infinite.
#[no_mangle]
pub extern "C" fn hypot(a: f64, b: f64) -> f64 {
    let (a, b) = (a.abs(), b.abs());
    if a == f64::INFINITY || b == f64::INFINITY {
        return f64::INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (big, small) = if a >= b { (a, b) } else { (b, a) };
    if big == 0.0 {
        return 0.0;
    }
    let r = small / big;
    big * (1.0 + r * r).sqrt()
}

/// `x * k`.
#[no_mangle]
pub extern "C" fn scale(x: f32, k: f32) -> f32 {
    x * k
}
