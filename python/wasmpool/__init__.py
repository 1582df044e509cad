"""wasmpool: a sandboxed worker pool for WebAssembly tasks, as a ``concurrent.futures.Executor``.

Every task is a function exported by a WebAssembly module, run in a fresh wasmtime instance
inside an isolated worker process (seccomp, Landlock, no privileges) under hard limits of
fuel, wall-clock time and memory::

    import concurrent.futures as cf
    import wasmpool

    with wasmpool.Pool(timeout=2.0) as pool:
        mod = pool.load("math.wasm")
        print(list(pool.map(mod.square, range(10))))       # [0, 1, 4, ..., 81]
        futures = [pool.submit(mod.square, n) for n in range(5)]
        for f in cf.as_completed(futures, timeout=10):
            print(f.result())
        try:
            mod.spin.with_limits(fuel=1_000_000)()            # a runaway loop
        except wasmpool.FuelExhausted as e:
            print("stopped:", e)

Plain exports take and return numbers; SDK tasks (``#[wasmpool_guest::task]``) take and return
JSON-able values; WASI command modules run with ``Pool.run_command``. Failures are exceptions
of one class per kind (``wasmpool.TaskError`` and its subclasses).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as _cf
import functools
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from . import _core, _errors
from ._core import CommandResult
from ._errors import (
    BadInput,
    BadOutput,
    Exit,
    FuelExhausted,
    GuestError,
    LoadError,
    MemoryLimit,
    PoolError,
    TaskError,
    Timeout,
    Trap,
    WorkerLost,
)

__all__ = [
    "Pool",
    "AsyncPool",
    "Module",
    "Export",
    "AsyncResult",
    "CommandResult",
    "UNLIMITED",
    "worker_program",
    *_errors.__all__,
]


class _Unlimited:
    """The value that lifts a limit: ``Pool(timeout=wasmpool.UNLIMITED)``."""

    _instance: Optional["_Unlimited"] = None

    def __new__(cls) -> "_Unlimited":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "wasmpool.UNLIMITED"

    def __reduce__(self):
        return (_Unlimited, ())


UNLIMITED = _Unlimited()
"""Lifts a limit: ``Pool(timeout=UNLIMITED)``, ``export.with_limits(memory=UNLIMITED)``."""

_LIMITS = ("fuel", "timeout", "memory")


def worker_program() -> str:
    """The worker program the pool starts its workers with: ``$WASMPOOL_WORKER`` when set,
    else the ``wasmpool`` binary shipped inside this package."""
    env = os.environ.get("WASMPOOL_WORKER")
    if env:
        return env
    return str(Path(__file__).resolve().parent / "bin" / "wasmpool")


def _settle(items: list) -> None:
    """Completes futures from the pool's completer thread: ``(future, ok, value)`` each,
    ``value`` the result or the exception. A task cancelled in Rust (by ``Future.cancel``,
    ``shutdown(cancel_futures=True)`` or ``terminate``) leaves its future cancelled."""
    for future, ok, value in items:
        if not ok and isinstance(value, _cf.CancelledError):
            future.cancel()
        try:
            if future.cancelled():
                # Tell as_completed()/wait() waiters (CANCELLED -> CANCELLED_AND_NOTIFIED).
                future.set_running_or_notify_cancel()
            elif ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except (_cf.InvalidStateError, RuntimeError):
            # Cancelled by its owner meanwhile, and waiters told already.
            pass


def _cancel_hook(core_ref: "weakref.ref[_core.Pool]", key: int, future: _cf.Future) -> None:
    if future.cancelled():
        core = core_ref()
        if core is not None:
            core.cancel(key)


def _limits_arg(fuel: Any, timeout: Any, memory: Any, *, none_is_default: bool) -> Optional[dict]:
    """The limits for the core: a key per limit that is set, ``None`` for unlimited."""
    spec = {}
    for name, value in (("fuel", fuel), ("timeout", timeout), ("memory", memory)):
        if value is _DEFAULT or (value is None and none_is_default):
            continue
        if value is None or value is UNLIMITED:
            spec[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, None or wasmpool.UNLIMITED, not {value!r}")
        if name != "timeout":
            if value != int(value):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            value = int(value)
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value!r}")
        spec[name] = value
    return spec or None


_DEFAULT: Any = object()


class Export:
    """A callable export of a loaded module: ``mod.square`` or ``mod["square"]``.

    Pass it as ``fn`` to ``Pool.submit``/``map``/``apply_async``..., or call it directly:
    ``mod.square(7)`` runs one task in the pool and waits for it (Ctrl-C cancels it).
    ``with_limits(...)`` gives the same export with other per-call limits.
    """

    __slots__ = ("module", "name", "kind", "params", "results", "_limits")

    def __init__(
        self,
        module: "Module",
        name: str,
        kind: str,
        params: Sequence[str],
        results: Sequence[str],
        limits: Optional[dict] = None,
    ) -> None:
        self.module = module
        self.name = name
        #: ``"numeric"`` (numbers in and out), ``"task"`` (an SDK task: JSON-able values) or
        #: ``"unsupported"``.
        self.kind = kind
        self.params = tuple(params)
        self.results = tuple(results)
        self._limits = limits

    def with_limits(self, *, fuel: Any = _DEFAULT, timeout: Any = _DEFAULT, memory: Any = _DEFAULT) -> "Export":
        """This export with per-call limits: ``fuel`` (units), ``timeout`` (seconds), ``memory``
        (bytes). A limit not given keeps the pool's; ``None`` or ``UNLIMITED`` lifts it."""
        spec = dict(self._limits or {})
        spec.update(_limits_arg(fuel, timeout, memory, none_is_default=False) or {})
        return Export(self.module, self.name, self.kind, self.params, self.results, spec or None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs one call in the pool and waits for its result (GIL released)."""
        pool = self.module.pool
        pool._check_open()
        return pool._core.call_wait(self.module._core, self.name, args, kwargs or None, self._limits)

    def __repr__(self) -> str:
        if self.kind == "numeric":
            sig = f"{self.name}({', '.join(self.params)}) -> ({', '.join(self.results)})"
        elif self.kind == "task":
            sig = f"{self.name}(json) -> json  [SDK task]"
        else:
            sig = f"{self.name}  [unsupported types]"
        limits = f" limits={self._limits}" if self._limits else ""
        return f"<wasmpool export {sig}{limits}>"


class Module:
    """A module loaded into a pool (``Pool.load``): its exports are attributes
    (``mod.square``) and items (``mod["square"]``)."""

    def __init__(self, pool: "Pool", core: "_core.Module") -> None:
        self.pool = pool
        self._core = core
        self._exports = {
            name: Export(self, name, kind, params, results) for name, kind, params, results in core.exports
        }

    @property
    def id(self) -> str:
        """The module's content hash (short hex)."""
        return self._core.id

    @property
    def exports(self) -> Mapping[str, Export]:
        """The callable exports by name."""
        return dict(self._exports)

    def __getitem__(self, name: str) -> Export:
        try:
            return self._exports[name]
        except KeyError:
            raise KeyError(f"the module has no export named {name!r}; it has {sorted(self._exports)}") from None

    def __getattr__(self, name: str) -> Export:
        exports = self.__dict__.get("_exports")
        if exports is not None and name in exports:
            return exports[name]
        raise AttributeError(
            f"the module has no export named {name!r}; it has {sorted(exports or ())}"
        )

    def __dir__(self) -> list:
        return sorted(set(super().__dir__()) | set(self._exports))

    def __repr__(self) -> str:
        return f"<wasmpool.Module {self.id} exports={sorted(self._exports)}>"


class AsyncResult:
    """What ``Pool.apply_async`` gives, as in ``multiprocessing.pool``: ``get``, ``wait``,
    ``ready``, ``successful``; ``future`` is the underlying ``concurrent.futures.Future``."""

    def __init__(self, future: _cf.Future) -> None:
        self.future = future

    def get(self, timeout: Optional[float] = None) -> Any:
        """The result, or raises the task's exception; ``multiprocessing.TimeoutError`` if
        not ready within ``timeout`` seconds."""
        import multiprocessing

        try:
            return self.future.result(timeout)
        except _cf.TimeoutError:
            if self.future.done():
                raise
            raise multiprocessing.TimeoutError() from None

    def wait(self, timeout: Optional[float] = None) -> None:
        _cf.wait([self.future], timeout)

    def ready(self) -> bool:
        return self.future.done()

    def successful(self) -> bool:
        if not self.future.done():
            raise ValueError(f"{self!r} not ready")
        return not self.future.cancelled() and self.future.exception() is None


_live_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()


class Pool(_cf.Executor):
    """A pool of sandboxed worker processes running WebAssembly tasks: a
    ``concurrent.futures.Executor`` with the ``multiprocessing.Pool`` methods too.

    ``max_workers``: worker processes (default: the number of CPUs). Default limits of every
    task: ``fuel`` (instruction budget; default unlimited), ``timeout`` (seconds; default 60),
    ``memory`` (bytes; default 256 MiB); ``UNLIMITED`` lifts one. ``max_tasks_per_worker``
    replaces a worker process after that many tasks.

    Use it from the process that made it: after ``fork()`` it raises ``RuntimeError`` (start
    child processes with the ``spawn`` method).
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        *,
        fuel: Any = None,
        timeout: Any = None,
        memory: Any = None,
        max_tasks_per_worker: Optional[int] = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        limits = _limits_arg(fuel, timeout, memory, none_is_default=True)
        self._core = _core.Pool(max_workers, limits, max_tasks_per_worker, worker_program(), _settle)
        self._core_ref = weakref.ref(self._core)
        self._lock = threading.Lock()
        self._shutdown = False
        self._maps: "weakref.WeakSet[_core.MapIter]" = weakref.WeakSet()
        self._pid = os.getpid()
        _live_pools.add(self)

    # -- modules -------------------------------------------------------------------------

    def load(self, source: Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]) -> Module:
        """Loads a module from a path or its bytes (binary or text format). It is validated
        and compiled once, in a sandboxed compile process (kept in an on-disk cache)."""
        self._check_open()
        if isinstance(source, (bytes, bytearray, memoryview)):
            core = self._core.load(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            core = self._core.load_file(os.fspath(source))
        else:
            raise TypeError(f"load() takes a path or bytes, not {type(source).__name__}")
        return Module(self, core)

    # -- concurrent.futures.Executor -----------------------------------------------------

    def submit(self, fn: Export, /, *args: Any, **kwargs: Any) -> _cf.Future:
        """Submits one call of the export ``fn``; a ``concurrent.futures.Future`` of its
        result. ``Future.cancel()`` stops the task, queued or running. A discarded future's
        task runs on."""
        export = self._export(fn)
        future: _cf.Future = _cf.Future()
        with self._lock:
            self._check_open()
            key = self._core.submit(export.module._core, export.name, args, kwargs or None, export._limits, future)
        if isinstance(key, BaseException):
            future.set_exception(key)
        else:
            future.add_done_callback(functools.partial(_cancel_hook, self._core_ref, key))
        return future

    def map(
        self,
        fn: Export,
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Runs ``fn`` over the inputs (one argument from each iterable per call); results in
        input order. Calls travel to the workers in batches (``chunksize`` is accepted for
        compatibility; batching is automatic), each still in a fresh instance. The iterator
        raises ``TimeoutError`` if a result is not ready ``timeout`` seconds after this call,
        and raises a failed call's exception at its place."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return self._map(fn, list(zip(*iterables)), True, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work; with ``cancel_futures`` cancels the tasks no worker has
        started (and the map inputs not started); with ``wait`` returns once every other
        task has finished, its future is completed and the workers are stopped."""
        with self._lock:
            self._shutdown = True
        if os.getpid() != self._pid:
            return
        if cancel_futures:
            for m in list(self._maps):
                m.cancel()
            self._core.cancel_queued()
        self._core.shutdown(wait)

    # -- multiprocessing.Pool ------------------------------------------------------------

    def apply(self, fn: Export, args: Sequence[Any] = (), kwds: Optional[Mapping[str, Any]] = None) -> Any:
        """Runs one call and waits for its result."""
        return self.apply_async(fn, args, kwds).get()

    def apply_async(
        self,
        fn: Export,
        args: Sequence[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
        callback: Optional[Callable[[Any], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> AsyncResult:
        """Submits one call; an ``AsyncResult``. ``callback`` gets the result,
        ``error_callback`` the exception (on the pool's completer thread)."""
        future = self.submit(fn, *args, **dict(kwds or {}))
        if callback is not None or error_callback is not None:

            def done(f: _cf.Future) -> None:
                if f.cancelled():
                    return
                e = f.exception()
                if e is None:
                    if callback is not None:
                        callback(f.result())
                elif error_callback is not None:
                    error_callback(e)

            future.add_done_callback(done)
        return AsyncResult(future)

    def starmap(self, fn: Export, iterable: Iterable[Sequence[Any]], chunksize: Optional[int] = None) -> list:
        """Like ``map`` with each input a tuple of arguments; the results as a list (the
        first failed call's exception is raised)."""
        return list(self._map(fn, [tuple(a) for a in iterable], True, None))

    def imap(self, fn: Export, iterable: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Results in input order, each as soon as it and those before it are ready."""
        return self._map(fn, [(a,) for a in iterable], True, None)

    def imap_unordered(self, fn: Export, iterable: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Results in the order the calls finish."""
        return self._map(fn, [(a,) for a in iterable], False, None)

    def close(self) -> None:
        """Stops accepting work (``join`` waits for the rest), as ``multiprocessing.Pool``."""
        with self._lock:
            self._shutdown = True

    def join(self) -> None:
        """Waits for every task, then stops the workers (after ``close``)."""
        self.shutdown(wait=True)

    def terminate(self) -> None:
        """Stops everything now: queued and running tasks are cancelled."""
        with self._lock:
            self._shutdown = True
        if os.getpid() == self._pid:
            self._core.terminate()

    # -- WASI commands ---------------------------------------------------------------------

    def submit_command(
        self,
        module: Module,
        args: Sequence[str] = (),
        *,
        stdin: bytes = b"",
        env: Optional[Mapping[str, str]] = None,
        files: Optional[Mapping[str, bytes]] = None,
        output_dir: bool = True,
        check: bool = False,
        fuel: Any = _DEFAULT,
        timeout: Any = _DEFAULT,
        memory: Any = _DEFAULT,
    ) -> _cf.Future:
        """Submits one run of the WASI command ``module`` (its ``_start``); a future of its
        ``CommandResult``. ``files`` are read-only inputs under ``/in``; with ``output_dir``
        the program gets an empty ``/out`` whose files come back in ``result.files``;
        ``check`` makes a nonzero exit an ``Exit`` exception."""
        if not isinstance(module, Module) or module.pool is not self:
            raise TypeError("submit_command() takes a module loaded by this pool")
        limits = _limits_arg(fuel, timeout, memory, none_is_default=False)
        future: _cf.Future = _cf.Future()
        with self._lock:
            self._check_open()
            key = self._core.submit_command(
                module._core,
                [str(a) for a in args],
                bytes(stdin),
                [(str(k), str(v)) for k, v in (env or {}).items()],
                [(str(k), bytes(v)) for k, v in (files or {}).items()],
                output_dir,
                check,
                limits,
                future,
            )
        future.add_done_callback(functools.partial(_cancel_hook, self._core_ref, key))
        return future

    def run_command(self, module: Module, args: Sequence[str] = (), **kwargs: Any) -> CommandResult:
        """Runs the WASI command ``module`` once and waits, like ``subprocess.run`` in a
        sandbox; see ``submit_command``. Returns ``exit_code``, ``stdout``, ``stderr``,
        ``files``."""
        return self.submit_command(module, args, **kwargs).result()

    # -- inspection ------------------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """The number of worker processes."""
        return self._core.workers

    def worker_pids(self) -> list:
        """The worker processes' ids."""
        return self._core.worker_pids()

    def stats(self) -> dict:
        """A snapshot: calls ``queued``, ``running``, ``done``, ``failed`` by kind, workers
        live and restarted, each worker's resident memory."""
        return self._core.stats()

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _export(self, fn: Any) -> Export:
        if not isinstance(fn, Export):
            raise TypeError(
                "wasmpool runs WebAssembly exports: pass an export of a module this pool "
                f"loaded (mod = pool.load(...); pool.submit(mod.square, 7)), not {fn!r}"
            )
        if fn.module.pool is not self:
            raise TypeError(f"{fn!r} belongs to a module loaded by another pool")
        return fn

    def _map(self, fn: Any, inputs: list, ordered: bool, timeout: Optional[float]) -> Iterator[Any]:
        export = self._export(fn)
        with self._lock:
            self._check_open()
            it = self._core.map(export.module._core, export.name, inputs, export._limits, ordered, timeout)
            self._maps.add(it)
        return it

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "open"
        return f"<wasmpool.Pool {self._core.workers} workers, {state}>"


class AsyncPool:
    """A ``Pool`` for asyncio code: the same constructor; ``await apool.run(fn, *args)``,
    ``apool.submit(...)`` (an ``asyncio.Future``), ``await apool.map(fn, iterable)``, ``async
    with``. The blocking parts (loading, map, shutdown) run off the event loop. ``pool`` is
    the underlying ``Pool``: ``asyncio.wrap_future(pool.submit(...))`` works as well."""

    def __init__(self, max_workers: Optional[int] = None, **kwargs: Any) -> None:
        self.pool = Pool(max_workers, **kwargs)

    async def load(self, source: Union[str, "os.PathLike[str]", bytes]) -> Module:
        return await asyncio.get_running_loop().run_in_executor(None, self.pool.load, source)

    def submit(self, fn: Export, /, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """An ``asyncio.Future`` of one call; cancelling it cancels the task."""
        return asyncio.wrap_future(self.pool.submit(fn, *args, **kwargs))

    async def run(self, fn: Export, /, *args: Any, **kwargs: Any) -> Any:
        """Runs one call and returns its result."""
        return await self.submit(fn, *args, **kwargs)

    async def map(self, fn: Export, *iterables: Iterable[Any]) -> list:
        """The results of ``Pool.map`` as a list (the first failure is raised)."""
        it = self.pool.map(fn, *iterables)
        return await asyncio.get_running_loop().run_in_executor(None, list, it)

    async def aclose(self, cancel_futures: bool = False) -> None:
        """Shuts the pool down, waiting off the event loop."""
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.pool.shutdown, True, cancel_futures=cancel_futures)
        )

    async def __aenter__(self) -> "AsyncPool":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


@atexit.register
def _at_exit() -> None:
    # As concurrent.futures does: work submitted runs to the end before the interpreter
    # exits; and no completer thread may take the GIL while it finalizes.
    pid = os.getpid()
    for pool in list(_live_pools):
        if pool._pid == pid:
            try:
                pool.shutdown(wait=True)
            except Exception:
                pass
    _core._join_background()
