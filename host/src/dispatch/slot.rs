//! One worker slot as the dispatcher sees it: the live process, the tasks in flight on it,
//! the modules it has loaded, its deadlines, and its restarts.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::stats::Counts;
use super::workers::{Worker, Workers};
use super::{Job, CANCEL_GRACE, MAX_START_FAILURES, MAX_START_KILLS};
use crate::error::{PoolError, TaskError};
use crate::limits::Limits;
use crate::module::{Artifact, ModuleId};
use crate::protocol::{self, RequestRef, TaskId};
use crate::sandbox::Metering;
use crate::worker::process::describe_exit;
use crate::worker::WorkerRef;

/// Queue this much estimated work on a worker ahead of time (pipelining short tasks).
const PIPELINE_WORK: Duration = Duration::from_millis(2);
/// Never queue more than this many tasks on one worker.
const MAX_DEPTH: usize = 512;

struct InFlight {
    job: Job,
    /// The id the task has on the wire to this worker process: ids increase in the order
    /// tasks are sent (and run), which lets the worker forget cancels of tasks it finished.
    wire: TaskId,
    /// When a cancel was sent: the worker is killed if the task still runs [`CANCEL_GRACE`]
    /// after that or after it started, whichever is later.
    cancelled_at: Option<Instant>,
}

/// What is left of a stopped worker's work.
pub(crate) struct Stopped {
    /// Tasks that never started, in order, to run elsewhere.
    pub requeue: Vec<Job>,
    /// Whether the worker stopped before it said `Ready`.
    pub before_ready: bool,
}

/// Why a process whose reply stream ended is being reaped.
enum Ending {
    /// The stream closed: the worker exited or died; its exit status tells how.
    Closed,
    /// A reply did not decode (this error): the worker was killed.
    Malformed(String),
}

pub(crate) struct Slot<P> {
    index: usize,
    generation: u64,
    process: Option<P>,
    /// Set when the process's stream ended and it was handed to the reaper: its tasks wait
    /// for [`Event::Reaped`] to learn how it ended.
    ending: Option<Ending>,
    pid: u32,
    spawned_at: Instant,
    ready: bool,
    inflight: VecDeque<InFlight>,
    loaded: HashSet<(ModuleId, Metering)>,
    tasks_sent: u64,
    /// When the first in-flight task started (or will have: sent to an idle worker).
    head_since: Instant,
    /// Moving average of the worker's recent task durations.
    avg_task: Option<Duration>,
    /// The worker's resident memory (bytes) as of its latest reply.
    rss: u64,
    /// Consecutive starts that ended on their own (or timed out) before `Ready`.
    start_failures: u32,
    /// Consecutive starts killed by a signal from outside before `Ready`.
    start_kills: u32,
    /// Whether the last death was by a signal we did not send.
    killed_from_outside: bool,
    dead: Option<String>,
    /// Replaced workers finishing their exit.
    retired: Vec<(WorkerRef, P)>,
    /// How many times a new process replaced an earlier one in this slot.
    restarts: u64,
    /// The wire id of the next task sent to this process.
    next_wire: TaskId,
    /// Frames encoded but not yet handed to the writer (sent in one batch by `flush`).
    pending: Vec<u8>,
    /// Whether the worker takes more tasks: set when its queue falls to half its depth,
    /// cleared when it is full again, so tasks go out in bursts (one write, one wake-up of
    /// the worker for many tasks) rather than one per finished task.
    refilling: bool,
    /// Whether the worker asked to be replaced (`Reply::Retire`): it gets no more tasks.
    worn_out: bool,
}

impl<P: Worker> Slot<P> {
    pub(crate) fn spawn<W: Workers<Worker = P>>(
        workers: &mut W,
        index: usize,
        generation: u64,
    ) -> Result<Slot<P>, PoolError> {
        let process = workers.spawn(WorkerRef {
            slot: index,
            generation,
        })?;
        tracing::info!(
            slot = index,
            generation,
            pid = process.pid(),
            "worker spawned"
        );
        let now = workers.now();
        Ok(Slot {
            index,
            generation,
            pid: process.pid(),
            process: Some(process),
            ending: None,
            spawned_at: now,
            ready: false,
            inflight: VecDeque::new(),
            loaded: HashSet::new(),
            tasks_sent: 0,
            head_since: now,
            avg_task: None,
            rss: 0,
            start_failures: 0,
            start_kills: 0,
            killed_from_outside: false,
            dead: None,
            retired: Vec::new(),
            restarts: 0,
            next_wire: 1,
            pending: Vec::new(),
            refilling: true,
            worn_out: false,
        })
    }

    fn replace_process<W: Workers<Worker = P>>(
        &mut self,
        workers: &mut W,
    ) -> Result<(), PoolError> {
        let (failures, kills, restarts) = (self.start_failures, self.start_kills, self.restarts);
        let retired = std::mem::take(&mut self.retired);
        *self = Slot::spawn(workers, self.index, self.generation + 1)?;
        self.start_failures = failures;
        self.start_kills = kills;
        self.restarts = restarts + 1;
        self.retired = retired;
        Ok(())
    }

    /// Whether events from `who` concern this slot's live process.
    pub(crate) fn is(&self, who: WorkerRef) -> bool {
        self.generation == who.generation && self.process.is_some()
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    pub(crate) fn dead_reason(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn live_pid(&self) -> Option<u32> {
        self.process.as_ref().map(|_| self.pid)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub(crate) fn tasks_sent(&self) -> u64 {
        self.tasks_sent
    }

    /// The calls sent to this worker and not finished.
    pub(crate) fn calls_in_flight(&self) -> u64 {
        self.inflight
            .iter()
            .map(|f| f.job.input.calls() as u64)
            .sum()
    }

    /// How many times a new process replaced an earlier one in this slot.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The id of the task the worker runs (or is about to).
    pub(crate) fn running_task(&self) -> Option<TaskId> {
        self.inflight.front().map(|f| f.job.id)
    }

    pub(crate) fn on_ready(&mut self, now: Instant) {
        tracing::debug!(slot = self.index, pid = self.pid, "worker ready");
        self.ready = true;
        self.start_failures = 0;
        self.start_kills = 0;
        self.head_since = now;
        self.mark_head_running();
    }

    fn mark_head_running(&self) {
        if let (true, Some(head)) = (self.ready, self.inflight.front()) {
            tracing::trace!(task = head.job.id, pid = self.pid, "task started");
            head.job.completion.mark_running();
        }
    }

    /// A task finished (its outcome went to its waiter already): book-keeping.
    pub(crate) fn on_done(&mut self, wire: TaskId, took: Duration, rss: u64, now: Instant) {
        self.rss = rss;
        let Some(pos) = self.inflight.iter().position(|f| f.wire == wire) else {
            return;
        };
        // Dropped here: the job was answered (or given up on) before.
        if let Some(f) = self.inflight.remove(pos) {
            tracing::trace!(task = f.job.id, pid = self.pid, ?took, "task finished");
        }
        self.finished(took, now);
    }

    /// After tasks finished (each taking about `took`): the running average, the new head's
    /// start, and whether the worker takes more.
    fn finished(&mut self, took: Duration, now: Instant) {
        self.avg_task = Some(match self.avg_task {
            None => took,
            Some(avg) => (avg * 4 + took) / 5,
        });
        self.head_since = now;
        self.mark_head_running();
        if self.inflight.len() <= self.depth() / 2 {
            self.refilling = true;
        }
    }

    /// Calls `first..first + count` of a `Calls` frame finished, `took` together:
    /// book-keeping, once for all of them.
    pub(crate) fn on_calls_done(
        &mut self,
        first: TaskId,
        count: usize,
        took: Duration,
        rss: u64,
        now: Instant,
    ) {
        self.rss = rss;
        let end = first.saturating_add(count as TaskId);
        let answered = |wire: TaskId| (first..end).contains(&wire);
        let before = self.inflight.len();
        // In the order sent, so at the front; anywhere else only if a worker answers out of
        // order (then it is looked for).
        while self.inflight.front().is_some_and(|f| answered(f.wire)) {
            self.inflight.pop_front();
        }
        if self.inflight.iter().any(|f| answered(f.wire)) {
            self.inflight.retain(|f| !answered(f.wire));
        }
        let done = before - self.inflight.len();
        if done == 0 {
            return;
        }
        tracing::trace!(first, done, pid = self.pid, ?took, "calls finished");
        self.finished(took / done as u32, now);
    }

    fn depth(&self) -> usize {
        match self.avg_task {
            None => 1,
            Some(avg) => {
                let n = PIPELINE_WORK.as_nanos() / avg.as_nanos().max(1);
                (n as usize).clamp(1, MAX_DEPTH)
            }
        }
    }

    pub(crate) fn has_room(&self, max_tasks: Option<u64>, max_rss: Option<u64>) -> bool {
        self.process.is_some()
            && self.refilling
            && !self.worn_out
            && self.inflight.len() < self.depth()
            && max_tasks.is_none_or(|max| self.tasks_sent < max)
            && max_rss.is_none_or(|max| self.rss <= max)
    }

    /// The worker asked to be replaced once its tasks are done.
    pub(crate) fn wear_out(&mut self) {
        self.worn_out = true;
    }

    pub(crate) fn worn_out(&self) -> bool {
        self.worn_out
    }

    /// The worker's resident memory as it last reported it.
    pub(crate) fn rss(&self) -> u64 {
        self.rss
    }

    /// How many more calls this worker takes now (0 when it has no room).
    pub(crate) fn room(&self, max_tasks: Option<u64>, max_rss: Option<u64>) -> usize {
        if !self.has_room(max_tasks, max_rss) {
            return 0;
        }
        let by_depth = self.depth() - self.inflight.len();
        match max_tasks {
            Some(max) => by_depth.min(usize::try_from(max - self.tasks_sent).unwrap_or(usize::MAX)),
            None => by_depth,
        }
    }

    /// Encodes the `Load` of `job`'s code into the pending frames (or, for code kept in a
    /// cache file, passes the file's descriptor and encodes a `LoadFile`) unless this worker
    /// has it. Returns whether it did (to undo if the task cannot be sent), or why the code
    /// could not be sent.
    fn load_for(&mut self, job: &Job) -> std::io::Result<bool> {
        let Some(process) = &self.process else {
            return Ok(false);
        };
        let module = &job.shape.module;
        let metering = Metering::of(&job.shape.limits);
        if !self.loaded.insert((module.id(), metering)) {
            return Ok(false);
        }
        let artifact = module
            .artifact(metering)
            .expect("the pool compiles the code a job needs before submitting it");
        let frame = &mut self.pending;
        let passed = match &**artifact {
            Artifact::Bytes(artifact) => {
                let load = RequestRef::Load {
                    module: module.id(),
                    metering,
                    artifact,
                };
                protocol::encode(&load, frame)
            }
            // The descriptor goes first, on its own socket: the worker takes it when it reads
            // the frame. (One whose frame is rolled back is passed over.)
            Artifact::File(file) => process
                .pass_file(file, module.id(), metering)
                .and_then(|()| {
                    protocol::encode(
                        &RequestRef::LoadFile {
                            module: module.id(),
                            metering,
                        },
                        frame,
                    )
                }),
        };
        if let Err(e) = passed {
            self.loaded.remove(&(module.id(), metering));
            return Err(e);
        }
        Ok(true)
    }

    /// The error of tasks whose code could not be sent to this worker.
    fn unsendable(e: std::io::Error) -> TaskError {
        TaskError::bad_input(format!(
            "cannot send the compiled module to the worker: {e}"
        ))
    }

    /// Queues `job` for this worker; [`Self::flush`] sends what was queued.
    pub(crate) fn send(&mut self, job: Job, now: Instant, counts: &mut Counts) {
        if self.process.is_none() {
            return;
        }
        let rollback = self.pending.len();
        let loaded = match self.load_for(&job) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.pending.truncate(rollback);
                counts.fail(&job, Self::unsendable(e));
                return;
            }
        };
        let wire = self.next_wire;
        let run = RequestRef::Run {
            task: wire,
            module: job.shape.module.id(),
            export: &job.shape.export,
            input: &job.input,
            limits: &job.shape.limits,
            env: &job.shape.env,
        };
        if let Err(e) = protocol::encode(&run, &mut self.pending) {
            self.pending.truncate(rollback);
            if loaded {
                self.loaded
                    .remove(&(job.shape.module.id(), Metering::of(&job.shape.limits)));
            }
            counts.fail(
                &job,
                TaskError::bad_input(format!("cannot send the task: {e}")),
            );
            return;
        }
        self.next_wire += 1;
        self.expect(std::slice::from_ref(&job), wire);
        self.in_flight_now(job, wire, false, now);
    }

    /// Queues `jobs` — calls of one module and export with the same limits and environment
    /// (see `dispatch::compatible`) — for this worker as one `Calls` frame; each stays a task
    /// of its own (its wire id, deadline, cancel, reply).
    pub(crate) fn send_calls(&mut self, jobs: Vec<Job>, now: Instant, counts: &mut Counts) {
        if self.process.is_none() {
            return;
        }
        let Some(first_job) = jobs.first() else {
            return;
        };
        let rollback = self.pending.len();
        let loaded = match self.load_for(first_job) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.pending.truncate(rollback);
                let error = Self::unsendable(e);
                for job in &jobs {
                    counts.fail(job, error.clone());
                }
                return;
            }
        };
        let first = self.next_wire;
        let calls = RequestRef::Calls {
            first,
            module: first_job.shape.module.id(),
            export: &first_job.shape.export,
            limits: &first_job.shape.limits,
            env: &first_job.shape.env,
            inputs: protocol::Inputs(jobs.iter().map(|j| &j.input).collect()),
        };
        if protocol::encode(&calls, &mut self.pending).is_err() {
            // Over the frame limit together: each goes alone (and fails alone if it must).
            self.pending.truncate(rollback);
            if loaded {
                self.loaded.remove(&(
                    first_job.shape.module.id(),
                    Metering::of(&first_job.shape.limits),
                ));
            }
            for job in jobs {
                self.send(job, now, counts);
            }
            return;
        }
        self.next_wire += jobs.len() as TaskId;
        self.expect(&jobs, first);
        for (i, job) in jobs.into_iter().enumerate() {
            self.in_flight_now(job, first + i as TaskId, true, now);
        }
    }

    /// Registers the waiters of `jobs`, whose requests are in the pending frames with wire
    /// ids `first`, `first + 1`, …, so their replies find them (all under one lock).
    fn expect(&self, jobs: &[Job], first: TaskId) {
        if let Some(process) = &self.process {
            process.expect(jobs.iter().enumerate().map(|(i, job)| {
                let calls = job.input.calls() as u64;
                (first + i as TaskId, job.completion.clone(), calls)
            }));
        }
    }

    /// Books a task whose request is in the pending frames (its waiter registered by
    /// [`Self::expect`]): its place in the worker's order. `coalesced`: it travels in a
    /// `Calls` frame with others.
    fn in_flight_now(&mut self, job: Job, wire: TaskId, coalesced: bool, now: Instant) {
        if self.process.is_none() {
            return;
        }
        // Each call of a batch counts (for `max_tasks_per_worker`).
        let calls = job.input.calls() as u64;
        job.completion.mark_coalesced(coalesced);
        self.tasks_sent += calls;
        if self.inflight.is_empty() {
            self.head_since = now;
        }
        self.inflight.push_back(InFlight {
            job,
            wire,
            cancelled_at: None,
        });
        if self.inflight.len() >= self.depth() {
            self.refilling = false;
        }
        if self.inflight.len() == 1 {
            self.mark_head_running();
        }
    }

    /// Hands the frames queued by [`Self::send`] to the worker's writer.
    pub(crate) fn flush(&mut self) {
        if let (Some(p), false) = (&self.process, self.pending.is_empty()) {
            p.send(&self.pending);
            self.pending.clear();
        }
    }

    /// Forwards a cancel if `task` is in flight here.
    pub(crate) fn cancel(&mut self, task: TaskId, now: Instant) -> bool {
        let Some(f) = self.inflight.iter_mut().find(|f| f.job.id == task) else {
            return false;
        };
        if f.cancelled_at.is_none() {
            f.cancelled_at = Some(now);
            if let Some(p) = &self.process {
                p.cancel(f.wire);
            }
        }
        true
    }

    /// When the running task must have answered, and what it failed with if it did not.
    fn head_deadline(&self) -> Option<(Instant, TaskError)> {
        let head = self.inflight.front()?;
        // A batch makes several calls, each with the whole timeout.
        let calls = u32::try_from(head.job.input.calls()).unwrap_or(u32::MAX);
        let timeout = head.job.shape.limits.timeout.map(|t| {
            match Limits::kill_deadline(self.head_since, t, calls) {
                Some(at) => (at, TaskError::Timeout { limit: t }),
                // Validated limits never get here; a deadline the clock cannot hold stops
                // the task at once rather than letting it run without one.
                None => (self.head_since, Limits::unrepresentable(t)),
            }
        });
        // A task cancelled while it waited behind others has its grace from when it started
        // (the worker skips it then), not from the cancel.
        let cancel = head.cancelled_at.map(|at| {
            (
                at.max(self.head_since)
                    .checked_add(CANCEL_GRACE)
                    .unwrap_or(at),
                TaskError::cancelled("stopped while running"),
            )
        });
        match (timeout, cancel) {
            (Some(t), Some(c)) => Some(if c.0 <= t.0 { c } else { t }),
            (t, c) => t.or(c),
        }
    }

    pub(crate) fn deadline(&self, start_timeout: Duration) -> Option<Instant> {
        self.process.as_ref()?;
        if !self.ready {
            return Some(self.spawned_at + start_timeout);
        }
        self.head_deadline().map(|(at, _)| at)
    }

    /// The error to stop this worker with, if one of its deadlines has passed.
    pub(crate) fn overdue(&self, now: Instant, start_timeout: Duration) -> Option<TaskError> {
        self.process.as_ref()?;
        if !self.ready {
            return (now >= self.spawned_at + start_timeout).then(|| {
                TaskError::worker_lost(format!(
                    "worker {} did not start within {start_timeout:?}",
                    self.pid
                ))
            });
        }
        self.head_deadline()
            .filter(|(at, _)| now >= *at)
            .map(|(_, e)| e)
    }

    /// Splits the work of a stopped process: the running task fails (cancelled ones say so),
    /// tasks behind it go back to the queue, cancelled ones fail as cancelled.
    fn stopped(&mut self, counts: &mut Counts, head_error: TaskError) -> Stopped {
        let before_ready = !self.ready;
        let mut requeue = Vec::new();
        self.refilling = true;
        for (i, f) in std::mem::take(&mut self.inflight).into_iter().enumerate() {
            let started = i == 0 && self.ready;
            if f.cancelled_at.is_some() {
                let error = TaskError::cancelled(if started {
                    "stopped while running"
                } else {
                    "cancelled before it started"
                });
                counts.fail(&f.job, error);
            } else if started
                && f.job.retries > 0
                && matches!(head_error, TaskError::WorkerLost { .. })
            {
                let mut job = f.job;
                job.retries -= 1;
                job.completion.mark_queued();
                requeue.push(job);
            } else if started {
                counts.fail(&f.job, head_error.clone());
            } else {
                requeue.push(f.job);
            }
        }
        self.loaded.clear();
        Stopped {
            requeue,
            before_ready,
        }
    }

    /// Kills the worker now (the reaper reaps it); its running task fails with `head_error`.
    pub(crate) fn kill_now<W: Workers<Worker = P>>(
        &mut self,
        workers: &mut W,
        counts: &mut Counts,
        head_error: impl FnOnce(&Job) -> TaskError,
    ) -> Stopped {
        if let Some(mut p) = self.process.take() {
            p.kill();
            workers.reap(p, None);
        }
        self.killed_from_outside = false;
        self.take_stopped(counts, head_error)
    }

    /// The worker's reply stream ended (`malformed`: on a frame that did not decode, and the
    /// worker is killed): the reaper reaps it and reports how it ended ([`Event::Reaped`]);
    /// its tasks stay until then.
    pub(crate) fn stream_ended<W: Workers<Worker = P>>(
        &mut self,
        workers: &mut W,
        malformed: Option<String>,
    ) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        self.ending = Some(match malformed {
            Some(why) => {
                p.kill();
                Ending::Malformed(why)
            }
            None => Ending::Closed,
        });
        workers.reap(
            p,
            Some(WorkerRef {
                slot: self.index,
                generation: self.generation,
            }),
        );
    }

    /// Whether this slot waits for the reaper's word on `who`.
    pub(crate) fn awaits_reap(&self, who: WorkerRef) -> bool {
        self.generation == who.generation && self.ending.is_some()
    }

    /// How the process handed over by [`Self::stream_ended`] ended, now it is reaped.
    pub(crate) fn died_message(&mut self, status: Option<std::process::ExitStatus>) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.ending.take() {
            Some(Ending::Malformed(why)) => {
                self.killed_from_outside = false;
                format!(
                    "worker {} sent a malformed reply ({why}) and was killed",
                    self.pid
                )
            }
            Some(Ending::Closed) | None => {
                self.killed_from_outside = status.is_some_and(|s| s.signal().is_some());
                describe_exit("worker", self.pid, status)
            }
        }
    }

    /// Once the process is gone (killed, or reaped after [`Self::stream_ended`]): the running
    /// task fails with `head_error`.
    pub(crate) fn take_stopped(
        &mut self,
        counts: &mut Counts,
        head_error: impl FnOnce(&Job) -> TaskError,
    ) -> Stopped {
        let error = match self.inflight.front() {
            Some(f) => head_error(&f.job),
            None => TaskError::worker_lost("worker stopped"),
        };
        self.stopped(counts, error)
    }

    /// Starts a new process in this slot after the old one stopped, unless it keeps failing
    /// to start (then the slot is given up, with `why`).
    pub(crate) fn respawn<W: Workers<Worker = P>>(
        &mut self,
        workers: &mut W,
        before_ready: bool,
        why: &str,
    ) -> Result<(), PoolError> {
        if before_ready {
            // A worker that fails to start by itself is given up soon; one killed from
            // outside while starting (an OOM killer, a chaos test) is retried much longer.
            if self.killed_from_outside {
                self.start_kills += 1;
            } else {
                self.start_failures += 1;
            }
            if self.start_failures >= MAX_START_FAILURES || self.start_kills >= MAX_START_KILLS {
                self.dead = Some(format!(
                    "worker failed to start {} times in a row; last: {why}",
                    self.start_failures + self.start_kills
                ));
                return Ok(());
            }
        }
        self.replace_process(workers).inspect_err(|e| {
            self.dead = Some(crate::error::Chain(e).to_string());
        })
    }

    /// Lets the current process exit after its work and starts a fresh one.
    pub(crate) fn retire_and_respawn<W: Workers<Worker = P>>(
        &mut self,
        workers: &mut W,
    ) -> Result<(), PoolError> {
        if let Some(mut p) = self.process.take() {
            p.close();
            self.retired.push((
                WorkerRef {
                    slot: self.index,
                    generation: self.generation,
                },
                p,
            ));
        }
        self.replace_process(workers).inspect_err(|e| {
            self.dead = Some(crate::error::Chain(e).to_string());
        })
    }

    pub(crate) fn retired_owns(&self, who: WorkerRef) -> bool {
        self.retired.iter().any(|(r, _)| *r == who)
    }

    /// A retired worker's stream ended: the reaper reaps it (killed first if `malformed`).
    pub(crate) fn reap_retired<W: Workers<Worker = P>>(
        &mut self,
        who: WorkerRef,
        workers: &mut W,
        malformed: bool,
    ) {
        if let Some(pos) = self.retired.iter().position(|(r, _)| *r == who) {
            let (_, mut p) = self.retired.swap_remove(pos);
            if malformed {
                p.kill();
            }
            workers.reap(p, None);
        }
    }

    /// Ends the slot: the live worker is asked to exit, and the reaper reaps it and the
    /// retired ones (killing any that linger).
    pub(crate) fn close_and_reap<W: Workers<Worker = P>>(mut self, workers: &mut W) {
        if let Some(mut p) = self.process.take() {
            p.close();
            workers.reap(p, None);
        }
        for (_, p) in self.retired.drain(..) {
            workers.reap(p, None);
        }
    }

    /// Kills everything at once (a failed pool start).
    pub(crate) fn kill<W: Workers<Worker = P>>(mut self, workers: &mut W) {
        if let Some(mut p) = self.process.take() {
            p.kill();
            workers.reap(p, None);
        }
    }
}
