//! Worker processes. The host side ([`process`]) spawns, feeds, reads and reaps them; the
//! worker side ([`serve`]) is the loop that runs inside each one; [`compile`] runs untrusted
//! compilation in a process of its own; [`harden`] raises the OS walls at each process's
//! start, with [`seccomp`] and [`landlock`] among them; [`scratch`] keeps the directories
//! where command tasks' files live; `reaper` ends processes and removes their directories
//! off the dispatcher's thread; [`locate`] finds the program to start; [`entry`] is where
//! that program becomes a worker or compile process (`worker_main`); [`probe`] tests the
//! walls from inside a process that raised them.

pub mod compile;
pub mod entry;
pub mod harden;
pub mod landlock;
pub mod locate;
pub mod probe;
pub mod process;
pub(crate) mod reaper;
pub(crate) mod replies;
pub(crate) mod requests;
pub mod scratch;
pub mod seccomp;
pub mod serve;

pub use process::{Launch, WorkerProcess, WorkerRef, WORKER_ARG};
