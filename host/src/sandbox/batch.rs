//! Batches: several calls of one export run one after another, each under the task's limits
//! (fuel and wall clock per call, cancel). With [`Instances::Fresh`] (what `Call::map`
//! sends) each call gets a store and instance of its own, as a task would; with
//! [`Instances::Shared`] ([`Call::reuse_instance`](crate::Call::reuse_instance)) they share
//! one, and a call that traps or breaks a limit gets its error while the calls after it
//! run in a fresh store and instance.

use std::time::Instant;

use wasmtime::{Func, Instance, InstancePre, Store, ValRaw};

use super::call::{arm, call_numeric, call_task, classify, fuel_used, new_store};
use super::interrupt::Interrupter;
use super::output::CappedPipe;
use super::{TaskState, WasiSetup};
use crate::error::TaskError;
use crate::limits::Limits;
use crate::protocol::{CallInput, CallInputs, CallsRequest, RunRequest, TaskId, TaskStats};
use crate::value::{Input, Instances, Output, ValType, Value};

/// A store and instance with the export resolved, reused across calls.
struct Live {
    store: Store<TaskState>,
    /// Where its guest's stdout goes (each call's own, when the batch keeps calls' stats).
    stdout: CappedPipe,
    /// Where its guest's stderr goes (for the error of a call that fails).
    stderr: CappedPipe,
    instance: Option<Instance>,
    /// The numeric export, looked up and type-checked once per instance.
    func: Option<NumericFunc>,
}

/// A plain numeric export, its signature, and the raw value slots its calls use.
struct NumericFunc {
    func: Func,
    params: Vec<ValType>,
    results: Vec<ValType>,
    slots: Vec<ValRaw>,
}

/// Where a batch's outcomes go: one `Result` per call (`Batch`), or laid end to end
/// (`NumberBatch`).
enum Sink {
    Each(Vec<Result<Output, TaskError>>),
    Flat {
        values: Vec<Value>,
        failures: Vec<(u32, TaskError)>,
        /// Each call's stats, when the batch asked for them.
        stats: Option<Vec<TaskStats>>,
    },
}

impl Sink {
    fn fail(&mut self, call: usize, error: TaskError) {
        match self {
            Sink::Each(results) => results.push(Err(error)),
            Sink::Flat { failures, .. } => failures.push((call as u32, error)),
        }
    }

    fn into_output(self) -> Output {
        match self {
            Sink::Each(results) => Output::Batch(results),
            Sink::Flat {
                values,
                failures,
                stats,
            } => Output::NumberBatch {
                values,
                failures,
                call_stats: stats.unwrap_or_default(),
            },
        }
    }
}

/// Runs every call of a batch (`Input::Batch` or `Input::NumberBatch`) in order.
pub(super) fn run(
    pre: &InstancePre<TaskState>,
    interrupter: &Interrupter,
    req: &RunRequest,
) -> (Result<Output, TaskError>, TaskStats) {
    let limits = &req.limits;
    let calls = req.input.calls();
    let (mut sink, arity) = match &req.input {
        Input::NumberBatch {
            values, call_stats, ..
        } => (
            Sink::Flat {
                values: Vec::with_capacity(values.len()),
                failures: Vec::new(),
                stats: call_stats.then(|| Vec::with_capacity(calls)),
            },
            values.len() / calls.max(1),
        ),
        _ => (Sink::Each(Vec::with_capacity(calls)), 0),
    };
    let instances = match &req.input {
        Input::Batch { instances, .. } | Input::NumberBatch { instances, .. } => *instances,
        _ => unreachable!("only batches run here"),
    };
    let env: std::sync::Arc<[(String, String)]> = req.env.as_slice().into();
    let pipes = || {
        (
            CappedPipe::new(limits.stdout_cap as usize),
            CappedPipe::new(limits.stderr_cap as usize),
        )
    };
    // Shared instances share their output too; fresh ones each get their own.
    let (stdout, stderr) = pipes();
    let fresh = || {
        let (stdout, stderr) = match instances {
            Instances::Shared => (stdout.clone(), stderr.clone()),
            Instances::Fresh => pipes(),
        };
        let wasi = WasiSetup::OnFirstCall {
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            env: env.clone(),
        };
        Live {
            store: new_store(pre, limits, wasi),
            stdout,
            stderr,
            instance: None,
            func: None,
        }
    };
    let started = Instant::now();
    let mut fuel_used = 0u64;
    let mut peak_memory = 0u64;
    let mut live: Option<Live> = None;
    for i in 0..calls {
        let call_started = Instant::now();
        let l = live.get_or_insert_with(fresh);
        if let Some(fuel) = limits.fuel {
            let _ = l.store.set_fuel(fuel);
        }
        l.store.set_epoch_deadline(1);
        // The host knows the batch's deadline, not each call's: a call stuck in a host
        // call past its own makes this worker exit.
        let deadline = match limits
            .timeout
            .map(|t| Limits::deadline(Instant::now(), t))
            .transpose()
        {
            Ok(deadline) => deadline,
            Err(e) => {
                for j in i..calls {
                    sink.fail(j, e.clone());
                }
                break;
            }
        };
        let give_up = limits.timeout.map(Limits::kill_grace);
        if !interrupter.arm(req.task, deadline, give_up) {
            let cancelled = TaskError::cancelled("cancelled before it started");
            for j in i..calls {
                sink.fail(j, cancelled.clone());
            }
            break;
        }
        let outcome = match (&req.input, &mut sink) {
            (Input::NumberBatch { values, .. }, Sink::Flat { values: out, .. }) => call_numbers(
                l,
                pre,
                &values[i * arity..(i + 1) * arity],
                &req.export,
                out,
            ),
            (Input::Batch { items, .. }, Sink::Each(results)) => {
                call(l, pre, &items[i], &req.export, limits.max_output)
                    .map(|r| r.map(|out| results.push(Ok(out))))
            }
            _ => unreachable!("the sink matches the input"),
        };
        let stop = interrupter.disarm();
        let call_fuel = limits
            .fuel
            .map_or(0, |fuel| fuel - l.store.get_fuel().unwrap_or(0));
        fuel_used += call_fuel;
        let call_peak = l.store.data().limiter.peak;
        peak_memory = peak_memory.max(call_peak);
        // `true` with an error that leaves the instance half-way through anything.
        let failed = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some((e, false)),
            Err(e) => Some((
                classify(e, l.store.data(), stop, limits, &l.stderr.snapshot()),
                true,
            )),
        };
        if let Sink::Flat {
            stats: Some(stats), ..
        } = &mut sink
        {
            // Shared instances share their pipes: a call's output is what it added.
            let mut s = CappedPipe::stats(&l.stdout, &l.stderr, call_fuel, call_started.elapsed());
            s.peak_memory = call_peak;
            stats.push(s);
        }
        if let Some((error, broken)) = failed {
            if broken {
                // The next call gets a new instance.
                live = None;
            }
            sink.fail(i, error);
        }
        if instances == Instances::Fresh {
            live = None;
        }
    }
    let mut stats = CappedPipe::stats(&stdout, &stderr, fuel_used, started.elapsed());
    stats.peak_memory = peak_memory;
    (Ok(sink.into_output()), stats)
}

/// How one call of a [`CallsRequest`] ended: a numeric call's results (borrowed from the
/// batch's scratch vector, so a plain call allocates nothing for them), or any other outcome.
pub enum CallEnd<'a> {
    Numbers(&'a [Value]),
    Outcome(Result<Output, TaskError>),
}

/// Runs the calls of a [`CallsRequest`] in order, each a task of its own: a fresh store and
/// instance, its limits, its deadline and cancel under its own wire id (`first + i`), its
/// own stats. `done` gets each call's wire id, outcome, stats and the moment it ended, as
/// soon as it finishes.
pub(super) fn run_calls(
    pre: &InstancePre<TaskState>,
    interrupter: &Interrupter,
    req: &mut CallsRequest,
    mut done: impl FnMut(TaskId, CallEnd<'_>, TaskStats, Instant),
) {
    let inputs = std::mem::replace(&mut req.inputs, CallInputs::Json(Vec::new()));
    let mut calls = Calls {
        pre,
        interrupter,
        req,
        env: req.env.as_slice().into(),
        results: Vec::new(),
    };
    match inputs {
        CallInputs::Numbers { calls: n, values } => {
            for (i, args) in CallInputs::numbers(&values, n).enumerate() {
                let input = args.map(CallInput::Numbers).ok_or_else(|| {
                    TaskError::bad_input("the calls' arguments do not split evenly among them")
                });
                calls.run(i, input, &mut done);
            }
        }
        // Each input is dropped once its call is done, not a whole frame's at the end.
        CallInputs::Json(items) => {
            for (i, bytes) in items.into_iter().enumerate() {
                calls.run(i, Ok(CallInput::Json(&bytes)), &mut done);
            }
        }
        // Commands run one by one as single tasks do (`Sandbox::run_calls`); none get here.
        CallInputs::Commands(items) => {
            let refused = TaskError::bad_input("a command run in a frame of plain calls");
            for i in 0..items.len() {
                calls.run(i, Err(refused.clone()), &mut done);
            }
        }
    }
}

/// What the calls of one [`CallsRequest`] share.
struct Calls<'a> {
    pre: &'a InstancePre<TaskState>,
    interrupter: &'a Interrupter,
    req: &'a CallsRequest,
    env: std::sync::Arc<[(String, String)]>,
    /// Numeric calls' results, one call's at a time.
    results: Vec<Value>,
}

impl Calls<'_> {
    /// Runs call `i` of the request.
    fn run(
        &mut self,
        i: usize,
        input: Result<CallInput<'_>, TaskError>,
        done: &mut impl FnMut(TaskId, CallEnd<'_>, TaskStats, Instant),
    ) {
        let (pre, limits, export) = (self.pre, &self.req.limits, self.req.export.as_str());
        let wire = self.req.first + i as TaskId;
        let (stdout, stderr) = (
            CappedPipe::new(limits.stdout_cap as usize),
            CappedPipe::new(limits.stderr_cap as usize),
        );
        let started = Instant::now();
        let input = match input {
            Ok(input) => input,
            Err(e) => {
                return done(
                    wire,
                    CallEnd::Outcome(Err(e)),
                    TaskStats::default(),
                    started,
                )
            }
        };
        let wasi = WasiSetup::OnFirstCall {
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            env: self.env.clone(),
        };
        let mut l = Live {
            store: new_store(pre, limits, wasi),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            instance: None,
            func: None,
        };
        // As for a task of its own: the host kills this worker if the call outlives its
        // deadline (it knows which call runs: the worker's replies never wait long, even
        // while a call blocks in a host call; `child::serve`'s `Held`).
        if let Err(e) = arm(self.interrupter, wire, limits, started) {
            return done(
                wire,
                CallEnd::Outcome(Err(e)),
                TaskStats::default(),
                started,
            );
        }
        self.results.clear();
        let outcome = match input {
            CallInput::Numbers(args) => {
                call_numbers(&mut l, pre, args, export, &mut self.results).map(|r| r.map(|()| None))
            }
            CallInput::Json(bytes) => instance(&mut l, pre).and_then(|instance| {
                call_task(&mut l.store, instance, export, bytes, limits.max_output)
                    .map(|r| r.map(Some))
            }),
        };
        let stop = self.interrupter.disarm();
        let ended = Instant::now();
        let fuel = fuel_used(limits, &l.store);
        // A call that made no WASI call wrote nothing: its pipes are not looked at.
        let mut stats = if l.store.data().wasi.is_some() {
            CappedPipe::stats(&stdout, &stderr, fuel, ended - started)
        } else {
            TaskStats {
                fuel_used: fuel,
                duration: ended - started,
                ..TaskStats::default()
            }
        };
        stats.peak_memory = l.store.data().limiter.peak;
        let end = match outcome {
            Ok(Ok(None)) => CallEnd::Numbers(&self.results),
            Ok(Ok(Some(output))) => CallEnd::Outcome(Ok(output)),
            Ok(Err(e)) => CallEnd::Outcome(Err(e)),
            Err(e) => CallEnd::Outcome(Err(classify(
                e,
                l.store.data(),
                stop,
                limits,
                &stats.stderr,
            ))),
        };
        drop(l);
        done(wire, end, stats, ended);
    }
}

/// One plain numeric call of a `NumberBatch`, its results appended to `out`.
fn call_numbers(
    l: &mut Live,
    pre: &InstancePre<TaskState>,
    args: &[Value],
    export: &str,
    out: &mut Vec<Value>,
) -> wasmtime::Result<Result<(), TaskError>> {
    let instance = instance(l, pre)?;
    if l.func.is_none() {
        l.func = numeric_func(&mut l.store, instance, export);
    }
    match &mut l.func {
        Some(f)
            if f.params.len() == args.len()
                && f.params.iter().zip(args).all(|(t, v)| v.ty() == *t) =>
        {
            for (slot, v) in f.slots.iter_mut().zip(args) {
                *slot = to_raw(v);
            }
            let slots: *mut [ValRaw] = f.slots.as_mut_slice();
            // SAFETY: `f.func` belongs to this store and its type was checked when it was
            // looked up: exactly these numeric parameter types (which the values were just
            // matched against) and numeric results only; `slots` has room for
            // max(params, results) values.
            unsafe { f.func.call_unchecked(&mut l.store, slots)? };
            out.extend(
                f.results
                    .iter()
                    .zip(&f.slots)
                    .map(|(&t, raw)| from_raw(t, raw)),
            );
            Ok(Ok(()))
        }
        // Anything unusual takes the general path, with its messages.
        _ => Ok(
            call_numeric(&mut l.store, instance, export, args)?.map(|o| {
                if let Output::Numbers(values) = o {
                    out.extend(values);
                }
            }),
        ),
    }
}

/// The live instance, instantiated on first use.
fn instance(l: &mut Live, pre: &InstancePre<TaskState>) -> wasmtime::Result<Instance> {
    match l.instance {
        Some(i) => Ok(i),
        None => {
            let i = pre.instantiate(&mut l.store)?;
            l.instance = Some(i);
            Ok(i)
        }
    }
}

/// One call of a general batch (SDK tasks, or numbers the host did not lay flat),
/// instantiating first if needed. The outer error is a wasm failure to classify; the inner
/// one a typed error.
fn call(
    l: &mut Live,
    pre: &InstancePre<TaskState>,
    item: &Input,
    export: &str,
    max_output: u32,
) -> wasmtime::Result<Result<Output, TaskError>> {
    let instance = instance(l, pre)?;
    match item {
        Input::Numbers(args) => {
            let mut out = Vec::new();
            Ok(call_numbers(l, pre, args, export, &mut out)?.map(|()| Output::Numbers(out)))
        }
        Input::Json(bytes) => call_task(&mut l.store, instance, export, bytes, max_output),
        Input::Command(_)
        | Input::Batch { .. }
        | Input::NumberBatch { .. }
        | Input::Snapshot(_) => Ok(Err(TaskError::bad_input(
            "commands and batches cannot be calls of a batch",
        ))),
    }
}

/// The export, if it is a function over numbers only.
fn numeric_func(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &str,
) -> Option<NumericFunc> {
    let func = instance.get_func(&mut *store, export)?;
    let ty = func.ty(&*store);
    let numeric = |t: wasmtime::ValType| match t {
        wasmtime::ValType::I32 => Some(ValType::I32),
        wasmtime::ValType::I64 => Some(ValType::I64),
        wasmtime::ValType::F32 => Some(ValType::F32),
        wasmtime::ValType::F64 => Some(ValType::F64),
        _ => None,
    };
    let params: Vec<ValType> = ty.params().map(numeric).collect::<Option<_>>()?;
    let results: Vec<ValType> = ty.results().map(numeric).collect::<Option<_>>()?;
    let slots = vec![ValRaw::i64(0); params.len().max(results.len()).max(1)];
    Some(NumericFunc {
        func,
        params,
        results,
        slots,
    })
}

fn to_raw(v: &Value) -> ValRaw {
    match *v {
        Value::I32(x) => ValRaw::i32(x),
        Value::I64(x) => ValRaw::i64(x),
        Value::F32(x) => ValRaw::f32(x.to_bits()),
        Value::F64(x) => ValRaw::f64(x.to_bits()),
    }
}

fn from_raw(t: ValType, raw: &ValRaw) -> Value {
    match t {
        ValType::I32 => Value::I32(raw.get_i32()),
        ValType::I64 => Value::I64(raw.get_i64()),
        ValType::F32 => Value::F32(f32::from_bits(raw.get_f32())),
        ValType::F64 => Value::F64(f64::from_bits(raw.get_f64())),
    }
}
