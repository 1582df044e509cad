//! The dispatcher as a state machine. Each scenario drives a real [`Dispatcher`] through
//! [`Sim`]: fake workers (they record the frames, cancels, closes and kills the dispatcher
//! gives them; the test plays their replies and deaths) and a manual clock, one event at a
//! time, as the event loop would — no process, no thread, no sleep.
//!
//! | Scenario | Test |
//! |---|---|
//! | a worker gets one task until its tasks are known to be short | `one_task_per_worker_until_tasks_are_known_short` |
//! | tasks go to the worker with the fewest in flight | `tasks_go_to_the_least_busy_worker` |
//! | short tasks are pipelined in bursts (refill at half the depth) | `short_tasks_are_pipelined_in_bursts` |
//! | queued calls of one export travel in one frame, each a task of its own | `queued_compatible_calls_travel_in_one_frame_each_a_task_of_its_own` |
//! | one `Calls` reply answers several calls of a frame, each with its own outcome | `a_calls_reply_answers_each_call_with_its_own_outcome` |
//! | calls that differ (limits, export, input kind, commands) travel apart | `calls_that_differ_travel_in_frames_of_their_own` |
//! | a short queue is shared among the workers, not sent to one | `a_short_queue_is_shared_among_the_workers` |
//! | calls queued together go one to each idle worker first | `two_long_calls_queued_together_go_to_two_idle_workers` |
//! | a frame's worker dies: its running call fails alone, the rest run elsewhere | `a_coalesced_frames_worker_dies_its_running_call_fails_alone` |
//! | each call of a frame has its own deadline and cancel | `each_call_of_a_frame_has_its_own_deadline_and_cancel` |
//! | waiters of coalesced calls sleep at once; a call sent alone is spun for | `coalesced_calls_are_waited_for_without_a_spin` |
//! | a batch counts its calls and gets a deadline per call | `a_batch_counts_its_calls_and_has_a_deadline_per_call` |
//! | a queued task that is cancelled is never sent | `a_cancelled_queued_task_is_never_sent` |
//! | a running task that is cancelled is stopped, or its worker killed after the grace | `a_cancelled_running_task_gets_the_cancel_grace` |
//! | a task cancelled behind a long one gets its grace from its start | `the_cancel_grace_counts_from_the_start_of_a_task_cancelled_while_waiting` |
//! | a worker past a task's deadline is killed, its other tasks go on elsewhere | `a_worker_past_the_deadline_is_killed_at_start_timeout_grace` |
//! | a worker that dies: running task retried or lost, the rest requeued in order | `a_dead_workers_tasks_are_retried_or_lost_and_requeued_in_order` |
//! | a worker that sends a bad frame is killed | `a_worker_that_sends_a_bad_frame_is_killed` |
//! | replies of a replaced worker change nothing | `replies_of_a_replaced_worker_are_ignored` |
//! | a worker that cannot start is given up after 3 tries; the pool then fails tasks | `a_worker_that_keeps_failing_to_start_is_given_up` |
//! | a worker killed from outside while starting is retried longer | `starts_killed_from_outside_are_retried_longer` |
//! | a worker that does not say Ready in time is killed | `a_worker_that_does_not_start_in_time_is_killed` |
//! | a worker is retired after max_tasks_per_worker calls, or over max_worker_rss | `workers_are_retired_at_max_tasks_and_max_rss` |
//! | a draining shutdown finishes the queue; a terminating one cancels everything | `a_draining_shutdown_runs_the_queue`, `a_terminating_shutdown_cancels_everything` |
//! | wire ids rise in send order (the worker forgets cancels below them) | `wire_ids_rise_in_send_order` |
//! | a slot whose worker cannot be spawned is given up | `a_slot_whose_spawn_fails_is_given_up` |
//! | a slow scratch removal holds up no deadline (real processes) | `a_slow_scratch_removal_does_not_hold_up_another_workers_deadline` |
//! | dropping an `Imap` behind other work costs O(n) | `dropping_an_imap_behind_other_work_does_not_scan_the_queue_per_task` |
//! | the counts of `Pool::stats` | `stats_count_calls_by_outcome` |
//! | worker life reaches `tracing` | `worker_life_is_traced` |

use std::cell::RefCell;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::sync::Arc;

use super::workers::{Worker, Workers};
use super::*;
use crate::module::Origin;
use crate::pool::task::{Imap, Task};
use crate::protocol::{Reply, Request, TaskStats};
use crate::value::{Input, Output};
use crate::worker::replies::{deliver, Answers};

/// What one fake worker was given.
struct Log {
    who: WorkerRef,
    pid: u32,
    /// Every byte written to its request pipe.
    frames: Vec<u8>,
    /// Wire id and completion of each task registered for it, in order.
    expected: Vec<(TaskId, Arc<Completion>)>,
    /// Where its replies' outcomes go (the real reply reader's table).
    answers: Answers,
    /// Wire ids of the tasks it was asked to cancel.
    cancels: Vec<TaskId>,
    /// Compiled modules' files passed to it.
    files: Vec<(crate::module::ModuleId, crate::sandbox::Metering)>,
    closed: bool,
    killed: bool,
    /// Handed to the reaper, with whom to report.
    reaped: Option<Option<WorkerRef>>,
}

struct FakeWorker(Rc<RefCell<Log>>);

impl Worker for FakeWorker {
    fn pid(&self) -> u32 {
        self.0.borrow().pid
    }
    fn expect(&self, tasks: impl Iterator<Item = (TaskId, Arc<Completion>, u64)>) {
        let mut log = self.0.borrow_mut();
        for (wire, completion, calls) in tasks {
            log.answers
                .expect(std::iter::once((wire, completion.clone(), calls)));
            log.expected.push((wire, completion));
        }
    }
    fn send(&self, frames: &[u8]) {
        self.0.borrow_mut().frames.extend_from_slice(frames);
    }
    fn pass_file(
        &self,
        _file: &std::fs::File,
        module: crate::module::ModuleId,
        metering: crate::sandbox::Metering,
    ) -> std::io::Result<()> {
        self.0.borrow_mut().files.push((module, metering));
        Ok(())
    }
    fn cancel(&self, wire: TaskId) {
        self.0.borrow_mut().cancels.push(wire);
    }
    fn close(&mut self) {
        self.0.borrow_mut().closed = true;
    }
    fn kill(&mut self) {
        self.0.borrow_mut().killed = true;
    }
}

/// Fake workers on a manual clock.
struct FakeWorkers {
    now: Instant,
    /// Whether spawning fails (as when the program is missing).
    spawn_fails: bool,
    /// Every worker spawned, in order.
    logs: Vec<Rc<RefCell<Log>>>,
}

impl Workers for FakeWorkers {
    type Worker = FakeWorker;

    fn now(&self) -> Instant {
        self.now
    }

    fn spawn(&mut self, who: WorkerRef) -> Result<FakeWorker, PoolError> {
        if self.spawn_fails {
            return Err(PoolError::Spawn {
                program: PathBuf::from("/fake/worker"),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let log = Rc::new(RefCell::new(Log {
            who,
            pid: 1000 + self.logs.len() as u32,
            frames: Vec::new(),
            expected: Vec::new(),
            answers: Answers::default(),
            cancels: Vec::new(),
            files: Vec::new(),
            closed: false,
            killed: false,
            reaped: None,
        }));
        self.logs.push(log.clone());
        Ok(FakeWorker(log))
    }

    fn reap(&mut self, worker: FakeWorker, report: Option<WorkerRef>) {
        worker.0.borrow_mut().reaped = Some(report);
    }

    fn finish(&mut self) {}
}

fn module() -> Module {
    Module::new(
        b"m",
        crate::sandbox::Metering::Epochs,
        crate::module::Artifact::Bytes(Vec::new()),
        Default::default(),
        Origin::Compiled(Duration::ZERO),
    )
}

fn job(id: TaskId, module: &Module) -> Job {
    Job {
        id,
        shape: Arc::new(Shape {
            module: module.clone(),
            export: "f".into(),
            limits: Limits::default(),
            env: Vec::new().into(),
        }),
        input: Input::Numbers(Vec::new()).into(),
        retries: 0,
        completion: Completion::new(None),
    }
}

/// What `job`'s calls share, to change (before it is submitted).
fn shape(job: &mut Job) -> &mut Shape {
    Arc::make_mut(&mut job.shape)
}

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);

/// A dispatcher over fake workers, stepped by hand.
struct Sim {
    d: Dispatcher<FakeWorkers>,
    /// The pool's side of the event channel (task handles send their cancels here).
    events: Sender<Event>,
    module: Module,
    tasks: Vec<(TaskId, Arc<Completion>)>,
    /// Whether the event loop has ended (after a shutdown).
    ended: bool,
}

impl Sim {
    fn new(workers: usize) -> Sim {
        Sim::with(workers, None, None)
    }

    fn with(workers: usize, max_tasks: Option<u64>, max_rss: Option<u64>) -> Sim {
        let (events, inbox) = crossbeam_channel::unbounded();
        let fake = FakeWorkers {
            now: Instant::now(),
            spawn_fails: false,
            logs: Vec::new(),
        };
        let settings = Settings {
            workers,
            max_tasks_per_worker: max_tasks,
            max_worker_rss: max_rss,
        };
        let mut d = Dispatcher::new(settings, fake, inbox);
        // Submissions come through the inbox, as in a pool.
        d.inbox = Some(Arc::new(Inbox::default()));
        d.spawn_all().unwrap();
        Sim {
            d,
            events,
            module: module(),
            tasks: Vec::new(),
            ended: false,
        }
    }

    /// Handles `event` and whatever else is in the channel, then does what the loop does
    /// after events (deadlines, shutdown, sending).
    fn event(&mut self, event: Event) {
        assert!(!self.ended, "the event loop has ended");
        self.d.on_event(event);
        while let Ok(e) = self.d.events.try_recv() {
            self.d.on_event(e);
        }
        self.d.take_inbox();
        self.ended = self.d.step();
    }

    /// Puts `jobs` in the inbox, as `Call::send` does, without handling the event.
    fn push(&mut self, jobs: Vec<Job>) -> bool {
        for j in &jobs {
            self.tasks.push((j.id, j.completion.clone()));
        }
        let inbox = self.d.inbox.as_ref().expect("an inbox");
        matches!(inbox.push(jobs), Pushed::First)
    }

    /// Moves the clock on by `by`; the loop wakes up.
    fn advance(&mut self, by: Duration) {
        self.d.workers.now += by;
        assert!(!self.ended, "the event loop has ended");
        self.ended = self.d.step();
    }

    fn submit_jobs(&mut self, jobs: Vec<Job>) {
        if self.push(jobs) {
            self.event(Event::Submitted);
        }
    }

    /// Submits tasks `ids`, with default limits.
    fn submit(&mut self, ids: impl IntoIterator<Item = TaskId>) {
        let jobs = ids.into_iter().map(|id| job(id, &self.module)).collect();
        self.submit_jobs(jobs);
    }

    /// Submits task `id` with `timeout` (and `retries`).
    fn submit_timed(&mut self, id: TaskId, timeout: Duration, retries: u32) {
        let mut j = job(id, &self.module);
        shape(&mut j).limits.timeout = Some(timeout);
        j.retries = retries;
        self.submit_jobs(vec![j]);
    }

    fn completion(&self, id: TaskId) -> Arc<Completion> {
        let (_, c) = self.tasks.iter().find(|(t, _)| *t == id).expect("a task");
        c.clone()
    }

    /// Where task `id` is: `queued`, `running`, `ok`, or the kind of its error.
    fn state(&self, id: TaskId) -> &'static str {
        let task = Task::<Output>::new(id, self.completion(id), self.events.clone());
        let state = match task.wait_timeout(Duration::ZERO) {
            None if task.is_running() => "running",
            None => "queued",
            Some(Ok(_)) => "ok",
            Some(Err(e)) => e.kind(),
        };
        task.detach();
        state
    }

    fn error(&self, id: TaskId) -> String {
        let task = Task::<Output>::new(id, self.completion(id), self.events.clone());
        let outcome = task.wait_timeout(Duration::ZERO);
        task.detach();
        match outcome {
            Some(Err(e)) => e.to_string(),
            other => panic!("task {id} did not fail: {other:?}"),
        }
    }

    /// The live worker of `slot` (the latest spawned there).
    fn worker(&self, slot: usize) -> Rc<RefCell<Log>> {
        self.d
            .workers
            .logs
            .iter()
            .rev()
            .find(|l| l.borrow().who.slot == slot)
            .expect("a worker in the slot")
            .clone()
    }

    fn pid(&self, slot: usize) -> u32 {
        self.worker(slot).borrow().pid
    }

    /// How many workers were spawned in all.
    fn spawned(&self) -> usize {
        self.d.workers.logs.len()
    }

    /// The task ids whose requests were written to `slot`'s live worker, in order.
    fn sent(&self, slot: usize) -> Vec<TaskId> {
        self.frames(slot).concat()
    }

    /// The task ids of each `Run` or `Calls` frame written to `slot`'s live worker, in order.
    fn frames(&self, slot: usize) -> Vec<Vec<TaskId>> {
        let log = self.worker(slot);
        let log = log.borrow();
        let (mut r, mut buf) = (&log.frames[..], Vec::new());
        let id_of = |wire: TaskId| {
            let (_, c) = log.expected.iter().find(|(w, _)| *w == wire).unwrap();
            let (id, _) = self.tasks.iter().find(|(_, t)| Arc::ptr_eq(t, c)).unwrap();
            *id
        };
        let mut frames = Vec::new();
        while let Some(request) = crate::protocol::read::<_, Request>(&mut r, &mut buf).unwrap() {
            match request {
                Request::Run(run) => frames.push(vec![id_of(run.task)]),
                Request::Calls(calls) => frames.push(
                    (0..calls.inputs.len() as TaskId)
                        .map(|i| id_of(calls.first + i))
                        .collect(),
                ),
                _ => {}
            }
        }
        frames
    }

    fn wire(&self, slot: usize, id: TaskId) -> TaskId {
        let c = self.completion(id);
        let log = self.worker(slot);
        let log = log.borrow();
        let (wire, _) = log
            .expected
            .iter()
            .rev()
            .find(|(_, t)| Arc::ptr_eq(t, &c))
            .expect("the task was sent to the worker");
        *wire
    }

    fn reply(&mut self, slot: usize, reply: Reply) {
        let log = self.worker(slot);
        let (who, heard) = {
            let log = log.borrow();
            (log.who, deliver(reply, &log.answers))
        };
        self.event(Event::Replies(who, heard.into_iter().collect()));
    }

    /// `slot`'s worker says it has started.
    fn ready(&mut self, slot: usize) {
        let pid = self.pid(slot);
        self.reply(slot, Reply::Ready { pid });
    }

    /// `slot`'s worker answers task `id`: `outcome`, after `took`, at `rss` bytes.
    fn answer(
        &mut self,
        slot: usize,
        id: TaskId,
        outcome: Result<Output, TaskError>,
        took: Duration,
        rss: u64,
    ) {
        let task = self.wire(slot, id);
        let stats = TaskStats {
            duration: took,
            worker_rss: rss,
            ..TaskStats::default()
        };
        self.reply(
            slot,
            Reply::Done {
                task,
                outcome,
                stats,
            },
        );
    }

    /// `slot`'s worker finishes task `id` successfully, after `took`.
    fn finish(&mut self, slot: usize, id: TaskId, took: Duration) {
        self.answer(slot, id, Ok(Output::Numbers(Vec::new())), took, 0);
    }

    /// `slot`'s worker's stream ends, and the reaper reports it ended with `status`.
    fn dies(&mut self, slot: usize, status: ExitStatus) {
        let log = self.worker(slot);
        let who = log.borrow().who;
        self.event(Event::Exited(who, None));
        assert_eq!(log.borrow().reaped, Some(Some(who)), "reaped, to report");
        self.event(Event::Reaped(who, Some(status)));
    }

    fn cancel(&mut self, id: TaskId) {
        self.event(Event::Cancel(id, self.completion(id)));
    }

    fn stats(&mut self) -> PoolStats {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.event(Event::Stats(tx));
        rx.try_recv().unwrap()
    }
}

fn exit_code(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn signal(sig: i32) -> ExitStatus {
    ExitStatus::from_raw(sig)
}

#[test]
fn one_task_per_worker_until_tasks_are_known_short() {
    let mut sim = Sim::new(1);
    sim.submit(1..=3);
    // Sent before the worker is ready (the pipe holds it), but not running yet.
    assert_eq!(sim.sent(0), [1]);
    assert_eq!(sim.state(1), "queued");
    sim.ready(0);
    assert_eq!(sim.state(1), "running");
    assert_eq!(sim.state(2), "queued");
    // A long task: the depth stays one.
    sim.finish(0, 1, Duration::from_secs(1));
    assert_eq!(sim.state(1), "ok");
    assert_eq!(sim.sent(0), [1, 2]);
    assert_eq!(sim.state(2), "running");
}

#[test]
fn tasks_go_to_the_least_busy_worker() {
    let mut sim = Sim::new(2);
    sim.ready(0);
    sim.ready(1);
    sim.submit(1..=4);
    assert_eq!((sim.sent(0), sim.sent(1)), (vec![1], vec![2]));
    sim.finish(1, 2, Duration::from_secs(1));
    assert_eq!((sim.sent(0), sim.sent(1)), (vec![1], vec![2, 3]));
    sim.finish(0, 1, Duration::from_secs(1));
    assert_eq!((sim.sent(0), sim.sent(1)), (vec![1, 4], vec![2, 3]));
}

#[test]
fn short_tasks_are_pipelined_in_bursts() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit(1..=300);
    assert_eq!(sim.sent(0).len(), 1);
    // Tasks of 10 µs: 2 ms of work is 200 tasks in flight.
    sim.finish(0, 1, 10 * US);
    assert_eq!(sim.sent(0), (1..=201).collect::<Vec<_>>());
    // No refill until half of them are done...
    for id in 2..=100 {
        sim.finish(0, id, 10 * US);
    }
    assert_eq!(sim.sent(0).len(), 201);
    // ...then one burst up to the depth again.
    sim.finish(0, 101, 10 * US);
    assert_eq!(sim.sent(0), (1..=300).collect::<Vec<_>>());
    assert_eq!(sim.state(102), "running");
}

#[test]
fn a_batch_counts_its_calls_and_has_a_deadline_per_call() {
    let mut sim = Sim::with(1, Some(5), None);
    sim.ready(0);
    let mut batch = job(1, &sim.module);
    batch.input = Input::Batch {
        items: vec![Input::Numbers(Vec::new()); 5],
        instances: crate::value::Instances::Fresh,
    }
    .into();
    shape(&mut batch).limits.timeout = Some(Duration::from_secs(1));
    sim.submit_jobs(vec![batch]);
    sim.submit([2]);
    assert_eq!(sim.sent(0), [1]);
    assert_eq!(sim.stats().running, 5, "counted in calls");
    // Five calls of 1 s, and the grace of one (500 ms).
    sim.advance(Duration::from_millis(5499));
    assert_eq!(sim.state(1), "running");
    sim.advance(MS);
    assert_eq!(sim.state(1), "timeout");
    assert!(sim.d.workers.logs[0].borrow().killed);
    // The batch used up the worker's 5 calls: task 2 never went to it, it runs on the
    // respawned worker.
    assert_eq!(sim.sent(0), [2]);
}

#[test]
fn a_cancelled_queued_task_is_never_sent() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit(1..=3);
    sim.cancel(2);
    assert_eq!(sim.state(2), "cancelled");
    assert!(sim.error(2).contains("before it started"));
    sim.finish(0, 1, Duration::from_secs(1));
    assert_eq!(sim.sent(0), [1, 3]);
    assert!(sim.worker(0).borrow().cancels.is_empty());
}

#[test]
fn a_cancelled_running_task_gets_the_cancel_grace() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit(1..=2);
    // Stopped in time: the worker answers `Cancelled` and stays.
    sim.cancel(1);
    assert_eq!(sim.worker(0).borrow().cancels, [sim.wire(0, 1)]);
    sim.advance(99 * MS);
    sim.answer(0, 1, Err(TaskError::cancelled("stopped")), 99 * MS, 0);
    assert_eq!(sim.state(1), "cancelled");
    assert_eq!(sim.spawned(), 1);
    // Not stopped in time: the worker is killed 100 ms after the cancel.
    sim.cancel(2);
    sim.advance(99 * MS);
    assert_eq!(sim.state(2), "running");
    sim.advance(MS);
    assert_eq!(sim.state(2), "cancelled");
    assert!(sim.error(2).contains("stopped while running"));
    assert!(sim.d.workers.logs[0].borrow().killed);
    assert_eq!(sim.spawned(), 2);
}

/// Last session's fix: the grace was counted from the cancel, long past when the task
/// reached the head of the worker's queue, and its worker was killed at once.
#[test]
fn the_cancel_grace_counts_from_the_start_of_a_task_cancelled_while_waiting() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    // Short tasks first, so that the worker takes two at a time.
    sim.submit([1]);
    sim.finish(0, 1, 10 * US);
    sim.submit_timed(2, Duration::from_secs(60), 0);
    sim.submit([3]);
    assert_eq!(sim.sent(0), [1, 2, 3]);
    sim.cancel(3);
    sim.advance(Duration::from_secs(5));
    sim.finish(0, 2, Duration::from_secs(5));
    // Task 3 heads the worker now: its grace runs from here.
    sim.advance(50 * MS);
    assert!(!sim.worker(0).borrow().killed, "killed without a grace");
    assert_eq!(sim.spawned(), 1);
    sim.answer(
        0,
        3,
        Err(TaskError::cancelled("skipped")),
        Duration::ZERO,
        0,
    );
    assert_eq!(sim.state(3), "cancelled");
    assert_eq!(sim.spawned(), 1);
}

#[test]
fn a_worker_past_the_deadline_is_killed_at_start_timeout_grace() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit([1]);
    sim.finish(0, 1, 10 * US);
    sim.submit_timed(2, Duration::from_secs(1), 0);
    sim.submit(3..=4);
    assert_eq!(sim.sent(0), [1, 2, 3, 4]);
    // 1 s of timeout and 500 ms of grace from when task 2 started.
    sim.advance(Duration::from_millis(1499));
    assert_eq!(sim.spawned(), 1);
    sim.advance(MS);
    assert_eq!(sim.state(2), "timeout");
    let old = sim.d.workers.logs[0].clone();
    assert!(old.borrow().killed);
    assert_eq!(old.borrow().reaped, Some(None), "reaped without a report");
    // The tasks behind it run on the new worker, in order.
    assert_eq!(sim.spawned(), 2);
    assert_eq!(sim.sent(0), [3]);
    assert_eq!(sim.state(3), "queued");
    sim.ready(0);
    assert_eq!(sim.state(3), "running");
}

#[test]
fn a_dead_workers_tasks_are_retried_or_lost_and_requeued_in_order() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit([1]);
    sim.finish(0, 1, 10 * US);
    sim.submit_timed(2, Duration::from_secs(60), 1);
    sim.submit(3..=4);
    assert_eq!(sim.sent(0), [1, 2, 3, 4]);
    // Killed from outside: task 2 may run once more, first.
    sim.dies(0, signal(9));
    assert_eq!(sim.state(2), "queued");
    assert_eq!(sim.sent(0), [2]);
    sim.ready(0);
    // Again: no retry left.
    sim.dies(0, signal(9));
    assert_eq!(sim.state(2), "worker_lost");
    assert!(sim.error(2).contains("signal 9"), "{}", sim.error(2));
    assert_eq!(sim.sent(0), [3]);
    assert_eq!(sim.spawned(), 3);
}

/// Last session's fix: a reply that does not decode ended the stream and the worker was
/// reaped with a blocking wait without being killed.
#[test]
fn a_worker_that_sends_a_bad_frame_is_killed() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit([1]);
    let log = sim.worker(0);
    let who = log.borrow().who;
    sim.event(Event::Exited(who, Some("unknown variant".into())));
    assert!(log.borrow().killed);
    assert_eq!(log.borrow().reaped, Some(Some(who)));
    sim.event(Event::Reaped(who, Some(signal(9))));
    assert_eq!(sim.state(1), "worker_lost");
    assert!(sim.error(1).contains("malformed reply"), "{}", sim.error(1));
    assert_eq!(sim.spawned(), 2);
}

#[test]
fn replies_of_a_replaced_worker_are_ignored() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit_timed(1, Duration::from_secs(1), 0);
    sim.submit([2]);
    let old = sim.worker(0);
    sim.advance(Duration::from_millis(1500));
    assert_eq!(sim.state(1), "timeout");
    // The old worker's late answer for task 1, and a `Ready`, change nothing.
    let who = old.borrow().who;
    let wire = old.borrow().expected[0].0;
    let heard = deliver(
        Reply::Done {
            task: wire,
            outcome: Ok(Output::Numbers(Vec::new())),
            stats: TaskStats::default(),
        },
        &old.borrow().answers,
    );
    sim.event(Event::Replies(
        who,
        heard.into_iter().chain([Heard::Ready]).collect(),
    ));
    assert_eq!(sim.state(1), "timeout");
    assert_eq!(sim.state(2), "queued", "the new worker is not ready");
    sim.event(Event::Exited(who, None));
    sim.event(Event::Reaped(who, Some(signal(9))));
    assert_eq!(sim.spawned(), 2);
}

#[test]
fn a_worker_that_keeps_failing_to_start_is_given_up() {
    let mut sim = Sim::new(1);
    sim.submit([1]);
    for _ in 0..2 {
        sim.dies(0, exit_code(1));
        assert_eq!(sim.state(1), "queued");
    }
    sim.dies(0, exit_code(1));
    assert_eq!(sim.spawned(), 3);
    assert_eq!(sim.state(1), "worker_lost");
    let error = sim.error(1);
    assert!(error.contains("failed to start 3 times"), "{error}");
    // Nothing runs any more: new tasks fail at once.
    sim.submit([2]);
    assert_eq!(sim.state(2), "worker_lost");
    assert_eq!(sim.spawned(), 3);
}

#[test]
fn starts_killed_from_outside_are_retried_longer() {
    let mut sim = Sim::new(1);
    sim.submit([1]);
    for _ in 0..19 {
        sim.dies(0, signal(9));
    }
    assert_eq!(sim.state(1), "queued");
    sim.ready(0);
    assert_eq!(sim.state(1), "running");
    assert_eq!(sim.spawned(), 20);
}

#[test]
fn a_worker_that_does_not_start_in_time_is_killed() {
    let mut sim = Sim::new(1);
    sim.submit([1]);
    sim.advance(START_TIMEOUT - MS);
    assert_eq!(sim.spawned(), 1);
    sim.advance(MS);
    assert!(sim.d.workers.logs[0].borrow().killed);
    assert_eq!(sim.spawned(), 2);
    assert_eq!(sim.state(1), "queued");
    assert_eq!(sim.sent(0), [1]);
}

#[test]
fn a_slot_whose_spawn_fails_is_given_up() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit([1, 2]);
    sim.d.workers.spawn_fails = true;
    sim.dies(0, signal(11));
    assert_eq!(sim.state(1), "worker_lost");
    assert_eq!(sim.state(2), "worker_lost");
    assert!(
        sim.error(2).contains("no working worker"),
        "{}",
        sim.error(2)
    );
}

#[test]
fn workers_are_retired_at_max_tasks_and_max_rss() {
    let mut sim = Sim::with(1, Some(2), None);
    sim.ready(0);
    sim.submit(1..=3);
    sim.finish(0, 1, 10 * US);
    assert_eq!(sim.sent(0), [1, 2], "no more than 2 for this worker");
    sim.finish(0, 2, 10 * US);
    let old = sim.d.workers.logs[0].clone();
    assert!(old.borrow().closed && !old.borrow().killed, "let exit");
    assert_eq!(sim.spawned(), 2);
    assert_eq!(sim.sent(0), [3]);
    // The retired worker's exit is only reaped.
    let who = old.borrow().who;
    sim.event(Event::Exited(who, None));
    assert_eq!(old.borrow().reaped, Some(None));

    let mut sim = Sim::with(1, None, Some(1 << 20));
    sim.ready(0);
    sim.submit(1..=2);
    sim.answer(0, 1, Ok(Output::Numbers(Vec::new())), MS, 2 << 20);
    assert!(sim.d.workers.logs[0].borrow().closed);
    assert_eq!(sim.sent(0), [2]);
}

#[test]
fn a_draining_shutdown_runs_the_queue() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit(1..=2);
    let (done, finished) = crossbeam_channel::bounded(1);
    sim.event(Event::Shutdown { drain: true, done });
    sim.submit([3]);
    assert_eq!(sim.state(3), "cancelled", "no new work");
    sim.finish(0, 1, Duration::from_secs(1));
    assert!(!sim.ended);
    sim.finish(0, 2, Duration::from_secs(1));
    assert!(sim.ended);
    assert!(finished.try_recv().is_ok());
    assert!(sim.worker(0).borrow().closed);
    assert!(!sim.worker(0).borrow().killed);
}

#[test]
fn a_draining_shutdown_runs_what_waits_in_the_inbox() {
    // A thread submits, then shuts the pool down: the shutdown's event may be handled before
    // the event that announced the submission, but the jobs it follows are queued first.
    let mut sim = Sim::new(1);
    sim.ready(0);
    assert!(sim.push(vec![job(1, &sim.module), job(2, &sim.module)]));
    let (done, finished) = crossbeam_channel::bounded(1);
    sim.event(Event::Shutdown { drain: true, done });
    assert_eq!(sim.sent(0), [1]);
    sim.finish(0, 1, Duration::from_secs(1));
    assert_eq!(sim.sent(0), [1, 2]);
    sim.finish(0, 2, Duration::from_secs(1));
    assert!(sim.ended);
    assert!(finished.try_recv().is_ok());
    assert_eq!((sim.state(1), sim.state(2)), ("ok", "ok"));
}

#[test]
fn jobs_pushed_behind_others_wake_no_one_and_a_closed_inbox_refuses() {
    let inbox = Inbox::default();
    let m = module();
    assert!(matches!(inbox.push([job(1, &m)]), Pushed::First));
    assert!(matches!(inbox.push([job(2, &m)]), Pushed::Behind));
    let mut taken = Vec::new();
    assert!(inbox.take(&mut taken));
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), [1, 2]);
    assert!(matches!(inbox.push([job(3, &m)]), Pushed::First));
    let left = inbox.close();
    assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), [3]);
    match inbox.push([job(4, &m)]) {
        Pushed::Closed(jobs) => assert_eq!(jobs[0].id, 4),
        _ => panic!("a closed inbox took a job"),
    }
}

#[test]
fn a_terminating_shutdown_cancels_everything() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit(1..=2);
    let (done, finished) = crossbeam_channel::bounded(1);
    sim.event(Event::Shutdown { drain: false, done });
    assert!(sim.ended);
    assert!(finished.try_recv().is_ok());
    assert_eq!((sim.state(1), sim.state(2)), ("cancelled", "cancelled"));
    assert!(sim.error(1).contains("terminated while the task ran"));
    assert!(sim.worker(0).borrow().killed);
    assert_eq!(sim.spawned(), 1);
}

/// The worker's side of last session's fix (its set of cancelled ids stays bounded: it
/// forgets cancels of ids below the one it runs) stands on this: on one worker process,
/// wire ids rise in the order tasks are sent, even when task ids do not (a retried task).
#[test]
fn wire_ids_rise_in_send_order() {
    let mut sim = Sim::new(2);
    sim.ready(0);
    sim.ready(1);
    sim.submit_timed(1, Duration::from_secs(60), 1);
    sim.submit(2..=3);
    sim.finish(1, 2, Duration::from_secs(1));
    assert_eq!((sim.sent(0), sim.sent(1)), (vec![1], vec![2, 3]));
    // Task 1's worker dies; its retry goes to the other worker, after task 3.
    sim.d.workers.spawn_fails = true;
    sim.dies(0, signal(9));
    sim.finish(1, 3, Duration::from_secs(1));
    assert_eq!(sim.sent(1), [2, 3, 1]);
    let wires: Vec<TaskId> = sim.sent(1).iter().map(|&id| sim.wire(1, id)).collect();
    assert!(wires.windows(2).all(|w| w[0] < w[1]), "{wires:?}");
}

#[test]
fn stats_are_answered_once_workers_with_room_took_what_is_queued() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    // A submission and a stats request handled in one wake-up, before the loop sends.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let j = job(1, &sim.module);
    sim.tasks.push((j.id, j.completion.clone()));
    sim.d.handle(Event::Submit(vec![j]));
    sim.d.handle(Event::Stats(tx));
    let s = rx.try_recv().unwrap();
    assert_eq!((s.queued, s.running), (0, 1), "{s:?}");
    assert_eq!(sim.sent(0), vec![1]);
}

#[test]
fn stats_count_calls_by_outcome() {
    let mut sim = Sim::new(2);
    sim.ready(0);
    sim.ready(1);
    let mut batch = job(1, &sim.module);
    batch.input = Input::Batch {
        items: vec![Input::Numbers(Vec::new()); 3],
        instances: crate::value::Instances::Fresh,
    }
    .into();
    sim.submit_jobs(vec![batch]);
    sim.submit(2..=5);
    sim.cancel(5);
    let s = sim.stats();
    assert_eq!((s.queued, s.running), (2, 4));
    assert_eq!(s.failed.get("cancelled"), Some(&1));
    assert_eq!(s.workers_live, 2);
    // The batch: two calls done, one trapped; task 2 fails; task 3's worker dies.
    let items = vec![
        Ok(Output::Numbers(Vec::new())),
        Err(TaskError::Trap {
            message: "unreachable".into(),
            code: Some(crate::error::TrapCode::UnreachableCodeReached),
        }),
        Ok(Output::Numbers(Vec::new())),
    ];
    sim.answer(0, 1, Ok(Output::Batch(items)), MS, 5 << 20);
    sim.answer(1, 2, Err(TaskError::bad_input("no")), MS, 7 << 20);
    sim.dies(0, signal(9));
    sim.ready(0);
    sim.finish(0, 4, MS);
    let s = sim.stats();
    assert_eq!(s.done, 3);
    assert_eq!(s.failed_total(), 4);
    for (kind, n) in [
        ("trap", 1),
        ("bad_input", 1),
        ("worker_lost", 1),
        ("cancelled", 1),
    ] {
        assert_eq!(s.failed.get(kind), Some(&n), "{kind}: {s:?}");
    }
    assert_eq!((s.queued, s.running), (0, 0));
    assert_eq!(s.workers_restarted, 1);
    assert_eq!(s.worker_rss.len(), 2);
    assert_eq!(s.worker_rss_total(), 7 << 20, "the new worker reported 0");
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn worker_life_is_traced() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut sim = Sim::new(1);
        sim.ready(0);
        sim.submit_timed(7, Duration::from_secs(1), 0);
        sim.advance(Duration::from_millis(1500));
        sim.ready(0);
        sim.submit([8]);
        sim.d.workers.spawn_fails = true;
        sim.dies(0, signal(9));
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "worker spawned slot=0 generation=0 pid=1000",
        "worker ready slot=0 pid=1000",
        "task started task=7",
        "worker killed at a deadline slot=0 pid=1000 task=7 why=\"timeout\" error=task exceeded its wall-clock limit of 1s",
        "worker spawned slot=0 generation=1 pid=1001",
        "worker died slot=0 pid=1001 cause=worker 1001 was killed by signal 9 (SIGKILL)",
        "cannot start a worker slot=0",
        "worker slot given up slot=0",
    ] {
        assert!(log.contains(expected), "{expected:?} not in:\n{log}");
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
    let mut sim = Sim::new(0);
    let module = module();
    let jobs: Vec<Job> = (1..=AHEAD + IMAP).map(|id| job(id, &module)).collect();
    let tasks: Vec<Task<i64>> = jobs[AHEAD as usize..]
        .iter()
        .map(|j| Task::new(j.id, j.completion.clone(), sim.events.clone()))
        .collect();
    let ahead: Vec<_> = jobs[..AHEAD as usize]
        .iter()
        .map(|j| j.completion.clone())
        .collect();
    let completions: Vec<_> = jobs[AHEAD as usize..]
        .iter()
        .map(|j| j.completion.clone())
        .collect();
    // No workers: put in the queue by hand (a submission would fail them).
    sim.d.queue.extend(jobs);
    drop(Imap::new(tasks.into(), None));
    // A linear search per cancel costs AHEAD × IMAP steps (minutes); an index or a lazy
    // skip, well under a second. The bound is very generous for a loaded machine.
    let started = Instant::now();
    while let Ok(event) = sim.d.events.try_recv() {
        sim.d.handle(event);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cancelling queued tasks is too slow"
        );
    }
    sim.d.pump();
    for (id, c) in (AHEAD + 1..).zip(&completions) {
        let task = Task::<i64>::new(id, c.clone(), sim.events.clone());
        let outcome = task.wait_timeout(Duration::ZERO);
        assert!(
            matches!(outcome, Some(Err(TaskError::Cancelled { .. }))),
            "{outcome:?}"
        );
    }
    assert!(ahead.iter().all(|c| !c.is_done()), "others stay queued");
    assert!(
        sim.d.queue.len() <= 2 * AHEAD as usize,
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
            mounts: Vec::new(),
        },
        workers: 2,
        max_tasks_per_worker: None,
        max_worker_rss: None,
        remove_dir,
    };
    let dispatcher = Dispatcher::start(config, events, sender.clone(), Default::default()).unwrap();
    let module = Module::new(
        b"m",
        crate::sandbox::Metering::Epochs,
        crate::module::Artifact::Bytes(vec![0; 16]),
        Default::default(),
        Origin::Compiled(Duration::ZERO),
    );
    let mut short = job(1, &module);
    shape(&mut short).limits.timeout = Some(Duration::from_millis(50));
    let mut neighbour = job(2, &module);
    shape(&mut neighbour).limits.timeout = Some(Duration::from_millis(300));
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

/// One worker, ready, whose tasks are known to take `took` (so it takes many at once).
fn warmed(workers: usize, took: Duration) -> Sim {
    let mut sim = Sim::new(workers);
    for slot in 0..workers {
        sim.ready(slot);
    }
    let first: Vec<TaskId> = (1000..1000 + workers as TaskId).collect();
    sim.submit(first.iter().copied());
    for (slot, id) in first.into_iter().enumerate() {
        assert_eq!(sim.sent(slot), [id]);
        sim.finish(slot, id, took);
    }
    sim
}

#[test]
fn queued_compatible_calls_travel_in_one_frame_each_a_task_of_its_own() {
    // Tasks of 10 µs: the worker has room for 200.
    let mut sim = warmed(1, 10 * US);
    sim.submit(1..=150);
    let frames = sim.frames(0);
    assert_eq!(
        frames,
        [
            vec![1000],
            (1..=64).collect(),
            (65..=128).collect(),
            (129..=150).collect()
        ]
    );
    // Each call has a wire id of its own, in order, and is answered on its own.
    let wires: Vec<TaskId> = (1..=150).map(|id| sim.wire(0, id)).collect();
    assert!(wires.windows(2).all(|w| w[1] == w[0] + 1), "{wires:?}");
    assert_eq!(sim.state(1), "running");
    sim.finish(0, 1, 10 * US);
    sim.answer(
        0,
        2,
        Err(TaskError::Trap {
            message: "unreachable".into(),
            code: None,
        }),
        10 * US,
        0,
    );
    assert_eq!((sim.state(1), sim.state(2)), ("ok", "trap"));
    assert_eq!((sim.state(3), sim.state(4)), ("running", "queued"));
    assert_eq!(sim.stats().running, 148);
}

#[test]
fn calls_that_differ_travel_in_frames_of_their_own() {
    let mut sim = warmed(1, 10 * US);
    let module = sim.module.clone();
    let mut jobs: Vec<Job> = (1..=3).map(|id| job(id, &module)).collect();
    // Other limits.
    let mut j = job(4, &module);
    shape(&mut j).limits.memory = Some(1 << 20);
    jobs.push(j);
    jobs.push(job(5, &module));
    // Another export.
    let mut j = job(6, &module);
    shape(&mut j).export = "g".into();
    jobs.push(j);
    // An SDK call, twice, then a numeric call again.
    for id in [7, 8] {
        let mut j = job(id, &module);
        j.input = Input::Json(b"{}".to_vec()).into();
        jobs.push(j);
    }
    jobs.push(job(9, &module));
    // Another environment.
    let mut j = job(10, &module);
    shape(&mut j).env = vec![("K".to_string(), "V".to_string())].into();
    jobs.push(j);
    // Command runs travel together (each with its own argv and stdin), but not with a
    // streamed one, which goes alone.
    let command = |stdin: &str, stream: bool| {
        Input::Command(crate::command::CommandInput {
            argv: vec!["prog".into()],
            env: Vec::new(),
            stdin: stdin.into(),
            files: Vec::new(),
            output_dir: false,
            check: false,
            stream,
            invoke: None,
        })
    };
    for (id, stdin, stream) in [(11, "a", false), (12, "b", false), (13, "c", true)] {
        let mut j = job(id, &module);
        j.input = command(stdin, stream).into();
        jobs.push(j);
    }
    jobs.push(job(14, &module));
    jobs.push(job(15, &module));
    // Numbers of another count (a frame lays calls' arguments end to end).
    let mut j = job(16, &module);
    j.input = Input::Numbers(vec![crate::value::Value::I32(1)]).into();
    jobs.push(j);
    // Commands over the frame's byte bound go in frames of their own.
    for id in [17, 18] {
        let mut j = job(id, &module);
        j.input = command(&"x".repeat(COALESCED_BYTES / 2 + 1), false).into();
        jobs.push(j);
    }
    sim.submit_jobs(jobs);
    assert_eq!(
        sim.frames(0)[1..],
        [
            vec![1, 2, 3],
            vec![4],
            vec![5],
            vec![6],
            vec![7, 8],
            vec![9],
            vec![10],
            vec![11, 12],
            vec![13],
            vec![14, 15],
            vec![16],
            vec![17],
            vec![18]
        ]
    );
    // The coalesced runs reach the worker each with its own input.
    let log = sim.worker(0);
    let log = log.borrow();
    let (mut r, mut buf) = (&log.frames[..], Vec::new());
    let mut stdins = Vec::new();
    while let Some(request) = crate::protocol::read::<_, Request>(&mut r, &mut buf).unwrap() {
        if let Request::Calls(calls) = request {
            if let crate::protocol::CallInputs::Commands(runs) = calls.inputs {
                stdins.extend(runs.into_iter().map(|c| c.stdin));
            }
        }
    }
    assert_eq!(stdins, [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn a_cancelled_call_in_the_queue_is_left_out_of_the_frame() {
    let mut sim = Sim::new(1);
    sim.ready(0);
    sim.submit([1]);
    sim.submit(2..=6);
    sim.cancel(4);
    sim.finish(0, 1, 10 * US);
    assert_eq!(sim.frames(0), [vec![1], vec![2, 3], vec![5, 6]]);
    assert_eq!(sim.state(4), "cancelled");
}

#[test]
fn a_short_queue_is_shared_among_the_workers() {
    let mut sim = warmed(2, 10 * US);
    sim.submit(1..=10);
    // Each idle worker gets a call alone first (calls 1 and 2 might be long: they must not
    // wait on one worker while the other idles); the rest is shared evenly.
    assert_eq!(sim.frames(0)[1..], [vec![1], vec![7, 8, 9, 10]]);
    assert_eq!(sim.frames(1)[1..], [vec![2, 3, 4, 5, 6]]);
}

#[test]
fn two_long_calls_queued_together_go_to_two_idle_workers() {
    // The workers' recent calls were short, so each has room for many; the next two calls
    // happen to be long (runaways): each must get a worker of its own.
    let mut sim = warmed(2, 10 * US);
    sim.submit(1..=20);
    assert_eq!(sim.frames(0)[1][0], 1);
    assert_eq!(sim.frames(1)[1][0], 2);
}

#[test]
fn a_coalesced_frames_worker_dies_its_running_call_fails_alone() {
    let mut sim = warmed(1, 10 * US);
    let mut jobs: Vec<Job> = (1..=11).map(|id| job(id, &sim.module)).collect();
    jobs[10].retries = 1;
    sim.submit_jobs(jobs);
    assert_eq!(sim.frames(0)[1..], [(1..=11).collect::<Vec<_>>()]);
    for id in 1..=3 {
        sim.finish(0, id, 10 * US);
    }
    sim.dies(0, signal(libc::SIGKILL));
    // The call that ran lost its worker; those behind it run on the new worker, in one
    // frame again once it is known to be quick.
    assert_eq!(sim.state(4), "worker_lost");
    assert!((1..=3).all(|id| sim.state(id) == "ok"));
    assert!((5..=11).all(|id| sim.state(id) != "ok" && sim.state(id) != "worker_lost"));
    assert_eq!(sim.spawned(), 2);
    sim.ready(0);
    assert_eq!(sim.frames(0), [vec![5]]);
    sim.finish(0, 5, 10 * US);
    assert_eq!(sim.frames(0), [vec![5], (6..=11).collect::<Vec<_>>()]);
    for id in 6..=11 {
        sim.finish(0, id, 10 * US);
    }
    assert!((5..=11).all(|id| sim.state(id) == "ok"));
}

#[test]
fn coalesced_calls_are_waited_for_without_a_spin() {
    // A call sent alone is answered as soon as it finishes: its waiter spins a moment
    // before it sleeps. Calls that travel in a frame with others are answered at the
    // worker's flushes: theirs sleep at once.
    let mut sim = warmed(1, 10 * US);
    sim.submit([1]);
    assert!(sim.completion(1).spins());
    sim.submit(2..=5);
    assert_eq!(sim.frames(0)[1..], [vec![1], vec![2, 3, 4, 5]]);
    assert!((2..=5).all(|id| !sim.completion(id).spins()));
    // Requeued after its worker died, a call that goes alone spins again.
    sim.finish(0, 1, 10 * US);
    sim.dies(0, signal(libc::SIGKILL));
    sim.ready(0);
    assert_eq!(sim.frames(0), [vec![3]]);
    assert!(sim.completion(3).spins());
    assert!((4..=5).all(|id| !sim.completion(id).spins()));
}

#[test]
fn each_call_of_a_frame_has_its_own_deadline_and_cancel() {
    let mut sim = warmed(1, 10 * US);
    let jobs = (1..=4)
        .map(|id| {
            let mut j = job(id, &sim.module);
            shape(&mut j).limits.timeout = Some(Duration::from_secs(1));
            j
        })
        .collect();
    sim.submit_jobs(jobs);
    assert_eq!(sim.frames(0)[1..], [vec![1, 2, 3, 4]]);
    // Call 1 answers after 0.9 s: call 2's time (1 s and the grace of 500 ms) counts from
    // then, not from the frame's start.
    sim.advance(Duration::from_millis(900));
    sim.finish(0, 1, Duration::from_millis(900));
    sim.advance(Duration::from_millis(1400));
    assert_eq!(sim.state(2), "running");
    assert!(!sim.worker(0).borrow().killed);
    // A cancel of call 4 names call 4's own wire id.
    sim.cancel(4);
    let wire = sim.wire(0, 4);
    assert_eq!(sim.worker(0).borrow().cancels, [wire]);
    // Call 2 past its deadline: the worker is killed, call 2 times out, call 3 runs again
    // elsewhere, call 4 stays cancelled.
    sim.advance(Duration::from_millis(101));
    assert_eq!(sim.state(2), "timeout");
    assert_eq!(sim.state(4), "cancelled");
    assert_eq!(sim.spawned(), 2);
    assert_eq!(sim.sent(0), [3]);
}

#[test]
fn a_calls_reply_answers_each_call_with_its_own_outcome() {
    let mut sim = warmed(1, 10 * US);
    sim.submit(1..=5);
    assert_eq!(sim.frames(0)[1..], [vec![1, 2, 3, 4, 5]]);
    let first = sim.wire(0, 1);
    let stats = |us: u32, out: &[u8]| TaskStats {
        duration: us * US,
        stdout: out.to_vec(),
        ..TaskStats::default()
    };
    sim.reply(
        0,
        Reply::Calls {
            first,
            calls: vec![
                (
                    Ok(Output::Numbers(vec![crate::value::Value::I64(1)])),
                    stats(5, b"a"),
                ),
                (Err(TaskError::Exit { code: 3 }), stats(6, b"")),
                (
                    Ok(Output::Numbers(vec![crate::value::Value::I64(3)])),
                    stats(7, b"c"),
                ),
            ],
        },
    );
    assert_eq!(
        (sim.state(1), sim.state(2), sim.state(3), sim.state(4)),
        ("ok", "exit", "ok", "running")
    );
    // Each call has its own stats.
    let task = Task::<i64>::new(3, sim.completion(3), sim.events.clone());
    assert_eq!(task.wait_timeout(Duration::ZERO), Some(Ok(3)));
    let s = task.stats().unwrap();
    assert_eq!((s.duration, s.stdout.as_slice()), (7 * US, &b"c"[..]));
    task.detach();
    let stats_now = sim.stats();
    assert_eq!((stats_now.running, stats_now.done), (2, 3));
    assert_eq!(stats_now.failed.get("exit"), Some(&1));
    // A reply naming calls this worker was never sent changes nothing.
    sim.reply(
        0,
        Reply::Calls {
            first: first + 100,
            calls: vec![(Err(TaskError::Exit { code: 1 }), TaskStats::default())],
        },
    );
    assert_eq!((sim.state(4), sim.state(5)), ("running", "queued"));
    sim.reply(
        0,
        Reply::Calls {
            first: first + 3,
            calls: vec![
                (Ok(Output::Numbers(Vec::new())), TaskStats::default()),
                (Ok(Output::Numbers(Vec::new())), TaskStats::default()),
            ],
        },
    );
    assert_eq!((sim.state(4), sim.state(5)), ("ok", "ok"));
    assert_eq!(sim.stats().running, 0);
}
