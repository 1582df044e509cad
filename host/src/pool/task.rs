//! Handles on submitted tasks: [`Task`] (a blocking and `async` future of one result) and the
//! iterators over many ([`AsCompleted`], [`Imap`]). Each task owns a `Completion` that the
//! dispatcher fills exactly once.
//!
//! Dropping a handle whose task has not finished cancels the task (a queued one never runs,
//! a running one is stopped), so that giving up on a result, such as a
//! `tokio::time::timeout` that expires, frees its worker; [`Task::detach`] lets a task run on
//! without its handle. Dropping a finished task costs one atomic load.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::command::OutputChunk;
use crate::dispatch::Event;
use crate::error::TaskError;
use crate::protocol::{TaskId, TaskStats};
use crate::value::{FromOutput, Output};

/// Where a task's outcome lands; filled once, by the dispatcher (or at submission for
/// inputs rejected up front).
/// How long a waiter spins before it sleeps on the condition variable.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

pub(crate) struct Completion {
    /// Set (after the slot is filled) when the task is done; read without the lock.
    done_flag: AtomicBool,
    slot: Mutex<Slot>,
    done: Condvar,
    /// Set when the task is the one its worker runs now (or is about to).
    running: AtomicBool,
}

#[derive(Default)]
struct Slot {
    outcome: Option<(Result<Output, TaskError>, TaskStats)>,
    waker: Option<Waker>,
    /// `(channel, index)` told when the task finishes, for [`AsCompleted`].
    notify: Option<(Sender<usize>, usize)>,
    /// Threads blocked in `wait_until` (no wake-up call is made when there are none).
    waiters: u32,
    /// Where a streaming command's output goes; dropped when the task finishes.
    stream: Option<Stream>,
}

/// A streaming command's output channel, and a channel that disconnects when the task
/// ends (its only sender is dropped with the slot's `Stream`), so that a send blocked on a
/// full channel gives up then.
struct Stream {
    tx: Sender<OutputChunk>,
    ended: crossbeam_channel::Receiver<()>,
    _end: Sender<()>,
}

impl Completion {
    pub(crate) fn new(notify: Option<(Sender<usize>, usize)>) -> Arc<Self> {
        Arc::new(Completion {
            done_flag: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                notify,
                ..Slot::default()
            }),
            done: Condvar::new(),
            running: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome; later calls are ignored (the first outcome stands). Returns
    /// whether this one stood.
    pub(crate) fn complete(&self, outcome: Result<Output, TaskError>, stats: TaskStats) -> bool {
        let mut slot = self.lock();
        if slot.outcome.is_some() {
            return false;
        }
        slot.outcome = Some((outcome, stats));
        slot.stream = None;
        self.done_flag.store(true, Ordering::Release);
        let waker = slot.waker.take();
        let notify = slot.notify.take();
        let waiters = slot.waiters;
        drop(slot);
        if waiters > 0 {
            self.done.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        if let Some((tx, index)) = notify {
            let _ = tx.send(index);
        }
        true
    }

    /// Sends streamed output to whoever reads it. The channel is bounded: while it is full
    /// this blocks (the caller is the worker's reply reader, so the worker blocks in its
    /// write, and the task's wall clock runs on) until the reader takes a chunk, drops the
    /// receiver, or the task ends in another way (killed at its deadline, cancelled).
    pub(crate) fn stream(&self, chunk: OutputChunk) {
        // Clones of the two receiving ends only: the sender of `ended` stays in the slot.
        let Some((tx, ended)) = self
            .lock()
            .stream
            .as_ref()
            .map(|s| (s.tx.clone(), s.ended.clone()))
        else {
            return;
        };
        crossbeam_channel::select! {
            send(tx, chunk) -> _ => {}
            recv(ended) -> _ => {}
        }
    }

    pub(crate) fn set_stream(&self, tx: Sender<OutputChunk>) {
        let (end, ended) = crossbeam_channel::bounded(0);
        self.lock().stream = Some(Stream {
            tx,
            ended,
            _end: end,
        });
    }

    pub(crate) fn mark_running(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    pub(crate) fn mark_queued(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    /// Fails the task with `error`, unless it has an outcome already; returns whether it
    /// had none.
    pub(crate) fn fail(&self, error: TaskError) -> bool {
        self.complete(Err(error), TaskStats::default())
    }

    pub(crate) fn is_done(&self) -> bool {
        // Set after the outcome, under the lock: once seen, the outcome is there.
        self.done_flag.load(Ordering::Acquire)
    }

    /// Waits until done or until `deadline`; returns the guard if done.
    fn wait_until(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, Slot>> {
        // Short tasks finish within microseconds: watch for a moment before sleeping, since a
        // sleeping thread takes tens of microseconds to wake on a virtual CPU. Watch by
        // yielding, not spinning: the threads carrying the task (dispatcher, reply reader) may
        // be queued on this very CPU, and a pure spin would hold them off until it ends
        // (measured: p50 20–150 µs, bimodal, with a spin; 18–21 µs with yields).
        let spin_until = Instant::now() + SPIN_BEFORE_SLEEP;
        while !self.done_flag.load(Ordering::Acquire) && Instant::now() < spin_until {
            std::thread::yield_now();
        }
        let mut slot = self.lock();
        while slot.outcome.is_none() {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            slot.waiters += 1;
            slot = match deadline {
                None => self.done.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    self.done
                        .wait_timeout(slot, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            slot.waiters -= 1;
        }
        Some(slot)
    }
}

/// A submitted task: wait for it (blocking or `.await`), poll it, or cancel it.
/// Like `concurrent.futures.Future` / `AsyncResult`.
///
/// **Dropping a `Task` that has not finished cancels it**, like [`Task::cancel`]: a queued
/// task never runs, a running one is stopped and its worker freed. So a future that is given
/// up on (`tokio::time::timeout(d, task)` expiring, a `select!` taking another branch) does not
/// keep a worker busy until the task's own limit. To let a task run to completion without
/// keeping its handle, call [`Task::detach`]. Dropping a finished task costs nothing more than
/// one atomic load.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let pool = wasmpool::Pool::builder().workers(2).build()?;
/// let math = pool.load_file("guests/target/wasm32-wasip1/release/math.wasm")?;
/// let task = pool.submit::<i64>(&math, "square", 12i64);
/// match task.wait_timeout(Duration::from_secs(1)) {
///     Some(result) => assert_eq!(result?, 144),
///     None => task.cancel(),
/// }
/// # Ok(()) }
/// ```
#[must_use = "dropping an unfinished Task cancels it; wait for it, or call `.detach()` to let it run"]
pub struct Task<T> {
    id: TaskId,
    completion: Arc<Completion>,
    /// Where a cancel goes; `None` once the task is detached (its drop then cancels nothing).
    events: Option<Sender<Event>>,
    _output: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("done", &self.completion.is_done())
            .finish()
    }
}

impl<T: FromOutput> Task<T> {
    pub(crate) fn new(id: TaskId, completion: Arc<Completion>, events: Sender<Event>) -> Self {
        Task {
            id,
            completion,
            events: Some(events),
            _output: PhantomData,
        }
    }

    /// The task's id, unique within its pool.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Blocks until the task finishes; returns its result or why it failed.
    pub fn wait(&self) -> Result<T, TaskError> {
        let slot = self.completion.wait_until(None).expect("no deadline");
        decode(&slot)
    }

    /// Waits at most `timeout`. `None` means the task is still pending; it goes on running
    /// (like `AsyncResult.get(timeout)`), and can be waited for again.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<T, TaskError>> {
        // A wait too long for the clock to express is a wait without a deadline.
        let slot = self
            .completion
            .wait_until(Instant::now().checked_add(timeout))?;
        Some(decode(&slot))
    }

    /// Whether the task has finished (successfully or not).
    pub fn is_done(&self) -> bool {
        self.completion.is_done()
    }

    /// Whether a worker is running the task now (it has left the queue and not finished).
    pub fn is_running(&self) -> bool {
        self.completion.running.load(Ordering::Relaxed) && !self.is_done()
    }

    /// What the finished task cost and printed (fuel, duration, captured stdout/stderr);
    /// `None` while it runs.
    pub fn stats(&self) -> Option<TaskStats> {
        self.completion
            .lock()
            .outcome
            .as_ref()
            .map(|(_, s)| s.clone())
    }
}

impl<T> Task<T> {
    /// Cancels the task: a queued task never runs, a running one is stopped; either then
    /// fails with [`TaskError::Cancelled`]. A task that already finished keeps its result.
    pub fn cancel(&self) {
        if let Some(events) = &self.events {
            // The one check a finished task pays (when it is dropped, too).
            if !self.completion.is_done() {
                // A pool already gone has stopped the task itself.
                let _ = events.send(Event::Cancel(self.id, self.completion.clone()));
            }
        }
    }

    /// Lets the task run to completion without its handle (fire and forget): unlike dropping
    /// the `Task`, this does not cancel it. Its result is dropped when it finishes; a
    /// streaming command's output channel still delivers everything the program writes, and
    /// ends when it does. [`Pool::shutdown`](crate::Pool::shutdown) still waits for it.
    pub fn detach(mut self) {
        self.events = None;
    }
}

impl<T> Drop for Task<T> {
    /// Cancels the task unless it finished or was detached: nobody can read its result.
    fn drop(&mut self) {
        self.cancel();
    }
}

fn decode<T: FromOutput>(slot: &Slot) -> Result<T, TaskError> {
    match &slot.outcome {
        Some((Ok(output), _)) => T::from_output(output.clone()),
        Some((Err(e), _)) => Err(e.clone()),
        None => unreachable!("decode is only called on finished tasks"),
    }
}

impl<T: FromOutput> Future for Task<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.completion.lock();
        if slot.outcome.is_some() {
            return Poll::Ready(decode(&slot));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Results in the order tasks finish, each with its input's index, like
/// `concurrent.futures.as_completed` / `Pool.imap_unordered`.
///
/// It owns the tasks it has not yielded yet: dropping it (say, after taking the first few
/// results) cancels those that have not finished, like dropping each [`Task`]; queued ones
/// never run and running ones are stopped.
#[must_use = "the tasks are submitted already; dropping this cancels those not finished"]
pub struct AsCompleted<T> {
    tasks: Vec<Option<Task<T>>>,
    finished: Receiver<usize>,
    left: usize,
}

impl<T: FromOutput> AsCompleted<T> {
    pub(crate) fn new(tasks: Vec<Task<T>>, finished: Receiver<usize>) -> Self {
        let left = tasks.len();
        AsCompleted {
            tasks: tasks.into_iter().map(Some).collect(),
            finished,
            left,
        }
    }

    /// Cancels every task not yet yielded.
    pub fn cancel(&self) {
        self.tasks.iter().flatten().for_each(Task::cancel);
    }
}

impl<T: FromOutput> Iterator for AsCompleted<T> {
    type Item = (usize, Result<T, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let index = self.finished.recv().ok()?;
        let task = self.tasks.get_mut(index)?.take()?;
        self.left -= 1;
        Some((index, task.wait()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Results in input order, yielded as soon as each next one is ready (like `Pool.imap`).
///
/// It owns the tasks it has not yielded yet: dropping it (say, after an error cut the loop
/// short) cancels those that have not finished, like dropping each [`Task`]; queued ones never
/// run and running ones are stopped.
#[must_use = "the tasks are submitted already; dropping this cancels those not finished"]
pub struct Imap<T> {
    tasks: std::collections::VecDeque<Task<T>>,
}

impl<T: FromOutput> Imap<T> {
    pub(crate) fn new(tasks: Vec<Task<T>>) -> Self {
        Imap {
            tasks: tasks.into(),
        }
    }
}

impl<T: FromOutput> Iterator for Imap<T> {
    type Item = Result<T, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.tasks.pop_front().map(|t| t.wait())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.tasks.len(), Some(self.tasks.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task on a fake pool: the receiver gets what the task sends the dispatcher.
    fn task(id: TaskId) -> (Task<i64>, Arc<Completion>, Receiver<Event>) {
        let (events, inbox) = crossbeam_channel::unbounded();
        let completion = Completion::new(None);
        (Task::new(id, completion.clone(), events), completion, inbox)
    }

    #[test]
    fn dropping_an_unfinished_task_sends_its_cancel() {
        let (t, _, inbox) = task(7);
        drop(t);
        assert!(matches!(inbox.try_recv(), Ok(Event::Cancel(7, _))));
    }

    #[test]
    fn dropping_a_finished_or_detached_task_sends_nothing() {
        // What `map` and `submit_many` drop by the thousand: no event each.
        let (t, completion, inbox) = task(1);
        completion.complete(Ok(Output::Numbers(Vec::new())), TaskStats::default());
        drop(t);
        assert!(inbox.try_recv().is_err());
        let (t, completion, inbox) = task(2);
        t.detach();
        assert!(inbox.try_recv().is_err());
        assert!(!completion.is_done(), "a detached task is left to run");
    }
}
