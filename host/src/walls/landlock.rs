//! The file-system wall: a Landlock ruleset confines a worker to its own scratch directory
//! (where command tasks' `/in` and `/out` live). Everywhere else it can open, create, list
//! or remove nothing, whatever path it is handed, so the seccomp filter may allow the file
//! system calls that command tasks need. Without Landlock (Linux < 5.13, or disabled), the
//! filter keeps refusing them and commands run without files.

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};

/// The newest ABI this code asks for; older kernels enforce what they know.
const ABI_WANTED: ABI = ABI::V5;

/// Confines this process (it must still be single-threaded: a ruleset binds the calling
/// thread and the threads it starts later) to `dir`, or to nothing at all. `Err` says why
/// it could not.
pub fn confine(dir: Option<&Path>) -> Result<(), String> {
    let access = AccessFs::from_all(ABI_WANTED);
    let status = Ruleset::default()
        .handle_access(access)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(dir, access)))
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
