"""``hugginggpt serve``: HuggingGPT over HTTP, for any application and any chat front end.

- OpenAI-compatible: ``POST /v1/chat/completions`` (streamed or not), ``GET /v1/models``, ``POST /v1/files``;
- HuggingGPT's own server (JARVIS): ``POST /hugginggpt``, ``POST /tasks`` (the plan only), ``POST /results``;
- ``GET /files/{path}?exp=...&sig=...``: a run's files, streamed from the artifact store through signed links;
- ``GET /``: the chat page.

Every request that runs is one flow run of ``hugginggpt-request``: in this process, or with ``deployment`` through
``run_deployment`` on a work pool's workers. This module only wires: the messages, signing and limits are the pure
pieces of :mod:`tasks.serving`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import logging
import mimetypes
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from flows import events
from tasks.schemas import PlanNode, RunSummary
from tasks.serving import shapes
from tasks.serving.config import InFlight, ServeSettings
from tasks.serving.signing import FileSigner, LinkError, PublicLinks
from tasks.serving.uploads import FormError, parse_form
from tasks.settings import RunOptions, Settings
from tasks.storage import ArtifactStore, StorageError, store_for

logger = logging.getLogger("hugginggpt.serve")

UPLOADS = "uploads"
_FILE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_INLINE_TYPES = ("image/", "audio/", "video/", "application/json", "text/plain")


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``status``, message, type and code."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code


#: The stream a run's progress events are for: set by :meth:`Server.run` in the thread that runs the request, read
#: by the stream's listener in the thread that emits an event (the flow's, or a node task run's: Prefect copies the
#: caller's context into them), so concurrent runs in one process never mix their events.
STREAM: contextvars.ContextVar[str | None] = contextvars.ContextVar("hugginggpt_serve_stream", default=None)


@dataclass
class Server:
    """What the app needs: the settings of its runs, its own settings, the link signer, and how a request runs.

    ``services`` (a :class:`tasks.services.Services`) swaps services for the runs made in this process (a test's
    in-process chat model); ``deployment`` sends every run to that deployment instead."""

    settings: Settings
    serve: ServeSettings = field(default_factory=ServeSettings)
    signer: FileSigner | None = None
    options: RunOptions | None = None
    deployment: str | None = None
    services: Any = None
    started: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if self.signer is None:
            secret = self.settings.file_secret
            key = secret.get_secret_value().encode() if secret is not None else secrets.token_bytes(32)
            self.signer = FileSigner(key, seconds=self.settings.link_seconds)
        self.store: ArtifactStore = store_for(self.settings, UPLOADS)
        self.in_flight = InFlight(self.serve.serve_max_in_flight)
        self.runs = ThreadPoolExecutor(max_workers=self.serve.serve_max_runs, thread_name_prefix="hugginggpt-run")

    # -- links ---------------------------------------------------------------------------------------------------
    def link(self, uri: str, base_url: str) -> str | None:
        """The signed link of a stored file, or ``None`` when the file is not in the store."""
        from flows.artifacts import file_link

        assert self.signer is not None
        public = PublicLinks(self.settings.public_url or base_url, self.signer)
        return file_link(uri, store=self.store, public=public)

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, spec: dict[str, Any], stream: str | None = None) -> RunSummary:
        """Run one request (blocking): in this process, or on the deployment's workers. ``stream`` marks the
        progress events of this run (:data:`STREAM`) for the stream that waits for them."""
        token = STREAM.set(stream)
        try:
            if self.deployment:
                return self._run_deployed(spec)
            return _run_here(spec, self.options, self.services)
        finally:
            STREAM.reset(token)

    def _run_deployed(self, spec: dict[str, Any]) -> RunSummary:
        from prefect.deployments import run_deployment

        from flows.batch import read_summary

        flow_run = run_deployment(
            str(self.deployment),
            parameters=_deployment_parameters(spec, self.options),
            flow_run_name=run_name(spec["request"]),
            tags=["hugginggpt", "hugginggpt-serve"],
            timeout=0,
        )
        run_id = str(flow_run.id)
        _follow(run_id, flow_run.name)
        summary = read_summary(run_id, storage=self.settings.storage)
        if summary is None:
            raise RuntimeError(f"flow run {run_id} of {self.deployment} ended without a summary.json in storage")
        return summary

    def flow_run_url(self, flow_run_id: str | None) -> str | None:
        from prefect.settings import get_current_settings

        ui = get_current_settings().ui_url
        return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def _run_here(spec: dict[str, Any], options: RunOptions | None, services: Any) -> RunSummary:
    """One request flow run in this process (:func:`flows.request.run_request`)."""
    from flows.request import run_request
    from tasks.schemas import RequestSpec

    return run_request(RequestSpec(**spec), options, services=services, tags=["hugginggpt-serve"])


def _deployment_parameters(spec: dict[str, Any], options: RunOptions | None) -> dict[str, Any]:
    from tasks.schemas import RequestSpec

    params: dict[str, Any] = {"spec": RequestSpec(**spec).model_dump(mode="json", exclude_none=True)}
    if options is not None:
        params["options"] = options.model_dump(mode="json", exclude_none=True)
    return params


_PREFECT_NODE_STATES = {"RUNNING": "running", "COMPLETED": "done", "FAILED": "failed", "CRASHED": "failed"}


def _follow(flow_run_id: str, run_name: str, *, poll: float = 0.5) -> None:
    """Wait for a deployed run to end, reporting its task runs' states to the progress channel (the worker's own
    events stay in its process)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    seen: dict[str, str] = {}
    announced = False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(uuid.UUID(flow_run_id))
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
            )
            nodes = sorted((t for t in task_runs if "#" in t.name), key=lambda t: t.expected_start_time or 0)
            if nodes and not announced:
                announced = True
                events.emit(events.PlanEvent(flow_run_id, run_name, tuple((t.name, "", "") for t in nodes)))
            for t in nodes:
                kind = t.state.type.value if t.state else ""
                state = "skipped" if t.state and t.state.name == "Skipped" else _PREFECT_NODE_STATES.get(kind)
                if t.state and t.state.name == "Cached":
                    state = "cached"
                if state and seen.get(t.name) != state:
                    seen[t.name] = state
                    events.emit(events.NodeEvent(flow_run_id, t.name, state))
            if run.state is not None and run.state.is_final():
                return
            time.sleep(poll)


# ---------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------
def create_app(server: Server) -> FastAPI:
    """The HTTP API of ``server`` (see the module's docstring)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.runs.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="HuggingGPT", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    keys = server.serve.keys()

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(shapes.error_body(str(exc), kind=exc.kind, code=exc.code), exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(shapes.error_body(str(exc.detail), code=str(exc.status_code)), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(shapes.error_body(_errors_text(exc.errors())), 400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("request failed")
        return JSONResponse(
            shapes.error_body(f"internal error ({type(exc).__name__})", kind="server_error", code="internal_error"), 500
        )

    def caller(request: Request) -> str:
        """The key of the caller (401 without a valid one when keys are configured), or its address."""
        if not keys:
            return request.client.host if request.client else "local"
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        for key in keys:
            if token and hmac.compare_digest(token.encode(), key.encode()):
                return "key:" + key[:4] + str(keys.index(key))
        raise ApiError(401, "a valid API key is required: Authorization: Bearer <key>", code="invalid_api_key")

    @contextlib.contextmanager
    def counted(who: str) -> Iterator[None]:
        if not server.in_flight.enter(who):
            raise ApiError(
                429,
                f"too many requests in flight for this key (at most {server.in_flight.limit}); retry when one ends",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
            )
        try:
            yield
        finally:
            server.in_flight.leave(who)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- OpenAI ---------------------------------------------------------------------------------------------------
    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        caller(request)
        return shapes.models_list(server.started)

    @app.post("/v1/files")
    async def upload(request: Request) -> dict[str, Any]:
        who = caller(request)
        with counted(who):
            body = await _read_body(request, server.serve.serve_max_upload_bytes, "upload")
            try:
                form = parse_form(request.headers.get("content-type", ""), body)
            except FormError as exc:
                raise ApiError(400, str(exc)) from None
            if "file" not in form or form["file"].filename is None:
                raise ApiError(400, "the form has no 'file' field with a file in it")
            purpose = form["purpose"].data.decode(errors="replace")[:40] if "purpose" in form else "user_data"
            name = shapes.safe_filename(form["file"].filename or "upload")
            file_id = "file-" + uuid.uuid4().hex
            created = int(time.time())
            record = shapes.file_object(file_id, name, len(form["file"].data), created, purpose)
            data = form["file"].data

            def save() -> None:
                server.store.put_bytes(f"{file_id}/{name}", data)
                server.store.put_json(f"{file_id}/file.json", record)

            try:
                await asyncio.to_thread(save)
            except StorageError as exc:
                raise ApiError(503, f"the file could not be stored: {exc}", kind="server_error") from None
            return record

    @app.get("/v1/files/{file_id}")
    async def file_info(file_id: str, request: Request) -> dict[str, Any]:
        caller(request)
        _, record = await asyncio.to_thread(_resolve_file, server, file_id)
        return record

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response | dict[str, Any]:
        who = caller(request)
        if not server.in_flight.enter(who):
            raise ApiError(
                429,
                f"too many requests in flight for this key (at most {server.in_flight.limit}); retry when one ends",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
            )
        released = False
        try:
            body = _parse(shapes.ChatCompletionRequest, await _read_body(request, server.serve.serve_max_body_bytes))
            spec = await asyncio.to_thread(_spec_of, server, body.messages, body.plan, body.models)
            completion_id = "chatcmpl-" + uuid.uuid4().hex
            if body.stream:
                released = True  # the stream releases it when it ends
                return StreamingResponse(
                    _stream(server, spec, completion_id, base_url(request), lambda: server.in_flight.leave(who)),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            summary = await _run(server, spec)
            files = shapes.output_files(summary, lambda uri: server.link(uri, base_url(request)))
            info = shapes.run_info(summary, files, server.flow_run_url(summary.flow_run_id))
            document = shapes.completion(
                completion_id, shapes.reply_text(summary, files), info, shapes.usage_of(summary)
            )
            return JSONResponse(document, headers={"X-HuggingGPT-Flow-Run": summary.flow_run_id or ""})
        finally:
            if not released:
                server.in_flight.leave(who)

    # -- HuggingGPT's own server ---------------------------------------------------------------------------------
    async def jarvis(request: Request) -> tuple[dict[str, Any], str]:
        body = _parse(shapes.JarvisRequest, await _read_body(request, server.serve.serve_max_body_bytes))
        return await asyncio.to_thread(_spec_of, server, body.messages, body.plan, body.models), base_url(request)

    @app.post("/hugginggpt")
    async def hugginggpt(request: Request) -> dict[str, Any]:
        with counted(caller(request)):
            spec, base = await jarvis(request)
            summary = await _run(server, spec)
            files = shapes.output_files(summary, lambda uri: server.link(uri, base))
            info = shapes.run_info(summary, files, server.flow_run_url(summary.flow_run_id))
            return {"message": shapes.reply_text(summary, files), "hugginggpt": info}

    @app.post("/tasks", response_model=None)
    async def tasks(request: Request) -> list[dict[str, Any]]:
        with counted(caller(request)):
            spec, _ = await jarvis(request)
            nodes = spec["plan"] if spec["plan"] is not None else await asyncio.to_thread(_plan_only, server, spec)
            return shapes.jarvis_tasks(nodes)

    @app.post("/results")
    async def results(request: Request) -> dict[str, Any]:
        with counted(caller(request)):
            spec, base = await jarvis(request)
            summary = await _run(server, spec)
            files = shapes.output_files(summary, lambda uri: server.link(uri, base))
            return shapes.jarvis_results(summary, files)

    # -- files and the page --------------------------------------------------------------------------------------
    @app.get("/files/{path:path}")
    async def files(path: str, exp: str | None = None, sig: str | None = None) -> StreamingResponse:
        assert server.signer is not None
        try:
            rel = server.signer.check(path, exp, sig)
        except LinkError as exc:
            raise ApiError(403, f"file link refused: {exc}", kind="permission_error", code="invalid_link") from None
        try:
            handle = await asyncio.to_thread(server.store.open_root, rel)
        except FileNotFoundError:
            raise ApiError(404, "no such file in the store", code="file_not_found") from None
        except StorageError as exc:
            raise ApiError(403, str(exc), kind="permission_error", code="invalid_link") from None
        media = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        if not media.startswith(_INLINE_TYPES):
            media = "application/octet-stream"  # never HTML or SVG from the server's own origin
        name = rel.rsplit("/", 1)[-1]
        headers = {
            "Content-Disposition": f'inline; filename="{name}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, max-age=300",
        }
        return StreamingResponse(_pieces(handle), media_type=media, headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("tasks.serving.page").joinpath("index.html").read_text(encoding="utf-8")
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; img-src 'self' blob: https: http:; media-src 'self' blob: https: http:",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _pieces(handle: Any, size: int = 1 << 16) -> Iterator[bytes]:
    with handle:
        while piece := handle.read(size):
            yield piece


def _errors_text(errors: Any) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _parse(model: type[Any], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise ApiError(400, _errors_text(exc.errors())) from None


async def _read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading when the length is announced)."""
    length = request.headers.get("content-length", "")
    too_big = ApiError(413, f"the {what} is larger than {limit} bytes", code="request_too_large")
    if length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_big
    return bytes(body)


def _resolve_file(server: Server, file_id: str) -> tuple[str, dict[str, Any]]:
    """An uploaded file's stored URI and record; 404 for an id that is not one."""
    if not file_id.startswith("file-") or len(file_id) > 80 or not set(file_id) <= _FILE_ID_CHARS:
        raise ApiError(404, f"no file {file_id[:80]!r}", code="file_not_found")
    try:
        record = server.store.read_json(f"{file_id}/file.json")
    except StorageError as exc:
        raise ApiError(503, f"the file record could not be read: {exc}", kind="server_error") from None
    if not isinstance(record, dict) or record.get("id") != file_id:
        raise ApiError(404, f"no file {file_id!r}; upload it with POST /v1/files first", code="file_not_found")
    name = shapes.safe_filename(str(record.get("filename", "")))
    return server.store.uri(f"{file_id}/{name}"), record


def _spec_of(
    server: Server, messages: list[shapes.ChatMessage], plan: list[PlanNode] | None, models: dict[str, str]
) -> dict[str, Any]:
    """The request a conversation asks for, checked as the CLI checks it (the request, its inputs against the
    input policy, an explicit plan against them); 400 with the reason otherwise."""
    from tasks.inputs import InputPolicy, refused_inputs
    from tasks.plan import validate_plan
    from tasks.runs import RequestError, check_request

    def resolve(file_id: str) -> tuple[str, str]:
        uri, record = _resolve_file(server, file_id)
        return uri, shapes.safe_filename(str(record.get("filename", "")))

    try:
        mapped = shapes.to_request(messages, resolve, history_turns=server.settings.chat_history)
        check_request(mapped.request)
    except (shapes.RequestShapeError, RequestError) as exc:
        raise ApiError(400, str(exc)) from None
    policy = InputPolicy.from_settings(server.settings)
    refused = refused_inputs(mapped.inputs, policy)
    if refused:
        raise ApiError(400, "; ".join(refused), code="input_refused")
    if plan is not None:
        try:
            plan, _ = validate_plan(
                [n.model_dump() for n in plan], inputs=mapped.inputs, request=mapped.request, policy=policy
            )
        except ValueError as exc:
            raise ApiError(400, f"plan: {exc}", code="invalid_plan") from None
    return {
        "request": mapped.request,
        "inputs": mapped.inputs,
        "history": mapped.history,
        "models": dict(models),
        "plan": plan,
    }


def _plan_only(server: Server, spec: dict[str, Any]) -> list[PlanNode]:
    """The plan the LLM makes for ``spec``, validated; nothing runs."""
    from tasks.inputs import InputPolicy
    from tasks.llm import LLMError
    from tasks.plan import PlanningError, plan_request
    from tasks.services import override, services_for

    given = {n: getattr(server.services, n) for n in server.services.given} if server.services is not None else {}
    with override(**given):
        model = services_for(server.settings).chat_model
    try:
        result = plan_request(
            model,
            spec["request"],
            inputs=spec["inputs"],
            history=spec["history"],
            policy=InputPolicy.from_settings(server.settings),
        )
    except (PlanningError, LLMError) as exc:
        raise ApiError(502, f"planning failed: {exc}", kind="server_error", code="planning_failed") from None
    return list(result.nodes)


def run_name(request: str) -> str:
    from flows.request import request_run_name

    return request_run_name(request, uuid.uuid4().hex[:8])


async def _run(server: Server, spec: dict[str, Any]) -> RunSummary:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(server.runs, server.run, spec)
    except ApiError:
        raise
    except Exception as exc:
        logger.exception("run failed")
        raise ApiError(503, f"the request could not be run: {type(exc).__name__}: {exc}", kind="server_error") from None


async def _stream(
    server: Server, spec: dict[str, Any], completion_id: str, base: str, done: Callable[[], None]
) -> AsyncIterator[str]:
    """The run as Server-Sent Events: the plan, each node's start and end, then the answer and ``[DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stream = uuid.uuid4().hex
    mine: set[str] = set()
    lock = threading.Lock()

    def listener(event: Any) -> None:  # called in the thread that emits, in its context
        if isinstance(event, events.PlanEvent) and STREAM.get() == stream:
            with lock:
                mine.add(event.flow_run_id)
        elif not isinstance(event, events.NodeEvent) or event.flow_run_id not in mine:
            return
        loop.call_soon_threadsafe(queue.put_nowait, event)

    try:
        yield shapes.sse(shapes.chunk(completion_id, "", role=True, event={"event": "start"}))
        with events.subscribe(listener):
            running = loop.run_in_executor(server.runs, server.run, spec, stream)
            while True:
                getter = asyncio.ensure_future(queue.get())
                finished, _ = await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in finished:
                    getter.cancel()
                    break
                for text in _event_chunks(completion_id, getter.result()):
                    yield text
            while not queue.empty():
                for text in _event_chunks(completion_id, queue.get_nowait()):
                    yield text
        try:
            summary = running.result()
        except Exception as exc:
            logger.exception("run failed")
            message = f"the request could not be run: {type(exc).__name__}: {exc}"
            yield shapes.sse(shapes.chunk(completion_id, message, event={"event": "error", "message": message}))
        else:
            files = shapes.output_files(summary, lambda uri: server.link(uri, base))
            info = shapes.run_info(summary, files, server.flow_run_url(summary.flow_run_id))
            text = ("\n" if summary.plan else "") + shapes.reply_text(summary, files)
            yield shapes.sse(shapes.chunk(completion_id, text, event={"event": "answer", **info}))
        yield shapes.sse(shapes.chunk(completion_id, finish=True))
        yield shapes.sse("[DONE]")
    finally:
        done()


def _event_chunks(completion_id: str, event: Any) -> list[str]:
    if isinstance(event, events.PlanEvent):
        words, data = shapes.plan_event(event.nodes)
        data["flow_run_id"] = event.flow_run_id
        return [shapes.sse(shapes.chunk(completion_id, words, event=data))]
    words_or_none, data = shapes.node_event(event.node, event.state, event.detail)
    if event.done_bytes is not None:
        data.update(done_bytes=event.done_bytes, total_bytes=event.total_bytes)
    return [shapes.sse(shapes.chunk(completion_id, words_or_none, event=data))]


def serve_forever(server: Server, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(server), host=host, port=port, log_level="info", proxy_headers=False)


@contextlib.contextmanager
def serving_in_background(server: Server, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The app served by uvicorn in a thread of this process while the block runs (``port`` 0: a free one); yields
    its base URL. For tests, benchmarks and notebooks; ``hugginggpt serve`` runs it in the foreground."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="hugginggpt-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the HTTP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound}"
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()
