//! Worker processes. The host side ([`process`]) spawns, feeds, reads and reaps them; the
//! worker side ([`serve`]) is the loop that runs inside each one; [`locate`] finds the
//! program to start.

pub mod locate;
pub mod process;
pub mod serve;

pub use process::{WorkerProcess, WorkerRef, WORKER_ARG};
