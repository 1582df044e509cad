//! `Pool.map` / `imap` / `imap_unordered`: the calls run through the library's own batching,
//! not a `Future` per item, on producer threads that post results to the Python iterator.
//!
//! - In order, many inputs: the inputs are cut into chunks growing from a few per worker to
//!   a few thousand (the first results come quickly, the later chunks are large enough for
//!   `Call::map` to send batches of 64 calls); two producer threads run alternate chunks, so
//!   the workers are not idle between one chunk's last result and the next chunk's first.
//! - In order, few inputs (no batching to gain): `Call::imap`, each result as soon as it and
//!   those before it are done.
//! - As they finish: `Call::map_unordered`.
//!
//! The iterator waits with the GIL released, checks Ctrl-C between slices, and raises
//! `concurrent.futures.TimeoutError` when a result is not there by the deadline given at the
//! start (as `Executor.map` does). Dropping it (or `cancel()`) stops submitting chunks not
//! started; an unordered or small map's tasks not finished are cancelled.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use wasmpool::{Call, Input, Output, TaskError};

type Outcome = Result<Output, TaskError>;
/// A chunk's index and its results in input order.
type Chunk = (usize, Vec<Outcome>);
/// A chunk's index and its inputs (or why each cannot run).
type Inputs = (usize, Vec<Result<Input, TaskError>>);

/// Producer threads of an ordered map.
const PRODUCERS: usize = 2;
/// The largest chunk, in calls: `Call::map` then sends batches of 64 to each worker.
const MAX_CHUNK: usize = 8192;

/// The iterator of a map's results.
#[pyclass(module = "wasmpool._core", name = "MapIter", weakref)]
pub struct MapIter {
    rx: Receiver<Chunk>,
    ordered: bool,
    next_chunk: usize,
    /// Chunks that arrived before the one due next.
    early: BTreeMap<usize, Vec<Outcome>>,
    current: VecDeque<Outcome>,
    /// Results not yielded yet.
    remaining: usize,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    finished: bool,
}

impl MapIter {
    pub fn start(
        call: Call,
        workers: usize,
        items: Vec<Result<Input, TaskError>>,
        ordered: bool,
        deadline: Option<Instant>,
    ) -> MapIter {
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let remaining = items.len();
        let small = items.len() <= workers.max(1) * 32;
        if !ordered {
            let stop = stop.clone();
            spawn(move || unordered(call, items, tx, stop));
        } else if small {
            let stop = stop.clone();
            spawn(move || in_order(call, items, tx, stop));
        } else {
            let mut per_thread: Vec<Vec<Inputs>> = (0..PRODUCERS).map(|_| Vec::new()).collect();
            let mut size = (workers.max(1) * 64).min(MAX_CHUNK);
            let mut items = items.into_iter();
            let mut index = 0;
            loop {
                let chunk: Vec<_> = items.by_ref().take(size).collect();
                if chunk.is_empty() {
                    break;
                }
                per_thread[index % PRODUCERS].push((index, chunk));
                index += 1;
                size = (size * 2).min(MAX_CHUNK);
            }
            for chunks in per_thread {
                let (call, tx, stop) = (call.clone(), tx.clone(), stop.clone());
                spawn(move || chunked(call, chunks, tx, stop));
            }
        }
        MapIter {
            rx,
            ordered,
            next_chunk: 0,
            early: BTreeMap::new(),
            current: VecDeque::new(),
            remaining,
            deadline,
            stop,
            finished: false,
        }
    }

    fn end(&mut self) {
        self.finished = true;
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name("wasmpool-map".into())
        .spawn(f)
        .expect("spawn a map thread");
}

/// Splits `items` into the inputs that can run and the positions of those that cannot.
fn split(items: Vec<Result<Input, TaskError>>) -> (Vec<Input>, Vec<Option<TaskError>>) {
    let mut valid = Vec::with_capacity(items.len());
    let errors = items
        .into_iter()
        .map(|i| match i {
            Ok(input) => {
                valid.push(input);
                None
            }
            Err(e) => Some(e),
        })
        .collect();
    (valid, errors)
}

fn chunked(call: Call, chunks: Vec<Inputs>, tx: Sender<Chunk>, stop: Arc<AtomicBool>) {
    for (index, items) in chunks {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (valid, errors) = split(items);
        let mut results = call.map::<Output, Input>(valid).into_iter();
        let merged = errors
            .into_iter()
            .map(|e| match e {
                Some(e) => Err(e),
                None => results.next().unwrap_or_else(|| {
                    Err(TaskError::BadOutput {
                        message: "a map gave fewer results than calls".into(),
                    })
                }),
            })
            .collect();
        if tx.send((index, merged)).is_err() {
            return;
        }
    }
}

fn in_order(
    call: Call,
    items: Vec<Result<Input, TaskError>>,
    tx: Sender<Chunk>,
    stop: Arc<AtomicBool>,
) {
    let (valid, errors) = split(items);
    let mut results = call.imap::<Output, _>(valid);
    for (index, e) in errors.into_iter().enumerate() {
        let outcome = match e {
            Some(e) => Err(e),
            // Stopped: dropping `results` cancels the tasks not finished.
            None => match next_unless_stopped(&mut results, &stop) {
                Some(Some(outcome)) => outcome,
                Some(None) => Err(TaskError::BadOutput {
                    message: "a map gave fewer results than calls".into(),
                }),
                None => return,
            },
        };
        if tx.send((index, vec![outcome])).is_err() {
            return;
        }
    }
}

fn unordered(
    call: Call,
    items: Vec<Result<Input, TaskError>>,
    tx: Sender<Chunk>,
    stop: Arc<AtomicBool>,
) {
    let (valid, errors) = split(items);
    for e in errors.into_iter().flatten() {
        if tx.send((0, vec![Err(e)])).is_err() {
            return;
        }
    }
    let mut results = call.map_unordered::<Output, _>(valid);
    while let Some(Some((_, outcome))) = next_unless_stopped(&mut results, &stop) {
        if tx.send((0, vec![outcome])).is_err() {
            return;
        }
    }
}

/// Wakes the producer thread parked in [`next_unless_stopped`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The stream's next item, waiting for it; `None` once `stop` is set (looked at every
/// [`crate::SLICE`]), so that a stopped map drops its tasks, which cancels them.
fn next_unless_stopped<S: futures_core::Stream + Unpin>(
    stream: &mut S,
    stop: &AtomicBool,
) -> Option<Option<S::Item>> {
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match std::pin::Pin::new(&mut *stream).poll_next(&mut cx) {
            std::task::Poll::Ready(item) => return Some(item),
            std::task::Poll::Pending => std::thread::park_timeout(crate::SLICE),
        }
    }
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        loop {
            if self.finished {
                return Err(PyStopIteration::new_err(()));
            }
            if let Some(outcome) = self.current.pop_front() {
                self.remaining -= 1;
                return crate::result(py, outcome);
            }
            if self.remaining == 0 {
                self.end();
                continue;
            }
            if self.ordered {
                if let Some(chunk) = self.early.remove(&self.next_chunk) {
                    self.current = chunk.into();
                    self.next_chunk += 1;
                    continue;
                }
            }
            let rx = &self.rx;
            let got = crate::wait_for(py, self.deadline, |slice| match rx.recv_timeout(slice) {
                Ok(chunk) => Some(Some(chunk)),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(None),
            })?;
            match got {
                None => {
                    self.end();
                    let timeout = py
                        .import("concurrent.futures")?
                        .getattr("TimeoutError")?
                        .call0()?;
                    return Err(PyErr::from_value(timeout));
                }
                Some(Some((index, results))) if self.ordered => {
                    self.early.insert(index, results);
                }
                Some(Some((_, results))) => self.current.extend(results),
                Some(None) => {
                    self.end();
                    return Err(PyRuntimeError::new_err(
                        "the map's producer thread ended before every result was given",
                    ));
                }
            }
        }
    }

    /// Stops submitting the inputs not started; the iterator ends.
    fn cancel(&mut self) {
        self.end();
    }
}

impl Drop for MapIter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
