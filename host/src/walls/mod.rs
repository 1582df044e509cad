//! The OS walls around every worker and compile process, in one place: [`harden`] raises
//! them at a process's start (privileges, parent-death signal, inherited descriptors,
//! `no_new_privs`, rlimits), with [`landlock`] (file access confined to the scratch
//! directory) and [`seccomp`] (the system-call allow-list) among them; [`probe`] tests them
//! from inside a process that raised them.

pub mod harden;
pub mod landlock;
pub mod probe;
pub mod seccomp;
