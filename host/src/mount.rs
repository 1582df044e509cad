//! [`Mount`]: a host directory that every command of a pool sees at a fixed guest path,
//! read-only by default, never copied per run (an interpreter's standard library, a model, a
//! data set).
//!
//! Mounts belong to the pool, not to a run: a worker's Landlock ruleset is fixed when the
//! worker starts, so the directories it may reach are given to it then. Each is enforced
//! twice: by WASI (a preopened directory with read-only or read-write rights, resolved
//! beneath itself, so `..` and symbolic links cannot leave it) and by the worker's Landlock
//! ruleset (the host directory allowed read-only, or read-write for `:rw`, and nothing else
//! of the host besides the worker's own scratch directory).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::command::{IN_DIR, OUT_DIR};

/// A host directory visible to every command of a pool at `guest`.
///
/// ```
/// let lib = wasmpool::Mount::parse("/opt/python/lib:/usr/local/lib").unwrap();
/// assert!(!lib.writable);
/// assert_eq!(lib.guest, "/usr/local/lib");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The host directory (made absolute and resolved by [`PoolBuilder::build`](crate::PoolBuilder::build)).
    pub host: PathBuf,
    /// Where the guest sees it: an absolute path without `.` or `..` components.
    pub guest: String,
    /// Whether the guest may change it. A writable mount is one directory that every task
    /// of the pool shares (they see each other's files): not a per-run output (use `/out`).
    pub writable: bool,
}

impl Mount {
    /// A read-only mount of `host` at `guest`.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Mount {
            host: host.into(),
            guest: guest.into(),
            writable: false,
        }
    }

    /// A writable mount of `host` at `guest`, shared by the pool's tasks.
    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Mount {
            writable: true,
            ..Mount::read_only(host, guest)
        }
    }

    /// `HOST:GUEST`, `HOST:GUEST:ro` or `HOST:GUEST:rw` (the command line's form).
    pub fn parse(text: &str) -> Result<Mount, String> {
        let (rest, writable) = match text.rsplit_once(':') {
            Some((rest, "ro")) => (rest, false),
            Some((rest, "rw")) => (rest, true),
            _ => (text, false),
        };
        let Some((host, guest)) = rest.rsplit_once(':') else {
            return Err(format!(
                "`{text}` is not HOST_PATH:GUEST_PATH[:ro|:rw] (e.g. ./lib:/usr/local/lib)"
            ));
        };
        if host.is_empty() {
            return Err(format!("`{text}`: the host path is empty"));
        }
        let mount = Mount {
            host: host.into(),
            guest: guest.into(),
            writable,
        };
        check_guest(&mount.guest)?;
        Ok(mount)
    }

    /// The host directory resolved (absolute, no symbolic links), checked to be a directory.
    fn resolve(mut self) -> Result<Mount, String> {
        let meta = std::fs::metadata(&self.host)
            .map_err(|e| format!("mount {}: {e}", self.host.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "mount {}: not a directory. WASI gives a guest directories only (preopens), so a mount is a directory: mount the directory that holds this file, at the guest directory where the guest looks for it",
                self.host.display()
            ));
        }
        self.host = std::fs::canonicalize(&self.host)
            .map_err(|e| format!("mount {}: {e}", self.host.display()))?;
        Ok(self)
    }
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.writable { "rw" } else { "ro" };
        write!(f, "{}:{}:{mode}", self.host.display(), self.guest)
    }
}

/// Why `guest` cannot be a mount's guest path, if it cannot.
fn check_guest(guest: &str) -> Result<(), String> {
    let path = Path::new(guest);
    if !path.is_absolute() {
        return Err(format!("mount guest path `{guest}` is not absolute"));
    }
    if guest.contains('\0') {
        return Err(format!("mount guest path {guest:?} contains a NUL byte"));
    }
    let clean = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean || guest.contains("//") || (guest.len() > 1 && guest.ends_with('/')) {
        return Err(format!(
            "mount guest path `{guest}` must be plain: no `.`, `..`, empty parts or trailing `/`"
        ));
    }
    for reserved in [IN_DIR, OUT_DIR] {
        let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if under(guest, reserved) || under(reserved, guest) {
            return Err(format!(
                "mount guest path `{guest}` overlaps {reserved}, which commands' own files use"
            ));
        }
    }
    Ok(())
}

/// The pool's mounts checked and resolved: each host path a directory, each guest path
/// plain, free of `/in` and `/out`, and used once.
pub(crate) fn resolve_all(mounts: Vec<Mount>) -> Result<Vec<Mount>, String> {
    let mut done: Vec<Mount> = Vec::with_capacity(mounts.len());
    for m in mounts {
        check_guest(&m.guest)?;
        if done.iter().any(|d| d.guest == m.guest) {
            return Err(format!("two mounts at guest path `{}`", m.guest));
        }
        done.push(m.resolve()?);
    }
    Ok(done)
}

/// The mounts as one command-line argument of a worker (JSON).
pub(crate) fn to_arg(mounts: &[Mount]) -> String {
    serde_json::to_string(mounts).unwrap_or_else(|_| "[]".into())
}

/// The mounts from a worker's argument; an error if it is not what [`to_arg`] makes.
pub(crate) fn from_arg(arg: &str) -> std::io::Result<Vec<Mount>> {
    serde_json::from_str(arg).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad mounts argument: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_form() {
        assert_eq!(
            Mount::parse("a:/b").unwrap(),
            Mount::read_only("a", "/b"),
            "read-only by default"
        );
        assert_eq!(
            Mount::parse("a:/b:ro").unwrap(),
            Mount::read_only("a", "/b")
        );
        assert_eq!(
            Mount::parse("a:/b:rw").unwrap(),
            Mount::read_write("a", "/b")
        );
        assert_eq!(
            Mount::parse("C:x:/b").unwrap().host,
            PathBuf::from("C:x"),
            "the last colon before the guest path splits"
        );
        for bad in [
            "a",
            ":/b",
            "a:b",
            "a:/b/../c",
            "a:/b/",
            "a:/in",
            "a:/out/x",
            "a:/b//c",
        ] {
            assert!(Mount::parse(bad).is_err(), "{bad}");
        }
        let m = Mount::parse("a:/b:rw").unwrap();
        assert_eq!(Mount::parse(&m.to_string()).unwrap(), m);
    }

    #[test]
    fn resolving_checks_the_host_side_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = resolve_all(vec![Mount::read_only(&file, "/data")]).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(resolve_all(vec![Mount::read_only(dir.path().join("nope"), "/d")]).is_err());
        let err = resolve_all(vec![
            Mount::read_only(dir.path(), "/d"),
            Mount::read_only(dir.path(), "/d"),
        ])
        .unwrap_err();
        assert!(err.contains("two mounts"), "{err}");
        let ok = resolve_all(vec![Mount::read_only(dir.path().join("."), "/d")]).unwrap();
        assert_eq!(ok[0].host, std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(from_arg(&to_arg(&ok)).unwrap(), ok);
    }
}
