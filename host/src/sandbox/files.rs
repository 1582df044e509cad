//! A command's files, on the worker's side: staging its read-only `/in` and empty `/out` in
//! a task directory under the worker's scratch directory, collecting what it left in `/out`
//! (size-capped), and removing the task directory afterwards.
//!
//! The worker can reach nothing else of the file system (Landlock confines it to its
//! scratch directory; see `worker::landlock`), and wasmtime-wasi keeps each guest beneath
//! its preopened directories.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::command::{CommandInput, OutputFile, IN_DIR, OUT_DIR};
use crate::error::TaskError;
use crate::protocol::TaskId;

/// Most files a command's `/out` may hold (its total size is capped by `Limits::max_output`).
const MAX_OUT_FILES: usize = 10_000;

/// Where the worker may keep command files, or why it may not.
pub enum Scratch {
    /// This directory (the worker is confined to it).
    Dir(PathBuf),
    /// No file access for commands, and why.
    Unavailable(String),
}

/// One command's directory: removed (with everything the guest wrote) when dropped.
pub struct TaskDir {
    path: PathBuf,
    out: Option<PathBuf>,
}

impl TaskDir {
    /// Gives the command its arguments, environment and stdin, and, when it has input files
    /// or an output directory, stages them and preopens them as `/in` (read-only) and
    /// `/out` (read-write).
    pub fn prepare(
        wasi: &mut WasiCtxBuilder,
        command: &CommandInput,
        scratch: &Scratch,
        task: TaskId,
    ) -> Result<Option<TaskDir>, TaskError> {
        wasi.args(&command.argv)
            .envs(&command.env)
            .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
                command.stdin.clone(),
            ))
            // File operations run on the task's thread, not on a blocking pool.
            .allow_blocking_current_thread(true);
        if command.files.is_empty() && !command.output_dir {
            return Ok(None);
        }
        let root = match scratch {
            Scratch::Dir(root) => root,
            Scratch::Unavailable(why) => {
                return Err(TaskError::bad_input(format!(
                    "this worker cannot give commands files (input files or /out): {why}"
                )))
            }
        };
        let dir = TaskDir {
            path: root.join(format!("t{task}")),
            out: None,
        };
        dir.stage(wasi, command)
            .map_err(|e| TaskError::bad_input(format!("cannot stage the command's files: {e}")))
    }

    fn stage(
        mut self,
        wasi: &mut WasiCtxBuilder,
        command: &CommandInput,
    ) -> io::Result<Option<TaskDir>> {
        fs::create_dir(&self.path)?;
        if !command.files.is_empty() {
            let input = self.path.join("in");
            for (path, bytes) in &command.files {
                let file = input.join(path);
                fs::create_dir_all(file.parent().expect("under the input directory"))?;
                fs::write(&file, bytes)?;
            }
            wasi.preopened_dir(&input, IN_DIR, FsPerms::ReadOnly)
                .map_err(io::Error::other)?;
        }
        if command.output_dir {
            let out = self.path.join("out");
            fs::create_dir(&out)?;
            wasi.preopened_dir(&out, OUT_DIR, FsPerms::ReadWrite)
                .map_err(io::Error::other)?;
            self.out = Some(out);
        }
        Ok(Some(self))
    }

    /// The regular files left in `/out` (sorted by path; symbolic links and other special
    /// files are skipped), at most `cap` bytes in all.
    pub fn collect(&self, cap: u64) -> Result<Vec<OutputFile>, TaskError> {
        let Some(out) = &self.out else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        let mut total = 0u64;
        walk(out, out, &mut |rel, path, len| {
            total += len;
            if total > cap {
                return Err(TaskError::BadOutput {
                    message: format!(
                        "the files in {OUT_DIR} are over the cap of {cap} bytes (Limits::max_output)"
                    ),
                });
            }
            if files.len() == MAX_OUT_FILES {
                return Err(TaskError::BadOutput {
                    message: format!(
                        "the command left more than {MAX_OUT_FILES} files in {OUT_DIR}"
                    ),
                });
            }
            let data = fs::read(path).map_err(|e| TaskError::BadOutput {
                message: format!("cannot read {OUT_DIR}/{rel}: {e}"),
            })?;
            files.push(OutputFile { path: rel, data });
            Ok(())
        })?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// Calls `each(relative path, path, length)` for every regular file beneath `dir`.
fn walk(
    base: &Path,
    dir: &Path,
    each: &mut dyn FnMut(String, &Path, u64) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let unreadable = |e: io::Error| TaskError::BadOutput {
        message: format!("cannot list {OUT_DIR}: {e}"),
    };
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        // Not following links: a link the guest made is not a file it wrote.
        let meta = fs::symlink_metadata(&path).map_err(unreadable)?;
        if meta.is_dir() {
            walk(base, &path, each)?;
        } else if meta.is_file() {
            let rel = path
                .strip_prefix(base)
                .expect("beneath the output directory")
                .to_string_lossy()
                .into_owned();
            each(rel, &path, meta.len())?;
        }
    }
    Ok(())
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!(
                    "wasmpool worker: cannot remove task directory {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// Lowers the largest file this process may write (`RLIMIT_FSIZE`) while a command runs, so
/// one file in `/out` cannot outgrow the output cap (the write fails with `EFBIG`, which
/// the program sees); restored when dropped.
pub struct FileSizeLimit;

impl FileSizeLimit {
    pub fn set(bytes: u64) -> FileSizeLimit {
        set_file_size_limit(Some(bytes));
        FileSizeLimit
    }
}

impl Drop for FileSizeLimit {
    fn drop(&mut self) {
        set_file_size_limit(None);
    }
}

fn set_file_size_limit(bytes: Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Fsize).maximum;
    let current = match (bytes, hard) {
        (Some(b), Some(h)) => Some(b.min(h)),
        (Some(b), None) => Some(b),
        (None, h) => h,
    };
    let _ = setrlimit(
        Resource::Fsize,
        Rlimit {
            current,
            maximum: hard,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collecting_skips_links_sorts_and_caps_the_total() {
        let path = std::env::temp_dir().join(format!("wasmpool-files-test-{}", std::process::id()));
        let out = path.join("out");
        fs::create_dir_all(out.join("sub")).unwrap();
        fs::write(out.join("b.txt"), "bb").unwrap();
        fs::write(out.join("sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("link")).unwrap();
        let dir = TaskDir {
            path: path.clone(),
            out: Some(out),
        };
        let files = dir.collect(3).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["b.txt", "sub/a.txt"]);
        assert_eq!(dir.collect(2).unwrap_err().kind(), "bad_output");
        drop(dir);
        assert!(!path.exists());
    }
}
