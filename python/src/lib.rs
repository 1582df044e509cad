//! `wasmpool._core`: the native half of the Python package. `wasmpool/__init__.py` builds the
//! `concurrent.futures.Executor` on top of it.
//!
//! - [`Core`] owns a [`wasmpool::Pool`] (started with the worker program shipped in the wheel)
//!   and the pid of the process that made it: used after `fork()` it refuses with a clear
//!   error, and a forked child never touches the parent's threads.
//! - `submit` hands each task to the pool's completer thread (`completer.rs`), which completes
//!   the task's `concurrent.futures.Future` under the GIL when the Rust task finishes.
//! - `map` runs the library's batched `Call::map` over chunks on producer threads (`map.rs`);
//!   the Python iterator waits for each chunk with the GIL released.
//! - Every wait releases the GIL and is cut into slices between which Ctrl-C is checked.

mod completer;
mod convert;
mod errors;
mod map;

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use wasmpool::{ExportKind, Input, Output, Pool, TaskError};

use completer::{Completer, Msg};

/// How long one slice of a blocking wait lasts before Ctrl-C is checked.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// Threads that finish a pool's work in the background (a pool dropped without shutdown,
/// `shutdown(wait=False)`): waited for at interpreter exit (`_join_background`), so that no
/// completer takes the GIL while the interpreter is finalizing.
/// Each with the process that started it (a fork's copy of the list names threads that do
/// not exist in the child).
static BACKGROUND: Mutex<Vec<(u32, Receiver<()>)>> = Mutex::new(Vec::new());

/// Runs `work` on a thread of its own, registered in [`BACKGROUND`]; the receiver
/// disconnects when it has ended.
fn background(work: impl FnOnce() + Send + 'static) -> Receiver<()> {
    let (alive, exited) = crossbeam_channel::bounded::<()>(0);
    std::thread::Builder::new()
        .name("wasmpool-shutdown".into())
        .spawn(move || {
            work();
            drop(alive);
        })
        .expect("spawn a shutdown thread");
    let mut list = BACKGROUND.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    list.retain(|(p, r)| *p == pid && !matches!(r.try_recv(), Err(TryRecvError::Disconnected)));
    list.push((pid, exited.clone()));
    exited
}

/// Waits (GIL released, Ctrl-C checked) until the thread behind `exited` has ended.
fn wait_exit(py: Python<'_>, exited: &Receiver<()>) -> PyResult<()> {
    wait_for(py, None, |slice| match exited.recv_timeout(slice) {
        Err(RecvTimeoutError::Timeout) => None,
        _ => Some(()),
    })?;
    Ok(())
}

/// Waits, with the GIL released and Ctrl-C checked between slices, until `ready` says
/// `Some` or `deadline` passes (`Ok(None)`).
pub(crate) fn wait_for<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut ready: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>> {
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        if let Some(v) = py.detach(|| ready(slice)) {
            return Ok(Some(v));
        }
        py.check_signals()?;
    }
}

/// A module loaded into a pool: its exports and content hash.
#[pyclass(module = "wasmpool._core", name = "Module", frozen)]
pub struct PyModule {
    pub(crate) module: wasmpool::Module,
}

#[pymethods]
impl PyModule {
    /// The callable exports: `(name, kind, params, results)`, kind `"numeric"`, `"task"`
    /// (an SDK task taking and returning JSON) or `"unsupported"`.
    #[getter]
    fn exports(&self) -> Vec<(String, &'static str, Vec<String>, Vec<String>)> {
        self.module
            .exports()
            .iter()
            .map(|e| match &e.kind {
                ExportKind::Numeric { params, results } => (
                    e.name.clone(),
                    "numeric",
                    params.iter().map(ToString::to_string).collect(),
                    results.iter().map(ToString::to_string).collect(),
                ),
                ExportKind::Task => (e.name.clone(), "task", vec![], vec![]),
                _ => (e.name.clone(), "unsupported", vec![], vec![]),
            })
            .collect()
    }

    /// The module's content hash (hex, short form).
    #[getter]
    fn id(&self) -> String {
        self.module.id().to_string()
    }
}

/// The native pool. Use `wasmpool.Pool`, which wraps it.
#[pyclass(module = "wasmpool._core", name = "Pool", frozen, weakref)]
pub struct Core {
    pool: ManuallyDrop<Pool>,
    /// The process that made the pool: its threads and workers exist only there.
    pid: u32,
    completer: ManuallyDrop<Completer>,
}

impl Core {
    fn check_process(&self) -> PyResult<()> {
        let now = std::process::id();
        if now != self.pid {
            return Err(PyRuntimeError::new_err(format!(
                "this wasmpool.Pool was created in process {} and cannot be used in process {now}, \
                 a fork() of it: its dispatcher thread and worker processes belong to the \
                 parent. Create the pool in the child, or start child processes with the \
                 'spawn' method (multiprocessing.set_start_method('spawn'))",
                self.pid
            )));
        }
        Ok(())
    }

    fn call(
        &self,
        module: &PyModule,
        export: &str,
        limits: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<wasmpool::Call> {
        let limits = convert::limits(self.pool.limits(), limits)?;
        Ok(self
            .pool
            .call(&module.module, export)
            .limits(limits)
            .max_retries(0))
    }
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (workers, limits, max_tasks_per_worker, worker_program, settle))]
    fn new(
        py: Python<'_>,
        workers: Option<usize>,
        limits: Option<&Bound<'_, PyDict>>,
        max_tasks_per_worker: Option<u64>,
        worker_program: Option<PathBuf>,
        settle: Py<PyAny>,
    ) -> PyResult<Self> {
        let limits = convert::limits(wasmpool::Limits::default(), limits)?;
        let mut builder = Pool::builder()
            .limits(limits)
            .max_tasks_per_worker(max_tasks_per_worker);
        if let Some(n) = workers {
            builder = builder.workers(n);
        }
        if let Some(p) = worker_program {
            builder = builder.worker_program(p);
        }
        let pool = py
            .detach(|| builder.build())
            .map_err(|e| errors::pool_error(py, &e))?;
        Ok(Core {
            pool: ManuallyDrop::new(pool),
            pid: std::process::id(),
            completer: ManuallyDrop::new(Completer::start(settle)),
        })
    }

    /// Loads a module from its bytes (binary or text format); compiled in a sandboxed
    /// compile process, with the GIL released.
    fn load(&self, py: Python<'_>, bytes: Vec<u8>) -> PyResult<PyModule> {
        self.check_process()?;
        let pool = &*self.pool;
        let module = py
            .detach(|| pool.load(&bytes))
            .map_err(|e| errors::load_error(py, &e))?;
        Ok(PyModule { module })
    }

    /// Loads a module from a file.
    fn load_file(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyModule> {
        self.check_process()?;
        let pool = &*self.pool;
        let module = py
            .detach(|| pool.load_file(&path))
            .map_err(|e| errors::load_error(py, &e))?;
        Ok(PyModule { module })
    }

    /// Submits one call; `future` is completed by the completer thread. Returns the task's
    /// key for `cancel`.
    #[pyo3(signature = (module, export, args, kwargs, limits, future))]
    fn submit(
        &self,
        module: &PyModule,
        export: &str,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        limits: Option<&Bound<'_, PyDict>>,
        future: Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.check_process()?;
        let py = args.py();
        let call = self.call(module, export, limits)?;
        match convert::input(&module.module, export, args, kwargs) {
            Ok(input) => {
                let key = self.completer.add(call.submit::<Output>(input), future);
                Ok(key.into_pyobject(py)?.into_any().unbind())
            }
            // An argument that does not convert: the exception for the future, at once.
            Err(e) => Ok(errors::task_error(py, &e).into_value(py).into_any()),
        }
    }

    /// Submits one WASI command run; `future` gets a `CommandResult`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (module, args, stdin, env, files, output_dir, check, limits, future))]
    fn submit_command(
        &self,
        module: &PyModule,
        args: Vec<String>,
        stdin: Vec<u8>,
        env: Vec<(String, String)>,
        files: Vec<(String, Vec<u8>)>,
        output_dir: bool,
        check: bool,
        limits: Option<&Bound<'_, PyDict>>,
        future: Py<PyAny>,
    ) -> PyResult<u64> {
        self.check_process()?;
        let limits = convert::limits(self.pool.limits(), limits)?;
        let spec = convert::command_spec(args, stdin, env, files, output_dir, check);
        let task = self
            .pool
            .call(&module.module, wasmpool::command::ENTRY)
            .limits(limits)
            .max_retries(0)
            .submit::<Output>(spec);
        Ok(self.completer.add(task, future))
    }

    /// Runs one call and waits for it (GIL released, Ctrl-C cancels it).
    #[pyo3(signature = (module, export, args, kwargs, limits))]
    fn call_wait(
        &self,
        py: Python<'_>,
        module: &PyModule,
        export: &str,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        limits: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_process()?;
        let call = self.call(module, export, limits)?;
        let input = convert::input(&module.module, export, args, kwargs)
            .map_err(|e| errors::task_error(py, &e))?;
        let task = call.submit::<Output>(input);
        // On Ctrl-C the task is dropped unfinished, which cancels it.
        let outcome = wait_for(py, None, |slice| task.wait_timeout(slice))?
            .expect("a wait without a deadline ends with the outcome");
        result(py, outcome)
    }

    /// Runs the export over `inputs` (each a tuple of positional arguments), batched;
    /// an iterator of results in input order (`ordered`) or as they finish.
    #[pyo3(signature = (module, export, inputs, limits, ordered, timeout))]
    fn map(
        &self,
        module: &PyModule,
        export: &str,
        inputs: &Bound<'_, PyList>,
        limits: Option<&Bound<'_, PyDict>>,
        ordered: bool,
        timeout: Option<f64>,
    ) -> PyResult<map::MapIter> {
        self.check_process()?;
        let deadline = convert::seconds(timeout)?.map(|t| Instant::now() + t);
        let call = self.call(module, export, limits)?;
        let empty = PyTuple::empty(inputs.py());
        let mut items: Vec<Result<Input, TaskError>> = Vec::with_capacity(inputs.len());
        for item in inputs.iter() {
            let args = item
                .cast_into::<PyTuple>()
                .unwrap_or_else(|_| empty.clone());
            items.push(convert::input(&module.module, export, &args, None));
        }
        Ok(map::MapIter::start(
            call,
            self.pool.workers(),
            items,
            ordered,
            deadline,
        ))
    }

    /// Cancels the task `key` (a queued one never runs, a running one is stopped).
    fn cancel(&self, key: u64) {
        self.completer.send(Msg::Cancel(key));
    }

    /// Cancels every task no worker has taken yet (`shutdown(cancel_futures=True)`); returns
    /// once they are cancelled.
    fn cancel_queued(&self, py: Python<'_>) -> PyResult<()> {
        self.check_process()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.completer.send(Msg::CancelQueued(tx));
        wait_exit(py, &rx)
    }

    /// Waits for every submitted task to finish and its future to be completed, then stops
    /// the workers. With `wait=False` this happens in the background.
    fn shutdown(&self, py: Python<'_>, wait: bool) -> PyResult<()> {
        self.check_process()?;
        let pool = (*self.pool).clone();
        let close = self.completer.close_handle();
        let completer = self.completer.exited();
        let stopped = background(move || {
            pool.shutdown();
            close.close();
            // Until every future is completed.
            let _ = completer.recv();
        });
        // From a done callback (which runs on the completer thread), waiting for the
        // completer to end would wait for itself: the shutdown then finishes in the
        // background, as with wait=False.
        let on_completer = std::thread::current().name() == Some(completer::THREAD);
        if wait && !on_completer {
            wait_exit(py, &stopped)?;
        }
        Ok(())
    }

    /// Cancels everything and stops the workers at once.
    fn terminate(&self) -> PyResult<()> {
        self.check_process()?;
        self.pool.terminate();
        self.completer.close_handle().close();
        Ok(())
    }

    /// Whether the pool was shut down or terminated.
    #[getter]
    fn closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// The number of worker processes.
    #[getter]
    fn workers(&self) -> usize {
        self.pool.workers()
    }

    /// The worker processes' ids.
    fn worker_pids(&self) -> PyResult<Vec<u32>> {
        self.check_process()?;
        Ok(self.pool.worker_pids())
    }

    /// A snapshot of the pool's work and workers.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.check_process()?;
        let s = self.pool.stats();
        let d = PyDict::new(py);
        d.set_item("queued", s.queued)?;
        d.set_item("running", s.running)?;
        d.set_item("done", s.done)?;
        let failed = PyDict::new(py);
        for (k, v) in &s.failed {
            failed.set_item(*k, *v)?;
        }
        d.set_item("failed", failed)?;
        d.set_item("workers_live", s.workers_live)?;
        d.set_item("workers_restarted", s.workers_restarted)?;
        d.set_item("worker_rss", s.worker_rss.clone())?;
        Ok(d)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A fork's copy: the dispatcher thread, the completer and the workers are the
            // parent's. Dropping the pool would wait for a thread that does not exist here.
            return;
        }
        // SAFETY: `drop` runs once; neither field is used after being taken.
        let (pool, completer) = unsafe {
            (
                ManuallyDrop::take(&mut self.pool),
                ManuallyDrop::take(&mut self.completer),
            )
        };
        // Dropped without shutdown (garbage collected): the work already submitted finishes
        // in the background and its futures are completed, as with concurrent.futures.
        let close = completer.close_handle();
        let exited = completer.exited();
        background(move || {
            pool.shutdown();
            drop(pool);
            close.close();
            // Wait for the completer, so that interpreter exit waits for it too.
            let _ = exited.recv();
        });
    }
}

/// A task's outcome as a Python value or exception.
pub(crate) fn result(py: Python<'_>, outcome: Result<Output, TaskError>) -> PyResult<Py<PyAny>> {
    match outcome {
        Ok(out) => match convert::output(py, out) {
            Ok(v) => Ok(v),
            Err(convert::OutputError::Task(e)) => Err(errors::task_error(py, &e)),
            Err(convert::OutputError::Py(e)) => Err(e),
        },
        Err(e) => Err(errors::task_error(py, &e)),
    }
}

/// Waits (GIL released) for the background threads of every pool: called at interpreter
/// exit, before finalization.
#[pyfunction]
fn _join_background(py: Python<'_>) -> PyResult<()> {
    loop {
        let next = BACKGROUND.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some((pid, exited)) = next else {
            return Ok(());
        };
        if pid == std::process::id() {
            wait_exit(py, &exited)?;
        }
    }
}

#[pymodule]
fn _core(m: &Bound<'_, pyo3::types::PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<PyModule>()?;
    m.add_class::<map::MapIter>()?;
    m.add_class::<convert::CommandResult>()?;
    m.add_function(wrap_pyfunction!(_join_background, m)?)?;
    Ok(())
}
