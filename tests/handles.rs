//! Owned, async-ready handles against real worker processes: a pool shared by clones and
//! closed through any of them, calls and iterators moved into threads and tokio tasks,
//! `Stream`s, `load_async`, and the bounded queue (`max_queued`: `submit` waits,
//! `try_submit` says `QueueFull`, `submit_async` waits without a thread, `imap` over an
//! endless iterator in bounded memory).

mod common;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{builder, guest, guest_wat, pool_with};
use wasmpool::{
    AsCompleted, Call, CommandSpec, Imap, OutputChunk, OutputStream, Pool, QueueFull, Task,
    TaskError,
};

/// Long enough for anything that must happen on a loaded machine.
const SURELY: Duration = Duration::from_secs(20);

fn owned<T: Send + 'static>() {}
fn shared<T: Send + Sync + 'static>() {}

#[test]
fn handles_own_what_they_need() {
    shared::<Pool>();
    shared::<Call>();
    owned::<Task<i64>>();
    owned::<Imap<i64>>();
    owned::<AsCompleted<i64>>();
    owned::<OutputStream>();
}

#[test]
fn clones_share_one_pool_from_many_threads() {
    let (pool, math) = pool_with("math");
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let call = pool.call(&math, "square");
            std::thread::spawn(move || {
                (0..50i64)
                    .map(|i| call.submit::<i64>(t * 100 + i).wait().unwrap())
                    .sum::<i64>()
            })
        })
        .collect();
    for (t, h) in (0..4i64).zip(threads) {
        let expected: i64 = (0..50i64).map(|i| (t * 100 + i) * (t * 100 + i)).sum();
        assert_eq!(h.join().unwrap(), expected);
    }
    // The same workers served every clone.
    assert_eq!(pool.clone().worker_pids().len(), 2);
}

#[test]
fn shutdown_through_any_clone_closes_the_pool_for_all() {
    let (pool, math) = pool_with("math");
    let other = pool.clone();
    let call = pool.call(&math, "square");
    let before = call.submit::<i64>(9i64);
    other.shutdown();
    assert_eq!(before.wait(), Ok(81), "shutdown drains what was submitted");
    assert!(pool.is_closed());
    assert!(matches!(
        call.submit::<i64>(3i64).wait(),
        Err(TaskError::Cancelled { .. })
    ));
    assert!(pool.worker_pids().is_empty());
    // A second shutdown (through another clone) returns at once.
    pool.shutdown();
}

#[test]
fn dropping_the_last_clone_terminates_the_pool() {
    let (pool, math) = pool_with("math");
    let pids = pool.worker_pids();
    let kept = pool.clone();
    drop(pool);
    assert_eq!(kept.submit::<i64>(&math, "square", 4i64).wait(), Ok(16));
    assert_eq!(kept.worker_pids(), pids, "one clone gone: the workers stay");
    drop(kept);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} outlived the last clone of its pool"
        );
    }
}

/// A one-worker pool whose worker is busy with a task that runs until cancelled, and
/// whose queue holds `max_queued` calls.
fn busy_pool(max_queued: usize) -> (Pool, wasmpool::Module, Task<i64>) {
    let pool = builder().workers(1).max_queued(max_queued).build().unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let spin = pool.call(&hostile, "spin").timeout(None).submit::<i64>(());
    while !spin.is_running() {
        assert_eq!(spin.wait_timeout(Duration::from_millis(5)), None);
    }
    let math = pool.load_file(guest("math")).unwrap();
    (pool, math, spin)
}

#[test]
fn try_submit_is_refused_at_the_bound_and_room_comes_back_as_tasks_leave_the_queue() {
    let (pool, math, spin) = busy_pool(3);
    let call = pool.call(&math, "square");
    let mut queued: Vec<Task<i64>> = (0..3i64)
        .map(|i| call.try_submit(i).expect("room for three"))
        .collect();
    let full: QueueFull = call.try_submit::<i64>(3i64).unwrap_err();
    assert_eq!(full.limit, 3);
    assert!(full.to_string().contains("full"), "{full}");
    // Input that cannot run takes no room: it fails at once.
    assert!(matches!(
        call.try_submit::<i64>((1i64, 2i64)).unwrap().wait(),
        Err(TaskError::BadInput { .. })
    ));
    // A queued task dropped (cancelled) gives its room back at once.
    drop(queued.pop());
    let again = call.try_submit::<i64>(7i64).expect("room after a cancel");
    spin.cancel();
    assert_eq!(again.wait(), Ok(49));
    assert_eq!(queued[1].wait(), Ok(1));
}

#[test]
fn submit_waits_for_room_in_a_full_queue() {
    let (pool, math, spin) = busy_pool(2);
    let call = pool.call(&math, "square");
    let queued: Vec<Task<i64>> = call.submit_many(0..2i64);
    let (submitted_tx, submitted) = crossbeam_channel::bounded(1);
    let waiter = {
        let call = call.clone();
        std::thread::spawn(move || {
            let task = call.submit::<i64>(5i64);
            submitted_tx.send(()).unwrap();
            task.wait()
        })
    };
    // A bounded wait for something that must *not* happen: the queue stays full.
    assert!(submitted.recv_timeout(Duration::from_millis(300)).is_err());
    spin.cancel();
    submitted
        .recv_timeout(SURELY)
        .expect("room once the worker takes tasks");
    assert_eq!(waiter.join().unwrap(), Ok(25));
    assert_eq!(queued[1].wait(), Ok(1));
}

#[test]
fn a_wait_for_room_ends_when_the_pool_is_closed() {
    let (pool, math, _spin) = busy_pool(1);
    let call = pool.call(&math, "square");
    let held = call.submit::<i64>(1i64);
    let waiter = {
        let call = call.clone();
        std::thread::spawn(move || call.submit::<i64>(2i64).wait())
    };
    pool.terminate();
    assert!(matches!(
        waiter.join().unwrap(),
        Err(TaskError::Cancelled { .. })
    ));
    assert!(matches!(held.wait(), Err(TaskError::Cancelled { .. })));
}

#[test]
fn submit_async_is_pending_while_the_queue_is_full_and_wakes_when_room_comes() {
    let (pool, math, spin) = busy_pool(1);
    let call = pool.call(&math, "square");
    let held = call.submit::<i64>(1i64);
    let mut waiting = Box::pin(call.submit_async::<i64>(6i64));
    let woken = Arc::new(Woken::default());
    let waker = std::task::Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    spin.cancel();
    woken.wait(SURELY);
    let Poll::Ready(task) = waiting.as_mut().poll(&mut cx) else {
        panic!("woken, yet no room");
    };
    assert_eq!(task.wait(), Ok(36));
    assert_eq!(held.wait(), Ok(1));
}

/// A waker that records its wake-up.
#[derive(Default)]
struct Woken(std::sync::Mutex<bool>, std::sync::Condvar);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }
}

impl Woken {
    fn wait(&self, bound: Duration) {
        let (woken, _) = self
            .1
            .wait_timeout_while(self.0.lock().unwrap(), bound, |w| !*w)
            .unwrap();
        assert!(*woken, "not woken within {bound:?}");
    }
}

#[test]
fn imap_under_a_bound_takes_inputs_as_results_are_taken() {
    let pool = builder().max_queued(8).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    // As good as endless: submitting it all would take a million tasks' memory.
    let inputs = (0..1_000_000i64).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let squares: Vec<i64> = pool
        .imap::<i64, _>(&math, "square", inputs)
        .take(500)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..500i64).map(|i| i * i).collect::<Vec<_>>());
    // The bound, plus what the two workers hold, plus what finished ahead.
    let window = 8 + 4 * 2;
    assert!(
        pulled.load(Ordering::Relaxed) <= 500 + window + 1,
        "pulled {} inputs for 500 results",
        pulled.load(Ordering::Relaxed)
    );
}

#[test]
fn map_under_a_bound_still_returns_every_result_in_order() {
    let pool = builder().max_queued(16).build().unwrap();
    let math = pool.load_file(guest("math")).unwrap();
    let out = pool.map::<i64, _>(&math, "square", 0..5000i64);
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, r)| *r == Ok((i * i) as i64)));
    let unordered: Vec<(usize, Result<i64, TaskError>)> =
        pool.map_unordered(&math, "square", 0..300i64).collect();
    assert_eq!(unordered.len(), 300);
    assert!(unordered.iter().all(|(i, r)| *r == Ok((*i * *i) as i64)));
}

async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterators_and_output_are_streams_too() {
    for bound in [None, Some(4)] {
        let pool = builder().max_queued(bound).build().unwrap();
        let math = pool
            .load_async(std::fs::read(guest("math")).unwrap())
            .await
            .unwrap();
        let mut imap = pool.imap::<i64, _>(&math, "square", 0..100i64);
        let mut got = Vec::new();
        while let Some(r) = next(&mut imap).await {
            got.push(r.unwrap());
        }
        assert_eq!(got, (0..100i64).map(|i| i * i).collect::<Vec<_>>());
        let mut unordered = pool.map_unordered::<i64, _>(&math, "square", 0..100i64);
        let mut seen = [false; 100];
        while let Some((i, r)) = next(&mut unordered).await {
            assert_eq!(r, Ok((i * i) as i64));
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "{bound:?}");
    }
    let pool = builder().build().unwrap();
    let echo = pool.load_file(guest_wat("write_loop.wat")).unwrap();
    // No cap on what is streamed: the writer (64 MiB) is held up by the stream's bounded
    // buffer once the reader stops reading, so it cannot finish before the cancel.
    let limits = wasmpool::Limits {
        stdout_cap: u32::MAX,
        timeout: Some(Duration::from_secs(30)),
        ..pool.limits()
    };
    let (task, mut output) = pool
        .command(&echo)
        .limits(limits)
        .submit_streaming(CommandSpec::new());
    // Some of a long writer's output, read asynchronously; then stop it.
    let mut bytes = 0;
    while bytes < 1 << 20 {
        match next(&mut output).await {
            Some(OutputChunk::Stdout(b)) => bytes += b.len(),
            other => panic!("{other:?}"),
        }
    }
    task.cancel();
    let outcome = task.await;
    assert!(
        matches!(outcome, Err(TaskError::Cancelled { .. })),
        "{outcome:?}"
    );
}

#[test]
fn load_async_returns_before_the_compile_ends() {
    let pool = builder().compile_cache(None).build().unwrap();
    let bytes = std::fs::read(guest("math")).unwrap();
    let mut loading = Box::pin(pool.load_async(bytes.clone()));
    // A compile is a process of its own (milliseconds at the least): right after the call
    // the future cannot be ready, and polling it does not wait for it.
    let woken = Arc::new(Woken::default());
    let waker = std::task::Waker::from(woken.clone());
    assert!(loading
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    woken.wait(SURELY);
    let math = pollster_block_on(loading).unwrap();
    assert_eq!(pool.submit::<i64>(&math, "square", 3i64).wait(), Ok(9));
    // Loaded already: at once, the same module.
    let again = pollster_block_on(pool.load_async(bytes)).unwrap();
    assert_eq!(again.id(), math.id());
    assert!(matches!(
        pollster_block_on(pool.load_async(b"not wasm".to_vec())),
        Err(wasmpool::LoadError::Invalid { .. })
    ));
}

fn pollster_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
