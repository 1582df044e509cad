//! A command's files, on the worker's side: staging its read-only `/in` and empty `/out` in
//! a task directory under the worker's scratch directory, collecting what it left in `/out`
//! (size-capped), and removing the task directory afterwards.
//!
//! The pool's mounts (`crate::mount`) are preopened for every command too.
//!
//! The worker can reach nothing else of the file system (Landlock confines it to its
//! scratch directory and its mounts; see `walls::landlock`), and wasmtime-wasi keeps each
//! guest beneath its preopened directories.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::command::{CommandInput, OutputFile, IN_DIR, OUT_DIR};
use crate::error::TaskError;
use crate::mount::Mount;
use crate::protocol::TaskId;
use crate::worker::scratch::remove_tree;

/// Most entries (files, directories, links) a command's `/out` may hold (its total size is
/// capped by `Limits::max_output`).
const MAX_OUT_ENTRIES: usize = 10_000;

/// Longest path of a file under `/out`: a guest can nest directories deeper than any path
/// can name, and every path goes back to the host, which accepts no longer one (the same
/// limit, declared once where the host checks it).
const MAX_OUT_PATH: usize = crate::command::MAX_OUTPUT_PATH;

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
    /// `/out` (read-write); preopens the pool's `mounts` at their guest paths (read-only
    /// unless writable), opened by their host paths, which the worker's Landlock ruleset
    /// allows (and nothing around them).
    pub fn prepare(
        wasi: &mut WasiCtxBuilder,
        command: &CommandInput,
        scratch: &Scratch,
        mounts: &[Mount],
        task: TaskId,
    ) -> Result<Option<TaskDir>, TaskError> {
        // Stdin passed as the export's argument is not WASI stdin too.
        let stdin = match command.stdin_as_argument() {
            Some(_) => Vec::new(),
            None => command.stdin.clone(),
        };
        wasi.args(&command.argv)
            .envs(&command.env)
            .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(stdin))
            // File operations run on the task's thread, not on a blocking pool.
            .allow_blocking_current_thread(true);
        if !mounts.is_empty() {
            if let Scratch::Unavailable(why) = scratch {
                return Err(TaskError::bad_input(format!(
                    "this worker cannot give commands the pool's mounts: {why}"
                )));
            }
        }
        for m in mounts {
            let perms = if m.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&m.host, &m.guest, perms)
                .map_err(|e| TaskError::bad_input(format!("cannot open the mount {m}: {e:#}")))?;
        }
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
    /// files are skipped), at most `cap` bytes in all, at most [`MAX_OUT_ENTRIES`] entries
    /// (directories and links count too), no path longer than [`MAX_OUT_PATH`].
    pub fn collect(&self, cap: u64) -> Result<Vec<OutputFile>, TaskError> {
        let Some(out) = &self.out else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        let mut total = 0u64;
        walk(out, &mut |rel, file, len| {
            total += len;
            if total > cap {
                return Err(TaskError::BadOutput {
                    message: format!(
                        "the files in {OUT_DIR} are over the cap of {cap} bytes (Limits::max_output)"
                    ),
                });
            }
            let mut data = Vec::with_capacity(len as usize);
            io::Read::read_to_end(&mut io::Read::take(file, len), &mut data).map_err(|e| {
                TaskError::BadOutput {
                    message: format!("cannot read {OUT_DIR}/{rel}: {e}"),
                }
            })?;
            files.push(OutputFile { path: rel, data });
            Ok(())
        })?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// Calls `each(relative path, file, length)` for every regular file beneath `out`, opened
/// without following links. It holds at most three descriptors however deep the tree (a
/// directory, the one it climbs to or descends into, a file) and the names of the
/// directories still to visit; it stops with `BadOutput` past [`MAX_OUT_ENTRIES`] entries
/// or [`MAX_OUT_PATH`] bytes of path.
fn walk(
    out: &Path,
    each: &mut dyn FnMut(String, fs::File, u64) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    use rustix::fs::{fstat, openat, Dir, FileType, Mode, OFlags, CWD};
    let unreadable = |e: rustix::io::Errno| TaskError::BadOutput {
        message: format!("cannot list {OUT_DIR}: {e}"),
    };
    let too_many = || TaskError::BadOutput {
        message: format!(
            "the command left more than {MAX_OUT_ENTRIES} files and directories in {OUT_DIR}"
        ),
    };
    let too_long = |path: &str| TaskError::BadOutput {
        message: format!(
            "the command left a path longer than {MAX_OUT_PATH} bytes in {OUT_DIR} ({}…)",
            &path[..path.floor_char_boundary(80)]
        ),
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Non-blocking: a special file the guest left cannot stall the worker.
    let file_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;

    /// A directory being visited: its path under `/out` ("" for `/out`, else ending in
    /// `/`) and the subdirectories still to visit.
    struct Level {
        prefix: String,
        subdirs: Vec<std::ffi::CString>,
    }
    let mut entries = 0usize;
    let mut dir = openat(CWD, out, dir_flags, Mode::empty()).map_err(unreadable)?;
    let mut levels: Vec<Level> = Vec::new();
    let mut prefix = String::new();
    loop {
        // List the directory: files now, subdirectories for later.
        let mut level = Level {
            prefix,
            subdirs: Vec::new(),
        };
        let mut list = Dir::read_from(&dir).map_err(unreadable)?;
        while let Some(entry) = list.read() {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            entries += 1;
            if entries > MAX_OUT_ENTRIES {
                return Err(too_many());
            }
            let rel = format!("{}{}", level.prefix, name.to_string_lossy());
            if rel.len() > MAX_OUT_PATH {
                return Err(too_long(&rel));
            }
            match entry.file_type() {
                FileType::Directory => level.subdirs.push(name.to_owned()),
                FileType::RegularFile | FileType::Unknown => {
                    let Ok(fd) = openat(&dir, name, file_flags, Mode::empty()) else {
                        continue; // a link or a special file (O_NOFOLLOW), or gone
                    };
                    let st = fstat(&fd).map_err(unreadable)?;
                    match FileType::from_raw_mode(st.st_mode) {
                        FileType::RegularFile => each(rel, fs::File::from(fd), st.st_size as u64)?,
                        FileType::Directory => level.subdirs.push(name.to_owned()),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        drop(list);
        levels.push(level);
        // Down into the next subdirectory still to visit, climbing up (through `..`) from
        // the levels that have none left.
        loop {
            let Some(top) = levels.last_mut() else {
                return Ok(());
            };
            if let Some(sub) = top.subdirs.pop() {
                prefix = format!("{}{}/", top.prefix, sub.to_string_lossy());
                dir = openat(&dir, sub.as_c_str(), dir_flags, Mode::empty()).map_err(unreadable)?;
                break;
            }
            levels.pop();
            if !levels.is_empty() {
                dir = openat(&dir, c"..", dir_flags, Mode::empty()).map_err(unreadable)?;
            }
        }
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!(
                "wasmpool worker: cannot remove task directory {}: {e}",
                self.path.display()
            );
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

    #[test]
    fn directories_count_toward_the_entry_cap() {
        let path =
            std::env::temp_dir().join(format!("wasmpool-entries-test-{}", std::process::id()));
        let out = path.join("out");
        fs::create_dir_all(&out).unwrap();
        let dir = TaskDir {
            path: path.clone(),
            out: Some(out.clone()),
        };
        for i in 0..MAX_OUT_ENTRIES {
            fs::create_dir(out.join(format!("d{i}"))).unwrap();
        }
        assert_eq!(dir.collect(0).unwrap(), []);
        fs::create_dir(out.join("one-more")).unwrap();
        let err = dir.collect(0).unwrap_err();
        assert!(err.to_string().contains("files and directories"), "{err}");
        drop(dir);
        assert!(!path.exists());
    }
}
