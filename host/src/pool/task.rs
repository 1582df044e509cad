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

use crossbeam_channel::Sender;

use crate::command::OutputChunk;
use crate::dispatch::Event;
use crate::error::TaskError;
use crate::protocol::{TaskId, TaskStats};
use crate::value::{FromOutput, Output, Value};

use super::feed::Feed;
use super::gate::Admission;
use super::NotifySender;

/// How long a waiter spins before it sleeps on the condition variable.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Where a task's outcome lands; filled once, by the dispatcher (or at submission for
/// inputs rejected up front).
pub(crate) struct Completion {
    /// Set (after the slot is filled) when the task is done; read without the lock.
    done_flag: AtomicBool,
    slot: Mutex<Slot>,
    done: Condvar,
    /// Set when the task is the one its worker runs now (or is about to).
    running: AtomicBool,
    /// Set when the task holds room in a bounded queue (in its slot).
    holds_room: AtomicBool,
    /// Set when the task went to its worker in a `Calls` frame with others: its answer comes
    /// at the worker's next flush (up to `FLUSH_EVERY`, 200 µs, away), so a waiter sleeps
    /// at once rather than yield-spinning for it.
    coalesced: AtomicBool,
}

/// Who is to be told that a settled task is done ([`Completion::settle`]), and its room
/// in a bounded queue, freed then.
#[must_use = "a settled task's waiters sleep until it is passed to Completion::wake"]
pub(crate) struct Wake {
    waker: Option<Waker>,
    notify: Option<(NotifySender, usize)>,
    room: Option<Admission>,
    /// Whether threads sleep in `wait_until`.
    waiters: bool,
}

#[derive(Default)]
struct Slot {
    outcome: Option<Stored>,
    waker: Option<Waker>,
    /// `(channel, index)` told when the task finishes, for [`AsCompleted`].
    notify: Option<(NotifySender, usize)>,
    /// Threads blocked in `wait_until` (no wake-up call is made when there are none).
    waiters: u32,
    /// Where a streaming command's output goes; closed when the task finishes.
    stream: Option<async_channel::Sender<OutputChunk>>,
    /// The task's room in a bounded queue, until a worker takes it or it finishes.
    room: Option<Admission>,
}

/// A finished task's outcome, as its slot keeps it.
enum Stored {
    /// A call that returned one number and printed nothing: kept inline. Under a stream of
    /// small submits this is nearly every task, and neither settling it (in the reply
    /// reader) allocates nor dropping its handle (in the caller's thread) frees a block
    /// that another thread allocated. Measured on rounds of 20k submits: dropping a round's
    /// finished tasks, while every worker idles, took 2.45 ms boxed and 1.0 ms inline.
    Number(Value, Counters),
    /// Anything else. Boxed: inline, it would make every completion several times its size.
    Other(Box<(Result<Output, TaskError>, TaskStats)>),
}

/// The figures of [`TaskStats`], without its captured output.
#[derive(Clone, Copy)]
struct Counters {
    worker: u32,
    worker_rss: u64,
    fuel_used: u64,
    duration: Duration,
    peak_memory: u64,
}

impl Stored {
    fn new(outcome: Result<Output, TaskError>, stats: TaskStats) -> Stored {
        let TaskStats {
            worker,
            worker_rss,
            fuel_used,
            duration,
            peak_memory,
            ref stdout,
            ref stderr,
            output_truncated,
        } = stats;
        match outcome {
            Ok(Output::Numbers(values))
                if values.len() == 1
                    && stdout.is_empty()
                    && stderr.is_empty()
                    && !output_truncated =>
            {
                let counters = Counters {
                    worker,
                    worker_rss,
                    fuel_used,
                    duration,
                    peak_memory,
                };
                Stored::Number(values[0], counters)
            }
            outcome => Stored::Other(Box::new((outcome, stats))),
        }
    }

    fn stats(&self) -> TaskStats {
        match self {
            Stored::Number(_, c) => TaskStats {
                worker: c.worker,
                worker_rss: c.worker_rss,
                fuel_used: c.fuel_used,
                duration: c.duration,
                peak_memory: c.peak_memory,
                ..TaskStats::default()
            },
            Stored::Other(b) => b.1.clone(),
        }
    }

    fn into_parts(self) -> (Result<Output, TaskError>, TaskStats) {
        match self {
            Stored::Number(v, _) => {
                let stats = self.stats();
                (Ok(Output::Numbers(vec![v])), stats)
            }
            Stored::Other(b) => *b,
        }
    }
}

impl Completion {
    pub(crate) fn new(notify: Option<(NotifySender, usize)>) -> Arc<Self> {
        Arc::new(Completion {
            done_flag: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                notify,
                ..Slot::default()
            }),
            done: Condvar::new(),
            running: AtomicBool::new(false),
            holds_room: AtomicBool::new(false),
            coalesced: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome; later calls are ignored (the first outcome stands). Returns
    /// whether this one stood.
    pub(crate) fn complete(&self, outcome: Result<Output, TaskError>, stats: TaskStats) -> bool {
        match self.settle(outcome, stats) {
            Some(wake) => {
                self.wake(wake);
                true
            }
            None => false,
        }
    }

    /// Records the outcome (unless one stood already: then `None`) and returns who is to be
    /// told, for [`Self::wake`]. Between the two the task is done (`is_done`, a `wait` that
    /// comes takes the outcome) but nobody asleep on it is woken: the reply reader settles
    /// a whole frame of coalesced calls first, so an in-order waiter it wakes finds the
    /// frame's later calls done too, instead of sleeping again on each.
    pub(crate) fn settle(
        &self,
        outcome: Result<Output, TaskError>,
        stats: TaskStats,
    ) -> Option<Wake> {
        let mut slot = self.lock();
        if slot.outcome.is_some() {
            return None;
        }
        slot.outcome = Some(Stored::new(outcome, stats));
        if let Some(stream) = slot.stream.take() {
            // What was sent stays readable; a send blocked on a full channel gives up.
            stream.close();
        }
        self.done_flag.store(true, Ordering::Release);
        let wake = Wake {
            waker: slot.waker.take(),
            notify: slot.notify.take(),
            room: slot.room.take(),
            waiters: slot.waiters > 0,
        };
        Some(wake)
    }

    /// Tells those waiting for the task settled by [`Self::settle`] that it is done.
    pub(crate) fn wake(&self, wake: Wake) {
        let Wake {
            waker,
            notify,
            room,
            waiters,
        } = wake;
        drop(room);
        if waiters {
            self.done.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        if let Some((tx, index)) = notify {
            let _ = tx.try_send(index);
        }
    }

    /// Sends streamed output to whoever reads it. The channel is bounded: while it is full
    /// this blocks (the caller is the worker's reply reader, so the worker blocks in its
    /// write, and the task's wall clock runs on) until the reader takes a chunk, drops the
    /// stream, or the task ends in another way (killed at its deadline, cancelled), which
    /// closes the channel.
    pub(crate) fn stream(&self, chunk: OutputChunk) {
        let Some(tx) = self.lock().stream.clone() else {
            return;
        };
        let _ = tx.send_blocking(chunk);
    }

    pub(crate) fn set_stream(&self, tx: async_channel::Sender<OutputChunk>) {
        self.lock().stream = Some(tx);
    }

    /// Keeps the task's room in a bounded queue until [`Completion::leave_queue`] or the
    /// outcome.
    pub(crate) fn hold(&self, room: Admission) {
        self.lock().room = Some(room);
        self.holds_room.store(true, Ordering::Relaxed);
    }

    /// The task left the queue for a worker: its room is free for another call.
    pub(crate) fn leave_queue(&self) {
        // Looked at before it is swapped: most tasks hold no room, and a read leaves the
        // line shared with the thread that waits on the task.
        if self.holds_room.load(Ordering::Relaxed) && self.holds_room.swap(false, Ordering::Relaxed)
        {
            let room = self.lock().room.take();
            drop(room);
        }
    }

    pub(crate) fn mark_running(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    #[cfg(feature = "nats")]
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.is_done()
    }

    /// Says whether the task was sent in a `Calls` frame with others (see `coalesced`).
    pub(crate) fn mark_coalesced(&self, coalesced: bool) {
        if self.coalesced.load(Ordering::Relaxed) != coalesced {
            self.coalesced.store(coalesced, Ordering::Relaxed);
        }
    }

    /// Whether a waiter would yield-spin before sleeping: not for a task that travelled
    /// coalesced with others (its answer waits for the worker's next flush; an in-order
    /// waiter that caught up with a stream of such tasks would burn a core's time slice on
    /// every catch-up, taking it from the workers).
    pub(crate) fn spins(&self) -> bool {
        !self.coalesced.load(Ordering::Relaxed)
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
        if !self.done_flag.load(Ordering::Acquire) && self.spins() {
            let spin_until = Instant::now() + SPIN_BEFORE_SLEEP;
            while !self.done_flag.load(Ordering::Acquire) && Instant::now() < spin_until {
                std::thread::yield_now();
            }
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

    /// Waits until the task is done or `deadline` passes; whether it is done.
    pub(crate) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        self.completion.wait_until(deadline).is_some()
    }

    /// Waits for the task, then takes its outcome and stats out, without a copy.
    pub(crate) fn into_outcome(self) -> (Result<Output, TaskError>, TaskStats) {
        let mut slot = self.completion.wait_until(None).expect("no deadline");
        slot.outcome
            .take()
            .map(Stored::into_parts)
            .expect("a finished task keeps its outcome until taken")
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
        self.completion.lock().outcome.as_ref().map(Stored::stats)
    }
}

impl<T> Task<T> {
    /// Cancels the task: a queued task never runs, a running one is stopped; either then
    /// fails with [`TaskError::Cancelled`]. A task that already finished keeps its result.
    pub fn cancel(&self) {
        if let Some(events) = &self.events {
            // The one check a finished task pays (when it is dropped, too).
            if !self.completion.is_done() {
                // A cancelled task will not run: its room in a bounded queue is free now.
                self.completion.leave_queue();
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
    let outcome = match &slot.outcome {
        Some(Stored::Number(value, _)) => return T::from_values(std::slice::from_ref(value)),
        Some(Stored::Other(outcome)) => &outcome.0,
        None => unreachable!("decode is only called on finished tasks"),
    };
    match outcome {
        // A numeric call's results convert from the slice, without a copy of the vector
        // (`from_values` is `from_output` of the numbers, without the vector).
        Ok(Output::Numbers(values)) => T::from_values(values),
        Ok(output) => T::from_output(output.clone()),
        Err(e) => Err(e.clone()),
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
/// `concurrent.futures.as_completed` / `Pool.imap_unordered`: an [`Iterator`] (blocking) and a
/// [`Stream`](futures_core::Stream) (async). Made by [`Call::map_unordered`](crate::Call::map_unordered).
///
/// It owns the tasks it has not yielded yet: dropping it (say, after taking the first few
/// results) cancels those that have not finished, like dropping each [`Task`]; queued ones
/// never run and running ones are stopped. In a pool with a bounded queue it also holds the
/// inputs not submitted yet, and submits them as there is room.
#[must_use = "the tasks are submitted already; dropping this cancels those not finished"]
pub struct AsCompleted<T> {
    tasks: std::collections::HashMap<usize, Task<T>>,
    finished: Pin<Box<async_channel::Receiver<usize>>>,
    feed: Option<Feed>,
}

impl<T: FromOutput> AsCompleted<T> {
    pub(crate) fn new(
        tasks: Vec<(usize, Task<T>)>,
        finished: async_channel::Receiver<usize>,
        feed: Option<Feed>,
    ) -> Self {
        AsCompleted {
            tasks: tasks.into_iter().collect(),
            finished: Box::pin(finished),
            feed,
        }
    }

    /// Cancels every task not yet yielded, and submits no more inputs.
    pub fn cancel(&mut self) {
        self.feed = None;
        self.tasks.values().for_each(Task::cancel);
    }

    fn top_up(&mut self) {
        if let Some(feed) = &mut self.feed {
            let tasks = &mut self.tasks;
            feed.top_up(tasks.len(), |i, t| {
                tasks.insert(i, t);
            });
        }
    }

    /// The result of finished task `index`, if it is one of ours.
    fn take(&mut self, index: usize) -> Option<(usize, Result<T, TaskError>)> {
        let task = self.tasks.remove(&index)?;
        Some((index, task.wait()))
    }
}

impl<T: FromOutput> Iterator for AsCompleted<T> {
    type Item = (usize, Result<T, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.top_up();
            if self.tasks.is_empty() {
                match self.feed.as_mut()?.next_blocking() {
                    Some((i, t)) => {
                        self.tasks.insert(i, t);
                    }
                    None => {
                        self.feed = None;
                        return None;
                    }
                }
            }
            let index = self.finished.recv_blocking().ok()?;
            if let Some(item) = self.take(index) {
                return Some(item);
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let held = self.tasks.len();
        (held, self.feed.is_none().then_some(held))
    }
}

impl<T: FromOutput> futures_core::Stream for AsCompleted<T> {
    type Item = (usize, Result<T, TaskError>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            this.top_up();
            if this.tasks.is_empty() {
                let Some(feed) = this.feed.as_mut() else {
                    return Poll::Ready(None);
                };
                match feed.poll_next_task(cx) {
                    Poll::Ready(Some((i, t))) => {
                        this.tasks.insert(i, t);
                    }
                    Poll::Ready(None) => {
                        this.feed = None;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match this.finished.as_mut().poll_next(cx) {
                Poll::Ready(Some(index)) => {
                    if let Some(item) = this.take(index) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Results in input order, yielded as soon as each next one is ready (like `Pool.imap`):
/// an [`Iterator`] (blocking) and a [`Stream`](futures_core::Stream) (async). Made by
/// [`Call::imap`](crate::Call::imap).
///
/// It owns the tasks it has not yielded yet: dropping it (say, after an error cut the loop
/// short) cancels those that have not finished, like dropping each [`Task`]; queued ones never
/// run and running ones are stopped. In a pool with a bounded queue it also holds the inputs
/// not submitted yet, and submits them as there is room.
#[must_use = "the tasks are submitted already; dropping this cancels those not finished"]
pub struct Imap<T> {
    tasks: std::collections::VecDeque<Task<T>>,
    feed: Option<Feed>,
}

impl<T: FromOutput> Imap<T> {
    pub(crate) fn new(tasks: std::collections::VecDeque<Task<T>>, feed: Option<Feed>) -> Self {
        Imap { tasks, feed }
    }

    fn top_up(&mut self) {
        if let Some(feed) = &mut self.feed {
            let tasks = &mut self.tasks;
            feed.top_up(tasks.len(), |_, t| tasks.push_back(t));
        }
    }
}

impl<T: FromOutput> Iterator for Imap<T> {
    type Item = Result<T, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.top_up();
        if let Some(task) = self.tasks.pop_front() {
            return Some(task.wait());
        }
        match self.feed.as_mut()?.next_blocking() {
            Some((_, task)) => Some(task.wait()),
            None => {
                self.feed = None;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let held = self.tasks.len();
        (held, self.feed.is_none().then_some(held))
    }
}

impl<T: FromOutput> futures_core::Stream for Imap<T> {
    type Item = Result<T, TaskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.top_up();
        if this.tasks.is_empty() {
            let Some(feed) = this.feed.as_mut() else {
                return Poll::Ready(None);
            };
            match feed.poll_next_task(cx) {
                Poll::Ready(Some((_, t))) => this.tasks.push_back(t),
                Poll::Ready(None) => {
                    this.feed = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let Some(front) = this.tasks.front_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(front).poll(cx) {
            Poll::Ready(result) => {
                this.tasks.pop_front();
                Poll::Ready(Some(result))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A streaming command's output as the program writes it: an [`Iterator`] (blocking) and a
/// [`Stream`](futures_core::Stream) (async) of [`OutputChunk`]s, ending when the task does.
/// Made by [`CommandCall::submit_streaming`](crate::CommandCall::submit_streaming), which explains the
/// bounded buffer (a reader that falls behind holds the program up in its write).
/// Dropping it discards the rest of the output; the program runs on.
pub struct OutputStream {
    rx: Pin<Box<async_channel::Receiver<OutputChunk>>>,
}

impl std::fmt::Debug for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputStream")
            .field("buffered", &self.rx.len())
            .finish()
    }
}

impl OutputStream {
    pub(crate) fn new(rx: async_channel::Receiver<OutputChunk>) -> Self {
        OutputStream { rx: Box::pin(rx) }
    }

    /// How many chunks are written and not read yet (at most
    /// [`STREAM_CHUNKS`](crate::command::STREAM_CHUNKS)).
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }

    /// The next chunk if one is ready now; `Err(true)` when the output has ended,
    /// `Err(false)` when nothing is ready yet.
    pub fn try_next(&self) -> Result<OutputChunk, bool> {
        self.rx.try_recv().map_err(|e| e.is_closed())
    }
}

impl Iterator for OutputStream {
    type Item = OutputChunk;

    fn next(&mut self) -> Option<OutputChunk> {
        self.rx.recv_blocking().ok()
    }
}

impl futures_core::Stream for OutputStream {
    type Item = OutputChunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<OutputChunk>> {
        self.get_mut().rx.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task on a fake pool: the receiver gets what the task sends the dispatcher.
    fn task(
        id: TaskId,
    ) -> (
        Task<i64>,
        Arc<Completion>,
        crossbeam_channel::Receiver<Event>,
    ) {
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

    fn stats(stdout: &[u8]) -> TaskStats {
        TaskStats {
            worker: 42,
            worker_rss: 1 << 20,
            fuel_used: 17,
            duration: Duration::from_micros(3),
            peak_memory: 65536,
            stdout: stdout.to_vec(),
            stderr: Vec::new(),
            output_truncated: false,
        }
    }

    /// A one-number outcome is kept inline (without its vector), the rest boxed: either way
    /// a task gives back exactly what it was settled with.
    #[test]
    fn every_outcome_comes_back_as_it_was_settled() {
        let outcomes = [
            (Ok(Output::Numbers(vec![Value::I64(-9)])), stats(b""), true),
            // Printed something: its output goes with it, boxed.
            (
                Ok(Output::Numbers(vec![Value::I64(-9)])),
                stats(b"hi\n"),
                false,
            ),
            (
                Ok(Output::Numbers(vec![Value::I32(1), Value::F64(0.5)])),
                stats(b""),
                false,
            ),
            (Ok(Output::Numbers(Vec::new())), stats(b""), false),
            (Ok(Output::Json(b"[1]".to_vec())), stats(b""), false),
            (Err(TaskError::Exit { code: 3 }), stats(b""), false),
        ];
        for (outcome, stats, inline) in outcomes {
            let (t, completion, _inbox) = task(1);
            assert!(completion.complete(outcome.clone(), stats.clone()));
            let slot = completion.lock();
            assert_eq!(
                matches!(slot.outcome, Some(Stored::Number(..))),
                inline,
                "{outcome:?}"
            );
            drop(slot);
            assert_eq!(t.stats().as_ref(), Some(&stats));
            assert_eq!(t.into_outcome(), (outcome, stats));
        }
        // A later outcome does not replace the first.
        let (t, completion, _inbox) = task(2);
        assert!(completion.complete(Ok(Output::Numbers(vec![Value::I64(5)])), stats(b"")));
        assert!(!completion.fail(TaskError::Exit { code: 3 }));
        assert_eq!(t.wait(), Ok(5));
    }
}
