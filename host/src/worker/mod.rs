//! Worker processes. The host side ([`process`]) spawns, feeds, reads and reaps them; the
//! worker side ([`serve`]) is the loop that runs inside each one; [`compile`] runs untrusted
//! compilation in a process of its own; [`harden`] raises the OS walls at each process's
//! start; [`locate`] finds the program to start.

pub mod compile;
pub mod harden;
pub mod locate;
pub mod process;
pub mod seccomp;
pub mod serve;

pub use process::{WorkerProcess, WorkerRef, WORKER_ARG};
