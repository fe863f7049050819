"""Feeds parsed in worker processes under a CPU-time limit: a hostile feed costs only its own parse.

feedparser has slow paths (a 60 KB author string once cost ~13 s of regex work) that a hostile feed
could find, so `digest.pipeline.ingest` parses every fetched body in a worker process, on pebble's
`ProcessPool` (a maintained pool with per-task timeouts that replaces a worker that dies):

- CPU time: while a task runs, its worker's RLIMIT_CPU soft limit is the CPU time the worker has
  used so far plus the task's allowance (`fetch.parse_cpu_seconds`, rounded up to whole seconds).
  Past it the kernel ends the worker with SIGXCPU, whatever code it is in; the pool starts another.
- A worker that dies (out of memory, killed) is replaced and only its own task fails. One that
  neither answers nor dies within ten times the allowance plus a minute (waiting on something, using
  no CPU) is killed.
- Memory: a body is at most `fetch.max_bytes` and documents declaring entities are refused before
  parsing (digest.defuse); a worker the kernel ends for want of memory is replaced like any other.
  A body over `ALONE_BYTES` is parsed in a process of its own that ends with it, and which frees
  what the parse built before it answers: a kept worker would hold most of a 20,000-item parse's
  200 MB while the caller receives and stores the items (bench/bench_ingest.py measures the tree).
- Output: a worker's standard output is its standard error, so a stray print never reaches the
  caller's answers (`digest fetch --json`).

Workers are forked by multiprocessing's fork server, a fresh single-threaded interpreter that imports
the parser once: a worker is ready in milliseconds, and the caller, which runs threads, is never forked
itself. Like every multiprocessing child, a worker runs the caller's main script again, without its
`if __name__ == "__main__":` block (which a script calling the pipeline therefore needs; the `digest`
script's digest.__main__ imports the command line only when called). The language model is loaded by the first
worker that has to guess an item's language, not by the fork server: most feeds state their language,
and the fork server's start is on the way of every process's first parse.

Workers outlive a fetch: a `ParseWorkers` block starts no process before its first task, and leaving
it hands its workers to the process's next fetch, which starts at once (`digest run`, the bench's warm
process). `stop_idle_workers()` ends them (the scheduler does after each fetch: its fetches are hours
apart and an idle worker holds tens of MB); they also end with the process, and a block left by an
exception stops its own. The fork server and multiprocessing's resource tracker stay until the process
that started them exits, or is killed.
"""

from __future__ import annotations

import ctypes
import gc
import math
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import resource
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from .models import Feed, Series
from .parse import ParseResult, parse_feed

T = TypeVar("T")

# A task whose worker neither answers nor dies within this many times its CPU allowance (plus
# a minute) waits on something that uses no CPU; its worker is killed.
BACKSTOP_FACTOR = 10
BACKSTOP_SLACK_SECONDS = 60.0

# A body larger than this (a typical feed is well under 1 MB) is parsed in a process of its own.
ALONE_BYTES = 4_000_000

DIED = "the parser process died (out of memory or killed)"
STOPPED = "the parser process stopped answering and was stopped"

_CONTEXT = multiprocessing.get_context("forkserver")

# The pool (and its number of workers) the last fetch of this process left for its next one, by
# pid: a forked child never takes its parent's.
_idle: dict[int, tuple[ProcessPool, int]] = {}
_idle_lock = threading.Lock()


class CpuLimitExceeded(Exception):
    """The task used more CPU time than it was allowed; its worker was ended."""


class WorkerFailed(Exception):
    """The worker process died or stopped answering; the message says which."""


class ParseWorkers:
    """One fetch's use of the parse worker processes; a context manager.

    `cpu_seconds <= 0` runs every task in this process, without a limit (`fetch.parse_cpu_seconds = 0`).
    At the first task the block takes the workers an earlier fetch left, when there are at least
    `workers` of them, or else starts `workers` processes (at most one per CPU): a fetch where every
    feed answers 304 starts none. Leaving the block keeps its workers for the process's next fetch;
    leaving it by an exception stops them.
    """

    def __init__(self, cpu_seconds: float, workers: int | None = None) -> None:
        cpus = os.cpu_count() or 1
        self.cpu_seconds = cpu_seconds
        self.size = max(1, min(workers or cpus, cpus))
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = None
        self._pool_size = 0
        self._closed = False
        self._alone_slots = threading.BoundedSemaphore(self.size)

    def __enter__(self) -> ParseWorkers:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(keep_workers=kind is None)

    def prepare(self) -> None:
        """Start the fork server now, without waiting, when a parse is certain: its imports then overlap the downloads."""
        if self.cpu_seconds > 0:
            _set_preload()
            multiprocessing.forkserver.ensure_running()

    def parse(self, body: bytes, feed: Feed, series: Sequence[Series],
              content_location: str | None = None, content_type: str | None = None) -> ParseResult:
        """parse_feed in a worker; a parse over the CPU limit or a lost worker is a ParseResult whose error says so."""
        try:
            return self._run(parse_feed, (body, feed, tuple(series), content_location, content_type),
                             alone=len(body) > ALONE_BYTES)
        except CpuLimitExceeded:
            return ParseResult([], [], (
                f"parsing took more than {self.cpu_seconds:g} s of CPU time and was abandoned (a hostile or "
                "pathological feed, e.g. thousands of long author strings); raise fetch.parse_cpu_seconds "
                "if the feed is just very large"))
        except WorkerFailed as exc:
            return ParseResult([], [], f"parsing failed: {exc}")

    def run(self, func: Callable[..., T], *args: Any) -> T:
        """`func(*args)` in a worker under the CPU limit; an exception `func` raises is raised here.

        `func`, its arguments and its result must pickle (a module-level function). Raises
        CpuLimitExceeded past the allowance, WorkerFailed when the worker died or hung.
        """
        return self._run(func, args, alone=False)

    def _run(self, func: Callable[..., T], args: tuple, alone: bool) -> T:
        """`run`; `alone` runs the task in a process of its own that ends with it (a large body's parse).

        A worker that has parsed a 20,000-item feed keeps most of its 200 MB peak while it waits for
        the next task (freed objects stay in the allocator's arenas), just when the caller stores those
        items; a process that ends returns it all. At most `workers` such processes run at once.
        """
        if self.cpu_seconds <= 0:
            return func(*args)
        backstop = self.cpu_seconds * BACKSTOP_FACTOR + BACKSTOP_SLACK_SECONDS
        for _ in range(2):
            if alone:
                with self._alone_slots:
                    pool = _new_pool(1, max_tasks=1)[0]
                    try:
                        succeeded, value = self._schedule(pool, func, args, backstop, _run_alone)
                    except (BrokenProcessPool, RuntimeError):
                        continue
                    finally:
                        _stop(pool)
                    value = pickle.loads(value) if succeeded else value
            else:
                pool = self._running_pool()
                try:
                    succeeded, value = self._schedule(pool, func, args, backstop)
                except (BrokenProcessPool, RuntimeError):
                    # pebble gives up on a whole pool when a worker dies before the pool saw its task
                    # start; the tasks it held, this one among them, get one more try on a new pool.
                    self._discard(pool)
                    continue
            if succeeded:
                return value
            raise value
        raise WorkerFailed("the parser processes kept failing (a worker could not start, or died at once)")

    def _schedule(self, pool: ProcessPool, func: Callable[..., T], args: tuple, backstop: float,
                  runner: Callable[..., tuple[bool, Any]] | None = None) -> tuple[bool, Any]:
        """(succeeded, value or exception) of one task on `pool` (through `runner`, by default _run_limited);
        pebble's pool failures pass through."""
        try:
            return pool.schedule(runner or _run_limited, (func, args, self.cpu_seconds), timeout=backstop).result()
        except ProcessExpired as exc:
            if exc.exitcode == -signal.SIGXCPU:
                raise CpuLimitExceeded(f"used more than {self.cpu_seconds:g} s of CPU time") from None
            raise WorkerFailed(DIED) from None
        except TimeoutError:  # pebble's backstop (the task's own exceptions come back as values)
            raise WorkerFailed(STOPPED) from None

    def close(self, keep_workers: bool = True) -> None:
        """End this fetch's use of the workers: keep them for the process's next fetch, or stop them.

        Stopping ends idle workers at once and terminates busy ones.
        """
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if keep_workers and pool.active:
            with _idle_lock:
                # A fetch running alongside may have left workers too: the larger pool is kept.
                earlier = _idle.get(os.getpid())
                if earlier is None or earlier[1] <= self._pool_size:
                    _idle[os.getpid()] = (pool, self._pool_size)
                    pool = earlier[0] if earlier else None
        if pool is not None:
            _stop(pool)

    def _running_pool(self) -> ProcessPool:
        with self._lock:
            if self._closed:
                raise WorkerFailed("the parse workers were already stopped")
            if self._pool is None:
                self._pool, self._pool_size = _idle_pool(self.size) or _new_pool(self.size)
            return self._pool

    def _discard(self, pool: ProcessPool) -> None:
        with self._lock:
            if self._pool is not pool:
                return  # another thread replaced it already
            self._pool = None
        _stop(pool)


def stop_idle_workers() -> None:
    """Stop the workers this process's last fetch left for its next one (nothing when there are none)."""
    with _idle_lock:
        idle = _idle.pop(os.getpid(), None)
    if idle is not None:
        _stop(idle[0])


def _set_preload() -> None:
    """Have the fork server import this module, so the parser, once (only its first start counts)."""
    _CONTEXT.set_forkserver_preload([__name__])


def _idle_pool(size: int) -> tuple[ProcessPool, int] | None:
    """The workers an earlier fetch of this process left, with their number, when at least `size` and working."""
    with _idle_lock:
        idle = _idle.pop(os.getpid(), None)
    if idle is None:
        return None
    if idle[1] >= size and idle[0].active:
        return idle
    _stop(idle[0])
    return None


def _new_pool(size: int, max_tasks: int = 0) -> tuple[ProcessPool, int]:
    _set_preload()
    return ProcessPool(max_workers=size, max_tasks=max_tasks, initializer=_start_worker, context=_CONTEXT), size


def _stop(pool: ProcessPool) -> None:
    pool.stop()
    pool.join()


# --- inside a worker -------------------------------------------------------------------------------
def _start_worker() -> None:
    """Once per worker: stray output to standard error; the CPU limit ends the worker, without a core file."""
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr  # line-buffered: a print is written at once, even if the worker is then ended
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # even if the caller ignores it
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def _run_limited(func: Callable[..., T], args: tuple, cpu_seconds: float) -> tuple[bool, Any]:
    """(True, func(*args)) or (False, the exception it raised), within `cpu_seconds` more of CPU time."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    try:
        value = func(*args)
    except Exception as exc:  # noqa: BLE001 - handed back as a value: only pebble's own errors are the future's exceptions
        return False, exc
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    return True, value


def _run_alone(func: Callable[..., T], args: tuple, cpu_seconds: float) -> tuple[bool, Any]:
    """_run_limited in a process that ends after it, whose answer leaves pickled: (True, pickled value) or (False, exception).

    What the parse built (feedparser's tree, the items as objects) goes back to the system before the
    answer is sent, so the process holds about the answer's bytes, not its 200 MB peak, while the
    caller receives and stores it.
    """
    succeeded, value = _run_limited(func, args, cpu_seconds)
    if not succeeded:
        return succeeded, value
    packed = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    del value
    gc.collect()
    _trim_heap()
    return True, packed


def _trim_heap() -> None:
    """Hand glibc's freed heap pages back to the system (it keeps them otherwise); nothing on another C library."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl, macOS: no such library or function
        pass
