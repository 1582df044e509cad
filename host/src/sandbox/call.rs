//! One task, start to end: a fresh store under the task's limits, instantiation, the call
//! (plain numeric export or SDK task through the guest ABI), and the classification of
//! every failure into a [`TaskError`].

use std::time::Instant;

use wasmtime::{Instance, InstancePre, Store, Trap, Val, WasmBacktrace};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::files::{FileSizeLimit, Scratch, TaskDir};
use super::interrupt::{Interrupter, Stop};
use super::output::CappedPipe;
use super::{HostLink, TaskState, WasiSetup};
use crate::command::{CommandInput, CommandOutput};
use crate::error::{TaskError, TrapCode};
use crate::limits::Limits;
use crate::mount::Mount;
use crate::protocol::{RunRequest, TaskId, TaskStats};
use crate::value::{Input, Output, Value};

/// Where a command's files come from: the worker's scratch directory and the pool's mounts.
pub(super) struct Files<'a> {
    pub scratch: &'a Scratch,
    pub mounts: &'a [Mount],
}

/// Runs `req` in a fresh instance of `pre`.
pub(super) fn run(
    pre: &InstancePre<TaskState>,
    interrupter: &Interrupter,
    files: Files<'_>,
    link: &HostLink,
    req: &RunRequest,
) -> (Result<Output, TaskError>, TaskStats) {
    let limits = &req.limits;
    let (stdout, stderr) = match &req.input {
        Input::Command(c) if c.stream => (
            CappedPipe::streaming(
                limits.stdout_cap as usize,
                link.forward.clone(),
                req.task,
                false,
            ),
            CappedPipe::streaming(
                limits.stderr_cap as usize,
                link.forward.clone(),
                req.task,
                true,
            ),
        ),
        _ => (
            CappedPipe::new(limits.stdout_cap as usize),
            CappedPipe::new(limits.stderr_cap as usize),
        ),
    };
    // A command's files live (and are removed) with `task_dir`.
    let (wasi, task_dir) = match &req.input {
        Input::Command(command) => {
            let mut wasi = WasiCtxBuilder::new();
            wasi.stdout(stdout.clone()).stderr(stderr.clone());
            match TaskDir::prepare(&mut wasi, command, files.scratch, files.mounts, req.task) {
                Ok(dir) => (WasiSetup::Now(Box::new(wasi)), dir),
                Err(e) => return (Err(e), TaskStats::default()),
            }
        }
        _ => (
            WasiSetup::OnFirstCall {
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                env: req.env.as_slice().into(),
            },
            None,
        ),
    };
    let started = Instant::now();
    let mut store = new_store(pre, limits, wasi);

    if let Err(e) = arm(interrupter, req.task, limits, started) {
        return (Err(e), TaskStats::default());
    }
    let result = pre.instantiate(&mut store).and_then(|instance| {
        // Only around the call: instantiation may write the module's memory image into a
        // memfd, which the limit would refuse too.
        let _file_size = task_dir
            .as_ref()
            .map(|_| FileSizeLimit::set(limits.max_output as u64));
        call(&mut store, instance, req)
    });
    let stop = interrupter.disarm();

    let mut stats = CappedPipe::stats(
        &stdout,
        &stderr,
        fuel_used(limits, &store),
        started.elapsed(),
    );
    stats.peak_memory = store.data().limiter.peak;
    let outcome = match result {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(task_error)) => Err(task_error),
        Err(e) => Err(classify(e, store.data(), stop, &req.limits, &stats.stderr)),
    };
    let outcome = match (outcome, &req.input) {
        (Ok(Output::Command(out)), Input::Command(command)) => finish_command(
            out,
            command.check,
            task_dir.as_ref(),
            limits.max_output,
            &mut stats,
        ),
        (other, _) => other,
    };
    (outcome, stats)
}

/// Arms the wall-clock deadline of task `task` (its time counted from `started`) and its
/// cancel; the error to answer with when it cannot start: a deadline the clock cannot hold
/// (never for validated limits), or a cancel that came first.
pub(super) fn arm(
    interrupter: &Interrupter,
    task: TaskId,
    limits: &Limits,
    started: Instant,
) -> Result<(), TaskError> {
    let deadline = limits
        .timeout
        .map(|t| Limits::deadline(started, t))
        .transpose()?;
    if !interrupter.arm(task, deadline, None) {
        return Err(TaskError::cancelled("cancelled before it started"));
    }
    Ok(())
}

/// The fuel a task's store used (0 when its code was not metered).
pub(super) fn fuel_used(limits: &Limits, store: &Store<TaskState>) -> u64 {
    // Asked only of metered code: without fuel, `get_fuel` makes an error (a heap
    // allocation, and a backtrace when `RUST_BACKTRACE` is set) for every call.
    match limits.fuel {
        Some(fuel) => store.get_fuel().map_or(0, |left| fuel.saturating_sub(left)),
        None => 0,
    }
}

/// A fresh store for `pre`'s engine under `limits`: memory limiter, fuel (when metered),
/// an epoch deadline one tick ahead (the interrupter's bump traps).
pub(super) fn new_store(
    pre: &InstancePre<TaskState>,
    limits: &Limits,
    wasi: WasiSetup,
) -> Store<TaskState> {
    let state = TaskState::new(limits.memory, wasi);
    let mut store = Store::new(pre.module().engine(), state);
    store.limiter(|s| &mut s.limiter);
    // Without a fuel limit the code was compiled without metering (`Metering::Epochs`).
    if let Some(fuel) = limits.fuel {
        store
            .set_fuel(fuel)
            .expect("code compiled with fuel metering");
    }
    store.epoch_deadline_trap();
    store.set_epoch_deadline(1);
    store
}

/// Completes a command's output: its printed output and files move from the stats into it;
/// a nonzero exit code becomes an error when the spec asked for `check`.
fn finish_command(
    mut out: CommandOutput,
    check: bool,
    task_dir: Option<&TaskDir>,
    max_output: u32,
    stats: &mut TaskStats,
) -> Result<Output, TaskError> {
    if check && out.exit_code != 0 {
        return Err(TaskError::Exit {
            code: out.exit_code,
        });
    }
    if let Some(dir) = task_dir {
        out.files = dir.collect(max_output as u64)?;
    }
    out.stdout = std::mem::take(&mut stats.stdout);
    out.stderr = std::mem::take(&mut stats.stderr);
    out.output_truncated = stats.output_truncated;
    out.fuel_used = stats.fuel_used;
    out.duration = stats.duration;
    Ok(Output::Command(out))
}

/// Calls the export. The outer error is a wasm failure (trap, exit, limit) still to be
/// classified; the inner one is already a typed error.
fn call(
    store: &mut Store<TaskState>,
    instance: Instance,
    req: &RunRequest,
) -> wasmtime::Result<Result<Output, TaskError>> {
    match &req.input {
        Input::Numbers(args) => call_numeric(store, instance, &req.export, args),
        Input::Json(bytes) => call_task(store, instance, &req.export, bytes, req.limits.max_output),
        Input::Command(c) => match &c.invoke {
            Some(invoke) => call_reactor(store, instance, &invoke.export, c),
            None => call_command(store, instance, &req.export),
        },
        Input::Batch { .. } | Input::NumberBatch { .. } => Ok(Err(TaskError::bad_input(
            "a batch runs through sandbox::batch",
        ))),
        Input::Snapshot(_) => Ok(Err(TaskError::bad_input(
            "a snapshot runs through sandbox::snapshot",
        ))),
    }
}

/// Runs a command's entry point (`_start`) to its end; its exit code is a result, not an
/// error. (Only the code is filled in here; `run` completes the output.)
fn call_command(
    store: &mut Store<TaskState>,
    instance: Instance,
    entry: &str,
) -> wasmtime::Result<Result<Output, TaskError>> {
    let Ok(start) = instance.get_typed_func::<(), ()>(&mut *store, entry) else {
        return Ok(Err(TaskError::bad_input(format!(
            "the module has no command entry point `{entry}: () -> ()`"
        ))));
    };
    let exit_code = match start.call(&mut *store, ()) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            // An exit after a refused memory.grow is the memory limit's doing.
            Some(exit) if !store.data().limiter.hit => exit.0,
            _ => return Err(e),
        },
    };
    Ok(Ok(Output::Command(CommandOutput {
        exit_code,
        ..CommandOutput::default()
    })))
}

/// Runs a reactor ([`enter_reactor`]); a `proc_exit` on the way is the exit code, as is the
/// export's result. (As in [`call_command`], `run` completes the output.)
fn call_reactor(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &str,
    command: &CommandInput,
) -> wasmtime::Result<Result<Output, TaskError>> {
    let code = match enter_reactor(store, instance, export, command) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => return Ok(Err(e)),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            // An exit after a refused memory.grow is the memory limit's doing.
            Some(exit) if !store.data().limiter.hit => exit.0,
            _ => return Err(e),
        },
    };
    Ok(Ok(Output::Command(CommandOutput {
        exit_code: code,
        ..CommandOutput::default()
    })))
}

/// Enters a reactor: `_initialize` if the module exports it (and `export` is not it), then
/// `export` — without arguments (`() -> i32`, whose result is returned, or `() -> ()`: 0),
/// or, with [`CommandInput::stdin_as_argument`], as `export(ptr, len)` (`(i32, i32) -> i32`
/// or `-> ()`) on the command's stdin written where the allocator export put it. The outer
/// error is a wasm failure (trap, exit, limit) for the caller to classify; the inner one is
/// already typed. Shared by reactor commands and initializers.
pub(super) fn enter_reactor(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &str,
    command: &CommandInput,
) -> wasmtime::Result<Result<i32, TaskError>> {
    let bad = |m: String| Ok(Err(TaskError::bad_input(m)));
    if export != "_initialize" {
        if let Some(init) = instance.get_func(&mut *store, "_initialize") {
            let Ok(init) = init.typed::<(), ()>(&*store) else {
                return bad(
                    "the module's `_initialize` is not a function without parameters or results"
                        .into(),
                );
            };
            init.call(&mut *store, ())?;
        }
    }
    let Some(func) = instance.get_func(&mut *store, export) else {
        return bad(format!("the module has no function export `{export}`"));
    };
    let Some(alloc) = command.stdin_as_argument() else {
        return if let Ok(f) = func.typed::<(), i32>(&*store) {
            f.call(&mut *store, ()).map(Ok)
        } else if let Ok(f) = func.typed::<(), ()>(&*store) {
            f.call(&mut *store, ()).map(|()| Ok(0))
        } else {
            bad(format!(
                "`{export}` is not a reactor entry point (a function without parameters returning an i32 or nothing)"
            ))
        };
    };
    let (ptr, len) = match pass(store, instance, alloc, &command.stdin)? {
        Ok(at) => at,
        Err(e) => return Ok(Err(e)),
    };
    if let Ok(f) = func.typed::<(i32, i32), i32>(&*store) {
        f.call(&mut *store, (ptr, len)).map(Ok)
    } else if let Ok(f) = func.typed::<(i32, i32), ()>(&*store) {
        f.call(&mut *store, (ptr, len)).map(|()| Ok(0))
    } else {
        bad(format!(
            "`{export}` does not take stdin as an argument (a function of (i32, i32) returning an i32 or nothing)"
        ))
    }
}

/// Writes `bytes` into the instance's exported `memory` at the address its allocator export
/// `alloc` returns for their length; the `(ptr, len)` to pass. A failed allocation (0, or an
/// address where the bytes do not fit) is the task's error: the memory limit's when it
/// refused a growth (classified by the caller), else a bad answer of the module.
fn pass(
    store: &mut Store<TaskState>,
    instance: Instance,
    alloc: &str,
    bytes: &[u8],
) -> wasmtime::Result<Result<(i32, i32), TaskError>> {
    let bad = |m: String| Ok(Err(TaskError::bad_input(m)));
    let Some(func) = instance.get_func(&mut *store, alloc) else {
        return bad(format!("the module has no allocator export `{alloc}`"));
    };
    let Ok(func) = func.typed::<i32, i32>(&*store) else {
        return bad(format!(
            "`{alloc}` is not an allocator (a function of (i32) returning an i32)"
        ));
    };
    let Ok(len) = i32::try_from(bytes.len()) else {
        return bad(format!(
            "stdin of {} bytes is too long to pass as an argument (at most 2 GiB - 1)",
            bytes.len()
        ));
    };
    let Some(memory) = instance.get_memory(&mut *store, "memory") else {
        return bad("the module exports no `memory` to pass stdin in".into());
    };
    let ptr = func.call(&mut *store, len)?;
    let fits = (ptr as u32 as usize)
        .checked_add(bytes.len())
        .is_some_and(|end| end <= memory.data_size(&*store));
    if (ptr == 0 && len > 0) || !fits {
        if store.data().limiter.hit {
            return Err(wasmtime::Error::msg("the allocator found no memory"));
        }
        return Ok(Err(TaskError::BadOutput {
            message: format!(
                "the allocator `{alloc}` returned {} for {len} bytes, where they do not fit",
                ptr as u32
            ),
        }));
    }
    memory.write(&mut *store, ptr as u32 as usize, bytes)?;
    Ok(Ok((ptr, len)))
}

pub(super) fn call_numeric(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &str,
    args: &[Value],
) -> wasmtime::Result<Result<Output, TaskError>> {
    let Some(func) = instance.get_func(&mut *store, export) else {
        return Ok(Err(TaskError::bad_input(format!(
            "the module has no function export `{export}`"
        ))));
    };
    let ty = func.ty(&*store);
    if ty.params().len() != args.len() {
        return Ok(Err(TaskError::bad_input(format!(
            "`{export}` takes {} argument(s), {} given",
            ty.params().len(),
            args.len()
        ))));
    }
    let params: Vec<Val> = args
        .iter()
        .map(|v| match *v {
            Value::I32(x) => Val::I32(x),
            Value::I64(x) => Val::I64(x),
            Value::F32(x) => Val::F32(x.to_bits()),
            Value::F64(x) => Val::F64(x.to_bits()),
        })
        .collect();
    let mut results: Vec<Val> = ty
        .results()
        .map(|t| Val::default_for_ty(&t).unwrap_or(Val::I32(0)))
        .collect();
    func.call(&mut *store, &params, &mut results)?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        out.push(match r {
            Val::I32(x) => Value::I32(x),
            Val::I64(x) => Value::I64(x),
            Val::F32(x) => Value::F32(f32::from_bits(x)),
            Val::F64(x) => Value::F64(f64::from_bits(x)),
            other => {
                return Ok(Err(TaskError::BadOutput {
                    message: format!(
                        "`{export}` returned a {:?} value, which is not a number",
                        other.ty(&*store)
                    ),
                }))
            }
        });
    }
    Ok(Ok(Output::Numbers(out)))
}

pub(super) fn call_task(
    store: &mut Store<TaskState>,
    instance: Instance,
    name: &str,
    input: &[u8],
    max_output: u32,
) -> wasmtime::Result<Result<Output, TaskError>> {
    let bad = |m: String| Ok(Err(TaskError::bad_input(m)));
    let export = wasmpool_abi::task_export_name(name);
    let Ok(task) = instance.get_typed_func::<(i32, i32), i64>(&mut *store, &export) else {
        return bad(format!(
            "the module has no SDK task `{name}` (export `{export}` with type (i32, i32) -> i64)"
        ));
    };
    let Some(memory) = instance.get_memory(&mut *store, wasmpool_abi::MEMORY_EXPORT) else {
        return bad(format!(
            "the module exports no `{}`",
            wasmpool_abi::MEMORY_EXPORT
        ));
    };
    let Ok(alloc) = instance.get_typed_func::<i32, i32>(&mut *store, wasmpool_abi::ALLOC_EXPORT)
    else {
        return bad(format!(
            "the module exports no `{}: (i32) -> i32`",
            wasmpool_abi::ALLOC_EXPORT
        ));
    };
    let Ok(len) = i32::try_from(input.len()) else {
        return bad(format!(
            "input of {} bytes is too large for a wasm32 guest",
            input.len()
        ));
    };
    let ptr = alloc.call(&mut *store, len)?;
    if memory
        .write(&mut *store, ptr as u32 as usize, input)
        .is_err()
    {
        return Ok(Err(TaskError::Trap {
            message: format!(
                "`{}` returned {ptr:#x}, which has no room for {len} bytes in memory",
                wasmpool_abi::ALLOC_EXPORT
            ),
            code: Some(TrapCode::MemoryOutOfBounds),
        }));
    }
    let packed = task.call(&mut *store, (ptr, len))?;
    let (ptr, len) = wasmpool_abi::unpack(packed);
    let data = memory.data(&*store);
    let Some(reply) = data.get(ptr as usize..ptr as usize + len as usize) else {
        return Ok(Err(TaskError::BadOutput {
            message: format!("the guest's reply ({len} bytes at {ptr:#x}) lies outside its memory"),
        }));
    };
    let Some((&status, payload)) = reply.split_first() else {
        return Ok(Err(TaskError::BadOutput {
            message: "the guest's reply is empty (no status byte)".into(),
        }));
    };
    if payload.len() > max_output as usize {
        return Ok(Err(TaskError::BadOutput {
            message: format!("the guest's output is {} bytes, over the cap of {max_output} bytes (Limits::max_output)", payload.len()),
        }));
    }
    Ok(match status {
        wasmpool_abi::STATUS_OK => Ok(Output::Json(payload.to_vec())),
        wasmpool_abi::STATUS_ERR => Err(TaskError::Guest {
            message: String::from_utf8_lossy(payload).into_owned(),
        }),
        wasmpool_abi::STATUS_BAD_INPUT => Err(TaskError::bad_input(format!(
            "SDK task `{name}` cannot decode its input: {}",
            String::from_utf8_lossy(payload)
        ))),
        other => Err(TaskError::BadOutput {
            message: format!("the guest's reply has unknown status byte {other}"),
        }),
    })
}

/// Turns a wasm failure into the error the user sees.
pub(super) fn classify(
    err: wasmtime::Error,
    state: &TaskState,
    stop: Option<Stop>,
    limits: &Limits,
    stderr: &[u8],
) -> TaskError {
    if state.limiter.hit {
        return TaskError::MemoryLimit {
            limit: limits.memory.unwrap_or(u64::MAX),
            initial: state.limiter.initial_over,
        };
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return TaskError::Exit { code: exit.0 };
    }
    // wasmtime-wasi turns a failed file write into a trap; past RLIMIT_FSIZE (set to the
    // output cap while a command runs) that is a file in /out outgrowing the cap.
    let file_too_large = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EFBIG))
    });
    if file_too_large {
        return TaskError::BadOutput {
            message: format!(
                "the program wrote a file in {} over the cap of {} bytes (Limits::max_output)",
                crate::command::OUT_DIR,
                limits.max_output
            ),
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => TaskError::FuelExhausted {
            fuel: limits.fuel.unwrap_or(u64::MAX),
        },
        Some(Trap::Interrupt) => match stop {
            Some(Stop::Cancelled) => TaskError::cancelled("stopped while running"),
            _ => TaskError::Timeout {
                limit: limits.timeout.unwrap_or_default(),
            },
        },
        Some(trap) => {
            let text = trap.to_string();
            let mut message = text
                .strip_prefix("wasm trap: ")
                .unwrap_or(&text)
                .to_string();
            if let Some(frame) = err.downcast_ref::<WasmBacktrace>().and_then(|bt| {
                bt.frames()
                    .first()
                    .and_then(|f| f.func_name().map(str::to_string))
            }) {
                message.push_str(&format!(" in `{frame}`"));
            }
            if let Some(line) = last_line(stderr) {
                message.push_str(&format!(" (guest stderr: {line})"));
            }
            TaskError::Trap {
                message,
                code: Some(trap_code(*trap)),
            }
        }
        None => TaskError::Trap {
            message: format!("{err:#}"),
            code: None,
        },
    }
}

/// wasmtime's trap code as ours.
fn trap_code(trap: Trap) -> TrapCode {
    match trap {
        Trap::StackOverflow => TrapCode::StackOverflow,
        Trap::MemoryOutOfBounds => TrapCode::MemoryOutOfBounds,
        Trap::HeapMisaligned => TrapCode::HeapMisaligned,
        Trap::TableOutOfBounds => TrapCode::TableOutOfBounds,
        Trap::IndirectCallToNull => TrapCode::IndirectCallToNull,
        Trap::BadSignature => TrapCode::BadSignature,
        Trap::IntegerOverflow => TrapCode::IntegerOverflow,
        Trap::IntegerDivisionByZero => TrapCode::IntegerDivisionByZero,
        Trap::BadConversionToInteger => TrapCode::BadConversionToInteger,
        Trap::UnreachableCodeReached => TrapCode::UnreachableCodeReached,
        Trap::NullReference => TrapCode::NullReference,
        Trap::ArrayOutOfBounds => TrapCode::ArrayOutOfBounds,
        Trap::AllocationTooLarge => TrapCode::AllocationTooLarge,
        Trap::CastFailure => TrapCode::CastFailure,
        _ => TrapCode::Other,
    }
}

/// The last non-empty line of the guest's stderr, shortened, to explain a panic's trap.
fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note: run with"))?;
    let mut line = line.to_string();
    if line.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    Some(line)
}
