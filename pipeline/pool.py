"""A pool of persistent worker processes with a hard per-job timeout, fed from a stream with bounded memory.

Each slot is a thread of the parent that owns one worker process (``python -m pipeline.pool``, in its own
process group). A job that overruns ``timeout_s`` gets the worker's whole process group killed (the worker
and any ffmpeg it started), and the slot starts a fresh worker for its next job. Workers die with the
parent (``PR_SET_PDEATHSIG`` on Linux; they also exit at the end of their input), so a SIGKILLed stage
leaves no download running. At most ``2 * workers`` jobs are queued: the job stream is read only as
results come back, so memory does not grow with the number of jobs.
"""
from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Iterator, TypeVar

from pipeline.isolate import one_line

J = TypeVar("J")
_STOP = object()


def set_pdeathsig() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op where prctl is missing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve() -> None:
    """Worker loop: ``(fn, job)`` pairs come on stdin, ``("ok", value)`` / ``("err", line)`` leave on the
    original stdout; fd 1 is pointed at stderr so that library prints cannot corrupt the channel."""
    set_pdeathsig()
    rx, tx = Connection(os.dup(0)), Connection(os.dup(1))
    os.dup2(2, 1)
    while True:
        try:
            fn, job = rx.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # a job that does not unpickle here
            fn, job = None, exc
        try:
            if fn is None:
                raise job
            reply = ("ok", fn(job))
        except Exception as exc:  # the job's own bug becomes its error line
            reply = ("err", one_line(exc))
        try:
            tx.send(reply)
        except (BrokenPipeError, OSError):
            return


class _Slot:
    """One worker process, restarted after a timeout or a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.rx: Connection | None = None
        self.tx: Connection | None = None
        self.lock = threading.Lock()

    def _start(self) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.pool"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, close_fds=True, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        self.rx, self.tx = Connection(os.dup(proc.stdout.fileno())), Connection(os.dup(proc.stdin.fileno()))
        proc.stdin.close()
        proc.stdout.close()
        self.proc = proc

    def kill(self) -> None:
        """Kill the worker and everything it started (its process group); safe to call twice."""
        with self.lock:
            proc, self.proc = self.proc, None
            for conn in (self.rx, self.tx):
                if conn is not None:
                    conn.close()
            self.rx = self.tx = None
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()

    def interrupt(self) -> None:
        """Kill the worker's process group from another thread; the slot's own thread sees the end of the
        channel, reports the job as failed and cleans up."""
        proc = self.proc
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def call(self, fn: Callable[[Any], Any], job: Any, timeout_s: float) -> tuple[bool, Any]:
        """``(True, fn(job))`` run in the worker, or ``(False, one-line error)``."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self._start()
        rx, tx = self.rx, self.tx
        try:
            assert rx is not None and tx is not None
            tx.send((fn, job))
            if not rx.poll(timeout_s):
                self.kill()
                return False, f"timeout: no result after {timeout_s:g} s (worker killed)"
            status, value = rx.recv()
            return status == "ok", value
        except (EOFError, OSError, AssertionError):
            code = None
            if (proc := self.proc) is not None:
                try:
                    code = proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            self.kill()
            return False, f"worker: process died (exit code {code})"


def _slot_loop(slot: _Slot, fn: Callable, todo: queue.Queue, done: queue.Queue, timeout_s: float) -> None:
    while (job := todo.get()) is not _STOP:
        try:
            ok, value = slot.call(fn, job, timeout_s)
        except Exception as exc:  # e.g. a job that does not pickle: report it, keep the slot alive
            slot.kill()
            ok, value = False, one_line(exc)
        done.put((job, ok, value))
    slot.kill()


def run_pool(fn: Callable[[J], Any], jobs: Iterable[J], *, workers: int,
             timeout_s: float) -> Iterator[tuple[J, bool, Any]]:
    """Run ``fn(job)`` for every job in ``workers`` worker processes; yield ``(job, ok, value_or_error)`` in
    the order jobs finish. ``fn`` must be a module-level function; jobs and values must pickle. Closing the
    generator early kills the workers."""
    workers = max(1, workers)
    todo: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()
    slots = [_Slot() for _ in range(workers)]
    threads = [threading.Thread(target=_slot_loop, args=(s, fn, todo, done, timeout_s), daemon=True)
               for s in slots]
    for t in threads:
        t.start()
    inflight, source, more = 0, iter(jobs), True
    try:
        while True:
            while more and inflight < 2 * workers:
                job = next(source, _STOP)
                if job is _STOP:
                    more = False
                else:
                    todo.put(job)
                    inflight += 1
            if not inflight:
                return
            job, ok, value = done.get()
            inflight -= 1
            yield job, ok, value
    finally:
        while True:  # drop what was not started, then stop every slot
            try:
                todo.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            todo.put(_STOP)
        for s in slots:
            if inflight:
                s.interrupt()
        for t in threads:
            t.join(timeout=10)


if __name__ == "__main__":
    _serve()
