"""A media server on 127.0.0.1 that behaves well and badly on purpose, for tests and `bench/ingest.py`.

Files are registered under any name (``add("../../x", path)``: names are looked up in a table, never on
disk, so odd names are safe) and served at ``/{mode}/{url-quoted name}``; the query string is ignored for
the lookup but counted, so one file can stand for many clips. Modes:

- ``files``: the file (200, ``video/mp4``, Content-Length); ``slow``: the same after ``slow_s`` seconds;
- ``stall``: headers and the first KiB, then silence for ``stall_s`` seconds;
- ``cut``: a Content-Length of the whole file, half of it, then the connection closes;
- ``garbage``: random bytes labelled ``video/mp4``; ``html``: a web page with no video;
- anything else, or an unknown name: 404.

``hits`` counts requests per path (with query); ``refused_url`` names a port nothing listens on.
"""
from __future__ import annotations

import collections
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _head(self, status: int, ctype: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def _body(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        owner = self.server.owner
        owner.count(self.path)
        mode, _, quoted = urlsplit(self.path).path.lstrip("/").partition("/")
        path = owner.files.get(unquote(quoted))
        if mode == "html":
            page = b"<html><body><p>no video here</p></body></html>"
            self._head(200, "text/html; charset=utf-8", len(page))
            return self._body(page)
        if path is None or mode not in ("files", "slow", "stall", "cut", "garbage"):
            self._head(404, "text/plain", 9)
            return self._body(b"not found")
        data = Path(path).read_bytes() if mode != "garbage" else os.urandom(50_000)
        if mode == "slow":
            owner.wait(owner.slow_s)
        self._head(200, "video/mp4", len(data))
        if mode == "stall":
            self._body(data[:1024])
            self.wfile.flush()
            owner.wait(owner.stall_s)
        elif mode == "cut":
            self._body(data[: len(data) // 2])
        else:
            self._body(data)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: "MediaServer"


class MediaServer:
    """``with MediaServer() as srv: srv.add("a.mp4", path); srv.url("files", "a.mp4")``."""

    def __init__(self, *, slow_s: float = 1.0, stall_s: float = 60.0) -> None:
        self.files: dict[str, Path] = {}
        self.slow_s, self.stall_s = slow_s, stall_s
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add(self, name: str, path: str | Path) -> None:
        """Serve ``path`` under ``name`` (any string)."""
        self.files[name] = Path(path)

    def url(self, mode: str, name: str, query: str = "") -> str:
        """The URL of ``name`` in ``mode`` (the name is quoted as a whole)."""
        return f"http://127.0.0.1:{self.port}/{mode}/{quote(name, safe='')}" + (f"?{query}" if query else "")

    def base(self, mode: str) -> str:
        """``http://127.0.0.1:PORT/mode/`` (for ``data.vggsound.url_template``)."""
        return f"http://127.0.0.1:{self.port}/{mode}/"

    def count(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1

    def hits_for(self, url: str) -> int:
        """Requests so far for the path (and query) of ``url``."""
        parts = urlsplit(url)
        with self._lock:
            return self.hits[parts.path + (f"?{parts.query}" if parts.query else "")]

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops."""
        self._stop.wait(seconds)

    def __enter__(self) -> "MediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def refused_url(path: str = "/x.mp4") -> str:
    """A URL on 127.0.0.1 at a port that was free a moment ago: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
