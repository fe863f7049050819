"""Run a function in a reused worker process under a CPU-time limit.

feedparser has slow paths (a 60 KB author string takes ~13 s of regex work) that a hostile
feed can trigger; a parse must not stall a run. Each task runs in a long-lived worker whose
RLIMIT_CPU soft limit is raised to "CPU used so far + the task's allowance" (whole seconds,
rounded up); when the kernel sends SIGXCPU the handler aborts the task and the worker stays
usable. A worker that dies, or hangs in code that never checks for signals, is replaced.

Workers are fresh interpreters (`python -c …` via subprocess), never forks of the caller: the
caller may run threads (httpx, a progress bar) whose locks a fork would copy, and unlike
multiprocessing's spawn/forkserver they do not re-import the caller's `__main__` script.
Tasks and results travel as length-prefixed pickles over the worker's stdin/stdout.
Workers are kept between calls, at most one per CPU, and stopped at interpreter exit.
`start_workers` starts them ahead of need (their start-up then overlaps the caller's I/O) and
names modules they import before the first task, outside any task's CPU allowance.
"""

from __future__ import annotations

import atexit
import importlib
import math
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

# A task whose worker neither answers nor dies within this many times its CPU allowance
# (plus a minute) is stuck in code that ignores signals; its worker is killed.
BACKSTOP_FACTOR = 10
BACKSTOP_SLACK_SECONDS = 60.0


class CpuLimitExceeded(BaseException):
    """The task used more CPU time than it was allowed.

    A BaseException (like KeyboardInterrupt) so that the task's own `except Exception`
    handlers cannot swallow the abort.
    """


class WorkerFailed(Exception):
    """The worker process died or stopped answering; the message says which."""


def run_with_cpu_limit(func: Callable[..., Any], args: tuple, cpu_seconds: float) -> Any:
    """`func(*args)` in a worker process, raising CpuLimitExceeded after `cpu_seconds` of CPU.

    `func`, its arguments and its result must be picklable (a module-level function).
    Exceptions raised by `func` are re-raised here as WorkerFailed with their text.
    """
    return _pool_for_this_process().run(func, args, cpu_seconds)


def start_workers(count: int | None = None, preload: Sequence[str] = ()) -> None:
    """Start worker processes now, up to `count` (default and at most: one per CPU) in all.

    Each worker imports the `preload` modules (e.g. the module of the function it will run) as
    soon as it starts, so the first task does not wait for them. Returns without waiting.
    """
    _pool_for_this_process().start(count, tuple(preload))


def shutdown_workers() -> None:
    """Stop the worker processes (they are also stopped at exit)."""
    pool = _POOLS.pop(os.getpid(), None)
    if pool is not None:
        pool.close()


class _Worker:
    """One worker interpreter and the two pipes to it."""

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from digest.cpulimit import serve; serve()", *preload],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )

    def ask(self, task: tuple, wait_seconds: float) -> tuple[str, Any]:
        try:
            _write_frame(self.process.stdin, task)
            ready, _, _ = select.select([self.process.stdout], [], [], wait_seconds)
            if not ready:
                raise WorkerFailed("the parser process stopped answering and was stopped")
            return _read_frame(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError, struct.error):
            raise WorkerFailed("the parser process died (out of memory or killed)") from None

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.process.stdin.close()  # EOF: the worker leaves its loop
                self.process.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                kill = True
        if kill:
            self.process.kill()
            self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _WorkerPool:
    def __init__(self, size: int) -> None:
        self._idle: list[_Worker] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._all: list[_Worker] = []
        self._size = size
        self._preload: tuple[str, ...] = ()

    def start(self, count: int | None, preload: tuple[str, ...]) -> None:
        with self._lock:
            self._preload = tuple(dict.fromkeys((*self._preload, *preload)))
            wanted = min(self._size, self._size if count is None else count) - len(self._all)
            for _ in range(max(0, wanted)):
                worker = _Worker(self._preload)
                self._all.append(worker)
                self._idle.append(worker)

    def run(self, func: Callable[..., Any], args: tuple, cpu_seconds: float) -> Any:
        with self._slots:
            worker = self._take()
            try:
                outcome, value = worker.ask((func, args, cpu_seconds), cpu_seconds * BACKSTOP_FACTOR + BACKSTOP_SLACK_SECONDS)
            except WorkerFailed:
                self._discard(worker)
                raise
            self._give_back(worker)
        if outcome == "cpu":
            raise CpuLimitExceeded(f"used more than {cpu_seconds:g} s of CPU time")
        if outcome == "error":
            raise WorkerFailed(value)
        return value

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        worker = _Worker(self._preload)
        with self._lock:
            self._all.append(worker)
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
        worker.stop(kill=True)

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.stop()


# One pool per process id: a forked child must not share its parent's pipes.
_POOLS: dict[int, _WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_for_this_process() -> _WorkerPool:
    pid = os.getpid()
    with _POOLS_LOCK:
        pool = _POOLS.get(pid)
        if pool is None:
            pool = _POOLS[pid] = _WorkerPool(max(1, os.cpu_count() or 1))
        return pool


atexit.register(shutdown_workers)

_HEADER = struct.Struct("!Q")


def _write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    header = _read_exactly(stream, _HEADER.size)
    return pickle.loads(_read_exactly(stream, _HEADER.unpack(header)[0]))


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --- inside the worker ----------------------------------------------------------------------------
_armed = False


def serve() -> None:
    """The worker's loop: read a task frame from stdin, answer on stdout, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    requests = sys.stdin.buffer
    # Answers go to a private copy of stdout; a stray print() in a task lands on stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for module in sys.argv[1:]:  # preloaded before any task: imports never count against an allowance
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # only a head start: a task that needs the module reports the failure itself
    while True:
        try:
            task = _read_frame(requests)
        except EOFError:
            return
        _write_frame(answers, _run_task(*task))


def _run_task(func: Callable[..., Any], args: tuple, cpu_seconds: float) -> tuple[str, Any]:
    global _armed
    try:
        _set_cpu_limit(cpu_seconds)
        _armed = True
        try:
            return "ok", func(*args)
        finally:
            _armed = False
            _set_cpu_limit(None)
    except CpuLimitExceeded:
        return "cpu", None
    except Exception as exc:  # noqa: BLE001 - reported to the caller, the worker lives on
        return "error", f"{exc.__class__.__name__}: {exc}"


def _set_cpu_limit(cpu_seconds: float | None) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_seconds is None:
        soft = hard
    else:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _on_cpu_limit(signum: int, frame: Any) -> None:
    if _armed:
        raise CpuLimitExceeded
