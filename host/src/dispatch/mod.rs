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

mod inbox;
mod slot;
mod stats;
#[cfg(test)]
mod tests;
mod workers;

pub(crate) use inbox::{Inbox, Pushed};
pub use stats::PoolStats;
pub(crate) use stats::Tally;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{PoolError, TaskError};
use crate::limits::Limits;
use crate::module::Module;
use crate::pool::task::Completion;
use crate::protocol::{JobInput, TaskId};
use crate::worker::reaper::RemoveDir;
use crate::worker::replies::Heard;
use crate::worker::{Launch, WorkerRef};

use slot::{Slot, Stopped};
use stats::Counts;
use workers::{Processes, Workers};

/// Everything the dispatcher reacts to.
pub(crate) enum Event {
    /// New tasks, in submission order.
    Submit(Vec<Job>),
    /// Tasks wait in the [`Inbox`] (sent by the push that found it empty).
    Submitted,
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
    /// Report the pool's counts.
    Stats(Sender<PoolStats>),
    /// Stop: `drain` finishes queued work first; otherwise it is cancelled.
    Shutdown { drain: bool, done: Sender<()> },
}

/// What the tasks of one [`Call`](crate::Call) share, and travel with one reference to:
/// a job stays small (it is moved from queue to frame to the in-flight list, and dropped on
/// another thread than the one that made it), and the dispatcher tells calls that can
/// travel together by a pointer.
#[derive(Clone)]
pub(crate) struct Shape {
    pub module: Module,
    pub export: std::sync::Arc<str>,
    pub limits: Limits,
    /// Environment of a plain or SDK call (`Call::env`).
    pub env: std::sync::Arc<[(String, String)]>,
}

/// One task on its way through the pool.
pub(crate) struct Job {
    pub id: TaskId,
    pub shape: std::sync::Arc<Shape>,
    pub input: JobInput,
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

/// How the pool starts the dispatcher.
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

/// Most calls the dispatcher coalesces into one frame (as `map` batches them).
const MAX_COALESCED: usize = 64;

/// Most input bytes the dispatcher coalesces into one frame: past this, a frame's copy
/// costs more than the frames it saves.
const COALESCED_BYTES: usize = 1 << 20;

/// Whether a job can travel with others in a `Calls` frame: a single plain or SDK call, or
/// a command run whose output is not streamed (a streamed run's output goes to its caller
/// as it is written, so it travels alone; batches are batches already).
fn coalescable(job: &Job) -> bool {
    job.input.numbers().is_some()
        || job.input.json().is_some()
        || job.input.command().is_some_and(|c| !c.stream)
}

/// Whether `next` can travel in `first`'s `Calls` frame: a call of the same module and
/// export, under the same limits and environment, with the same kind of input (for numbers,
/// as many: a frame lays them end to end).
fn compatible(first: &Job, next: &Job) -> bool {
    let same_kind = match (first.input.numbers(), next.input.numbers()) {
        (Some(a), Some(b)) => a.len() == b.len(),
        (None, None) => match (first.input.command(), next.input.command()) {
            (Some(_), Some(b)) => !b.stream,
            (None, None) => first.input.json().is_some() && next.input.json().is_some(),
            _ => false,
        },
        _ => false,
    };
    let (a, b) = (&*first.shape, &*next.shape);
    same_kind
        && (std::sync::Arc::ptr_eq(&first.shape, &next.shape)
            || (a.module.id() == b.module.id()
                && a.limits == b.limits
                && a.export == b.export
                && a.env == b.env))
}

/// About how many bytes a call's input takes in a frame.
fn input_bytes(input: &JobInput) -> usize {
    match (input.numbers(), input.json(), input.command()) {
        (Some(values), _, _) => 1 + values.len() * 9,
        (_, Some(bytes), _) => 5 + bytes.len(),
        // Its bytes, and room for lengths, file names and flags.
        (_, _, Some(command)) => {
            64 + command.size()
                + command
                    .files
                    .iter()
                    .map(|(name, _)| 8 + name.len())
                    .sum::<usize>()
        }
        _ => usize::MAX,
    }
}

/// The dispatcher's own settings.
struct Settings {
    workers: usize,
    max_tasks_per_worker: Option<u64>,
    max_worker_rss: Option<u64>,
}

/// The dispatcher's state, over its workers `W` ([`Processes`] in production; the tests'
/// fake workers and clock in the tests, which call [`Self::handle`],
/// [`Self::enforce_deadlines`] and [`Self::pump`] by hand).
pub(crate) struct Dispatcher<W: Workers = Processes> {
    config: Settings,
    events: Receiver<Event>,
    /// Where submissions wait (`None` when they come only as `Event::Submit`), emptied
    /// before every event is handled; `taken` is the vector swapped in for them.
    inbox: Option<std::sync::Arc<Inbox>>,
    taken: Vec<Job>,
    slots: Vec<Slot<W::Worker>>,
    /// Starts and ends the workers; tells the time.
    workers: W,
    /// Tasks not sent yet, in order. Cancelled ones stay until they reach the front (or a
    /// compaction), answered already: a cancel never searches the queue.
    queue: VecDeque<Job>,
    /// Roughly how many jobs in `queue` are cancelled (for compaction).
    cancelled_queued: usize,
    shutdown: Option<(bool, Sender<()>)>,
    /// How the calls answered so far ended.
    counts: Counts,
}

impl Dispatcher<Processes> {
    /// Starts the dispatcher thread and its workers; returns once every worker is spawned.
    pub(crate) fn start(
        config: Config,
        events: Receiver<Event>,
        sender: Sender<Event>,
        inbox: std::sync::Arc<Inbox>,
    ) -> Result<std::thread::JoinHandle<()>, PoolError> {
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("wasmpool-dispatch".into())
            .spawn(move || {
                // Workers are spawned from this thread: their parent-death signal follows
                // it, and it lives exactly as long as the pool. It writes their pipes.
                crate::worker::process::block_sigpipe();
                let Config {
                    launch,
                    workers,
                    max_tasks_per_worker,
                    max_worker_rss,
                    remove_dir,
                } = config;
                let processes = Processes::new(launch, sender.clone(), remove_dir);
                let settings = Settings {
                    workers,
                    max_tasks_per_worker,
                    max_worker_rss,
                };
                let mut d = Dispatcher::new(settings, processes, events);
                d.inbox = Some(inbox.clone());
                if let Err(e) = d.spawn_all() {
                    inbox.close();
                    let _ = started_tx.send(Err(e));
                    return;
                }
                let _ = started_tx.send(Ok(()));
                d.run();
                for job in inbox.close() {
                    job.completion
                        .fail(TaskError::cancelled("the pool was shut down"));
                }
                // Every worker ended and its directory removed before the pool's directory
                // goes (with `d.workers`).
                d.workers.finish();
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
                self.on_event(e);
            }
            while let Ok(e) = self.events.try_recv() {
                self.on_event(e);
            }
            self.take_inbox();
            if self.step() {
                return;
            }
        }
    }
}

impl<W: Workers> Dispatcher<W> {
    fn new(config: Settings, workers: W, events: Receiver<Event>) -> Self {
        Dispatcher {
            slots: Vec::with_capacity(config.workers),
            config,
            workers,
            events,
            inbox: None,
            taken: Vec::new(),
            queue: VecDeque::new(),
            cancelled_queued: 0,
            shutdown: None,
            counts: Counts::default(),
        }
    }

    /// Spawns every worker; on a failure, kills those spawned and waits for them.
    fn spawn_all(&mut self) -> Result<(), PoolError> {
        for i in 0..self.config.workers {
            match Slot::spawn(&mut self.workers, i, 0) {
                Ok(slot) => self.slots.push(slot),
                Err(e) => {
                    for slot in self.slots.drain(..) {
                        slot.kill(&mut self.workers);
                    }
                    self.workers.finish();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// What the loop does after handling the events at hand: kills the workers past a
    /// deadline, completes a shutdown, sends queued tasks. Returns whether the loop ends.
    fn step(&mut self) -> bool {
        self.enforce_deadlines(self.workers.now());
        if self.finish_shutdown() {
            return true;
        }
        self.pump();
        false
    }

    /// Handles `event`, after queueing what waits in the inbox.
    fn on_event(&mut self, event: Event) {
        self.take_inbox();
        self.handle(event);
    }

    /// Queues what waits in the inbox (before an event is handled: what a thread submitted
    /// comes before what it did next).
    fn take_inbox(&mut self) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        if inbox.take(&mut self.taken) {
            let mut jobs = std::mem::take(&mut self.taken);
            self.submit(&mut jobs);
            self.taken = jobs;
        }
    }

    /// Queues `jobs` (emptying the vector, whose room is kept), or fails them when the pool
    /// is shutting down or has no worker left.
    fn submit(&mut self, jobs: &mut Vec<Job>) {
        tracing::trace!(tasks = jobs.len(), "tasks submitted");
        if self.shutdown.is_some() {
            for job in jobs.drain(..) {
                let error = TaskError::cancelled("the pool is shutting down");
                self.counts.fail_queued(&job, error);
            }
        } else if self.slots.iter().all(Slot::is_dead) {
            let error = self.no_workers_error();
            for job in jobs.drain(..) {
                self.counts.fail_queued(&job, error.clone());
            }
        } else {
            self.queue.extend(jobs.drain(..));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit(mut jobs) => self.submit(&mut jobs),
            Event::Submitted => {}
            Event::Cancel(task, completion) => self.cancel(task, &completion),
            Event::Replies(who, replies) => {
                let now = self.workers.now();
                for reply in replies {
                    // Counted first: an outcome a worker delivered counts even when the
                    // worker was given up on since.
                    if let Heard::Done { tally, .. } | Heard::Calls { tally, .. } = &reply {
                        self.counts.add(tally);
                    }
                    let Some(slot) = self.slot_of(who) else {
                        continue;
                    };
                    match reply {
                        Heard::Ready => slot.on_ready(now),
                        Heard::Done {
                            task, took, rss, ..
                        } => {
                            slot.on_done(task, took, rss, now);
                            self.maybe_retire(who.slot);
                        }
                        Heard::Calls {
                            first,
                            count,
                            took,
                            rss,
                            ..
                        } => {
                            slot.on_calls_done(first, count, took, rss, now);
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
                    self.slots[i].reap_retired(who, &mut self.workers, malformed.is_some());
                    return;
                }
                if let Some(slot) = self.slots.get_mut(who.slot).filter(|s| s.is(who)) {
                    slot.stream_ended(&mut self.workers, malformed);
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
                tracing::warn!(slot = who.slot, pid = slot.pid(), cause = %message, "worker died");
                let stopped = slot.take_stopped(&mut self.counts, |_| {
                    TaskError::worker_lost(message.clone())
                });
                self.after_stop(who.slot, stopped, message);
            }
            Event::Pids(reply) => {
                let _ = reply.send(self.slots.iter().filter_map(Slot::live_pid).collect());
            }
            Event::Stats(reply) => {
                // Settled first: what a worker with room can take is not "queued" (and a
                // bounded queue's room comes back as those calls leave).
                self.pump();
                let _ = reply.send(self.stats());
            }
            Event::Shutdown { drain, done } => {
                tracing::debug!(drain, "pool shutting down");
                self.shutdown = Some((drain, done));
                if !drain {
                    for job in self.queue.drain(..) {
                        let error = TaskError::cancelled("the pool was terminated");
                        self.counts.fail_queued(&job, error);
                    }
                    for slot in &mut self.slots {
                        let stopped = slot.kill_now(&mut self.workers, &mut self.counts, |_| {
                            TaskError::cancelled("the pool was terminated while the task ran")
                        });
                        for job in stopped.requeue {
                            let error = TaskError::cancelled("the pool was terminated");
                            self.counts.fail_queued(&job, error);
                        }
                    }
                }
            }
        }
    }

    fn slot_of(&mut self, who: WorkerRef) -> Option<&mut Slot<W::Worker>> {
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
        if let Err(e) = slot.respawn(&mut self.workers, stopped.before_ready, &why) {
            tracing::error!(slot = index, error = %crate::error::Chain(&e), "cannot start a worker");
        }
        if let Some(reason) = slot.dead_reason() {
            tracing::error!(slot = index, reason, "worker slot given up");
        }
        if self.slots.iter().all(Slot::is_dead) {
            let err = self.no_workers_error();
            for job in self.queue.drain(..) {
                self.counts.fail_queued(&job, err.clone());
            }
        }
    }

    fn cancel(&mut self, task: TaskId, completion: &Completion) {
        if completion.is_done() {
            return;
        }
        let now = self.workers.now();
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
            let counts = &mut self.counts;
            self.queue.retain(|j| {
                let cancelled = j.completion.is_done();
                if cancelled {
                    counts.cancelled_in_queue(j);
                }
                !cancelled
            });
            self.cancelled_queued = 0;
        }
    }

    /// Lets go of the cancelled jobs at the front of the queue.
    fn drop_cancelled_front(&mut self) {
        while self.queue.front().is_some_and(|j| j.completion.is_done()) {
            if let Some(job) = self.queue.pop_front() {
                self.counts.cancelled_in_queue(&job);
            }
            self.cancelled_queued = self.cancelled_queued.saturating_sub(1);
        }
    }

    /// The pool's counts now.
    fn stats(&self) -> PoolStats {
        let mut stats = PoolStats {
            done: self.counts.done,
            failed: self.counts.failed.clone(),
            ..PoolStats::default()
        };
        for job in &self.queue {
            let calls = job.input.calls() as u64;
            if job.completion.is_done() {
                // Cancelled while queued, not let go yet.
                *stats.failed.entry("cancelled").or_default() += calls;
            } else {
                stats.queued += calls;
            }
        }
        for slot in &self.slots {
            stats.running += slot.calls_in_flight();
            stats.workers_restarted += slot.restarts();
            if let Some(pid) = slot.live_pid() {
                stats.workers_live += 1;
                stats.worker_rss.push((pid, slot.rss()));
            }
        }
        stats
    }

    fn enforce_deadlines(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(error) = slot.overdue(now, START_TIMEOUT) else {
                continue;
            };
            let why = format!("{} (worker {} killed)", error, slot.pid());
            tracing::info!(
                slot = i,
                pid = slot.pid(),
                task = slot.running_task(),
                why = error.kind(),
                error = %error,
                "worker killed at a deadline"
            );
            let stopped = slot.kill_now(&mut self.workers, &mut self.counts, |_| error.clone());
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
        let now = self.workers.now();
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
            let most = self.coalesce_at_most(i);
            let mut jobs = self.coalesce(job, most);
            match jobs.pop() {
                Some(alone) if jobs.is_empty() => self.slots[i].send(alone, now, &mut self.counts),
                Some(last) => {
                    jobs.push(last);
                    self.slots[i].send_calls(jobs, now, &mut self.counts);
                }
                None => {}
            }
        }
        for slot in &mut self.slots {
            slot.flush();
        }
    }

    /// How many calls slot `i` may be sent in one frame now: one while another worker is
    /// idle; otherwise what it has room for, at most [`MAX_COALESCED`], and no more than its
    /// fair share of the queue among the workers with room, so a short queue still spreads
    /// over every worker.
    fn coalesce_at_most(&self, i: usize) -> usize {
        let (max_tasks, max_rss) = (self.config.max_tasks_per_worker, self.config.max_worker_rss);
        let (mut with_room, mut in_flight, mut idle) = (0, 0, false);
        for (j, s) in self.slots.iter().enumerate() {
            if s.has_room(max_tasks, max_rss) {
                with_room += 1;
                in_flight += s.in_flight();
                idle |= j != i && s.in_flight() == 0;
            }
        }
        // While another worker is idle, this one gets a call alone: how long calls take is
        // not known ahead, and two long ones coalesced would wait on one worker while the
        // other idles.
        if idle {
            return 1;
        }
        // What the workers with room would each hold if the queue (and the job just taken
        // from it) were spread evenly over them.
        let even = (self.queue.len() + 1 + in_flight).div_ceil(with_room.max(1));
        let share = even.saturating_sub(self.slots[i].in_flight()).max(1);
        self.slots[i]
            .room(max_tasks, max_rss)
            .min(share)
            .min(MAX_COALESCED)
    }

    /// `job` and the compatible calls queued right behind it (up to `most` calls and
    /// [`COALESCED_BYTES`] of input), taken from the queue to travel in one frame (`job`
    /// alone when none can).
    fn coalesce(&mut self, job: Job, most: usize) -> Vec<Job> {
        if most < 2 || !coalescable(&job) {
            return vec![job];
        }
        let mut bytes = input_bytes(&job.input);
        let mut jobs = vec![job];
        while jobs.len() < most {
            let Some(next) = self.queue.front() else {
                break;
            };
            let size = input_bytes(&next.input);
            if next.completion.is_done()
                || !compatible(&jobs[0], next)
                || bytes.saturating_add(size) > COALESCED_BYTES
            {
                break;
            }
            bytes += size;
            let next = self.queue.pop_front().expect("queue is not empty");
            next.completion.leave_queue();
            jobs.push(next);
        }
        jobs
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
            let reason = if slot.worn_out() {
                "worn out"
            } else if self
                .config
                .max_tasks_per_worker
                .is_some_and(|max| slot.tasks_sent() >= max)
            {
                "max tasks per worker"
            } else {
                "max worker rss"
            };
            tracing::info!(slot = index, pid = slot.pid(), reason, "worker retired");
            if let Err(e) = slot.retire_and_respawn(&mut self.workers) {
                tracing::error!(slot = index, error = %crate::error::Chain(&e), "cannot start a worker");
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
                self.counts.fail_queued(&job, err.clone());
            }
        }
        for slot in self.slots.drain(..) {
            slot.close_and_reap(&mut self.workers);
        }
        if let Some((_, done)) = self.shutdown.take() {
            let _ = done.send(());
        }
        true
    }
}
