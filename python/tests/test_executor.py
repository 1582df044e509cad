"""The concurrent.futures patterns of the tutorials, unchanged but for where the task comes
from."""

import concurrent.futures as cf
import gc
import threading
import time

import pytest

import wasmpool

from conftest import guest


def test_is_a_real_executor_with_real_futures(pool, math):
    assert isinstance(pool, cf.Executor)
    f = pool.submit(math.square, 7)
    assert type(f) is cf.Future
    assert f.result(timeout=10) == 49


def test_map_over_range_10(pool, math):
    assert list(pool.map(math.square, range(10))) == [n * n for n in range(10)]


def test_map_many_inputs_batched_in_order(pool, math):
    n = 20_000
    assert list(pool.map(math.square, range(n))) == [i * i for i in range(n)]
    # Two iterables: one argument from each.
    assert list(pool.map(math.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_map_raises_a_failed_call_at_its_place(pool, math):
    it = pool.map(math.div, [6, 8, 9], [3, 0, 3])
    assert next(it) == 2
    with pytest.raises(wasmpool.Trap) as e:
        next(it)
    assert e.value.code == "unreachable_code_reached"  # Rust panics on a zero divisor
    assert next(it) == 3


def test_map_timeout_raises_timeout_error_from_the_iterator(pool, math):
    it = pool.map(math.count.with_limits(timeout=30.0), [10**13, 10**13], timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        next(it)
    # As in the standard library, the iterator is finished after its timeout.
    with pytest.raises(StopIteration):
        next(it)


def test_apply_async_result_feeds_the_next_submit(pool, math):
    first = pool.apply_async(math.square, (3,))
    second = pool.submit(math.square, first.get(timeout=10))
    assert second.result(timeout=10) == 81
    assert first.ready() and first.successful()


def test_apply_async_callbacks(pool, math):
    got, errors = [], []
    done = threading.Event()

    def on_error(e):
        errors.append(e)
        done.set()

    pool.apply_async(math.square, (5,), callback=got.append).wait(10)
    pool.apply_async(math.div, (1, 0), error_callback=on_error)
    assert done.wait(10)
    assert got == [25]
    assert isinstance(errors[0], wasmpool.Trap)


def test_as_completed_with_a_timeout(pool, math):
    futures = [pool.submit(math.square, n) for n in range(20)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [n * n for n in range(20)]

    stuck = pool.submit(math.spin.with_limits(timeout=30.0))
    with pytest.raises(cf.TimeoutError):
        for _ in cf.as_completed([stuck], timeout=0.2):
            pass
    assert stuck.cancel()


def test_wait_first_completed_and_cancel_of_a_running_task(pool, math):
    slow = pool.submit(math.spin.with_limits(timeout=30.0))
    quick = pool.submit(math.square, 4)
    done, not_done = cf.wait([slow, quick], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert quick in done and slow in not_done
    # Unlike a process pool, a running task can be cancelled: its sandbox is stopped.
    assert slow.cancel()
    done, not_done = cf.wait([slow], timeout=30)
    assert slow in done and slow.cancelled()
    with pytest.raises(cf.CancelledError):
        slow.result()


def test_add_done_callback_runs_when_the_task_finishes(pool, math):
    seen = []
    finished = threading.Event()

    def callback(f):
        seen.append(f.result())
        finished.set()

    pool.submit(math.square, 9).add_done_callback(callback)
    assert finished.wait(10)
    assert seen == [81]


def test_shutdown_cancel_futures_cancels_queued_work():
    pool = wasmpool.Pool(1, timeout=30.0)
    math = pool.load(guest("math"))
    assert math.square(2) == 4  # the worker is up: a task sent to it is running at once
    hostile = pool.load(guest("hostile"))
    running = pool.submit(hostile.burn, 300_000_000)  # a loop of n steps; returns n
    deadline = time.monotonic() + 30
    while pool.stats()["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    queued = [pool.submit(math.square, n) for n in range(50)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 300_000_000
    assert all(f.done() for f in queued)
    cancelled = [f for f in queued if f.cancelled()]
    assert cancelled, "no queued future was cancelled"
    for n, f in enumerate(queued):
        if not f.cancelled():
            assert f.result() == n * n
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(math.square, 1)


def test_shutdown_waits_for_submitted_work(math):
    pool = math.pool
    futures = [pool.submit(math.square, n) for n in range(100)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [n * n for n in range(100)]


def test_a_discarded_future_keeps_running(pool, math):
    pool.submit(math.count, 20_000_000)
    gc.collect()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = pool.stats()
        if stats["done"] or stats["failed"]:
            break
        time.sleep(0.005)
    # Dropping a Rust task cancels it; the Python future's task is detached and finishes.
    assert stats["done"] == 1 and not stats["failed"]


def test_runaway_task_stopped_by_timeout_while_others_finish(pool, math):
    runaway = pool.submit(math.spin.with_limits(timeout=0.3))
    others = [pool.submit(math.square, n) for n in range(10)]
    assert [f.result(timeout=30) for f in others] == [n * n for n in range(10)]
    e = runaway.exception(timeout=30)
    assert isinstance(e, wasmpool.Timeout) and isinstance(e, TimeoutError)
    assert "wall-clock limit" in str(e)
    assert e.limit == pytest.approx(0.3)


def test_pool_wide_limits():
    with wasmpool.Pool(1, fuel=1_000_000) as pool:
        math = pool.load(guest("math"))
        with pytest.raises(wasmpool.FuelExhausted) as e:
            math.spin()
        assert e.value.fuel == 1_000_000
        assert math.square(3) == 9


def test_context_manager_shuts_down(math):
    pool = math.pool
    with pool:
        assert pool.submit(math.square, 2).result() == 4
    with pytest.raises(RuntimeError):
        pool.submit(math.square, 2)


def test_shutdown_from_a_done_callback_does_not_wait_for_itself(math):
    pool = math.pool
    finished = threading.Event()

    def callback(f):
        pool.shutdown(wait=True)  # on the completer thread: must not deadlock
        finished.set()

    pool.submit(math.square, 2).add_done_callback(callback)
    assert finished.wait(30)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(math.square, 1)
