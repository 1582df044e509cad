//! Where submitted jobs wait for the dispatcher: a vector under a lock, swapped whole.
//!
//! A submission through the event channel cost a vector and a channel slot per `submit`,
//! both made on the submitting thread and freed on the dispatcher's (glibc's allocator is
//! slow at exactly that), and a wake-up of the dispatcher per call when it had caught up.
//! Here a submission is a push under a lock; only the push that finds the inbox empty sends
//! an event ([`Event::Submitted`](super::Event)), and the dispatcher takes everything at
//! once by swapping in an emptied vector of its own, so in a steady stream nothing is
//! allocated per call.
//!
//! Order: a thread's submissions reach the queue in the order it made them, before any
//! event it sends after them (the dispatcher empties the inbox before it handles each event,
//! so a `shutdown` after a `submit` finds the job queued). When the dispatcher ends it
//! closes the inbox: later pushes are refused, and what was left is handed back to fail.

use std::sync::{Mutex, MutexGuard};

use super::Job;

#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    jobs: Vec<Job>,
    closed: bool,
}

/// What a push did.
pub(crate) enum Pushed {
    /// Queued behind others: the dispatcher was told already and takes these with them.
    Behind,
    /// Queued in an empty inbox: the dispatcher must be told.
    First,
    /// The dispatcher has ended: the jobs, not taken.
    Closed(Vec<Job>),
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `jobs` (in order) for the dispatcher.
    pub(crate) fn push(&self, jobs: impl IntoIterator<Item = Job>) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            return Pushed::Closed(jobs.into_iter().collect());
        }
        let was_empty = state.jobs.is_empty();
        state.jobs.extend(jobs);
        match (was_empty, state.jobs.is_empty()) {
            (true, false) => Pushed::First,
            _ => Pushed::Behind,
        }
    }

    /// Moves every job waiting into `into` (which must be empty; its room is kept for the
    /// next pushes). Returns whether there were any.
    pub(crate) fn take(&self, into: &mut Vec<Job>) -> bool {
        debug_assert!(into.is_empty());
        let mut state = self.lock();
        if state.jobs.is_empty() {
            return false;
        }
        std::mem::swap(&mut state.jobs, into);
        true
    }

    /// Refuses later pushes; returns the jobs never taken.
    pub(crate) fn close(&self) -> Vec<Job> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.jobs)
    }
}
