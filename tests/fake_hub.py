"""A stand-in for the Hugging Face Hub on 127.0.0.1, for huggingface_hub's real client (``HF_ENDPOINT``).

It answers what ``HfApi.model_info`` / ``list_models`` / ``repo_info`` / ``list_repo_tree`` and ``hf_hub_download``
ask for: ``GET /api/models/{repo}[/revision/{rev}]`` (honouring ``expand``), ``GET /api/models?pipeline_tag=...
&sort=downloads&limit=N``, ``GET /api/models/{repo}/tree/{rev}``, and ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``
(with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``). An unknown repository is a 404 with
``X-Error-Code: RepoNotFound``, a missing file a 404 with ``X-Error-Code: EntryNotFound``. Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class HubModel:
    """One repository of the fake Hub."""

    id: str
    pipeline_tag: str
    model_type: str | None = None
    params: int | None = None
    library: str = "transformers"
    providers: dict[str, str] = field(default_factory=dict)  # provider -> status (live, staging, error)
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0123456789abcdef0123456789abcdef01234567"

    def info(self, expand: list[str] | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "_id": "0" * 24,
            "id": self.id,
            "modelId": self.id,
            "sha": self.sha,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library,
            "downloads": self.downloads,
            "likes": self.likes,
            "tags": self.tags,
            "private": False,
            "siblings": [{"rfilename": name} for name in self.files],
            "config": {"model_type": self.model_type} if self.model_type else {},
            "inferenceProviderMapping": {
                p: {"status": status, "providerId": f"{p}/{self.id}", "task": self.pipeline_tag}
                for p, status in self.providers.items()
            },
        }
        if self.params is not None:
            full["safetensors"] = {"parameters": {"F32": self.params}, "total": self.params}
        if not expand:
            return full
        return {k: v for k, v in full.items() if k in ("_id", "id", "modelId") or k in expand}


class FakeHub:
    """The fake Hub: add models with :meth:`add`, point ``HF_ENDPOINT`` at :attr:`url`."""

    def __init__(self, *, info_delay: float = 0.0) -> None:
        self.models: dict[str, HubModel] = {}
        self.requests: list[tuple[str, str]] = []
        #: seconds each answer about one model takes (``GET /api/models/{repo}``), as the real Hub's latency
        self.info_delay = info_delay
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, model: HubModel) -> HubModel:
        with self._lock:
            self.models[model.id] = model
        return model

    def asked(self, prefix: str) -> list[str]:
        """The paths of the requests recorded so far that start with ``prefix``."""
        with self._lock:
            return [path for _, path in self.requests if path.startswith(prefix)]

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- routes ---------------------------------------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        parsed = urlparse(handler.path)
        path = unquote(parsed.path)
        query = parse_qs(parsed.query)
        with self._lock:
            self.requests.append((handler.command, path))
        if path == "/api/models":
            self._send(handler, 200, self._listing(query), head=head)
        elif path.startswith("/api/models/"):
            self._model_api(handler, path.removeprefix("/api/models/"), query, head=head)
        elif "/resolve/" in path:
            repo, _, rest = path.lstrip("/").partition("/resolve/")
            _, _, filename = rest.partition("/")
            self._file(handler, repo, filename, head=head)
        else:
            self._send(handler, 404, {"error": f"no route {path}"}, head=head)

    def _listing(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        tag = query.get("pipeline_tag", [None])[0]
        limit = int(query.get("limit", ["1000"])[0])
        found = [m for m in self.models.values() if tag is None or m.pipeline_tag == tag]
        found.sort(key=lambda m: -m.downloads)
        return [
            {"_id": "0" * 24, "id": m.id, "modelId": m.id, "downloads": m.downloads, "likes": m.likes}
            for m in found[:limit]
        ]

    def _model_api(
        self, handler: BaseHTTPRequestHandler, rest: str, query: dict[str, list[str]], *, head: bool
    ) -> None:
        tree = "/tree/" in rest
        repo = rest.split("/tree/")[0].split("/revision/")[0]
        model = self.models.get(repo)
        if model is None:
            self._send(handler, 404, {"error": "Repository not found"}, head=head, error_code="RepoNotFound")
            return
        if tree:
            entries = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in model.files.items()
            ]
            self._send(handler, 200, entries, head=head)
            return
        expand = query.get("expand") or query.get("expand[]")
        if self.info_delay:
            time.sleep(self.info_delay)
        self._send(handler, 200, model.info(expand), head=head)

    def _file(self, handler: BaseHTTPRequestHandler, repo: str, filename: str, *, head: bool) -> None:
        model = self.models.get(repo)
        if model is None:
            self._send(handler, 404, {"error": "Repository not found"}, head=head, error_code="RepoNotFound")
            return
        data = model.files.get(filename)
        if data is None:
            self._send(handler, 404, {"error": "Entry not found"}, head=head, error_code="EntryNotFound")
            return
        headers = {"X-Repo-Commit": model.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        self._send(handler, 200, data, head=head, headers=headers)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        *,
        head: bool,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json"
            )
            handler.send_header("Content-Length", str(len(data)))
            if error_code:
                handler.send_header("X-Error-Code", error_code)
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            if not head:
                handler.wfile.write(data)
        except OSError:
            pass
