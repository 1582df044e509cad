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
//! respawned.

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
use crate::worker::replies::Heard;
use crate::worker::{Launch, WorkerRef};

use slot::{Slot, Stopped};

/// Everything the dispatcher reacts to.
pub(crate) enum Event {
    /// New tasks, in submission order.
    Submit(Vec<Job>),
    /// Cancel a task wherever it is.
    Cancel(TaskId),
    /// A worker said something (one or more replies, in order; outcomes already went to
    /// their tasks).
    Replies(WorkerRef, Vec<Heard>),
    /// A worker's reply stream ended: it exited or died.
    Exited(WorkerRef),
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
    queue: VecDeque<Job>,
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
                    config,
                    events,
                    sender,
                    queue: VecDeque::new(),
                    shutdown: None,
                };
                for i in 0..d.config.workers {
                    match Slot::spawn(&d.config.launch, i, 0, &d.sender) {
                        Ok(slot) => d.slots.push(slot),
                        Err(e) => {
                            for slot in d.slots.drain(..) {
                                slot.kill();
                            }
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = started_tx.send(Ok(()));
                d.run();
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
            Event::Cancel(task) => self.cancel(task),
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
            Event::Exited(who) => {
                if let Some(i) = self.slots.iter().position(|s| s.retired_owns(who)) {
                    self.slots[i].reap_retired(who);
                    return;
                }
                if self.slot_of(who).is_none() {
                    return;
                }
                let slot = &mut self.slots[who.slot];
                let message = slot.died_message();
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
                        let stopped = slot.kill_now(|_| {
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
    /// the rest in order at the front, respawn the slot.
    fn after_stop(&mut self, index: usize, stopped: Stopped, why: String) {
        for job in stopped.requeue.into_iter().rev() {
            self.queue.push_front(job);
        }
        if self.shutdown.is_some() {
            return;
        }
        let slot = &mut self.slots[index];
        if let Err(e) = slot.respawn(
            &self.config.launch,
            &self.sender,
            stopped.before_ready,
            &why,
        ) {
            eprintln!("wasmpool: {e}");
        }
        if self.slots.iter().all(Slot::is_dead) {
            let err = self.no_workers_error();
            for job in self.queue.drain(..) {
                job.completion.fail(err.clone());
            }
        }
    }

    fn cancel(&mut self, task: TaskId) {
        if let Some(pos) = self.queue.iter().position(|j| j.id == task) {
            let job = self.queue.remove(pos).expect("position is in range");
            job.completion
                .fail(TaskError::cancelled("cancelled before it started"));
            return;
        }
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.cancel(task, now + CANCEL_GRACE) {
                return;
            }
        }
    }

    fn enforce_deadlines(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(error) = slot.overdue(now, START_TIMEOUT) else {
                continue;
            };
            let why = format!("{} (worker {} killed)", error, slot.pid());
            let stopped = slot.kill_now(|_| error.clone());
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
        while !self.queue.is_empty() {
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
                eprintln!("wasmpool: {e}");
            }
        }
    }

    /// Completes a shutdown when its conditions hold; returns whether the loop should end.
    fn finish_shutdown(&mut self) -> bool {
        let Some((drain, _)) = &self.shutdown else {
            return false;
        };
        if *drain && (!self.queue.is_empty() || self.slots.iter().any(|s| s.in_flight() > 0)) {
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
            slot.close_and_reap();
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

    #[test]
    fn a_job_dropped_unanswered_fails_its_task() {
        let completion = Completion::new(None);
        let job = Job {
            id: 1,
            module: Module::new(
                b"m",
                crate::sandbox::Metering::Epochs,
                Vec::new(),
                Vec::new(),
                Origin::Compiled(Duration::ZERO),
            ),
            export: "f".into(),
            input: Input::Numbers(Vec::new()),
            limits: Limits::default(),
            retries: 0,
            completion: completion.clone(),
        };
        drop(job);
        assert!(completion.is_done());
    }
}
