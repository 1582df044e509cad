//! Shared by the integration tests: the guests compiled from `guests/`, and pools that use
//! the `wasmpool` binary cargo built for this test run as their worker program.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use wasmpool::{Module, Pool, PoolBuilder};

/// The worker program cargo built alongside this test.
pub const WORKER: &str = env!("CARGO_BIN_EXE_wasmpool");

/// Builds the guest workspace once per test binary (a no-op when it is up to date) and
/// returns the directory holding the `.wasm` files.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let guests = root.join("guests");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
            .current_dir(&guests)
            .status()
            .expect("run cargo to build the guests");
        assert!(
            status.success(),
            "building the guests failed; is the target installed? run `rustup target add wasm32-wasip1`"
        );
        guests.join("target/wasm32-wasip1/release")
    })
}

/// Path of guest `name` (`math`, `wordcount`, `hostile`).
pub fn guest(name: &str) -> PathBuf {
    guest_dir().join(format!("{name}.wasm"))
}

/// Path of the test guest `tests/guests/<name>` (WebAssembly text, which `Pool::load` takes).
pub fn guest_wat(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests")
        .join(name)
}

/// This test binary's own `$XDG_CACHE_HOME`, so its compile cache (`<it>/wasmpool`) starts
/// empty and leans on nothing a machine kept (nor on what another build stored there): a
/// directory under the system's temporary directory named after this process, made on first
/// use; those of test processes that have ended are removed then.
pub fn cache_home() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        const PREFIX: &str = "wasmpool-test-cache-";
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                    continue;
                };
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the test cache directory");
        dir
    })
}

/// The `wasmpool` binary of this test run, with this test binary's compile cache.
pub fn cli() -> Command {
    let mut c = Command::new(WORKER);
    c.env("XDG_CACHE_HOME", cache_home());
    c
}

/// A builder using this test run's worker program, 2 workers, a 10 s default timeout, and
/// this test binary's own compile cache ([`cache_home`]).
pub fn builder() -> PoolBuilder {
    Pool::builder()
        .compile_cache(cache_home().join("wasmpool"))
        .worker_program(WORKER)
        .workers(2)
        .timeout(Duration::from_secs(10))
}

/// A pool from [`builder`] and the named guest loaded into it.
pub fn pool_with(name: &str) -> (Pool, Module) {
    let pool = builder().build().expect("start the pool");
    let module = pool.load_file(guest(name)).expect("load the guest");
    (pool, module)
}

/// Path of the C program `guests/c/<name>.c` compiled to a WASI command (by
/// `scripts/wasi-cc`, into `target/wasi-c/`; rebuilt when the source is newer).
pub fn c_program(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("guests/c").join(format!("{name}.c"));
    let dir = root.join("target/wasi-c");
    std::fs::create_dir_all(&dir).expect("create target/wasi-c");
    let out = dir.join(format!("{name}.wasm"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&out).is_none() || modified(&out) < modified(&src) {
        // Another test, of this binary or another, may be building the same program: build
        // beside under a name of this build's own, then rename.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{}-{build}.wasm", std::process::id()));
        let status = Command::new(root.join("scripts/wasi-cc"))
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("run scripts/wasi-cc");
        assert!(
            status.success(),
            "compiling {} to wasm failed; is the C toolchain installed? run scripts/wasi-c-toolchain",
            src.display()
        );
        std::fs::rename(&tmp, &out).expect("move the program into place");
    }
    out
}

/// A pool from [`builder`] and the C program `name` loaded into it.
pub fn pool_with_program(name: &str) -> (Pool, Module) {
    let pool = builder().build().expect("start the pool");
    let module = pool.load_file(c_program(name)).expect("load the program");
    (pool, module)
}

/// Runs the `wasmpool` binary ([`cli`]: this test binary's compile cache) with `args`,
/// `stdin` as its input, and collects its output.
pub fn wasmpool(args: &[&str], stdin: &str) -> Output {
    let mut child = cli()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmpool");
    // A command that fails early may exit without reading its input: a broken pipe here is
    // part of what is being tested, not an error of the test.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// The example binary `examples/<name>.rs` as cargo built it for this test run
/// (`target/<profile>/examples/<name>`, beside this test's `deps` directory). `cargo test`
/// builds the examples; a run of one test target alone may not: then this says how.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test --release` (which builds the examples) or `cargo build --release --example {name}`",
        path.display()
    );
    path
}
