//! The completer: one thread per pool that holds every submitted task with its
//! `concurrent.futures.Future`, and completes the future when the task finishes.
//!
//! Tasks are polled as Rust futures: each registers a waker that posts the task's key to the
//! thread's channel when its outcome lands, so the thread sleeps until something finished and
//! polls only that. Results that finish together are handed to Python in one batch
//! (`wasmpool._settle`), under one acquisition of the GIL.
//!
//! The thread owns the tasks: a Python `Future` that is discarded does not cancel its task
//! (it runs on, as in `concurrent.futures`); `Future.cancel()` does (`Msg::Cancel`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;
use pyo3::types::PyList;
use wasmpool::{Output, Task, TaskError};

/// The completer thread's name: done callbacks run on it.
pub const THREAD: &str = "wasmpool-completer";

pub enum Msg {
    /// A task and its future.
    Add(u64, Task<Output>, Py<PyAny>),
    /// The task `key` may have finished.
    Woken(u64),
    /// `Future.cancel()` on the task `key`.
    Cancel(u64),
    /// Cancel every task no worker has taken; the sender is dropped when done.
    CancelQueued(Sender<()>),
    /// No more tasks will come: end once every held task is completed.
    Close,
}

/// Posts a task's key to the completer when the task's outcome lands.
struct KeyWaker {
    key: u64,
    tx: Sender<Msg>,
}

impl Wake for KeyWaker {
    fn wake(self: Arc<Self>) {
        let _ = self.tx.send(Msg::Woken(self.key));
    }
}

/// The handle on a pool's completer thread.
pub struct Completer {
    tx: Sender<Msg>,
    next: AtomicU64,
    /// Disconnected when the thread has ended.
    exited: Receiver<()>,
}

/// Sends `Close` to a completer (from any thread).
pub struct CloseHandle(Sender<Msg>);

impl CloseHandle {
    pub fn close(&self) {
        let _ = self.0.send(Msg::Close);
    }
}

impl Completer {
    /// Starts the thread; `settle` is `wasmpool._settle`, called with a list of
    /// `(future, ok, value_or_exception)`.
    pub fn start(settle: Py<PyAny>) -> Completer {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (alive, exited) = crossbeam_channel::bounded::<()>(0);
        let wake_tx = tx.clone();
        std::thread::Builder::new()
            .name(THREAD.into())
            .spawn(move || {
                run(rx, wake_tx, settle);
                drop(alive);
            })
            .expect("spawn the completer thread");
        Completer {
            tx,
            next: AtomicU64::new(0),
            exited,
        }
    }

    /// Hands a submitted task (or the error that kept it from being submitted) and its
    /// future to the thread; the key for [`Msg::Cancel`].
    pub fn add(&self, task: Task<Output>, future: Py<PyAny>) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.send(Msg::Add(key, task, future));
        key
    }

    pub fn send(&self, msg: Msg) {
        // The thread ends only after Close, after which nothing is submitted.
        let _ = self.tx.send(msg);
    }

    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle(self.tx.clone())
    }

    /// A receiver that disconnects when the thread has ended.
    pub fn exited(&self) -> Receiver<()> {
        self.exited.clone()
    }
}

fn run(rx: Receiver<Msg>, tx: Sender<Msg>, settle: Py<PyAny>) {
    let mut tasks: HashMap<u64, (Task<Output>, Py<PyAny>)> = HashMap::new();
    let mut closing = false;
    let mut ready: Vec<(Py<PyAny>, Result<Output, TaskError>)> = Vec::new();
    while !(closing && tasks.is_empty()) {
        let Ok(first) = rx.recv() else { break };
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Add(key, task, future) => {
                    tasks.insert(key, (task, future));
                    poll(&mut tasks, key, &tx, &mut ready);
                }
                Msg::Woken(key) => poll(&mut tasks, key, &tx, &mut ready),
                Msg::Cancel(key) => {
                    if let Some((task, _)) = tasks.get(&key) {
                        task.cancel();
                    }
                }
                Msg::CancelQueued(_done) => {
                    for (task, _) in tasks.values() {
                        if !task.is_running() {
                            task.cancel();
                        }
                    }
                }
                Msg::Close => closing = true,
            }
            // Hand over what finished before the batch grows large.
            if ready.len() >= 4096 {
                deliver(&settle, &mut ready);
            }
        }
        deliver(&settle, &mut ready);
    }
    // Nothing is left to complete; the futures' references go with the GIL held.
    Python::attach(|_py| drop(settle));
}

fn poll(
    tasks: &mut HashMap<u64, (Task<Output>, Py<PyAny>)>,
    key: u64,
    tx: &Sender<Msg>,
    ready: &mut Vec<(Py<PyAny>, Result<Output, TaskError>)>,
) {
    let Some((task, _)) = tasks.get_mut(&key) else {
        return;
    };
    let waker = Waker::from(Arc::new(KeyWaker {
        key,
        tx: tx.clone(),
    }));
    let mut cx = Context::from_waker(&waker);
    if let Poll::Ready(outcome) = Pin::new(task).poll(&mut cx) {
        if let Some((_, future)) = tasks.remove(&key) {
            ready.push((future, outcome));
        }
    }
}

/// Completes the futures of `ready` in Python, in one call under the GIL.
fn deliver(settle: &Py<PyAny>, ready: &mut Vec<(Py<PyAny>, Result<Output, TaskError>)>) {
    if ready.is_empty() {
        return;
    }
    Python::attach(|py| {
        let items = PyList::empty(py);
        for (future, outcome) in ready.drain(..) {
            let item = match crate::result(py, outcome) {
                Ok(value) => (future, true, value),
                Err(e) => (future, false, e.into_value(py).into_any()),
            };
            if let Err(e) = items.append(item) {
                e.print(py);
            }
        }
        if let Err(e) = settle.call1(py, (items,)) {
            // `_settle` catches what a future raises; anything else is a bug worth seeing.
            e.print(py);
        }
    });
}
