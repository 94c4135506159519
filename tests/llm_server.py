"""An OpenAI-compatible chat-completions server on 127.0.0.1, scripted per test.

Replies are chosen per stage (planning, selection, response), told apart by the
``X-HuggingGPT-Stage`` header the client sends with every call (a request without
it is refused with 400). A script entry is a reply string, a callable
taking the request body and returning one (or an :class:`HTTPFault`), or an
:class:`HTTPFault` to answer with an error status. A list of entries is consumed
in order, the last repeating.

A request with ``"stream": true`` is answered with Server-Sent Events, as OpenAI streams: the reply in pieces of
at most 8 characters (:func:`pieces`), one every ``piece_seconds``, then the usage (when the request asks for it)
and ``data: [DONE]``. ``on_piece(stage, index, count)`` is called before each piece is sent (a test can wait there
for an event); with ``streams = False`` the server answers every request with one whole completion, as a server
that does not stream.

:meth:`ScriptedLLM.chat_model` is the same script without the wire: a :class:`~tasks.llm.FunctionModel` that answers
in process, to be given to a run with :func:`tasks.services.override` (the ``llm`` fixture of ``tests/conftest.py``
does). It records each call as the body the OpenAI client would have sent, so ``requests``, ``stage_requests``,
``calls``, ``streamed``, ``latency``, ``piece_seconds`` and ``on_piece`` read the same; an :class:`HTTPFault`
becomes the :class:`~tasks.llm.LLMError` the client raises for that status (no retries: they are the client's).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tasks.constraints import for_endpoint
from tasks.llm import (
    STAGE_HEADER,
    ChatCall,
    FunctionModel,
    LLMError,
    LLMRejectedError,
    LLMUnreachableError,
)

STAGES = ("plan", "select", "respond", "replan")


@dataclass
class HTTPFault:
    status: int = 500
    message: str = "scripted failure"
    delay: float = 0.0


class ScriptedLLM:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        #: the stage of each request, in the same order
        self.stages: list[str] = []
        self.calls: Counter[str] = Counter()
        self.script: dict[str, list[Any]] = {}
        self.reject_response_format = False
        #: seconds every successful answer takes, as a hosted model's response time
        self.latency = 0.0
        #: seconds between two pieces of a streamed reply
        self.piece_seconds = 0.0
        #: whether a request asking for a stream gets one (False: one whole completion, as a server that cannot)
        self.streams = True
        #: called with (stage, index of the piece, number of pieces) before each piece of a streamed reply is sent
        self.on_piece: Callable[[str, int, int], None] | None = None
        #: how many streamed replies were sent, per stage
        self.streamed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()  # cuts a fault's delay short when the script is reset or the server stops
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------
    def start(self) -> ScriptedLLM:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                stage = self.headers.get(STAGE_HEADER, "")
                if stage not in STAGES:
                    self._send(400, {"error": {"message": f"no {STAGE_HEADER} header naming one of {STAGES}"}})
                    return
                status, payload = outer._answer(body, stage)
                if status == 200 and body.get("stream") and outer.streams:
                    self._stream(stage, payload, bool((body.get("stream_options") or {}).get("include_usage")))
                    return
                self._send(status, payload)

            def _stream(self, stage: str, payload: dict[str, Any], with_usage: bool) -> None:
                with outer._lock:
                    outer.streamed[stage] += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                content = payload["choices"][0]["message"]["content"]
                base = {k: payload[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
                parts = pieces(content)
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                self._event({**base, "choices": [first]})
                for index, piece in enumerate(parts):
                    if outer.on_piece is not None:
                        outer.on_piece(stage, index, len(parts))
                    if outer.piece_seconds and index:
                        time.sleep(outer.piece_seconds)
                    self._event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if with_usage:
                    self._event({**base, "choices": [], "usage": payload["usage"]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                self.wfile.flush()

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(
                "this ScriptedLLM answers in process and has no URL; a test that needs the wire asks for the "
                "llm_http fixture or carries @pytest.mark.llm_http"
            )
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ------------------------------------------------------------------
    def chat_model(self, model: str = "scripted") -> FunctionModel:
        """This script as an in-process chat model (no server, no environment): give it to a run with
        :func:`tasks.services.override`."""
        where = "the scripted LLM (in process)"
        chat = FunctionModel(lambda call: self._reply(call, model, where), model=model)
        chat.base_url = where
        return chat

    def _reply(self, call: ChatCall, model: str, where: str) -> str | Iterator[str]:
        """A call answered as the server answers the request the OpenAI client would send for it."""
        if call.stage not in STAGES:
            raise LLMRejectedError(f"{where} answered HTTP 400: no stage naming one of {STAGES}")
        body: dict[str, Any] = {"model": model, "messages": call.messages, "temperature": call.temperature}
        sent = for_endpoint(call.schema)
        if sent is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": call.stage, "schema": sent, "strict": False},
            }
        if call.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        status, payload = self._answer(body, call.stage)
        if status != 200 or "error" in payload:
            raise _fault_error(status, payload["error"]["message"], f"{where} (model {model!r})")
        content: str = payload["choices"][0]["message"]["content"]
        if call.stream and self.streams:
            return self._stream_pieces(call.stage, content)
        return content

    def _stream_pieces(self, stage: str, content: str) -> Iterator[str]:
        with self._lock:
            self.streamed[stage] += 1
        parts = pieces(content)
        for index, piece in enumerate(parts):
            if self.on_piece is not None:
                self.on_piece(stage, index, len(parts))
            if self.piece_seconds and index:
                time.sleep(self.piece_seconds)
            yield piece

    # ------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self._released.set()
            self._released = threading.Event()
            self.requests.clear()
            self.stages.clear()
            self.calls.clear()
            self.script.clear()
            self.reject_response_format = False
            self.latency = 0.0
            self.piece_seconds = 0.0
            self.streams = True
            self.on_piece = None
            self.streamed.clear()

    def set(self, *, plan: Any = None, select: Any = None, respond: Any = None, replan: Any = None) -> None:
        for stage, entry in (("plan", plan), ("select", select), ("respond", respond), ("replan", replan)):
            if entry is not None:
                self.script[stage] = list(entry) if isinstance(entry, list) else [entry]

    def stage_requests(self, stage: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r, s in zip(self.requests, self.stages, strict=True) if s == stage]

    def _answer(self, body: dict[str, Any], stage: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            self.stages.append(stage)
            self.calls[stage] += 1
            if self.reject_response_format and "response_format" in body:
                return 400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
            entries = self.script.get(stage)
            if not entries:
                entry: Any = default_reply(stage, body)
            else:
                entry = entries.pop(0) if len(entries) > 1 else entries[0]
            released = self._released
        if callable(entry) and not isinstance(entry, HTTPFault):
            entry = entry(body)  # a reply, or an HTTPFault chosen from the request
        if isinstance(entry, HTTPFault):
            if entry.delay:
                released.wait(entry.delay)
            return entry.status, {"error": {"message": entry.message, "type": "server_error"}}
        content = entry
        if self.latency:
            time.sleep(self.latency)
        if self.piece_seconds and not (body.get("stream") and self.streams):  # generated at the same rate, unseen
            time.sleep(self.piece_seconds * max(len(pieces(content)) - 1, 0))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(content.split()),
                "total_tokens": prompt_tokens + len(content.split()),
            },
        }


def _fault_error(status: int, message: str, where: str) -> LLMError:
    """The error :class:`~tasks.llm.LLMClient` raises for an HTTP error status (with no retries left)."""
    if status == 400:
        return LLMRejectedError(f"{where} answered HTTP 400: {message}")
    if status in (401, 403):
        return LLMUnreachableError(f"{where} refused the API key; set a valid OPENAI_API_KEY")
    if status == 429:
        return LLMError(f"{where} is rate limiting requests (429) after retries: {message}")
    return LLMError(f"{where} answered HTTP {status}: {message}")


_PIECE = re.compile(r"\s*\S{1,8}|\s+$")


def pieces(content: str) -> list[str]:
    """A reply as a server streams it: pieces of at most 8 characters (with the spaces before them)."""
    return _PIECE.findall(content) or [content]


def default_reply(stage: str, body: dict[str, Any]) -> str:
    if stage in ("plan", "replan"):
        return '{"tasks": []}'
    if stage == "select":
        return '{"choices": []}'
    return "Done."


def plan_json(*nodes: dict[str, Any]) -> str:
    return json.dumps({"tasks": list(nodes)})
