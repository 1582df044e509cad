//! WASI command tasks: a whole program (a `wasm32-wasip1` module with `_start`) run like
//! `subprocess.run`, in a sandbox: arguments, stdin, an explicit environment, read-only input
//! files under `/in`, an optional writable `/out` whose files come back, and the exit code.
//!
//! [`CommandSpec`] describes one run and is the [`Args`] of a call of `_start`;
//! [`CommandOutput`] is its result. [`CommandInput`] is the form that travels to the worker.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::value::{Args, FromOutput, Input, Output};

/// The export a command runs.
pub const ENTRY: &str = "_start";
/// Where a command sees its input files (read-only).
pub const IN_DIR: &str = "/in";
/// Where a command may write files that come back in [`CommandOutput::files`].
pub const OUT_DIR: &str = "/out";

/// One run of a WASI command: what the program sees. Nothing of the host is visible beyond
/// what is given here; the environment is empty unless set.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use wasmpool::{CommandSpec, Pool};
/// let pool = Pool::builder().build()?;
/// let wc = pool.load_file("target/wasi-c/wc.wasm")?;
/// let out = pool
///     .run_command(&wc, CommandSpec::new().stdin("to be or not to be\n"))
///     .wait()?;
/// assert_eq!(out.exit_code, 0);
/// assert_eq!(out.stdout_text().trim(), "1 6 19");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// `argv[0]`; `"program"` when not set.
    pub argv0: Option<String>,
    /// The arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The program's whole stdin (it reads end-of-file after it).
    pub stdin: Vec<u8>,
    /// Environment variables, in order; empty by default.
    pub env: Vec<(String, String)>,
    /// Read-only files visible under `/in`.
    pub inputs: Vec<InputFile>,
    /// Whether the program gets an empty writable `/out` whose files are returned.
    pub output_dir: bool,
    /// Whether a nonzero exit code is an error ([`TaskError::Exit`]) instead of a result.
    pub check: bool,
}

/// A read-only input file of a command, visible as `/in/<path>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// Relative path under `/in` (`data.txt`, `sub/dir/x.bin`).
    pub path: String,
    /// Its contents.
    pub source: InputSource,
}

/// Where an input file's contents come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// These bytes.
    Bytes(Vec<u8>),
    /// A file of the host, read when the task is submitted.
    Path(PathBuf),
}

impl CommandSpec {
    /// A run with no arguments, empty stdin, no environment and no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `argv[0]`.
    pub fn argv0(mut self, name: impl Into<String>) -> Self {
        self.argv0 = Some(name.into());
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the program's stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds a read-only file `/in/<path>` with these contents.
    pub fn input(mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.inputs.push(InputFile {
            path: path.into(),
            source: InputSource::Bytes(bytes.into()),
        });
        self
    }

    /// Adds a read-only file `/in/<path>` with the contents of the host file `host_path`
    /// (read when the task is submitted).
    pub fn input_file(mut self, path: impl Into<String>, host_path: impl Into<PathBuf>) -> Self {
        self.inputs.push(InputFile {
            path: path.into(),
            source: InputSource::Path(host_path.into()),
        });
        self
    }

    /// Gives the program a writable, initially empty `/out`; its files come back.
    pub fn output_dir(mut self) -> Self {
        self.output_dir = true;
        self
    }

    /// Makes a nonzero exit code an error ([`TaskError::Exit`]), like `subprocess.run(check=True)`.
    pub fn check(mut self) -> Self {
        self.check = true;
        self
    }
}

/// A command as it travels to the worker: validated, input files read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInput {
    /// The whole argv, `argv[0]` included.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// `(relative path under /in, contents)`.
    pub files: Vec<(String, Vec<u8>)>,
    pub output_dir: bool,
    pub check: bool,
    /// Whether stdout and stderr are sent to the host as they are written (see
    /// [`Call::submit_streaming`](crate::Call::submit_streaming)) instead of kept.
    pub stream: bool,
}

/// A piece of a streamed command's output, in the order the program wrote it: at most
/// [`STREAM_CHUNK_BYTES`] (a longer write arrives as several chunks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputChunk {
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Chunks a streaming command's output channel holds before the program blocks in its
/// write (see [`Call::submit_streaming`](crate::Call::submit_streaming)).
pub const STREAM_CHUNKS: usize = 16;

/// Largest [`OutputChunk`]: with [`STREAM_CHUNKS`], what a streaming task's unread output
/// can cost the host (1 MiB).
pub const STREAM_CHUNK_BYTES: usize = 64 << 10;

impl CommandInput {
    /// Bytes this input carries into the sandbox (stdin and files), for `Limits::max_input`.
    pub fn size(&self) -> usize {
        self.stdin.len() + self.files.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
}

impl Args for CommandSpec {
    fn into_input(self) -> Result<Input, TaskError> {
        let bad = |m: String| Err(TaskError::bad_input(m));
        let argv0 = self.argv0.unwrap_or_else(|| "program".to_string());
        let argv: Vec<String> = std::iter::once(argv0).chain(self.args).collect();
        if let Some(a) = argv.iter().find(|a| a.contains('\0')) {
            return bad(format!("argument {a:?} contains a NUL byte"));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return bad(format!(
                    "environment variable {key:?} is not valid (a name must be non-empty, without `=` or NUL)"
                ));
            }
        }
        let mut files = Vec::with_capacity(self.inputs.len());
        for file in self.inputs {
            let path = relative_path(&file.path).map_err(|why| {
                TaskError::bad_input(format!("input file {:?}: {why}", file.path))
            })?;
            if files.iter().any(|(p, _): &(String, Vec<u8>)| *p == path) {
                return bad(format!("input file {path:?} is given twice"));
            }
            let bytes = match file.source {
                InputSource::Bytes(b) => b,
                InputSource::Path(host) => std::fs::read(&host).map_err(|e| {
                    TaskError::bad_input(format!(
                        "input file {path:?}: cannot read {}: {e}",
                        host.display()
                    ))
                })?,
            };
            files.push((path, bytes));
        }
        Ok(Input::Command(CommandInput {
            argv,
            env: self.env,
            stdin: self.stdin,
            files,
            output_dir: self.output_dir,
            check: self.check,
            stream: false,
        }))
    }
}

/// Checks that `path` names a place under a directory: relative, no `..`, not empty.
/// Returns it normalized (`./a//b` → `a/b`).
pub fn relative_path(path: &str) -> Result<String, &'static str> {
    if path.contains('\0') {
        return Err("the path contains a NUL byte");
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or("the path is not UTF-8")?),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path may not contain `..`"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path must be relative (it is placed under /in)")
            }
        }
    }
    if parts.is_empty() {
        return Err("the path is empty");
    }
    Ok(parts.join("/"))
}

/// What a finished command produced. A nonzero `exit_code` is a normal result (unless the
/// spec asked for [`CommandSpec::check`]).
///
/// ```
/// let out = wasmpool::CommandOutput { exit_code: 3, ..Default::default() };
/// assert!(!out.success());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The program's exit code: its `proc_exit` argument, or 0 when `_start` returned.
    pub exit_code: i32,
    /// What it wrote to stdout, up to `Limits::stdout_cap`.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, up to `Limits::stderr_cap`.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr went over its cap and was cut.
    pub output_truncated: bool,
    /// The regular files it left in `/out`, by relative path (sorted).
    pub files: Vec<OutputFile>,
    /// Fuel consumed (instantiation included); 0 without a fuel limit (no metering).
    pub fuel_used: u64,
    /// Instantiation to exit, in the worker.
    pub duration: Duration,
}

/// One file a command left in `/out`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to `/out` (`result.txt`, `sub/x.bin`).
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl CommandOutput {
    /// Whether the exit code is 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// The contents of `/out/<path>`, if the program left such a file.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.data.as_slice())
    }
}

impl FromOutput for CommandOutput {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        match output {
            Output::Command(out) => Ok(out),
            _ => Err(TaskError::BadOutput {
                message: "the call was not a command run; ask for its numbers or Json<T>".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_under_their_directory() {
        assert_eq!(relative_path("./a//b.txt").unwrap(), "a/b.txt");
        assert!(relative_path("../x").is_err());
        assert!(relative_path("a/../../x").is_err());
        assert!(relative_path("/etc/passwd").is_err());
        assert!(relative_path("").is_err());
        assert!(relative_path(".").is_err());
    }

    #[test]
    fn specs_become_wire_inputs_with_argv0_and_checked_names() {
        let Input::Command(c) = CommandSpec::new()
            .arg("-l")
            .env("K", "V")
            .input("d/x.txt", "hi")
            .into_input()
            .unwrap()
        else {
            panic!("not a command input")
        };
        assert_eq!(c.argv, ["program", "-l"]);
        assert_eq!(c.files, [("d/x.txt".to_string(), b"hi".to_vec())]);
        assert_eq!(c.size(), 2);
        for bad in [
            CommandSpec::new().env("A=B", "x"),
            CommandSpec::new().arg("a\0b"),
            CommandSpec::new().input("../x", ""),
            CommandSpec::new().input("x", "").input("./x", ""),
            CommandSpec::new().input_file("x", "/nonexistent/wasmpool"),
        ] {
            assert_eq!(bad.into_input().unwrap_err().kind(), "bad_input");
        }
    }
}
