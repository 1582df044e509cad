"""Type stubs of the native half of wasmpool (``wasmpool._core``, built from python/src/).

Use ``wasmpool.Pool``; these classes are its internals, except ``CommandResult``.
"""

from concurrent.futures import Future
from os import PathLike
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

class CommandResult:
    """What a WASI command run gave: exit code, captured output, the files left in ``/out``."""

    @property
    def exit_code(self) -> int: ...
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...
    @property
    def files(self) -> dict[str, bytes]: ...
    @property
    def output_truncated(self) -> bool: ...
    @property
    def fuel_used(self) -> int: ...
    @property
    def duration(self) -> float: ...

class Module:
    @property
    def exports(self) -> list[Tuple[str, str, list[str], list[str]]]: ...
    @property
    def id(self) -> str: ...

class MapIter(Iterator[Any]):
    def __iter__(self) -> "MapIter": ...
    def __next__(self) -> Any: ...
    def cancel(self) -> None: ...

class Pool:
    def __init__(
        self,
        workers: Optional[int],
        limits: Optional[dict[str, Any]],
        max_tasks_per_worker: Optional[int],
        worker_program: Optional[Union[str, PathLike[str]]],
        settle: Callable[[list], None],
    ) -> None: ...
    def load(self, bytes: bytes) -> Module: ...
    def load_file(self, path: Union[str, PathLike[str]]) -> Module: ...
    def submit(
        self,
        module: Module,
        export: str,
        args: tuple,
        kwargs: Optional[dict[str, Any]],
        limits: Optional[dict[str, Any]],
        future: Future,
    ) -> Union[int, BaseException]: ...
    def submit_command(
        self,
        module: Module,
        args: Sequence[str],
        stdin: bytes,
        env: Sequence[Tuple[str, str]],
        files: Sequence[Tuple[str, bytes]],
        output_dir: bool,
        check: bool,
        limits: Optional[dict[str, Any]],
        future: Future,
    ) -> int: ...
    def call_wait(
        self,
        module: Module,
        export: str,
        args: tuple,
        kwargs: Optional[dict[str, Any]],
        limits: Optional[dict[str, Any]],
    ) -> Any: ...
    def map(
        self,
        module: Module,
        export: str,
        inputs: list[tuple],
        limits: Optional[dict[str, Any]],
        ordered: bool,
        timeout: Optional[float],
    ) -> MapIter: ...
    def cancel(self, key: int) -> None: ...
    def cancel_queued(self) -> None: ...
    def shutdown(self, wait: bool) -> None: ...
    def terminate(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def workers(self) -> int: ...
    def worker_pids(self) -> list[int]: ...
    def stats(self) -> dict[str, Any]: ...

def _join_background() -> None: ...
