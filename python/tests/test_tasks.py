"""Exports as tasks: values in and out, limits, errors by kind, worker loss, commands."""

import os
import pydoc
import signal
import threading
import time

import pytest

import wasmpool

from conftest import guest


def test_exports_are_attributes_and_items(math):
    assert math.square is math["square"]
    assert math.square.kind == "numeric" and math.square.params == ("i64",)
    assert "square" in dir(math)
    with pytest.raises(AttributeError, match="no export named 'nope'"):
        math.nope
    with pytest.raises(KeyError):
        math["nope"]


def test_numbers_map_to_wasm_numbers(math):
    assert math.square(-12) == 144
    assert math.add(2, 3) == 5
    assert math.hypot(3.0, 4.0) == 5.0
    assert math.scale(1.5, 2) == 3.0
    assert isinstance(math.hypot(3, 4), float)


def test_sdk_tasks_take_and_return_json_able_values(wordcount):
    out = wordcount.wordcount({"text": "to be or not to be"})
    assert out["words"] == 6
    value = {"a": [1, 2.5, None, True, "x"], "b": {"c": []}}
    assert wordcount.echo(value) == value
    assert wordcount.divide(a=7, b=2) == 3


def test_bad_inputs_raise_bad_input_with_the_message(pool, math, wordcount):
    with pytest.raises(wasmpool.BadInput, match=r"`square` takes 1 argument\(s\) \(i64\), 2 given") as e:
        pool.submit(math.square, 1, 2).result()
    assert isinstance(e.value, ValueError) and e.value.kind == "bad_input"
    with pytest.raises(wasmpool.BadInput, match="argument 1 of `square` is a str"):
        pool.submit(math.square, "seven").result()
    with pytest.raises(wasmpool.BadInput, match="argument 1 of `add` is i32"):
        math.add(2**40, 1)
    with pytest.raises(wasmpool.BadInput, match="not JSON-able"):
        wordcount.echo({1, 2})
    with pytest.raises(wasmpool.BadInput):
        wordcount.divide({"a": "x", "b": 1})
    with pytest.raises(wasmpool.BadInput, match="out of range|timeout|fuel"):
        math.square.with_limits(fuel=0)(3)
    with pytest.raises(TypeError, match="WebAssembly exports"):
        pool.submit(lambda x: x, 1)


def test_errors_by_kind(math, hostile, wordcount):
    with pytest.raises(wasmpool.FuelExhausted, match="ran out of fuel"):
        math.spin.with_limits(fuel=1_000_000)()
    with pytest.raises(wasmpool.Trap) as e:
        hostile.unreachable()
    assert e.value.code == "unreachable_code_reached"
    with pytest.raises(wasmpool.MemoryLimit) as e:
        hostile.grow_forever.with_limits(memory=8 << 20)()
    assert isinstance(e.value, MemoryError) and e.value.limit == 8 << 20
    with pytest.raises(wasmpool.GuestError, match="cannot divide 1 by zero"):
        wordcount.divide({"a": 1, "b": 0})
    with pytest.raises(wasmpool.Exit) as e:
        hostile.exit(3)
    assert e.value.code == 3 and str(e.value) == "guest called proc_exit(3)"
    for cls in (wasmpool.FuelExhausted, wasmpool.Trap, wasmpool.GuestError, wasmpool.WorkerLost):
        assert issubclass(cls, wasmpool.TaskError)


def test_load_errors(pool, tmp_path):
    with pytest.raises(wasmpool.LoadError) as e:
        pool.load(b"definitely not wasm")
    assert e.value.kind == "invalid_module"
    with pytest.raises(wasmpool.LoadError) as e:
        pool.load(tmp_path / "missing.wasm")
    assert e.value.kind == "io" and "missing.wasm" in str(e.value)
    wat = b'(module (func (export "seven") (result i32) i32.const 7))'
    assert pool.load(wat).seven() == 7


def test_a_task_that_kills_its_worker_raises_worker_lost_and_the_pool_keeps_serving():
    with wasmpool.Pool(1, timeout=30.0) as pool:
        math = pool.load(guest("math"))
        # The worker is up (a task sent to a worker still starting would be re-queued if it
        # died, not lost).
        assert math.square(2) == 4
        victim = pool.submit(math.spin)
        deadline = time.monotonic() + 30
        while pool.stats()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(wasmpool.WorkerLost, match="signal 9"):
            victim.result(timeout=30)
        assert math.square(6) == 36
        assert pool.stats()["workers_restarted"] >= 1


def test_run_command(pool, transform_wasm):
    mod = pool.load(transform_wasm)
    out = pool.run_command(
        mod, ["/in/data.txt", "/out/upper.txt"], files={"data.txt": b"hello sandbox"}
    )
    assert out.exit_code == 0
    assert out.stdout.strip() == b"13"
    assert out.files == {"upper.txt": b"HELLO SANDBOX"}
    bad = pool.run_command(mod, ["only-one"])
    assert bad.exit_code == 2 and b"usage" in bad.stderr
    with pytest.raises(wasmpool.Exit):
        pool.run_command(mod, ["only-one"], check=True)


def test_the_gil_is_released_while_a_call_waits(math):
    done = threading.Event()

    def blocking():
        try:
            math.spin.with_limits(timeout=0.5)()
        except wasmpool.Timeout:
            pass
        done.set()

    t = threading.Thread(target=blocking)
    t.start()
    spins = 0
    while not done.is_set():
        spins += 1
    t.join()
    # Held through the wait, the GIL would have let this loop run a switch interval or two.
    assert spins > 100_000


def _interrupt_main_soon():
    main = threading.main_thread().ident
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_interrupts_a_blocking_call(math):
    timer = _interrupt_main_soon()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        math.spin.with_limits(timeout=30.0)()
    timer.join()
    assert time.monotonic() - start < 20
    assert math.square(3) == 3 * 3


def test_ctrl_c_interrupts_a_map_iterator(pool, math):
    it = pool.map(math.count.with_limits(timeout=30.0), [10**13, 10**13])
    timer = _interrupt_main_soon()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    timer.join()


def test_use_after_fork_fails_clearly(pool, math):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            pool.submit(math.square, 3)
            msg = b"no error"
        except RuntimeError as e:
            msg = str(e).encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    os.waitpid(pid, 0)
    assert "cannot be used in process" in msg and "spawn" in msg
    assert math.square(4) == 16  # the parent's pool is untouched


def test_help_reads_well():
    text = pydoc.render_doc(wasmpool.Pool, renderer=pydoc.plaintext)
    for word in ("concurrent.futures.Executor", "submit", "map", "shutdown", "apply_async", "run_command"):
        assert word in text
    assert "TaskError" in pydoc.render_doc(wasmpool, renderer=pydoc.plaintext)
