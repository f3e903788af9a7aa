"""Executors for heavy kernels (`core.executor.Executor`): local threads, local processes, Ray.

A party chooses one per job (`compute:` in the job, `ComputeSpec`; the default is threads on every
core); the worker builds it with `make_executor` and hands it to the steps. Kernels cannot tell
which one they run on.

* `ThreadExecutor`: a persistent thread pool for kernels that release the GIL (mbx, OpenSSL,
  gmpy2's `powmod_base_list`). Kernels that hold it (gmpy2 multiplications: fixed-base encryption)
  go to `workers - 1` persistent worker processes plus the calling thread, as they always did:
  threads would run them one at a time (`gil_bound="threads"` keeps them in-process anyway).
* `ProcessExecutor`: every kernel on `workers - 1` persistent worker processes plus the caller.
* `RayExecutor`: every item as a Ray task on a local Ray (`address="local"`), the cluster this
  machine belongs to (`"auto"`), or a remote one (`"ray://host:port"`); Ray is imported lazily.

Items and results cross to worker processes through `core.codec` (never pickle); Ray ships them
with its own serialiser between the party's own machines. A dead worker process costs time, never
correctness: its items are redone in the caller. What each executor learns: the party's own kernel
items and results, inside the party's own trust domain.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from sharelearn.core.errors import ConfigError
from sharelearn.core.executor import Executor, ExecutorKind
from sharelearn.runtime import procpool

__all__ = [
    "BACKENDS",
    "Backend",
    "ComputeSpec",
    "ProcessExecutor",
    "RayExecutor",
    "ThreadExecutor",
    "make_executor",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
Backend: TypeAlias = Literal["threads", "processes", "ray"]
BACKENDS: tuple[str, ...] = ("threads", "processes", "ray")
MAX_WORKERS = 1024
_RAY_ADDRESS = re.compile(r"^(local|auto|ray://[A-Za-z0-9.\[\]:-]+:[0-9]{1,5})$")
_in_pool = threading.local()  # set in the threads of every ThreadExecutor


def _cores() -> int:
    return os.cpu_count() or 1


def _check_workers(workers: int | None) -> int:
    count = _cores() if workers is None else workers
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"workers must be an integer in 1..{MAX_WORKERS}, got {workers!r}")
    return count


class _Dispatch:
    """One `map` over worker processes: items handed out one at a time, results in item order."""

    def __init__(self, name: str, items: Sequence[Any]) -> None:
        self.name, self.items = name, items
        self.results: list[Any] = [None] * len(items)
        self.done = [False] * len(items)
        self.lock, self.queue = threading.Lock(), iter(range(len(items)))
        self.broken: set[procpool.Worker] = set()
        self.failures: list[BaseException] = []

    def take(self) -> int | None:
        """The next item's index, or None when all are taken or a kernel has failed."""
        with self.lock:
            return None if self.failures else next(self.queue, None)

    def drive(self, worker: procpool.Worker) -> None:
        """Feed `worker` items until none are left; a dead worker leaves its items undone."""
        while (i := self.take()) is not None:
            try:
                self.results[i], self.done[i] = worker.call(self.name, self.items[i]), True
            except procpool.WorkerDied as exc:
                log.warning("worker process failed (%s); its items are redone in-process", exc)
                self.broken.add(worker)
                return
            except BaseException as exc:  # the kernel's own error: stop and re-raise in the caller
                self.failures.append(exc)
                return


def _map_processes(pool: procpool.Pool, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """Run `items` on the calling thread and up to `pool.size` workers, each taking the next item."""
    name = procpool.function_name(fn)  # refuses a lambda before any worker is taken
    try:
        workers = pool.acquire(min(pool.size, len(items) - 1))
    except OSError as exc:  # no subprocesses here (sandbox, fd limits): stay in-process
        log.warning("cannot start worker processes (%s); computing in-process", exc)
        workers = []
    run = _Dispatch(name, items)
    threads = [threading.Thread(target=run.drive, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        while (i := run.take()) is not None:
            run.results[i], run.done[i] = fn(items[i]), True
    except BaseException as exc:
        run.failures.append(exc)  # the drivers stop taking items
        raise
    finally:
        for t in threads:
            t.join()
        pool.release(workers, broken=frozenset(run.broken))
    if run.failures:
        raise run.failures[0]
    for i in [i for i, ok in enumerate(run.done) if not ok]:  # items of a worker that died
        run.results[i] = fn(items[i])
    return run.results


class ThreadExecutor:
    """Threads for GIL-free kernels; worker processes for GIL-bound ones (see the module docstring)."""

    def __init__(
        self, workers: int | None = None, *, gil_bound: Literal["processes", "threads"] = "processes"
    ) -> None:
        self._workers = _check_workers(workers)
        if gil_bound not in ("processes", "threads"):
            raise ConfigError(f"gil_bound must be 'processes' or 'threads', got {gil_bound!r}")
        self._gil_bound = gil_bound
        self._threads: ThreadPoolExecutor | None = None
        self._procs = procpool.Pool(self._workers - 1)
        self._lock = threading.Lock()

    @property
    def kind(self) -> ExecutorKind:
        return "threads"

    @property
    def parallelism(self) -> int:
        return self._workers

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    self._workers, thread_name_prefix="sharelearn-exec", initializer=_mark_pool_thread
                )
            return self._threads

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, releases_gil: bool = True) -> list[R]:
        # A kernel run from inside one of our threads (nested map) runs serially: a bounded pool
        # waiting on itself would deadlock.
        if len(items) <= 1 or self._workers == 1 or getattr(_in_pool, "flag", False):
            return [fn(item) for item in items]
        if not releases_gil and self._gil_bound == "processes":
            return _map_processes(self._procs, fn, items)
        return list(self._pool().map(fn, items))

    def close(self) -> None:
        """Stop the threads and worker processes (a later `map` starts them again)."""
        with self._lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=True)
        self._procs.close()
        self._procs = procpool.Pool(self._workers - 1)

    def __enter__(self) -> ThreadExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ThreadExecutor(workers={self._workers}, gil_bound={self._gil_bound!r})"


def _mark_pool_thread() -> None:
    _in_pool.flag = True


class ProcessExecutor:
    """Every kernel on `workers - 1` persistent worker processes plus the calling thread."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = _check_workers(workers)
        self._procs = procpool.Pool(self._workers - 1)

    @property
    def kind(self) -> ExecutorKind:
        return "processes"

    @property
    def parallelism(self) -> int:
        return self._workers

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, releases_gil: bool = True) -> list[R]:
        if len(items) <= 1 or self._workers == 1:
            return [fn(item) for item in items]
        return _map_processes(self._procs, fn, items)

    def close(self) -> None:
        """Stop the worker processes (a later `map` starts new ones)."""
        self._procs.close()
        self._procs = procpool.Pool(self._workers - 1)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self._workers})"


class RayExecutor:
    """Every item as a Ray task (one CPU each) on a local or existing Ray cluster.

    Args:
        address: "local" starts a private Ray in this process tree; "auto" joins the cluster this
            machine belongs to (`ray start --head` / `ray start --address=...`); "ray://host:port"
            connects through Ray Client. Every node needs sharelearn importable.
        num_cpus: CPUs of a local Ray, and the parallelism kernels plan for; None = the cluster's.
    """

    def __init__(self, address: str = "local", *, num_cpus: int | None = None) -> None:
        _check_ray(address, num_cpus)
        self.address, self.num_cpus = address, num_cpus
        self._started = False
        self._remotes: dict[Callable[..., Any], Any] = {}
        self._lock = threading.Lock()

    @property
    def kind(self) -> ExecutorKind:
        return "ray"

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "compute backend 'ray' needs the optional extra: pip install 'sharelearn[ray]'"
            ) from exc
        with self._lock:
            if not ray.is_initialized():
                ray.init(**self._init_args())
                self._started = True
        return ray

    def _init_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address == "local":
            args["num_cpus"] = self.num_cpus or _cores()
        else:
            args["address"] = self.address
        if not self.address.startswith("ray://"):  # same-machine nodes: import this sharelearn
            args["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        return args

    @property
    def parallelism(self) -> int:
        if self.num_cpus is not None:
            return self.num_cpus
        return max(1, int(self._ray().cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, releases_gil: bool = True) -> list[R]:
        if not items:
            return []
        ray = self._ray()
        with self._lock:
            remote = self._remotes.get(fn)
            if remote is None:
                remote = self._remotes[fn] = ray.remote(num_cpus=1)(fn)
        return list(ray.get([remote.remote(item) for item in items]))

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._remotes.clear()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus})"


def _check_ray(address: Any, num_cpus: Any) -> None:
    if not isinstance(address, str) or not _RAY_ADDRESS.match(address):
        raise ConfigError(f"address must be 'local', 'auto' or 'ray://host:port', got {address!r}")
    if num_cpus is not None and (
        isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or not 1 <= num_cpus <= MAX_WORKERS
    ):
        raise ConfigError(f"num_cpus must be an integer in 1..{MAX_WORKERS}, got {num_cpus!r}")


@dataclass(frozen=True, slots=True)
class ComputeSpec:
    """A party's `compute:` block: which executor runs its heavy kernels.

    Attributes:
        backend: "threads" (default), "processes" or "ray".
        workers: threads or processes (threads/processes only); None = every core.
        address: Ray cluster address (ray only): "local", "auto" or "ray://host:port".
        num_cpus: CPUs to plan for on Ray (ray only); None = the cluster's.
    """

    backend: Backend = "threads"
    workers: int | None = None
    address: str | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        # Messages start with the offending key: the job loader maps them to that key's line.
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "ray":
            if self.workers is not None:
                raise ConfigError("workers applies to threads and processes; give Ray num_cpus instead")
            _check_ray(self.address or "local", self.num_cpus)
            return
        for key in ("address", "num_cpus"):
            if getattr(self, key) is not None:
                raise ConfigError(f"{key} applies to backend ray only (backend is {self.backend!r})")
        if self.workers is not None:
            _check_workers(self.workers)


def make_executor(spec: ComputeSpec | None = None) -> ThreadExecutor | ProcessExecutor | RayExecutor:
    """Build the executor a `compute:` block asks for (default: threads on every core)."""
    spec = spec or ComputeSpec()
    if spec.backend == "ray":
        return RayExecutor(spec.address or "local", num_cpus=spec.num_cpus)
    if spec.backend == "processes":
        return ProcessExecutor(spec.workers)
    return ThreadExecutor(spec.workers)


def _conforms(t: ThreadExecutor, p: ProcessExecutor, r: RayExecutor) -> tuple[Executor, ...]:
    """Never called: mypy checks here that the three implement `core.executor.Executor`."""
    return t, p, r
