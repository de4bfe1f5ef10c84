"""Run a function in a persistent child process with a hard timeout.

Decoders are C code: a corrupt file can make them hang or crash the interpreter. `Isolated` keeps one
worker process alive across calls (so the import cost is paid once), sends it ``(fn, args, kwargs)``,
and waits at most ``timeout_s``. On a timeout or a crash of the worker it kills the worker, starts a
fresh one on the next call, and returns a one-line error instead of the result.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (at most 300 characters)."""
    msg = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    return text[:300]


def _serve() -> None:
    """Worker loop (``python -m pipeline.isolate``): jobs come on stdin, results leave on the original
    stdout; fd 1 is pointed at stderr so that library prints cannot corrupt the channel."""
    import torch

    torch.set_num_threads(1)
    conn_in, conn_out = Connection(os.dup(0)), Connection(os.dup(1))
    os.dup2(2, 1)
    conn = _Duplex(conn_in, conn_out)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        fn, args, kwargs = job
        try:
            conn.send(_pack(fn(*args, **kwargs)))
        except Exception as exc:  # every failure becomes one line for the caller
            conn.send(("err", one_line(exc)))


SHM = "/dev/shm"
BIG = 1 << 20  # arrays larger than this cross through a tmpfs file instead of the pipe


def _pack(value: Any) -> tuple[str, Any]:
    """('ok', value), or ('npy', path) for a large numpy array written to tmpfs (one copy, no pickling)."""
    import numpy as np

    if isinstance(value, np.ndarray) and value.nbytes > BIG and os.path.isdir(SHM):
        fd, path = tempfile.mkstemp(prefix="s2s-", suffix=".npy", dir=SHM)
        with os.fdopen(fd, "wb") as f:
            np.save(f, value, allow_pickle=False)
        return "npy", path
    return "ok", value


def _unpack(status: str, value: Any) -> tuple[bool, Any]:
    if status == "npy":
        import numpy as np

        try:
            return True, np.load(value, allow_pickle=False)
        finally:
            os.unlink(value)
    return status == "ok", value


class _Duplex:
    """One object with recv/send/poll over two one-way connections."""

    def __init__(self, rx: Connection, tx: Connection) -> None:
        self.rx, self.tx = rx, tx

    def recv(self) -> Any:
        return self.rx.recv()

    def send(self, obj: Any) -> None:
        self.tx.send(obj)

    def poll(self, timeout: float) -> bool:
        return self.rx.poll(timeout)

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


class Isolated:
    """A persistent worker process; ``call`` returns ``(True, value)`` or ``(False, error_line)``."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._conn: _Duplex | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "pipeline.isolate"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, close_fds=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._conn = _Duplex(Connection(os.dup(self._proc.stdout.fileno())),
                             Connection(os.dup(self._proc.stdin.fileno())))
        self._proc.stdin.close()
        self._proc.stdout.close()

    def close(self) -> None:
        """Stop the worker (if any)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float, **kwargs: Any) -> tuple[bool, Any]:
        """Run ``fn(*args, **kwargs)`` in the worker; give up after ``timeout_s`` seconds."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.close()
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((fn, args, kwargs))
                if not self._conn.poll(timeout_s):
                    self.close()
                    return False, f"timeout: no result after {timeout_s:g} s"
                status, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                try:
                    code = self._proc.wait(1) if self._proc is not None else None
                except subprocess.TimeoutExpired:
                    code = None
                self.close()
                return False, f"decoder process died (exit code {code})"
            return _unpack(status, value)

    def __enter__(self) -> "Isolated":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
