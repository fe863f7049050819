"""Run a function in a reused worker process under a CPU-time limit.

feedparser has slow paths (a 60 KB author string takes ~13 s of regex work) that a hostile
feed can trigger; a parse must not stall a run. Each task runs in a long-lived worker whose
RLIMIT_CPU soft limit is raised to "CPU used so far + the task's allowance" (whole seconds,
rounded up); when the kernel sends SIGXCPU the handler aborts the task and the worker stays
usable. A worker that dies, or hangs in code that never checks for signals, is replaced.

Workers are forked from a *fork server*: a fresh interpreter (`python -c …` via subprocess)
that imports the preload modules once and then forks one worker per request. A fork of a
single-threaded process that has done its imports costs a few milliseconds instead of the
≈0.1 s of CPU an interpreter start and its imports cost, so every run, and every worker that
replaces a dead one, gets its parsers at once. The caller itself is never forked: it may run
threads (httpx, a progress bar) whose locks a fork would copy, and unlike multiprocessing's
spawn/forkserver nothing re-imports the caller's `__main__` script.

Each worker talks to the caller over its own Unix socket, which the caller creates and hands
to the fork server (SCM_RIGHTS); tasks and results travel as length-prefixed pickles. The fork
server answers with the worker's pid and, on Linux, a pidfd, so a stuck worker is killed
without any risk of signalling a recycled pid. Workers are kept between calls, at most one per
CPU. `start_fork_server` starts the server ahead of need (its start-up then overlaps the
caller's own imports and I/O); everything is stopped at interpreter exit.
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
import socket
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
# How long a fork request may wait for the fork server, its first start-up and imports included.
FORK_SERVER_WAIT_SECONDS = 60.0
_PID = struct.Struct("!Q")


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


def start_fork_server(preload: Sequence[str] = ()) -> None:
    """Start the fork server now, importing `preload`, without waiting and without forking a worker.

    Cheap for the caller (one subprocess start); call it as early as possible, e.g. before the
    caller's own heavy imports, so that the server's start-up runs on another CPU meanwhile.
    """
    _pool_for_this_process().start(tuple(preload))


def stop_idle_workers() -> None:
    """Stop the workers but keep the fork server, so the next run forks new ones at once."""
    pool = _POOLS.get(os.getpid())
    if pool is not None:
        pool.stop_workers()


def shutdown_workers() -> None:
    """Stop the workers and the fork server (they are also stopped at exit)."""
    pool = _POOLS.pop(os.getpid(), None)
    if pool is not None:
        pool.close()


class _Worker:
    """One forked worker: the socket to it, its pid and (on Linux) a pidfd to kill it by."""

    def __init__(self, channel: socket.socket, pid: int, pidfd: int | None) -> None:
        self.channel, self.pid, self.pidfd = channel, pid, pidfd
        self.reader = channel.makefile("rb")
        self.writer = channel.makefile("wb")

    def ask(self, task: tuple, wait_seconds: float) -> tuple[str, Any]:
        try:
            _write_frame(self.writer, task)
            ready, _, _ = select.select([self.channel], [], [], wait_seconds)
            if not ready:
                raise WorkerFailed("the parser process stopped answering and was stopped")
            return _read_frame(self.reader)
        except (EOFError, OSError, pickle.UnpicklingError, struct.error):
            raise WorkerFailed("the parser process died (out of memory or killed)") from None

    def stop(self, kill: bool = False) -> None:
        """Close the socket (an idle worker leaves its loop on EOF); `kill` also sends SIGKILL."""
        if kill:
            self._kill()
        for stream in (self.writer, self.reader, self.channel):
            try:
                stream.close()
            except OSError:
                pass
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _kill(self) -> None:
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:  # no pidfd (not Linux): by pid, which the kernel reuses only after cycling through the rest
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass  # already gone


class _ForkServer:
    """The fresh interpreter that imports the preload modules once and forks a worker per request."""

    def __init__(self, preload: tuple[str, ...]) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.control, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from digest.cpulimit import serve_forks; serve_forks()",
                 str(theirs.fileno()), *preload],
                stdin=subprocess.DEVNULL, env=env, pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            self.control.close()
            raise
        finally:
            theirs.close()
        self._lock = threading.Lock()

    def fork(self) -> _Worker:
        """A new worker, once the server has done its imports; WorkerFailed if the server is gone."""
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                self.control.settimeout(FORK_SERVER_WAIT_SECONDS)
                socket.send_fds(self.control, [b"F"], [theirs.fileno()])
                answer, fds = b"", []
                while len(answer) < _PID.size:
                    data, more_fds, _, _ = socket.recv_fds(self.control, _PID.size - len(answer), 1)
                    if not data:
                        raise EOFError
                    answer, fds = answer + data, fds + more_fds
        except (EOFError, OSError):
            ours.close()
            raise WorkerFailed("the parser fork server died or stopped answering") from None
        finally:
            theirs.close()
        return _Worker(ours, _PID.unpack(answer)[0], fds[0] if fds else None)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        # The server holds nothing worth a clean exit, and may still be importing (a run of 304s
        # never needed it): kill it rather than wait. Its workers live on until their sockets close.
        self.control.close()
        self.process.kill()
        self.process.wait(5)


class _WorkerPool:
    def __init__(self, size: int) -> None:
        self._idle: list[_Worker] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._all: list[_Worker] = []
        self._preload: tuple[str, ...] = ()
        self._server: _ForkServer | None = None

    def start(self, preload: tuple[str, ...]) -> None:
        with self._lock:
            self._preload = tuple(dict.fromkeys((*self._preload, *preload)))
            self._running_server()

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
            server = self._running_server()
        try:
            worker = server.fork()
        except WorkerFailed:
            with self._lock:  # the server died (e.g. killed): one new server, one more try
                if self._server is server:
                    self._server = None
                server.stop()
                server = self._running_server()
            worker = server.fork()
        with self._lock:
            self._all.append(worker)
        return worker

    def _running_server(self) -> _ForkServer:
        # Called with self._lock held.
        if self._server is not None and not self._server.alive():
            self._server.stop()
            self._server = None
        if self._server is None:
            self._server = _ForkServer(self._preload)
        return self._server

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
        worker.stop(kill=True)

    def stop_workers(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.stop()

    def close(self) -> None:
        self.stop_workers()
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()


# One pool per process id: a forked child must not share its parent's sockets.
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


# --- inside the fork server and its workers --------------------------------------------------------
_armed = False


def serve_forks() -> None:
    """The fork server's loop: import the preload, then fork one worker per socket received, until EOF.

    Started as `python -c "…serve_forks()" CONTROL_FD MODULE…`. Single-threaded by design, so that
    a fork copies no lock another thread holds.
    """
    control = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's business
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps workers that end
    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print() in a task never reaches the caller's output
    for module in sys.argv[2:]:  # imported once, before any fork: never inside a task's CPU allowance
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # only a head start: a task that needs the module reports the failure itself
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if not data:
            return  # the caller closed its end, or exited
        if fds:
            _fork_worker(control, fds[0])


def _fork_worker(control: socket.socket, channel_fd: int) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _serve_worker(socket.socket(fileno=channel_fd))
        finally:
            os._exit(0)  # never run the server's exit handlers or flush its buffers twice
    os.close(channel_fd)
    pidfd = _pidfd(pid)
    try:
        socket.send_fds(control, [_PID.pack(pid)], [] if pidfd is None else [pidfd])
    except OSError:
        pass  # the caller is gone; the loop ends at its next read
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # the worker already ended, or the kernel has no pidfds


def _serve_worker(channel: socket.socket) -> None:
    """A worker's loop: read a task frame, answer it, until the caller closes the socket."""
    requests, answers = channel.makefile("rb"), channel.makefile("wb")
    while True:
        try:
            task = _read_frame(requests)
        except (EOFError, OSError):
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
