//! The file-system wall: a Landlock ruleset confines a worker to its own scratch directory
//! (where command tasks' `/in` and `/out` live) and the pool's mounts: a read-only mount's
//! directory may be read and listed and nothing more, a writable one's also changed.
//! Everywhere else it can open, create, list or remove nothing, whatever path it is handed,
//! so the seccomp filter may allow the file system calls that command tasks need. Rules bind
//! the directories (inodes) as they are when the worker starts: a path swapped for a link
//! afterwards does not widen them, and Landlock refuses a link or rename between rule
//! hierarchies (ABI 2's `Refer` right, which no rule grants across them). Without Landlock
//! (Linux < 5.13, or disabled), the filter keeps refusing them and commands run without
//! files or mounts.

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};

use crate::mount::Mount;

/// The newest ABI this code asks for; older kernels enforce what they know.
const ABI_WANTED: ABI = ABI::V5;

/// What a read-only mount allows: reading files and listing directories (not executing).
fn read_only() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// Confines this process (it must still be single-threaded: a ruleset binds the calling
/// thread and the threads it starts later) to `dir` and the `mounts`, or to nothing at all.
/// `Err` says why it could not.
pub fn confine(dir: Option<&Path>, mounts: &[Mount]) -> Result<(), String> {
    let access = AccessFs::from_all(ABI_WANTED);
    let (writable, read): (Vec<&Mount>, Vec<&Mount>) = mounts.iter().partition(|m| m.writable);
    let status = Ruleset::default()
        .handle_access(access)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(dir, access)))
        .and_then(|r| r.add_rules(path_beneath_rules(writable.iter().map(|m| &m.host), access)))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                read.iter().map(|m| &m.host),
                read_only(),
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(()),
        RulesetStatus::NotEnforced => Err(
            "the kernel does not enforce Landlock (Linux 5.13 or later with Landlock enabled is needed)"
                .into(),
        ),
    }
}
