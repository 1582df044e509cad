//! What the dispatcher counts for [`Pool::stats`](crate::Pool::stats).

use std::collections::BTreeMap;

use super::Job;
use crate::error::TaskError;
use crate::value::Output;

/// A snapshot of a pool's work and workers ([`Pool::stats`](crate::Pool::stats)).
///
/// Tasks are counted in calls: each call of a batch (`map` sends calls in batches) counts
/// as one. A finished call is counted once the dispatcher has heard of it, which can be a
/// moment after its result reached its waiter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Calls waiting in the pool's queue (not sent to a worker yet).
    pub queued: u64,
    /// Calls sent to a worker and not finished: the one it runs and those queued behind it
    /// in its pipeline.
    pub running: u64,
    /// Calls that finished with a result.
    pub done: u64,
    /// Calls that failed, by [`TaskError::kind`] (cancelled ones included, as `cancelled`).
    pub failed: BTreeMap<&'static str, u64>,
    /// Worker processes alive now.
    pub workers_live: usize,
    /// How many times a worker process was replaced by a new one (after it died, was killed
    /// at a deadline, or was retired).
    pub workers_restarted: u64,
    /// Each live worker's process id and resident memory in bytes, as it reported with its
    /// latest finished task (0 before its first).
    pub worker_rss: Vec<(u32, u64)>,
}

impl PoolStats {
    /// All failed calls, whatever their kind.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The resident memory of all live workers together, in bytes.
    pub fn worker_rss_total(&self) -> u64 {
        self.worker_rss.iter().map(|(_, rss)| rss).sum()
    }
}

/// How the calls whose outcome the pool delivered ended.
#[derive(Default)]
pub(crate) struct Counts {
    pub done: u64,
    pub failed: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Fails `job` with `error` and counts its calls, unless it was answered before.
    pub(crate) fn fail(&mut self, job: &Job, error: TaskError) {
        let kind = error.kind();
        if job.completion.fail(error) {
            *self.failed.entry(kind).or_default() += job.input.calls() as u64;
        }
    }

    /// Fails a job that was in the queue (or on its way to it) with `error`; one a cancel
    /// answered already counts as cancelled.
    pub(crate) fn fail_queued(&mut self, job: &Job, error: TaskError) {
        if !job.completion.is_done() {
            self.fail(job, error);
        } else {
            self.cancelled_in_queue(job);
        }
    }

    /// Counts a job that a cancel answered while it was queued, as it leaves the queue.
    pub(crate) fn cancelled_in_queue(&mut self, job: &Job) {
        *self.failed.entry("cancelled").or_default() += job.input.calls() as u64;
    }

    /// Counts the calls of an outcome a worker delivered.
    pub(crate) fn add(&mut self, tally: &Tally) {
        self.done += tally.ok;
        for kind in &tally.failed {
            *self.failed.entry(kind).or_default() += 1;
        }
    }
}

/// How the calls of one delivered outcome ended (nothing when an earlier outcome stood).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub ok: u64,
    /// The kind of each failed call (empty, without allocating, when none failed).
    pub failed: Vec<&'static str>,
}

impl Tally {
    /// The tally of the outcome of a task of `calls` calls (a batch's, call by call).
    pub(crate) fn of(outcome: &Result<Output, TaskError>, calls: u64) -> Tally {
        let failed: Vec<&'static str> = match outcome {
            Err(e) => vec![e.kind(); calls.max(1) as usize],
            Ok(Output::Batch(items)) => items
                .iter()
                .filter_map(|r| r.as_ref().err().map(TaskError::kind))
                .collect(),
            Ok(Output::NumberBatch { failures, .. }) => {
                failures.iter().map(|(_, e)| e.kind()).collect()
            }
            Ok(_) => Vec::new(),
        };
        Tally {
            ok: calls.saturating_sub(failed.len() as u64),
            failed,
        }
    }

    /// Adds `other`'s calls to these.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed.extend(other.failed);
    }
}
