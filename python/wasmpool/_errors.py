"""wasmpool's exceptions: one class per kind of failure, catchable by kind.

Every exception's message is the Rust error's message (its ``Display``); ``kind`` is the Rust
error's ``kind()`` (``"timeout"``, ``"fuel_exhausted"``, ...).
"""

from concurrent.futures import CancelledError

__all__ = [
    "TaskError",
    "Timeout",
    "FuelExhausted",
    "MemoryLimit",
    "Trap",
    "GuestError",
    "Exit",
    "WorkerLost",
    "BadInput",
    "BadOutput",
    "LoadError",
    "PoolError",
]


class TaskError(Exception):
    """A task did not produce a result. ``str(e)`` says why; ``e.kind`` names the kind."""

    kind = "task"

    def __init__(self, message: str = "", **fields: object) -> None:
        super().__init__(message)
        self.message = message
        for name, value in fields.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        fields = {k: v for k, v in self.__dict__.items() if k != "message"}
        return (_rebuild, (type(self), self.message, fields))


def _rebuild(cls, message, fields):
    return cls(message, **fields)


class Timeout(TaskError, TimeoutError):
    """The task ran past its wall-clock limit and was stopped. ``limit``: the limit in
    seconds."""

    kind = "timeout"
    limit: float


class FuelExhausted(TaskError):
    """The task used up its fuel (its deterministic instruction budget). ``fuel``: the
    limit."""

    kind = "fuel_exhausted"
    fuel: int


class MemoryLimit(TaskError, MemoryError):
    """The task tried to grow its memory past its limit. ``limit``: bytes; ``initial``: the
    module's initial memory when that alone is over the limit, else None."""

    kind = "memory_limit"
    limit: int
    initial: "int | None"


class Trap(TaskError):
    """The guest trapped (unreachable, division by zero, stack overflow, out-of-bounds
    access...). ``code``: which, as a name such as ``"stack_overflow"``, or None."""

    kind = "trap"
    code: "str | None"


class GuestError(TaskError):
    """The guest returned an error through the SDK."""

    kind = "guest"


class Exit(TaskError):
    """The guest called WASI ``proc_exit`` (or a command exited nonzero with
    ``check=True``). ``code``: its exit code."""

    kind = "exit"
    code: int


class WorkerLost(TaskError):
    """The worker process running the task died or stopped answering. The pool replaces
    it and keeps serving."""

    kind = "worker_lost"


class BadInput(TaskError, ValueError):
    """The call was malformed: unknown export, wrong number or type of arguments, input
    that is not JSON-able, a limit out of range."""

    kind = "bad_input"


class BadOutput(TaskError):
    """The guest's output does not convert to a Python value (invalid JSON...)."""

    kind = "bad_output"


class LoadError(Exception):
    """A module could not be loaded: not WebAssembly, an import the sandbox does not
    provide, over the compile limits... ``kind`` names the kind (``"invalid_module"``,
    ``"unsupported_import"``, ``"io"``...)."""

    kind = "load"

    def __init__(self, message: str = "", kind: str = "load") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind

    def __str__(self) -> str:
        return self.message


class PoolError(Exception):
    """The pool could not be started (worker program missing or of another build, bad
    settings...)."""

    kind = "pool"


_BY_KIND = {
    cls.kind: cls
    for cls in (
        Timeout,
        FuelExhausted,
        MemoryLimit,
        Trap,
        GuestError,
        Exit,
        WorkerLost,
        BadInput,
        BadOutput,
    )
}


def from_rust(kind: str, message: str, fields: dict) -> BaseException:
    """The exception for a Rust error (called by ``wasmpool._core``)."""
    if kind == "cancelled":
        return CancelledError(message)
    if kind.startswith("load:"):
        return LoadError(message, kind[len("load:") :])
    if kind == "pool":
        return PoolError(message)
    cls = _BY_KIND.get(kind, TaskError)
    return cls(message, **fields)
