//! Stopping a running guest from outside: the worker's deadline timer and cancellation, both
//! through wasmtime's epoch interruption. One task runs at a time in a worker; the
//! interrupter knows which, so a late timer or a cancel meant for another task never hits
//! the wrong one.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::protocol::TaskId;

/// Why a running task was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Its wall-clock deadline passed.
    Timeout,
    /// The host cancelled it.
    Cancelled,
}

/// Arms a deadline per task and bumps the engines' epochs when it passes or on cancel (the
/// running task's engine is one of them; a bump where nothing runs is harmless).
pub struct Interrupter {
    engines: Vec<Engine>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// Tasks cancelled before they started. The host numbers a worker's tasks in the order
    /// it sends them, which is the order they run in: a cancel of a task below the last one
    /// started is late (that task finished), and starting a task settles every cancel below
    /// it. So this holds only tasks still to come (at most those in flight).
    cancelled: BTreeSet<TaskId>,
    /// The last task started (0: none yet).
    last_started: TaskId,
    /// When the sleeping timer thread will wake by itself (`None`: only when notified). A
    /// new task wakes it only if its deadline is earlier: no thread switch per task.
    timer_wakes_at: Option<Instant>,
}

struct Running {
    task: TaskId,
    deadline: Option<Instant>,
    stop: Option<Stop>,
    /// When a call still running after its interrupt (stuck in a host call, which epochs
    /// cannot stop) makes the worker exit by itself: calls of a batch, whose deadline the
    /// host does not know call by call.
    give_up: Option<Duration>,
}

impl Interrupter {
    fn interrupt(&self) {
        for engine in &self.engines {
            engine.increment_epoch();
        }
    }

    /// Starts the timer thread for `engines`.
    pub fn start(engines: Vec<Engine>) -> std::io::Result<Arc<Self>> {
        let this = Arc::new(Interrupter {
            engines,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let timer = this.clone();
        std::thread::Builder::new()
            .name("wasmpool-deadline".into())
            .spawn(move || timer.run_timer())?;
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_timer(&self) {
        let mut state = self.lock();
        loop {
            let (deadline, stuck) = match &state.running {
                Some(Running {
                    deadline: Some(d),
                    stop: None,
                    ..
                }) => (*d, false),
                Some(Running {
                    deadline: Some(d),
                    stop: Some(_),
                    give_up: Some(grace),
                    ..
                }) => (d.checked_add(*grace).unwrap_or(*d), true),
                _ => {
                    state.timer_wakes_at = None;
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
            };
            let now = Instant::now();
            if now >= deadline && stuck {
                eprintln!(
                    "wasmpool worker: a call of batch task {} is stuck in a host call past its limit; exiting",
                    state.running.as_ref().map_or(0, |r| r.task)
                );
                // SAFETY: _exit ends the process at once, running nothing of this one
                // (the main thread is stuck in the guest's host call).
                unsafe { libc::_exit(crate::protocol::EXIT_STUCK) };
            } else if now >= deadline {
                if let Some(r) = state.running.as_mut() {
                    r.stop = Some(Stop::Timeout);
                }
                self.interrupt();
            } else {
                state.timer_wakes_at = Some(deadline);
                state = self
                    .wake
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }

    /// Marks `task` as running until `deadline`. Call after the task's store has its epoch
    /// deadline set. Returns `false` if the task was cancelled before it started. With
    /// `give_up`, a call still running that long after it was interrupted makes the worker
    /// exit (see [`crate::protocol::EXIT_STUCK`]).
    pub fn arm(&self, task: TaskId, deadline: Option<Instant>, give_up: Option<Duration>) -> bool {
        let mut state = self.lock();
        // Cancels of tasks before this one are late: those tasks have run.
        if !state.cancelled.is_empty() {
            state.cancelled = state.cancelled.split_off(&task);
        }
        state.last_started = state.last_started.max(task);
        if state.cancelled.remove(&task) {
            return false;
        }
        state.running = Some(Running {
            task,
            deadline,
            stop: None,
            give_up,
        });
        let wake = deadline.is_some_and(|d| state.timer_wakes_at.is_none_or(|t| d < t));
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Marks the running task as finished; tells whether it was interrupted, and why.
    pub fn disarm(&self) -> Option<Stop> {
        self.lock().running.take().and_then(|r| r.stop)
    }

    /// Cancels `task`: interrupts it if it runs now, skips it when it would start.
    pub fn cancel(&self, task: TaskId) {
        let mut state = self.lock();
        let last_started = state.last_started;
        match state.running.as_mut() {
            Some(r) if r.task == task => {
                // Already stopping (deadline or an earlier cancel): nothing more to do.
                let first = r.stop.is_none();
                r.stop.get_or_insert(Stop::Cancelled);
                if first {
                    self.interrupt();
                }
            }
            // The task has not started (or is the batch just running, between two calls);
            // one below the last started has finished: nothing to do.
            _ if task >= last_started => {
                state.cancelled.insert(task);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_of_finished_tasks_are_not_kept() {
        let interrupter = Interrupter::start(Vec::new()).unwrap();
        // Each cancel arrives just after its task finished (the host had not heard yet).
        for task in 1..=10_000 {
            assert!(interrupter.arm(task, None, None));
            assert_eq!(interrupter.disarm(), None);
            interrupter.cancel(task);
        }
        assert!(
            interrupter.lock().cancelled.len() <= 1,
            "{} cancels kept",
            interrupter.lock().cancelled.len()
        );
        // Cancels still reach tasks that have not started, the next call of a batch (same
        // task id) included, and a running one.
        interrupter.cancel(10_002);
        assert!(interrupter.arm(10_001, None, None));
        assert_eq!(interrupter.disarm(), None);
        interrupter.cancel(10_001);
        assert!(
            !interrupter.arm(10_001, None, None),
            "next call of the batch"
        );
        assert!(
            !interrupter.arm(10_002, None, None),
            "cancelled before it started"
        );
        assert!(interrupter.arm(10_003, None, None));
        interrupter.cancel(10_003);
        assert_eq!(interrupter.disarm(), Some(Stop::Cancelled));
    }
}
