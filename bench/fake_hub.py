"""A stand-in for the Hugging Face Hub on 127.0.0.1 that serves a folder of models at a set bandwidth.

huggingface_hub and transformers honour ``HF_ENDPOINT``: pointed at this server, ``snapshot_download``,
``hf_hub_download`` and ``from_pretrained`` run their real download code (metadata, tree listing, HEAD, GET into
the cache) against it, so a cold start costs what it costs a user, up to the link's speed. The folder holds one
sub-folder per repository (``root/org/name/...``, written by ``save_pretrained``); every repository has one
revision, ``main``, whose commit hash is derived from its files.

``bytes_per_second`` throttles each file download (per connection, like a CDN's per-connection rate); ``0`` serves
at full speed. :attr:`FakeHub.downloads` counts the files served (GET of a ``resolve`` URL) by repository.

    with FakeHub(root, bytes_per_second=4_000_000) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": fresh_folder}
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024


class FakeHub:
    """Serves the repositories under ``root`` with the Hub's model API (see the module doc)."""

    def __init__(self, root: Path | str, *, bytes_per_second: float = 0.0) -> None:
        self.root = Path(root)
        self.bytes_per_second = bytes_per_second
        self.downloads: Counter[str] = Counter()
        #: when each repository's weights (its largest file) began to be sent, as ``time.time()``
        self.weights_started: dict[str, float] = {}
        self.bytes_served = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the repositories ---------------------------------------------------------------------------------------
    def repos(self) -> list[str]:
        return sorted(
            str(p.parent.relative_to(self.root)) for p in self.root.glob("*/*/config.json") if p.parent.is_dir()
        )

    def _files(self, repo: str) -> list[Path]:
        folder = self.root / repo
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def _commit(self, repo: str) -> str:
        digest = hashlib.sha1()
        for path in self._files(repo):
            digest.update(str(path.relative_to(self.root / repo)).encode())
            digest.update(str(path.stat().st_size).encode())
        return digest.hexdigest()

    @staticmethod
    def _etag(path: Path) -> str:
        return hashlib.sha1(path.read_bytes()).hexdigest()

    # --- serving ------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the fake Hub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = "/".join(parts[2:4])
            rest = parts[4:]
            if not (self.root / repo / "config.json").is_file():
                return _send(handler, 404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            if not rest or rest[0] == "revision":
                return _send_json(handler, self._info(repo), body=body)
            if rest[0] == "tree":
                sub = "/".join(rest[2:])
                return _send_json(handler, self._tree(repo, sub), body=body)
            return _send(handler, 404, b"{}", {"X-Error-Code": "EntryNotFound"})
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            if not (self.root / repo / "config.json").is_file():
                return _send(handler, 404, b"{}", {"X-Error-Code": "RepoNotFound"})
            file = self.root / repo / name
            if not file.is_file():
                headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self._commit(repo)}
                return _send(handler, 404, b"{}", headers)
            return self._send_file(handler, repo, file, body=body)
        return _send(handler, 404, b"{}", {"X-Error-Code": "RepoNotFound"})

    def _info(self, repo: str) -> dict[str, Any]:
        folder = self.root / repo
        return {
            "id": repo,
            "modelId": repo,
            "sha": self._commit(repo),
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": str(p.relative_to(folder))} for p in self._files(repo)],
        }

    def _tree(self, repo: str, sub: str) -> list[dict[str, Any]]:
        folder = self.root / repo
        return [
            {"type": "file", "path": str(p.relative_to(folder)), "size": p.stat().st_size, "oid": self._etag(p)}
            for p in self._files(repo)
            if str(p.relative_to(folder)).startswith(sub)
        ]

    def _send_file(self, handler: BaseHTTPRequestHandler, repo: str, file: Path, *, body: bool) -> None:
        size = file.stat().st_size
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(size))
        handler.send_header("ETag", f'"{self._etag(file)}"')
        handler.send_header("X-Repo-Commit", self._commit(repo))
        handler.end_headers()
        if not body:
            return
        with self._lock:
            self.downloads[repo] += 1
            if file == max(self._files(repo), key=lambda p: p.stat().st_size):
                self.weights_started.setdefault(repo, time.time())
        start = time.perf_counter()
        sent = 0
        with file.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                handler.wfile.write(chunk)
                sent += len(chunk)
                if self.bytes_per_second > 0:
                    ahead = sent / self.bytes_per_second - (time.perf_counter() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        with self._lock:
            self.bytes_served += sent


def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


def _send_json(handler: BaseHTTPRequestHandler, value: Any, *, body: bool) -> None:
    data = json.dumps(value).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if body:
        handler.wfile.write(data)
