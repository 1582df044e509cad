//! What the dispatcher needs from the outside world, as two traits: [`Workers`] starts and
//! ends worker processes and tells the time, [`Worker`] is one process's transport (its
//! request pipe, its cancel pipe, and the table its reply reader delivers outcomes from).
//! In production they are [`Processes`] and [`WorkerProcess`]; the dispatcher's tests put
//! fake workers and a manual clock in their place and drive the event loop by hand. The
//! dispatcher is generic over them (static dispatch: nothing is added per task).

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::Event;
use crate::error::PoolError;
use crate::module::ModuleId;
use crate::pool::task::Completion;
use crate::protocol::TaskId;
use crate::sandbox::Metering;
use crate::worker::reaper::{Reaper, RemoveDir};
use crate::worker::{Launch, WorkerProcess, WorkerRef};

/// Starts and ends workers, and tells the time the dispatcher's deadlines are kept by.
pub(crate) trait Workers {
    type Worker: Worker;

    /// The time now.
    fn now(&self) -> Instant;

    /// Starts the worker `who`. Its replies and the end of its reply stream arrive later as
    /// events ([`Event::Replies`], [`Event::Exited`]).
    fn spawn(&mut self, who: WorkerRef) -> Result<Self::Worker, PoolError>;

    /// Takes over a worker that was killed, asked to exit, or whose stream ended: waits for
    /// it to end (off the dispatcher's thread) and, for `report`, says how it ended
    /// ([`Event::Reaped`]).
    fn reap(&mut self, worker: Self::Worker, report: Option<WorkerRef>);

    /// Waits until every worker handed to [`Self::reap`] has ended.
    fn finish(&mut self);
}

/// One worker process as the dispatcher drives it.
pub(crate) trait Worker {
    /// Its process id.
    fn pid(&self) -> u32;
    /// Registers tasks about to be sent, each `(wire id, completion, calls it makes)`, so
    /// that their replies reach their completions.
    fn expect(&self, tasks: impl Iterator<Item = (TaskId, Arc<Completion>, u64)>);
    /// Sends encoded request frames.
    fn send(&self, frames: &[u8]);
    /// Passes the descriptor of `module`'s compiled file for `metering`, ahead of the
    /// `LoadFile` frame that names it.
    fn pass_file(&self, file: &File, module: ModuleId, metering: Metering) -> io::Result<()>;
    /// Asks it to stop (or skip) the task with wire id `wire`.
    fn cancel(&self, wire: TaskId);
    /// Asks it to exit once it has finished what it was sent.
    fn close(&mut self);
    /// Kills it (without waiting: [`Workers::reap`] does).
    fn kill(&mut self);
}

/// Real worker processes, reaped on the [`Reaper`]'s threads, on the real clock.
pub(crate) struct Processes {
    launch: Launch,
    events: Sender<Event>,
    reaper: Reaper,
}

impl Processes {
    pub(crate) fn new(launch: Launch, events: Sender<Event>, remove_dir: RemoveDir) -> Self {
        Processes {
            reaper: Reaper::new(events.clone(), remove_dir),
            launch,
            events,
        }
    }
}

impl Workers for Processes {
    type Worker = WorkerProcess;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn spawn(&mut self, who: WorkerRef) -> Result<WorkerProcess, PoolError> {
        WorkerProcess::spawn(&self.launch, who, self.events.clone())
    }

    fn reap(&mut self, worker: WorkerProcess, report: Option<WorkerRef>) {
        self.reaper.reap(worker, report);
    }

    fn finish(&mut self) {
        self.reaper.finish();
    }
}

impl Worker for WorkerProcess {
    fn pid(&self) -> u32 {
        WorkerProcess::pid(self)
    }

    fn expect(&self, tasks: impl Iterator<Item = (TaskId, Arc<Completion>, u64)>) {
        WorkerProcess::expect(self, tasks);
    }

    fn send(&self, frames: &[u8]) {
        WorkerProcess::send(self, frames);
    }

    fn pass_file(&self, file: &File, module: ModuleId, metering: Metering) -> io::Result<()> {
        WorkerProcess::pass_file(self, file, module, metering)
    }

    fn cancel(&self, wire: TaskId) {
        WorkerProcess::cancel(self, wire);
    }

    fn close(&mut self) {
        WorkerProcess::close(self);
    }

    fn kill(&mut self) {
        WorkerProcess::kill(self);
    }
}
