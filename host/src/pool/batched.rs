//! Calls that travel in batches: one job, one frame each way and one answer for many calls
//! of an export. [`Call::map`] sends its calls this way with [`Instances::Fresh`] (each call
//! still runs in a store and instance of its own, as a task would: only the transport is
//! shared); [`ReusingCall::map`](super::ReusingCall::map) with [`Instances::Shared`].
//!
//! The calls are checked first ([`check`]): plain numeric arguments are laid end to end as
//! they are converted (no allocation per call), other inputs kept one each.
//!
//! A fresh batch whose worker dies (or is killed for a call stuck in a host call) cannot
//! tell which call did it, so its calls are run again one task each: the culprit then
//! fails alone, with its own error, and the others get their results.

use std::ops::Range;

use crate::error::TaskError;
use crate::module::ExportKind;
use crate::protocol::TaskStats;
use crate::value::{Args, FromOutput, Input, Instances, Output, Value};

use super::gate::Gate;
use super::{Call, Task};

/// Most calls in one fresh batch: enough to spread the cost of a task over many calls,
/// few enough that the workers stay evenly loaded and a batch run again costs little.
pub(super) const MAX_FRESH_BATCH: usize = 64;

/// About how much work one fresh batch should hold, judged from a first call's duration.
pub(super) const BATCH_WORK: std::time::Duration = std::time::Duration::from_millis(1);

/// The inputs of a `map`, checked.
pub(super) struct Calls {
    /// Per input, in order: `None` for a call that can run, or why it cannot.
    errors: Vec<Option<TaskError>>,
    /// The calls that can run, in order.
    valid: Valid,
}

enum Valid {
    /// Arguments of plain numeric calls, `arity` values each, end to end.
    Flat { values: Vec<Value>, arity: usize },
    /// One input per call.
    Each(Vec<Input>),
}

/// Checks every input of a `map` against the export (compiling the code its limits need
/// first). With `refuse_commands`, a command run is an error (it needs an instance of its
/// own, which a shared batch cannot give).
pub(super) fn check<A: Args>(
    call: &Call,
    inputs: impl IntoIterator<Item = A>,
    refuse_commands: bool,
) -> Calls {
    let inputs = inputs.into_iter();
    let ready = call
        .pool
        .prepare(&call.shape.module, &call.shape.limits)
        .and_then(|()| call.check_size(Input::Numbers(Vec::new())).map(drop));
    if let Err(e) = ready {
        return Calls {
            errors: inputs.map(|_| Some(e.clone())).collect(),
            valid: Valid::Each(Vec::new()),
        };
    }
    let refused = |input: Result<Input, TaskError>| match input {
        Ok(Input::Command(_)) if refuse_commands => Err(TaskError::bad_input(
            "a command run needs an instance of its own: use map_commands, not reuse_instance",
        )),
        other => other,
    };
    let mut errors = Vec::with_capacity(inputs.size_hint().0);
    // Exports with parameters or results take numbers only (`_start`-like ones take
    // commands too, and go one input each).
    let params = match call
        .shape
        .module
        .export(&call.shape.export)
        .map(|e| &e.kind)
    {
        Some(ExportKind::Numeric { params, results })
            if !(params.is_empty() && results.is_empty()) =>
        {
            Some(params.clone())
        }
        _ => None,
    };
    let Some(params) = params else {
        let mut valid = Vec::new();
        for args in inputs {
            match refused(call.validate(args)) {
                Ok(input) => {
                    valid.push(input);
                    errors.push(None);
                }
                Err(e) => errors.push(Some(e)),
            }
        }
        return Calls {
            errors,
            valid: Valid::Each(valid),
        };
    };
    let mut values = Vec::with_capacity(inputs.size_hint().0 * params.len());
    for args in inputs {
        let start = values.len();
        let checked = match args.push_numbers(&mut values) {
            Ok(()) => call.check_numbers(&mut values[start..], &params),
            // Not numbers: its own error (JSON for a numeric export, a command...).
            Err(input) => Err(input
                .and_then(|i| call.validate(i))
                .err()
                .unwrap_or_else(|| TaskError::bad_input("not the arguments of a plain call"))),
        };
        match checked {
            Ok(()) => errors.push(None),
            Err(e) => {
                values.truncate(start);
                errors.push(Some(e));
            }
        }
    }
    Calls {
        errors,
        valid: Valid::Flat {
            values,
            arity: params.len(),
        },
    }
}

impl Calls {
    /// How many calls can run.
    pub(super) fn len(&self) -> usize {
        match &self.valid {
            Valid::Flat { values, arity } if *arity > 0 => values.len() / arity,
            Valid::Flat { .. } => self.errors.iter().filter(|e| e.is_none()).count(),
            Valid::Each(items) => items.len(),
        }
    }

    /// Whether any call is a command run.
    pub(super) fn has_commands(&self) -> bool {
        matches!(&self.valid, Valid::Each(items) if items.iter().any(|i| matches!(i, Input::Command(_))))
    }

    /// Call `i` as the input of a task of its own.
    fn input(&self, i: usize) -> Input {
        match &self.valid {
            Valid::Flat { values, arity } => {
                Input::Numbers(values[i * arity..(i + 1) * arity].to_vec())
            }
            Valid::Each(items) => items[i].clone(),
        }
    }

    /// Whether the calls are plain numeric ones (laid end to end, and batched compactly).
    fn numeric(&self) -> bool {
        matches!(self.valid, Valid::Flat { .. })
    }

    /// Calls `range` as one batch input; `call_stats`: its answer carries each call's stats
    /// (plain numeric calls only).
    fn batch(&self, range: Range<usize>, instances: Instances, call_stats: bool) -> Input {
        match &self.valid {
            Valid::Flat { values, arity } => Input::NumberBatch {
                calls: range.len() as u32,
                values: values[range.start * arity..range.end * arity].to_vec(),
                instances,
                call_stats,
            },
            Valid::Each(items) => Input::Batch {
                items: items[range].to_vec(),
                instances,
            },
        }
    }

    /// Every input's result: the errors found by [`check`] in place, `results` (one per
    /// call that could run, in order) elsewhere.
    pub(super) fn merge<T>(
        self,
        results: impl IntoIterator<Item = Result<T, TaskError>>,
    ) -> Vec<Result<T, TaskError>> {
        self.merge_with(results, Err)
    }

    /// [`Self::merge`] of any kind of result: `failed` makes an input's result of its error.
    fn merge_with<R>(
        self,
        results: impl IntoIterator<Item = R>,
        failed: impl Fn(TaskError) -> R,
    ) -> Vec<R> {
        let mut results = results.into_iter();
        self.errors
            .into_iter()
            .map(|e| match e {
                Some(e) => failed(e),
                None => results
                    .next()
                    .unwrap_or_else(|| failed(TaskError::worker_lost("a batch lost this call"))),
            })
            .collect()
    }
}

/// Submits calls `range` as one task each.
pub(super) fn singles<T: FromOutput>(
    call: &Call,
    calls: &Calls,
    range: Range<usize>,
) -> Vec<Task<T>> {
    call.submit_inputs(range.map(|i| Ok(calls.input(i))), None)
}

/// The most calls one batch of `call` may hold: [`MAX_FRESH_BATCH`], and no more than a
/// worker runs before it is replaced or than a bounded queue admits.
pub(super) fn largest(call: &Call) -> usize {
    let inner = &call.pool.inner;
    MAX_FRESH_BATCH
        .min(
            inner
                .max_tasks_per_worker
                .map_or(usize::MAX, |n| n as usize),
        )
        .min(inner.gate.as_ref().map_or(usize::MAX, Gate::limit))
        .max(1)
}

/// Submits calls `range` in batches of `chunk` (each call counts in a bounded queue); each
/// batch's calls and its task, in order.
fn submit(
    call: &Call,
    calls: &Calls,
    range: Range<usize>,
    chunk: usize,
    instances: Instances,
    call_stats: bool,
) -> Vec<(Range<usize>, Task<Output>)> {
    let chunk = chunk.max(1);
    let mut parts = Vec::with_capacity(range.len().div_ceil(chunk));
    let mut out = super::Outbox::new(call);
    for start in range.clone().step_by(chunk) {
        let r = start..(start + chunk).min(range.end);
        let (task, job) = match out.admit(r.len()) {
            Ok(admission) => call.job_for::<Output>(
                Ok(calls.batch(r.clone(), instances, call_stats)),
                None,
                None,
                admission,
            ),
            Err(closed) => call.job_for::<Output>(Err(closed), None, None, None),
        };
        parts.push((r, task));
        out.push(job.map(|mut job| {
            // A fresh batch is never re-run whole: its calls are, one task each.
            if instances == Instances::Fresh {
                job.retries = 0;
            }
            job
        }));
    }
    parts
}

/// The results of the calls of `call`'s export `range` carries, from its batch's `answer`:
/// a fresh batch whose worker was lost has its calls run again one task each (waited for
/// here), so only the call that did it fails.
fn answers<T: FromOutput>(
    call: &Call,
    calls: &Calls,
    range: Range<usize>,
    answer: Result<Output, TaskError>,
    instances: Instances,
) -> Result<Vec<Result<T, TaskError>>, Vec<Task<T>>> {
    match answer {
        Err(e) if instances == Instances::Fresh && run_again(&e) => {
            Err(singles(call, calls, range))
        }
        answer => Ok(spread(answer, range.len(), results_per_call(call))),
    }
}

/// How many results each call of `call`'s export gives (`None` unless a numeric export).
fn results_per_call(call: &Call) -> Option<usize> {
    match call
        .shape
        .module
        .export(&call.shape.export)
        .map(|e| &e.kind)
    {
        Some(ExportKind::Numeric { results, .. }) => Some(results.len()),
        _ => None,
    }
}

/// Runs calls `range` in batches of `chunk`; their results in order.
pub(super) fn map<T: FromOutput>(
    call: &Call,
    calls: &Calls,
    range: Range<usize>,
    chunk: usize,
    instances: Instances,
) -> Vec<Result<T, TaskError>> {
    let parts = submit(call, calls, range.clone(), chunk, instances, false);
    let mut results = Vec::with_capacity(range.len());
    for (r, task) in parts {
        match answers(call, calls, r, task.into_outcome().0, instances) {
            Ok(answers) => results.extend(answers),
            Err(again) => results.extend(again.iter().map(Task::wait)),
        }
    }
    results
}

/// Calls submitted together, with [`Call::submit_batch`]: a handle on their results, each
/// with its call's own stats.
///
/// Dropping it before it is done cancels the calls that have not finished, as dropping a
/// [`Task`] does.
#[must_use = "the calls are submitted already; dropping this cancels those not finished"]
pub struct Batch<T> {
    call: Call,
    calls: Calls,
    parts: Vec<Part>,
    _output: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("calls", &self.len())
            .field("tasks", &self.parts.len())
            .field("done", &self.is_done())
            .finish()
    }
}

/// Some calls of a [`Batch`]: a batch of several (`range` of its calls) or a task of one.
enum Part {
    Many(Range<usize>, Task<Output>),
    One(Task<Output>),
}

impl Part {
    fn task(&self) -> &Task<Output> {
        match self {
            Part::Many(_, t) | Part::One(t) => t,
        }
    }
}

impl<T> Batch<T> {
    /// How many calls (inputs) the batch holds.
    pub fn len(&self) -> usize {
        self.calls.errors.len()
    }

    /// Whether the batch holds no call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every call has finished (a call whose worker was lost may still have to run
    /// again, in [`Batch::wait`]).
    pub fn is_done(&self) -> bool {
        self.parts.iter().all(|p| p.task().is_done())
    }

    /// Waits at most `timeout` for every call to finish; whether they have (see
    /// [`Batch::is_done`]).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> bool {
        // A wait too long for the clock to express is a wait without a deadline.
        let deadline = std::time::Instant::now().checked_add(timeout);
        self.parts.iter().all(|p| p.task().wait_done(deadline))
    }
}

impl<T: FromOutput> Batch<T> {
    pub(super) fn submit(call: &Call, calls: Calls) -> Self {
        let n = calls.len();
        let parts = if calls.numeric() && n >= 2 {
            submit(call, &calls, 0..n, largest(call), Instances::Fresh, true)
                .into_iter()
                .map(|(r, t)| Part::Many(r, t))
                .collect()
        } else {
            singles::<Output>(call, &calls, 0..n)
                .into_iter()
                .map(Part::One)
                .collect()
        };
        Batch {
            call: call.clone(),
            calls,
            parts,
            _output: std::marker::PhantomData,
        }
    }

    /// Blocks until every call has finished; each input's result and its call's stats, in
    /// input order (an input refused before it ran has default stats).
    pub fn wait(self) -> Vec<(Result<T, TaskError>, TaskStats)> {
        let Batch {
            call, calls, parts, ..
        } = self;
        let mut results = Vec::with_capacity(calls.len());
        for part in parts {
            match part {
                Part::One(task) => {
                    let (answer, stats) = task.into_outcome();
                    results.push((answer.and_then(T::from_output), stats));
                }
                Part::Many(r, task) => {
                    let (mut answer, stats) = task.into_outcome();
                    let mut each = match &mut answer {
                        Ok(Output::NumberBatch { call_stats, .. }) => std::mem::take(call_stats),
                        _ => Vec::new(),
                    }
                    .into_iter();
                    match answers::<T>(&call, &calls, r, answer, Instances::Fresh) {
                        Ok(answers) => results.extend(answers.into_iter().map(|a| {
                            let mut s = each.next().unwrap_or_default();
                            s.worker = stats.worker;
                            s.worker_rss = stats.worker_rss;
                            (a, s)
                        })),
                        Err(again) => results.extend(again.into_iter().map(|t| {
                            let result = t.wait();
                            (result, t.stats().unwrap_or_default())
                        })),
                    }
                }
            }
        }
        calls.merge_with(results, |e| (Err(e), TaskStats::default()))
    }
}

/// Whether a fresh batch that failed whole should be run again call by call: its worker
/// died or was killed, and the batch cannot say which call did it.
fn run_again(e: &TaskError) -> bool {
    matches!(e, TaskError::WorkerLost { .. } | TaskError::Timeout { .. })
}

/// Splits a batch's answer into its `calls` results.
fn spread<T: FromOutput>(
    answer: Result<Output, TaskError>,
    calls: usize,
    per_call: Option<usize>,
) -> Vec<Result<T, TaskError>> {
    match answer {
        Ok(Output::Batch(items)) if items.len() == calls => items
            .into_iter()
            .map(|r| r.and_then(T::from_output))
            .collect(),
        Ok(Output::NumberBatch {
            values, failures, ..
        }) => {
            let per_call = per_call.unwrap_or(1);
            let mut values = values.chunks(per_call.max(1));
            let mut failures = failures.into_iter().peekable();
            (0..calls)
                .map(|i| match failures.next_if(|(at, _)| *at as usize == i) {
                    Some((_, e)) => Err(e),
                    None if per_call == 0 => T::from_values(&[]),
                    None => values.next().map_or_else(
                        || {
                            Err(TaskError::BadOutput {
                                message: "the worker's batch answer is short".into(),
                            })
                        },
                        T::from_values,
                    ),
                })
                .collect()
        }
        Ok(_) => (0..calls)
            .map(|_| {
                Err(TaskError::BadOutput {
                    message: "the worker answered a batch with something else".into(),
                })
            })
            .collect(),
        Err(e) => (0..calls).map(|_| Err(e.clone())).collect(),
    }
}
