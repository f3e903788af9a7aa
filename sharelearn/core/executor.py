"""The executor interface that heavy kernels are handed to, and the serial one that needs no runtime.

A kernel (a batch of HE encryptions, X25519 blindings, fixed-base products, ...) splits its batch
into items and calls `executor.map(fn, items)`. It never learns how the items run: in the calling
thread (`SerialExecutor`, and `executor=None` everywhere), on local threads or processes, or as
tasks on a Ray cluster (`runtime.executors`). So `crypto/` and `operators/` never import the
runtime, Ray or a process pool, and a job chooses the compute per party (`compute:` in the job).

The contract every kernel keeps, so that every executor can run it unchanged:

* `fn` is a module-level function (found again by `fn.__module__` and `fn.__qualname__` in
  another process) and a pure function of its item, apart from module-level caches;
* items and results are wire values (`core.types.Wire`: numbers, bytes, strings, numpy arrays
  of plain dtypes, big ints, lists/tuples and maps of them), so they can cross a process boundary
  through `core.codec` (never pickle);
* results come back in the order of the items; an exception raised by `fn` reaches the caller;
* `releases_gil` says whether `fn` spends its time in native code that releases the GIL (ctypes
  kernels, gmpy2's `powmod_base_list`, OpenSSL). Pure Python or gmpy2 arithmetic (`*`, `%`) holds
  it: a thread executor cannot run such items side by side and may run them in worker processes.

`parallelism` is how many items the executor runs at once; kernels size their chunks with it
(at least one chunk per unit of parallelism, none smaller than the kernel's break-even size).
What an executor learns: the items and results of the kernels it runs, i.e. whatever the party
itself computes; it is part of the party's own trust domain (its own threads, processes or Ray
cluster), never a peer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeAlias, TypeVar

__all__ = ["SERIAL", "Executor", "ExecutorKind", "SerialExecutor", "chunk_bounds", "parts_for"]

ExecutorKind: TypeAlias = Literal["serial", "threads", "processes", "ray"]
T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs a kernel's items, possibly in parallel; see the module docstring for the contract."""

    @property
    def kind(self) -> ExecutorKind: ...

    @property
    def parallelism(self) -> int: ...

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, releases_gil: bool = True) -> list[R]: ...


class SerialExecutor:
    """Run every item in the calling thread, one after the other (what `executor=None` means)."""

    @property
    def kind(self) -> ExecutorKind:
        return "serial"

    @property
    def parallelism(self) -> int:
        return 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, releases_gil: bool = True) -> list[R]:
        return [fn(item) for item in items]

    def __repr__(self) -> str:
        return "SerialExecutor()"


SERIAL = SerialExecutor()


def parts_for(executor: Executor | None, count: int, min_chunk: int) -> int:
    """How many chunks to split `count` items into: one per unit of parallelism, each >= `min_chunk`.

    1 means "run in the caller, no executor": the batch is too small to pay for the hand-off.
    """
    if executor is None or count <= 0:
        return 1
    return max(1, min(executor.parallelism, count // max(1, min_chunk)))


def chunk_bounds(count: int, parts: int, *, multiple: int = 1) -> list[tuple[int, int]]:
    """Split range(count) into at most `parts` contiguous (start, stop) slices of near-equal size.

    Each slice but the last has a length that is a multiple of `multiple` (lanes of a kernel).
    """
    if count <= 0:
        return []
    size = -(-count // max(1, parts))
    size = -(-size // multiple) * multiple
    return [(start, min(start + size, count)) for start in range(0, count, size)]
