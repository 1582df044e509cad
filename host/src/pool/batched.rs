//! Calls that travel in batches: one job, one frame each way and one answer for many calls
//! of an export. [`Call::map`] sends its calls this way with [`Instances::Fresh`] (each call
//! still runs in a store and instance of its own, as a task would: only the transport is
//! shared); [`ReusingCall::map`](super::ReusingCall::map) with [`Instances::Shared`].
//!
//! A fresh batch whose worker dies (or is killed for a call stuck in a host call) cannot
//! tell which call did it, so its calls are run again one task each: the culprit then
//! fails alone, with its own error, and the others get their results.

use crate::error::TaskError;
use crate::module::ExportKind;
use crate::value::{FromOutput, Input, Instances, Output, Value};

use super::{Call, Task};

/// Most calls in one fresh batch: enough to spread the cost of a task over many calls,
/// few enough that the workers stay evenly loaded and a batch run again costs little.
pub(super) const MAX_FRESH_BATCH: usize = 64;

/// About how much work one fresh batch should hold, judged from a first call's duration.
pub(super) const BATCH_WORK: std::time::Duration = std::time::Duration::from_millis(1);

/// Runs `checked` (inputs already validated, or their errors) in batches of `chunk` calls;
/// results in input order.
pub(super) fn map<T: FromOutput>(
    call: &Call,
    checked: Vec<Result<Input, TaskError>>,
    chunk: usize,
    instances: Instances,
) -> Vec<Result<T, TaskError>> {
    // Calls of a plain numeric export travel laid flat; others one input each.
    let per_call = match call.module.export(&call.export).map(|e| &e.kind) {
        Some(ExportKind::Numeric { results, .. }) => Some(results.len()),
        _ => None,
    };
    let mut results: Vec<Option<Result<T, TaskError>>> = Vec::with_capacity(checked.len());
    let mut batches: Vec<Vec<Input>> = Vec::new();
    for c in checked {
        match c {
            Ok(input) => {
                match batches.last_mut() {
                    Some(b) if b.len() < chunk => b.push(input),
                    _ => batches.push(vec![input]),
                }
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let mut tasks = Vec::with_capacity(batches.len());
    let mut jobs = Vec::with_capacity(batches.len());
    for items in &batches {
        let input = batch_input(items, per_call.is_some(), instances);
        let (task, job) = call.job_for::<Output>(Ok(input), None, None);
        tasks.push(task);
        jobs.extend(job.map(|mut job| {
            // A fresh batch is never re-run whole: its calls are, one task each.
            if instances == Instances::Fresh {
                job.retries = 0;
            }
            job
        }));
    }
    if !jobs.is_empty() {
        call.send(jobs);
    }
    let mut slots = results.iter_mut().filter(|r| r.is_none());
    for (task, items) in tasks.into_iter().zip(batches) {
        let outcomes = match task.wait() {
            Err(e) if instances == Instances::Fresh && run_again(&e) => one_by_one(call, items),
            answer => spread(answer, items.len(), per_call),
        };
        for outcome in outcomes {
            if let Some(slot) = slots.next() {
                *slot = Some(outcome);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(TaskError::worker_lost("a batch lost this call"))))
        .collect()
}

/// The batch input for `items` (laid flat when they are plain numeric calls).
fn batch_input(items: &[Input], flat: bool, instances: Instances) -> Input {
    if flat && items.iter().all(|i| matches!(i, Input::Numbers(_))) {
        let values: Vec<Value> = items
            .iter()
            .flat_map(|i| match i {
                Input::Numbers(args) => args.as_slice(),
                _ => &[],
            })
            .copied()
            .collect();
        Input::NumberBatch {
            calls: items.len() as u32,
            values,
            instances,
        }
    } else {
        Input::Batch {
            items: items.to_vec(),
            instances,
        }
    }
}

/// Whether a fresh batch that failed whole should be run again call by call: its worker
/// died or was killed, and the batch cannot say which call did it.
fn run_again(e: &TaskError) -> bool {
    matches!(e, TaskError::WorkerLost { .. } | TaskError::Timeout { .. })
}

/// Runs each of `items` as a task of its own; their results in order.
fn one_by_one<T: FromOutput>(call: &Call, items: Vec<Input>) -> Vec<Result<T, TaskError>> {
    let tasks: Vec<Task<T>> = call.submit_inputs(items.into_iter().map(Ok), None);
    tasks.iter().map(Task::wait).collect()
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
