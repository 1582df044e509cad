//! The host's reader of one worker's replies. It hands each finished task's outcome straight
//! to whoever waits for it (through [`Answers`], filled by the dispatcher as it sends tasks),
//! and tells the dispatcher only what it needs for its bookkeeping ([`Heard`]) — so a
//! result reaches its waiter without a hop through the dispatcher thread.

use std::collections::VecDeque;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::dispatch::Event;
use crate::pool::task::Completion;
use crate::protocol::{self, Reply, TaskId};
use crate::worker::WorkerRef;

/// The tasks sent to one worker process and not answered yet, in the order sent (the order
/// a worker answers them in: looking one up is a look at the front).
#[derive(Clone, Default)]
pub(crate) struct Answers(Arc<Mutex<Waiting>>);

type Waiting = VecDeque<(TaskId, Arc<Completion>)>;

impl Answers {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `task` before its request is written, so its reply finds its waiter.
    pub(crate) fn expect(&self, task: TaskId, completion: Arc<Completion>) {
        self.lock().push_back((task, completion));
    }

    fn take(&self, task: TaskId) -> Option<Arc<Completion>> {
        let mut waiting = self.lock();
        let pos = waiting.iter().position(|(t, _)| *t == task)?;
        waiting.remove(pos).map(|(_, c)| c)
    }

    fn get(&self, task: TaskId) -> Option<Arc<Completion>> {
        let waiting = self.lock();
        waiting
            .iter()
            .find(|(t, _)| *t == task)
            .map(|(_, c)| c.clone())
    }
}

/// A reply, as the dispatcher sees it once the outcome went to its waiter.
pub(crate) enum Heard {
    /// The worker has started.
    Ready,
    /// A task finished (its outcome is delivered already): how long it ran, and the
    /// worker's resident memory.
    Done {
        task: TaskId,
        took: Duration,
        rss: u64,
    },
    /// The worker asks to be replaced once its tasks are done.
    Retire,
}

/// Reads `stdout` until it ends: outcomes and streamed output to their tasks, [`Heard`]
/// batches (one event, one wake-up of the dispatcher, per burst of replies) and finally
/// [`Event::Exited`] to `events`.
pub(crate) fn read_replies(
    stdout: impl Read,
    who: WorkerRef,
    answers: &Answers,
    events: &Sender<Event>,
) {
    let mut r = BufReader::with_capacity(64 << 10, stdout);
    let mut buf = Vec::new();
    loop {
        let mut batch = Vec::new();
        let ended = loop {
            match protocol::read::<_, Reply>(&mut r, &mut buf) {
                Ok(Some(reply)) => batch.push(deliver(reply, answers)),
                Ok(None) | Err(_) => break true,
            }
            if !protocol::frame_buffered(r.buffer()) {
                break false;
            }
        };
        let batch: Vec<Heard> = batch.into_iter().flatten().collect();
        if !batch.is_empty() && events.send(Event::Replies(who, batch)).is_err() {
            return;
        }
        if ended {
            let _ = events.send(Event::Exited(who));
            return;
        }
    }
}

/// Delivers what a reply carries for its task; returns what the dispatcher must hear.
fn deliver(reply: Reply, answers: &Answers) -> Option<Heard> {
    match reply {
        Reply::Ready { .. } => Some(Heard::Ready),
        Reply::Output { task, chunk } => {
            if let Some(c) = answers.get(task) {
                c.stream(chunk);
            }
            None
        }
        Reply::Done {
            task,
            outcome,
            stats,
        } => {
            let (took, rss) = (stats.duration, stats.worker_rss);
            // The first outcome stands: a task the dispatcher gave up on stays failed.
            if let Some(c) = answers.take(task) {
                c.complete(outcome, stats);
            }
            Some(Heard::Done { task, took, rss })
        }
        Reply::Retire => Some(Heard::Retire),
    }
}
