//! Ending worker processes off the dispatcher's thread. A process that was killed, asked to
//! exit, or whose reply stream ended is handed to the [`Reaper`], which waits for it (killing
//! it if it has not exited within [`EXIT_GRACE`]), tells the dispatcher how it ended when
//! asked ([`Event::Reaped`]), and removes its scratch directory — which takes seconds when a
//! guest filled `/out` with files. None of this can hold up the dispatcher, so no other
//! task's deadline waits for it. The dispatcher waits for the reaper once its loop ends,
//! before the pool's scratch directory is removed: a worker's files never outlive the pool.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::dispatch::Event;
use crate::worker::{WorkerProcess, WorkerRef};

/// How long a worker whose stream ended, or that was asked to exit, may take to exit before
/// it is killed.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Removes a worker's scratch directory ([`super::scratch::remove_worker_dir`]; tests slow
/// it down).
pub(crate) type RemoveDir = Arc<dyn Fn(&Path) + Send + Sync>;

/// Ends worker processes, each on a short-lived thread of its own (so a slow removal or a
/// process that lingers delays no other).
pub(crate) struct Reaper {
    events: Sender<Event>,
    remove_dir: RemoveDir,
    threads: Vec<JoinHandle<()>>,
}

/// One process to end.
struct Ending {
    process: WorkerProcess,
    report: Option<WorkerRef>,
    events: Sender<Event>,
    remove_dir: RemoveDir,
}

impl Ending {
    fn run(self) {
        let (status, dir) = self.process.end(EXIT_GRACE);
        if let Some(who) = self.report {
            let _ = self.events.send(Event::Reaped(who, status));
        }
        if let Some(dir) = dir {
            (self.remove_dir)(&dir);
        }
    }
}

impl Reaper {
    pub(crate) fn new(events: Sender<Event>, remove_dir: RemoveDir) -> Reaper {
        Reaper {
            events,
            remove_dir,
            threads: Vec::new(),
        }
    }

    /// Takes `process` over (killed already, or asked to exit): waits for it, kills it if it
    /// lingers, reports its exit status as [`Event::Reaped`] for `report`, and removes its
    /// scratch directory.
    pub(crate) fn reap(&mut self, process: WorkerProcess, report: Option<WorkerRef>) {
        self.threads.retain(|t| !t.is_finished());
        let ending = Ending {
            process,
            report,
            events: self.events.clone(),
            remove_dir: self.remove_dir.clone(),
        };
        // Handed over through a channel, so that it is still here if no thread can start.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = tx.send(ending);
        let mine = rx.clone();
        let spawned = std::thread::Builder::new()
            .name("wasmpool-reaper".into())
            .spawn(move || {
                if let Ok(ending) = mine.recv() {
                    ending.run();
                }
            });
        match spawned {
            Ok(thread) => self.threads.push(thread),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a reaper thread; ending the worker here");
                if let Ok(ending) = rx.try_recv() {
                    ending.run();
                }
            }
        }
    }

    /// Waits until every process handed over has ended and its directory is removed.
    pub(crate) fn finish(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
