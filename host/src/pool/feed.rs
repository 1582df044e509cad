//! Inputs taken from the caller's iterator as there is room in the pool's queue: how `imap`
//! and `map_unordered` submit in a pool with a bounded queue
//! ([`PoolBuilder::max_queued`](super::PoolBuilder::max_queued)), so that an endless iterator
//! runs in bounded memory. (In an unbounded pool the feed is drained at once.)
//!
//! The iterator holding the feed ([`Imap`](super::Imap), [`AsCompleted`](super::AsCompleted))
//! tops it up whenever it is asked for a result: inputs are submitted while the queue has
//! room and it holds fewer than its window of tasks (queued, running, or finished and not
//! yet yielded). Only when it holds none does it wait for room, blocking (as an `Iterator`)
//! or not (as a `Stream`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::TaskError;
use crate::value::{FromOutput, Input};

use super::gate::{Admission, Refused};
use super::{closed_error, Call, NotifySender, Task};

type Inputs = Box<dyn Iterator<Item = Result<Input, TaskError>> + Send>;
type Admitting = Pin<Box<dyn Future<Output = Option<Admission>> + Send>>;

pub(crate) struct Feed {
    call: Call,
    inputs: Inputs,
    /// Index of the next input.
    index: usize,
    /// An input taken from `inputs` that found no room yet (it goes before any other).
    pending: Option<Input>,
    /// An async wait for room for `pending`.
    admitting: Option<Admitting>,
    /// Told each task's index when it finishes (for `map_unordered`).
    pub(crate) notify: Option<NotifySender>,
}

impl Feed {
    pub(crate) fn new(call: Call, inputs: Inputs) -> Feed {
        Feed {
            call,
            inputs,
            index: 0,
            pending: None,
            admitting: None,
            notify: None,
        }
    }

    /// Most tasks the iterator holds: the queue's bound, plus room for what the workers run
    /// and what finished out of order.
    fn window(&self) -> usize {
        let inner = &self.call.pool.inner;
        inner
            .gate
            .as_ref()
            .map_or(usize::MAX, |g| g.limit().saturating_add(4 * inner.workers))
    }

    /// Submits every input now (an unbounded pool).
    pub(crate) fn drain<T: FromOutput>(&mut self) -> Vec<(usize, Task<T>)> {
        let tasks = self
            .call
            .submit_inputs(&mut self.inputs, self.notify.clone());
        let first = self.index;
        self.index += tasks.len();
        (first..).zip(tasks).collect()
    }

    /// Makes and sends the task of input `index`.
    fn task<T: FromOutput>(
        &mut self,
        input: Result<Input, TaskError>,
        admission: Option<Admission>,
    ) -> (usize, Task<T>) {
        let index = self.index;
        self.index += 1;
        let notify = self.notify.clone().map(|tx| (tx, index));
        let (task, job) = self.call.job_for(input, notify, None, admission);
        if let Some(job) = job {
            self.call.send(std::iter::once(job));
        }
        (index, task)
    }

    /// The next input: the one waiting for room, else the iterator's next.
    fn next_input(&mut self) -> Option<Result<Input, TaskError>> {
        match self.pending.take() {
            Some(input) => Some(Ok(input)),
            None => self.inputs.next(),
        }
    }

    /// Submits inputs while the queue has room and fewer than the window's tasks are
    /// `held`; never waits.
    pub(crate) fn top_up<T: FromOutput>(
        &mut self,
        mut held: usize,
        mut add: impl FnMut(usize, Task<T>),
    ) {
        let window = self.window();
        while held < window && self.admitting.is_none() {
            let Some(input) = self.next_input() else {
                return;
            };
            let (index, task) = match input {
                Err(e) => self.task(Err(e), None),
                Ok(input) => match self.try_admit() {
                    Ok(admission) => self.task(Ok(input), admission),
                    Err(Refused::Full) => {
                        self.pending = Some(input);
                        return;
                    }
                    Err(Refused::Closed) => self.task(Err(closed_error()), None),
                },
            };
            add(index, task);
            held += 1;
        }
    }

    fn try_admit(&self) -> Result<Option<Admission>, Refused> {
        match &self.call.pool.inner.gate {
            Some(gate) => gate.try_admit(1).map(Some),
            None => Ok(None),
        }
    }

    /// The next input's task, waiting (blocking this thread) for room; `None` when the
    /// inputs are exhausted.
    pub(crate) fn next_blocking<T: FromOutput>(&mut self) -> Option<(usize, Task<T>)> {
        let admitted = self.admitting.take().map(pollster::block_on);
        let input = self.next_input()?;
        Some(match input {
            Err(e) => self.task(Err(e), None),
            Ok(input) => {
                let admission = match (admitted, &self.call.pool.inner.gate) {
                    (Some(admitted), _) => admitted,
                    (None, Some(gate)) => gate.admit(1),
                    (None, None) => return Some(self.task(Ok(input), None)),
                };
                match admission {
                    Some(a) => self.task(Ok(input), Some(a)),
                    None => self.task(Err(closed_error()), None),
                }
            }
        })
    }

    /// [`Feed::next_blocking`] without blocking: `Pending` while waiting for room.
    pub(crate) fn poll_next_task<T: FromOutput>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(usize, Task<T>)>> {
        if self.admitting.is_none() {
            let Some(input) = self.next_input() else {
                return Poll::Ready(None);
            };
            let input = match input {
                Err(e) => return Poll::Ready(Some(self.task(Err(e), None))),
                Ok(input) => input,
            };
            match self.try_admit() {
                Ok(admission) => return Poll::Ready(Some(self.task(Ok(input), admission))),
                Err(Refused::Closed) => {
                    return Poll::Ready(Some(self.task(Err(closed_error()), None)))
                }
                Err(Refused::Full) => {
                    self.pending = Some(input);
                    if let Some(gate) = &self.call.pool.inner.gate {
                        self.admitting = Some(Box::pin(gate.admit_async(1)));
                    }
                }
            }
        }
        let Some(waiting) = self.admitting.as_mut() else {
            // No gate to wait on (cannot happen: only a full gate refuses); submit as is.
            let input = self.next_input();
            return Poll::Ready(input.map(|i| self.task(i, None)));
        };
        let admitted = match waiting.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(admitted) => admitted,
        };
        self.admitting = None;
        let Some(input) = self.pending.take() else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(match admitted {
            Some(a) => self.task(Ok(input), Some(a)),
            None => self.task(Err(closed_error()), None),
        }))
    }
}
