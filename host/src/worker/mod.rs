//! Worker processes, the host's side: [`process`] spawns, feeds and kills them, `requests`
//! writes to and `replies` reads from their pipes, `reaper` ends processes and removes their
//! directories off the dispatcher's thread, [`scratch`] keeps the directories where command
//! tasks' files live, and [`locate`] finds the program to start. What runs inside a worker is
//! `crate::child`; the walls it raises are `crate::walls`.

pub mod locate;
pub mod process;
pub(crate) mod reaper;
pub(crate) mod replies;
pub(crate) mod requests;
pub mod scratch;

pub use process::{Launch, WorkerProcess, WorkerRef, WORKER_ARG};
