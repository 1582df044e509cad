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
use crate::value::{Args, FromOutput, Input, Instances, Output, Value};

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

    /// Calls `range` as one batch input.
    fn batch(&self, range: Range<usize>, instances: Instances) -> Input {
        match &self.valid {
            Valid::Flat { values, arity } => Input::NumberBatch {
                calls: range.len() as u32,
                values: values[range.start * arity..range.end * arity].to_vec(),
                instances,
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
        let mut results = results.into_iter();
        self.errors
            .into_iter()
            .map(|e| match e {
                Some(e) => Err(e),
                None => results
                    .next()
                    .unwrap_or_else(|| Err(TaskError::worker_lost("a batch lost this call"))),
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

/// Runs calls `range` in batches of `chunk`; their results in order.
pub(super) fn map<T: FromOutput>(
    call: &Call,
    calls: &Calls,
    range: Range<usize>,
    chunk: usize,
    instances: Instances,
) -> Vec<Result<T, TaskError>> {
    let per_call = match call
        .shape
        .module
        .export(&call.shape.export)
        .map(|e| &e.kind)
    {
        Some(ExportKind::Numeric { results, .. }) => Some(results.len()),
        _ => None,
    };
    let ranges: Vec<Range<usize>> = range
        .clone()
        .step_by(chunk.max(1))
        .map(|start| start..(start + chunk.max(1)).min(range.end))
        .collect();
    let mut tasks = Vec::with_capacity(ranges.len());
    let mut out = super::Outbox::new(call);
    for r in &ranges {
        let (task, job) = match out.admit(r.len()) {
            Ok(admission) => {
                call.job_for::<Output>(Ok(calls.batch(r.clone(), instances)), None, None, admission)
            }
            Err(closed) => call.job_for::<Output>(Err(closed), None, None, None),
        };
        tasks.push(task);
        out.push(job.map(|mut job| {
            // A fresh batch is never re-run whole: its calls are, one task each.
            if instances == Instances::Fresh {
                job.retries = 0;
            }
            job
        }));
    }
    drop(out);
    let mut results = Vec::with_capacity(range.len());
    for (task, r) in tasks.into_iter().zip(ranges) {
        match task.wait() {
            Err(e) if instances == Instances::Fresh && run_again(&e) => {
                let again: Vec<Task<T>> = singles(call, calls, r);
                results.extend(again.iter().map(Task::wait));
            }
            answer => results.extend(spread(answer, r.len(), per_call)),
        }
    }
    results
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
        Ok(Output::NumberBatch { values, failures }) => {
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
