"""A small HTTP server on a loopback address for input tests: files from a folder, plus scripted routes
(redirects, slow or silent answers, large bodies). It records the path of every request it receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


class WebServer:
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._released = threading.Event()  # set when the server stops: silent routes end
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append(path)
                    route = server.routes.get(path)
                try:
                    if route is not None:
                        route(self)
                    else:
                        server._serve_file(self, path)
                except OSError:
                    pass  # the client gave up

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve_file(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_file() or not file.is_relative_to(self.root.resolve()):
            body = b"not found"
            handler.send_response(404)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        data = file.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # --- scripted routes ---------------------------------------------------------------------------------------------

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route
        return self.url(path)

    def silent(self, path: str, seconds: float = 30.0) -> str:
        """Accepts the request and answers nothing for ``seconds``, or until the server stops."""

        def route(h: BaseHTTPRequestHandler) -> None:
            self._released.wait(seconds)

        self.routes[path] = route
        return self.url(path)

    def hold(self, path: str, body: bytes, wait: float = 120.0) -> Hold:
        """Holds each request for ``path`` until :meth:`Hold.release` (or ``wait`` seconds), then answers ``body``;
        :attr:`Hold.arrived` is set when the first request has come in."""
        hold = Hold()

        def route(h: BaseHTTPRequestHandler) -> None:
            hold.arrived.set()
            hold.released.wait(wait)
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route
        return hold

    def drip(self, path: str, total: int = 10_000, every: float = 0.1) -> str:
        """Announces ``total`` bytes and sends one byte every ``every`` seconds."""

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(total))
            h.end_headers()
            for _ in range(total):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(every)

        self.routes[path] = route
        return self.url(path)

    def large(self, path: str, size: int, *, announce: bool) -> str:
        """A body of ``size`` bytes, with its Content-Length (``announce``) or without (closed when done)."""

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            if announce:
                h.send_header("Content-Length", str(size))
            else:
                h.send_header("Connection", "close")
            h.end_headers()
            chunk = b"x" * 65536
            sent = 0
            while sent < size:
                part = chunk[: size - sent]
                h.wfile.write(part)
                sent += len(part)

        self.routes[path] = route
        return self.url(path)

    def barrier(self, paths: list[str], body: bytes, wait: float) -> Barrier:
        """Each of ``paths`` holds its request until all of them have arrived (or ``wait`` seconds have passed),
        then answers ``body``; the returned :class:`Barrier` records the order of arrivals and answers."""
        barrier = Barrier(len(paths), wait)

        def route(h: BaseHTTPRequestHandler) -> None:
            barrier.arrive(h.path)
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        for path in paths:
            self.routes[path] = route
        return barrier

    def received(self, path: str) -> int:
        with self._lock:
            return sum(p == path for p in self.requests)


class Hold:
    """A route's requests held until released (:meth:`WebServer.hold`)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()


class Barrier:
    """Requests that wait for one another: ``events`` lists ``("arrived", path)`` and ``("answered", path)`` in the
    order they happened."""

    def __init__(self, parties: int, wait: float) -> None:
        self.parties = parties
        self.wait = wait
        self.events: list[tuple[str, str]] = []
        self._all_here = threading.Event()
        self._lock = threading.Lock()

    def arrive(self, path: str) -> None:
        with self._lock:
            self.events.append(("arrived", path))
            if sum(kind == "arrived" for kind, _ in self.events) >= self.parties:
                self._all_here.set()
        self._all_here.wait(self.wait)
        with self._lock:
            self.events.append(("answered", path))
