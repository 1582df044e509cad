//! The dispatcher: one thread, one event loop, owning the task queue and every worker
//! process. Everything that happens — a submission, a cancel, a worker's reply, a worker's
//! death, a deadline — is an [`Event`] (or a timer tick) handled here, so supervision has no
//! locks spread over threads.
//!
//! Per worker, tasks are pipelined: a worker is sent up to `depth` tasks at once (more when
//! its recent tasks were short), which it runs in order. The first in-flight task is the
//! running one; its host-side kill deadline is `start + timeout + grace`. A worker that
//! misses it (blocked in a host call, hung) is killed; its running task fails with
//! `Timeout`, the tasks queued behind it go back to the front of the queue, and the slot is
//! respawned. Waiting for a process to exit and removing its scratch directory happen on the
//! [`Reaper`]'s threads, never here.

mod slot;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{PoolError, TaskError};
use crate::limits::Limits;
use crate::module::Module;
use crate::pool::task::Completion;
use crate::protocol::TaskId;
use crate::value::Input;
use crate::worker::reaper::{Reaper, RemoveDir};
use crate::worker::replies::Heard;
use crate::worker::{Launch, WorkerRef};

use slot::{Slot, Stopped};

/// Everything the dispatcher reacts to.
pub(crate) enum Event {
    /// New tasks, in submission order.
    Submit(Vec<Job>),
    /// Cancel a task wherever it is (its completion tells whether it is still pending).
    Cancel(TaskId, std::sync::Arc<Completion>),
    /// A worker said something (one or more replies, in order; outcomes already went to
    /// their tasks).
    Replies(WorkerRef, Vec<Heard>),
    /// A worker's reply stream ended: it exited or died, or (with the decoding error) it sent
    /// a frame that does not decode.
    Exited(WorkerRef, Option<String>),
    /// The reaper reaped a worker whose stream ended: how it ended.
    Reaped(WorkerRef, Option<std::process::ExitStatus>),
    /// Report the process ids of the live workers.
    Pids(Sender<Vec<u32>>),
    /// Stop: `drain` finishes queued work first; otherwise it is cancelled.
    Shutdown { drain: bool, done: Sender<()> },
}

/// One task on its way through the pool.
pub(crate) struct Job {
    pub id: TaskId,
    pub module: Module,
    pub export: std::sync::Arc<str>,
    pub input: Input,
    pub limits: Limits,
    /// How many more times the task may be re-run if its worker dies under it.
    pub retries: u32,
    pub completion: std::sync::Arc<Completion>,
}

impl Drop for Job {
    /// A job dropped unanswered answers itself, so no `Task::wait` can hang on it, whatever
    /// path (even a bug that unwinds the dispatcher) dropped it.
    fn drop(&mut self) {
        if !self.completion.is_done() {
            self.completion.fail(TaskError::worker_lost(
                "the pool's dispatcher dropped the task without an answer",
            ));
        }
    }
}

/// Settings the dispatcher runs with.
pub(crate) struct Config {
    pub launch: Launch,
    pub workers: usize,
    pub max_tasks_per_worker: Option<u64>,
    pub max_worker_rss: Option<u64>,
    /// Removes a dead worker's scratch directory (on a reaper thread).
    pub remove_dir: RemoveDir,
}

/// A worker slot that failed this many starts in a row (exiting by itself) is given up.
const MAX_START_FAILURES: u32 = 3;

/// A worker slot whose starts were killed by a signal this many times in a row is given up.
const MAX_START_KILLS: u32 = 20;

/// How long a new worker may take to say `Ready`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a cancelled running task may take to stop before its worker is killed.
const CANCEL_GRACE: Duration = Duration::from_millis(100);

pub(crate) struct Dispatcher {
    config: Config,
    events: Receiver<Event>,
    sender: Sender<Event>,
    slots: Vec<Slot>,
    reaper: Reaper,
    /// Tasks not sent yet, in order. Cancelled ones stay until they reach the front (or a
    /// compaction), answered already: a cancel never searches the queue.
    queue: VecDeque<Job>,
    /// Roughly how many jobs in `queue` are cancelled (for compaction).
    cancelled_queued: usize,
    shutdown: Option<(bool, Sender<()>)>,
}

impl Dispatcher {
    /// Starts the dispatcher thread and its workers; returns once every worker is spawned.
    pub(crate) fn start(
        config: Config,
        events: Receiver<Event>,
        sender: Sender<Event>,
    ) -> Result<std::thread::JoinHandle<()>, PoolError> {
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("wasmpool-dispatch".into())
            .spawn(move || {
                // Workers are spawned from this thread: their parent-death signal follows
                // it, and it lives exactly as long as the pool. It writes their pipes.
                crate::worker::process::block_sigpipe();
                let mut d = Dispatcher {
                    slots: Vec::with_capacity(config.workers),
                    reaper: Reaper::new(sender.clone(), config.remove_dir.clone()),
                    config,
                    events,
                    sender,
                    queue: VecDeque::new(),
                    cancelled_queued: 0,
                    shutdown: None,
                };
                for i in 0..d.config.workers {
                    match Slot::spawn(&d.config.launch, i, 0, &d.sender) {
                        Ok(slot) => d.slots.push(slot),
                        Err(e) => {
                            for slot in d.slots.drain(..) {
                                slot.kill(&mut d.reaper);
                            }
                            d.reaper.finish();
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = started_tx.send(Ok(()));
                d.run();
                // Every worker ended and its directory removed before the pool's directory
                // goes (with `d.config`).
                d.reaper.finish();
            })
            .map_err(|e| PoolError::Spawn {
                program: PathBuf::from("wasmpool-dispatch thread"),
                source: e,
            })?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(PoolError::Config(
                "the dispatcher thread died while starting".into(),
            )),
        }
    }

    fn run(&mut self) {
        loop {
            let event = match self.next_deadline() {
                Some(deadline) => match self.events.recv_deadline(deadline) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match self.events.recv() {
                    Ok(e) => Some(e),
                    Err(_) => return,
                },
            };
            if let Some(e) = event {
                self.handle(e);
            }
            while let Ok(e) = self.events.try_recv() {
                self.handle(e);
            }
            self.enforce_deadlines(Instant::now());
            if self.finish_shutdown() {
                return;
            }
            self.pump();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit(jobs) => {
                if self.shutdown.is_some() {
                    jobs.iter().for_each(|j| {
                        j.completion
                            .fail(TaskError::cancelled("the pool is shutting down"))
                    });
                } else if self.slots.iter().all(Slot::is_dead) {
                    jobs.iter()
                        .for_each(|j| j.completion.fail(self.no_workers_error()));
                } else {
                    self.queue.extend(jobs);
                }
            }
            Event::Cancel(task, completion) => self.cancel(task, &completion),
            Event::Replies(who, replies) => {
                let now = Instant::now();
                for reply in replies {
                    let Some(slot) = self.slot_of(who) else {
                        return;
                    };
                    match reply {
                        Heard::Ready => slot.on_ready(now),
                        Heard::Done { task, took, rss } => {
                            slot.on_done(task, took, rss, now);
                            self.maybe_retire(who.slot);
                        }
                        Heard::Retire => {
                            slot.wear_out();
                            self.maybe_retire(who.slot);
                        }
                    }
                }
            }
            Event::Exited(who, malformed) => {
                if let Some(i) = self.slots.iter().position(|s| s.retired_owns(who)) {
                    self.slots[i].reap_retired(who, &mut self.reaper, malformed.is_some());
                    return;
                }
                if let Some(slot) = self.slots.get_mut(who.slot).filter(|s| s.is(who)) {
                    slot.stream_ended(&mut self.reaper, malformed);
                }
            }
            Event::Reaped(who, status) => {
                let Some(slot) = self.slots.get_mut(who.slot) else {
                    return;
                };
                if !slot.awaits_reap(who) {
                    return;
                }
                let message = slot.died_message(status);
                let stopped = slot.take_stopped(|_| TaskError::worker_lost(message.clone()));
                self.after_stop(who.slot, stopped, message);
            }
            Event::Pids(reply) => {
                let _ = reply.send(self.slots.iter().filter_map(Slot::live_pid).collect());
            }
            Event::Shutdown { drain, done } => {
                self.shutdown = Some((drain, done));
                if !drain {
                    for job in self.queue.drain(..) {
                        job.completion
                            .fail(TaskError::cancelled("the pool was terminated"));
                    }
                    for slot in &mut self.slots {
                        let stopped = slot.kill_now(&mut self.reaper, |_| {
                            TaskError::cancelled("the pool was terminated while the task ran")
                        });
                        for job in stopped.requeue {
                            job.completion
                                .fail(TaskError::cancelled("the pool was terminated"));
                        }
                    }
                }
            }
        }
    }

    fn slot_of(&mut self, who: WorkerRef) -> Option<&mut Slot> {
        self.slots.get_mut(who.slot).filter(|s| s.is(who))
    }

    fn no_workers_error(&self) -> TaskError {
        let why = self
            .slots
            .iter()
            .find_map(Slot::dead_reason)
            .unwrap_or("no worker is running");
        TaskError::worker_lost(format!("the pool has no working worker process: {why}"))
    }

    /// Handles a worker that stopped with tasks in flight: finish the running one, requeue
    /// the rest in order at the front, respawn the slot (during a draining shutdown too: the
    /// queued tasks are still to run).
    fn after_stop(&mut self, index: usize, stopped: Stopped, why: String) {
        for job in stopped.requeue.into_iter().rev() {
            self.queue.push_front(job);
        }
        if self.shutdown.as_ref().is_some_and(|(drain, _)| !drain) {
            return;
        }
        let slot = &mut self.slots[index];
        if let Err(e) = slot.respawn(
            &self.config.launch,
            &self.sender,
            stopped.before_ready,
            &why,
        ) {
            eprintln!("wasmpool: {}", crate::error::Chain(&e));
        }
        if self.slots.iter().all(Slot::is_dead) {
            let err = self.no_workers_error();
            for job in self.queue.drain(..) {
                job.completion.fail(err.clone());
            }
        }
    }

    fn cancel(&mut self, task: TaskId, completion: &Completion) {
        if completion.is_done() {
            return;
        }
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.cancel(task, now) {
                return;
            }
        }
        // Pending and on no worker: it is queued. It is answered now and let go when it
        // reaches the front of the queue; the queue is compacted once more than half of it
        // is cancelled, so a cancel costs O(1) amortized.
        completion.fail(TaskError::cancelled("cancelled before it started"));
        self.cancelled_queued += 1;
        if self.cancelled_queued * 2 > self.queue.len() {
            self.queue.retain(|j| !j.completion.is_done());
            self.cancelled_queued = 0;
        }
    }

    /// Lets go of the cancelled jobs at the front of the queue.
    fn drop_cancelled_front(&mut self) {
        while self.queue.front().is_some_and(|j| j.completion.is_done()) {
            self.queue.pop_front();
            self.cancelled_queued = self.cancelled_queued.saturating_sub(1);
        }
    }

    fn enforce_deadlines(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(error) = slot.overdue(now, START_TIMEOUT) else {
                continue;
            };
            let why = format!("{} (worker {} killed)", error, slot.pid());
            let stopped = slot.kill_now(&mut self.reaper, |_| error.clone());
            self.after_stop(i, stopped, why);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.deadline(START_TIMEOUT))
            .min()
    }

    /// Sends queued tasks to workers with room, fewest in flight first.
    fn pump(&mut self) {
        if self.shutdown.as_ref().is_some_and(|(drain, _)| !drain) {
            return;
        }
        loop {
            self.drop_cancelled_front();
            if self.queue.is_empty() {
                break;
            }
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.has_room(self.config.max_tasks_per_worker, self.config.max_worker_rss)
                })
                .min_by_key(|(_, s)| s.in_flight())
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let job = self.queue.pop_front().expect("queue is not empty");
            job.completion.leave_queue();
            self.slots[i].send(job, Instant::now());
        }
        for slot in &mut self.slots {
            slot.flush();
        }
    }

    /// Replaces a worker that reached `max_tasks_per_worker` or `max_worker_rss` once its
    /// last task is done.
    fn maybe_retire(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let used_up = self
            .config
            .max_tasks_per_worker
            .is_some_and(|max| slot.tasks_sent() >= max)
            || self
                .config
                .max_worker_rss
                .is_some_and(|max| slot.rss() > max)
            || slot.worn_out();
        if used_up && slot.in_flight() == 0 && self.shutdown.is_none() {
            if let Err(e) = slot.retire_and_respawn(&self.config.launch, &self.sender) {
                eprintln!("wasmpool: {}", crate::error::Chain(&e));
            }
        }
    }

    /// Completes a shutdown when its conditions hold; returns whether the loop should end.
    fn finish_shutdown(&mut self) -> bool {
        let Some(drain) = self.shutdown.as_ref().map(|(drain, _)| *drain) else {
            return false;
        };
        self.drop_cancelled_front();
        if drain && (!self.queue.is_empty() || self.slots.iter().any(|s| s.in_flight() > 0)) {
            // A drain with no live worker left can never finish.
            if !self.slots.iter().all(Slot::is_dead) {
                return false;
            }
            let err = self.no_workers_error();
            for job in self.queue.drain(..) {
                job.completion.fail(err.clone());
            }
        }
        for slot in self.slots.drain(..) {
            slot.close_and_reap(&mut self.reaper);
        }
        if let Some((_, done)) = self.shutdown.take() {
            let _ = done.send(());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Origin;
    use crate::pool::task::{Imap, Task};

    fn module() -> Module {
        Module::new(
            b"m",
            crate::sandbox::Metering::Epochs,
            Vec::new(),
            Vec::new(),
            Origin::Compiled(Duration::ZERO),
        )
    }

    fn job(id: TaskId, module: &Module) -> Job {
        Job {
            id,
            module: module.clone(),
            export: "f".into(),
            input: Input::Numbers(Vec::new()),
            limits: Limits::default(),
            retries: 0,
            completion: Completion::new(None),
        }
    }

    /// A dispatcher with no workers, driven by hand.
    fn idle_dispatcher() -> Dispatcher {
        let (sender, events) = crossbeam_channel::unbounded();
        let remove_dir: RemoveDir = std::sync::Arc::new(crate::worker::scratch::remove_worker_dir);
        Dispatcher {
            config: Config {
                launch: Launch {
                    program: PathBuf::from("/nonexistent"),
                    user: None,
                    scratch: None,
                },
                workers: 0,
                max_tasks_per_worker: None,
                max_worker_rss: None,
                remove_dir: remove_dir.clone(),
            },
            reaper: Reaper::new(sender.clone(), remove_dir),
            events,
            sender,
            slots: Vec::new(),
            queue: VecDeque::new(),
            cancelled_queued: 0,
            shutdown: None,
        }
    }

    #[test]
    fn a_job_dropped_unanswered_fails_its_task() {
        let job = job(1, &module());
        let completion = job.completion.clone();
        drop(job);
        assert!(completion.is_done());
    }

    #[test]
    fn dropping_an_imap_behind_other_work_does_not_scan_the_queue_per_task() {
        const AHEAD: u64 = 50_000;
        const IMAP: u64 = 150_000;
        let mut d = idle_dispatcher();
        let module = module();
        let jobs: Vec<Job> = (1..=AHEAD + IMAP).map(|id| job(id, &module)).collect();
        let tasks: Vec<Task<i64>> = jobs[AHEAD as usize..]
            .iter()
            .map(|j| Task::new(j.id, j.completion.clone(), d.sender.clone()))
            .collect();
        let ahead: Vec<_> = jobs[..AHEAD as usize]
            .iter()
            .map(|j| j.completion.clone())
            .collect();
        let completions: Vec<_> = jobs[AHEAD as usize..]
            .iter()
            .map(|j| j.completion.clone())
            .collect();
        d.queue.extend(jobs);
        drop(Imap::new(tasks.into(), None));
        // A linear search per cancel costs AHEAD × IMAP steps (minutes); an index or a lazy
        // skip, well under a second. The bound is very generous for a loaded machine.
        let started = Instant::now();
        while let Ok(event) = d.events.try_recv() {
            d.handle(event);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "cancelling queued tasks is too slow"
            );
        }
        d.pump();
        for (id, c) in (AHEAD + 1..).zip(&completions) {
            let task = Task::<i64>::new(id, c.clone(), d.sender.clone());
            let outcome = task.wait_timeout(Duration::ZERO);
            assert!(
                matches!(outcome, Some(Err(TaskError::Cancelled { .. }))),
                "{outcome:?}"
            );
        }
        assert!(ahead.iter().all(|c| !c.is_done()), "others stay queued");
        assert!(
            d.queue.len() <= 2 * AHEAD as usize,
            "cancelled jobs are let go"
        );
    }

    /// A fake worker program in `dir`: it says `Ready`, then sleeps without reading a request
    /// or answering (the dispatcher kills it at its task's deadline).
    fn silent_worker(dir: &std::path::Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let ready = dir.join("ready");
        let mut frame = Vec::new();
        crate::protocol::encode(&crate::protocol::Reply::Ready { pid: 0 }, &mut frame).unwrap();
        std::fs::write(&ready, frame).unwrap();
        let script = dir.join("worker");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n/bin/cat '{}'\nexec /bin/sleep 60\n",
                ready.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        script
    }

    #[test]
    fn a_slow_scratch_removal_does_not_hold_up_another_workers_deadline() {
        let dir = std::env::temp_dir().join(format!("wasmpool-slow-rm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = crate::worker::scratch::ScratchRoot::create(&dir, None).unwrap();
        let root_path = root.path().to_path_buf();
        // Removing a worker's directory blocks until the test lets it go (like removing a
        // `/out` that a guest filled with a million files).
        let (removing_tx, removing) = crossbeam_channel::unbounded::<()>();
        let (release, released) = crossbeam_channel::unbounded::<()>();
        let remove_dir: RemoveDir = std::sync::Arc::new(move |path: &std::path::Path| {
            let _ = removing_tx.send(());
            let _ = released.recv();
            crate::worker::scratch::remove_worker_dir(path);
        });
        let (sender, events) = crossbeam_channel::unbounded();
        let config = Config {
            launch: Launch {
                program: silent_worker(&dir),
                user: None,
                scratch: Some(root),
            },
            workers: 2,
            max_tasks_per_worker: None,
            max_worker_rss: None,
            remove_dir,
        };
        let dispatcher = Dispatcher::start(config, events, sender.clone()).unwrap();
        let module = Module::new(
            b"m",
            crate::sandbox::Metering::Epochs,
            vec![0; 16],
            Vec::new(),
            Origin::Compiled(Duration::ZERO),
        );
        let mut short = job(1, &module);
        short.limits.timeout = Some(Duration::from_millis(50));
        let mut neighbour = job(2, &module);
        neighbour.limits.timeout = Some(Duration::from_millis(300));
        let task = Task::<i64>::new(2, neighbour.completion.clone(), sender.clone());
        let submitted = Instant::now();
        sender.send(Event::Submit(vec![short, neighbour])).unwrap();
        // The short task's worker is killed at its deadline; its directory's removal starts
        // and hangs.
        removing
            .recv_timeout(Duration::from_secs(10))
            .expect("the killed worker's directory is removed");
        // The neighbour's deadline (300 ms + 150 ms grace from its start) still holds:
        // well within 2 s of its submission, while the removal still hangs.
        let outcome = task.wait_timeout(Duration::from_secs(2).saturating_sub(submitted.elapsed()));
        assert!(
            matches!(outcome, Some(Err(TaskError::Timeout { .. }))),
            "after {:?}: {outcome:?}",
            submitted.elapsed()
        );
        drop(release);
        let (done, finished) = crossbeam_channel::bounded(1);
        sender.send(Event::Shutdown { drain: false, done }).unwrap();
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        dispatcher.join().unwrap();
        assert!(
            !root_path.exists(),
            "the pool's directory is removed when it ends"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
