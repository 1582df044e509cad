//! The bound on calls waiting in a pool ([`PoolBuilder::max_queued`](super::PoolBuilder::max_queued)):
//! a call is admitted before it is sent to the dispatcher and holds its admission until a
//! worker takes it (or it finishes without running: cancelled, refused, the pool gone).
//! Running calls hold none.
//!
//! Admission waits three ways: blocking a thread (`Call::submit`), not at all
//! (`Call::try_submit`, refused with [`QueueFull`](crate::QueueFull)) or asynchronously
//! (`Call::submit_async`). A batch of `n` calls is admitted as `n` at once, so two batches
//! waiting side by side never each hold part of the room the other needs.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The room a call (or a batch of calls) holds in the queue; released when dropped.
pub(crate) type Admission = OwnedSemaphorePermit;

/// Why a call was not admitted at once.
pub(crate) enum Refused {
    /// The queue is at its bound.
    Full,
    /// The pool is shut down: nothing is admitted any more.
    Closed,
}

pub(crate) struct Gate {
    room: Arc<Semaphore>,
    limit: usize,
}

impl Gate {
    /// A bound of `limit` waiting calls (at least 1; at most what the semaphore counts).
    pub(crate) fn new(limit: usize) -> Gate {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Gate {
            room: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// How much room `calls` calls take: a batch larger than the whole queue takes all of
    /// it (it could never be admitted otherwise).
    fn room_for(&self, calls: usize) -> u32 {
        calls.clamp(1, self.limit) as u32
    }

    pub(crate) fn try_admit(&self, calls: usize) -> Result<Admission, Refused> {
        self.room
            .clone()
            .try_acquire_many_owned(self.room_for(calls))
            .map_err(|e| match e {
                TryAcquireError::NoPermits => Refused::Full,
                TryAcquireError::Closed => Refused::Closed,
            })
    }

    /// Waits (blocking this thread) until there is room; `None` once the pool is shut down.
    pub(crate) fn admit(&self, calls: usize) -> Option<Admission> {
        match self.try_admit(calls) {
            Ok(a) => Some(a),
            Err(Refused::Closed) => None,
            Err(Refused::Full) => pollster::block_on(self.admit_async(calls)),
        }
    }

    /// Waits without blocking a thread until there is room; `None` once the pool is shut
    /// down. The future owns what it needs, so it can be stored or moved.
    pub(crate) fn admit_async(
        &self,
        calls: usize,
    ) -> impl Future<Output = Option<Admission>> + Send + 'static {
        let room = self.room.clone();
        let n = self.room_for(calls);
        async move { room.acquire_many_owned(n).await.ok() }
    }

    /// Admits nothing more; every wait ends with `None`.
    pub(crate) fn close(&self) {
        self.room.close();
    }

    /// Calls waiting in the queue now (as counted by their admissions).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.limit - self.room.available_permits().min(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_count_calls_and_free_room_when_dropped() {
        let gate = Gate::new(3);
        let a = gate.try_admit(2).ok().unwrap();
        assert_eq!(gate.waiting(), 2);
        assert!(matches!(gate.try_admit(2), Err(Refused::Full)));
        let b = gate.try_admit(1).ok().unwrap();
        assert!(matches!(gate.try_admit(1), Err(Refused::Full)));
        drop(a);
        assert_eq!(gate.waiting(), 1);
        // A batch larger than the bound takes the whole queue, not forever to admit.
        drop(b);
        let all = gate.try_admit(10).ok().unwrap();
        assert_eq!(gate.waiting(), 3);
        drop(all);
    }

    #[test]
    fn closing_ends_every_wait() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.try_admit(1).ok().unwrap();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.admit(1).is_none())
        };
        gate.close();
        assert!(
            waiter.join().unwrap(),
            "a blocked admit returns None when closed"
        );
        assert!(matches!(gate.try_admit(1), Err(Refused::Closed)));
        drop(held);
    }
}
