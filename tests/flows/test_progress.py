"""Progress events and views, terminal safety, and the Prefect conventions of a run: tags, names, retries of
transient node failures, stable artifact keys with links."""

from __future__ import annotations

import asyncio
import io
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows import events as progress_events
from flows import library_bars, progress, run_logs
from flows.prefect_setup import prefect_run_settings
from flows.request import request_run_name, run_request
from tasks.execute import is_transient
from tasks.report import node_rows
from tasks.schemas import NodeResult, RequestSpec
from tests.llm_server import plan_json
from tests.prefect_api import api_until, task_runs


# ---------------------------------------------------------------------------
# no Prefect
# ---------------------------------------------------------------------------
def test_safe_text_shows_control_characters_as_escapes() -> None:
    hostile = "a\x1b[31mred\x1b]8;;http://x\x07 \x9b2J \u202etxt\tb\nc"
    shown = progress.safe_text(hostile)
    assert shown == "a\\x1b[31mred\\x1b]8;;http://x\\x07 \\x9b2J \\u202etxt\tb\nc"
    assert progress.safe_text(hostile, one_line=True).count("\n") == 0
    assert progress.escape_json_text(json.dumps("\x9b\x7f", ensure_ascii=False)) == '"\\u009b\\u007f"'


def test_board_follows_node_states_and_batch_rate() -> None:
    board = progress.Board(started=100.0)
    board.apply(progress_events.PlanEvent("run", "my run", (("a#0", "m/a", "why"), ("b#1", "m/b", "")), at=100.0))
    assert [(r.node, r.state, r.model) for r in board.rows.values()] == [
        ("a#0", "waiting", "m/a"),
        ("b#1", "waiting", "m/b"),
    ]
    board.apply(progress_events.NodeEvent("run", "a#0", "running", at=101.0))
    row = board.apply(progress_events.NodeEvent("run", "a#0", "downloading", "w.bin", 5_000_000, 20_000_000, at=102.0))
    assert row is not None and progress.describe(row) == "downloading w.bin 5.0 MB of 20.0 MB"
    board.apply(progress_events.NodeEvent("run", "a#0", "done", at=104.0))
    assert board.seconds(board.rows[("run", "a#0")], now=999.0) == 3.0  # running to done, not to now
    board.apply(progress_events.NodeEvent("run", "b#1", "skipped", "upstream failed", at=104.5))
    assert progress.describe(board.rows[("run", "b#1")]) == "skipped: upstream failed"

    board.apply(progress_events.LineEvent(1, "completed", 1, 4, at=102.0))
    board.apply(progress_events.LineEvent(2, "failed", 2, 4, at=104.0))
    assert board.line_rate() == (0.5, 4.0)
    assert progress.batch_line(board) == "lines 2/4 done · 0.50/s · about 4 s left"


def test_a_node_that_ended_stays_ended_on_the_board() -> None:
    """A model loaded ahead for a node the cache answered reports late: the node still shows ``cached``."""
    board = progress.Board(started=100.0)
    board.apply(progress_events.PlanEvent("run", "my run", (("a#0", "m/a", ""),), at=100.0))
    board.apply(progress_events.NodeEvent("run", "a#0", "cached", "reused run r", at=101.0))
    for late in ("loading", "waiting"):
        assert board.apply(progress_events.NodeEvent("run", "a#0", late, "model loaded", at=102.0)) is None
    row = board.rows[("run", "a#0")]
    assert (row.state, progress.describe(row), board.seconds(row, now=999.0)) == ("cached", "cached: reused run r", 0.0)
    # a Prefect retry of a failed node runs again
    board.apply(progress_events.NodeEvent("run", "a#0", "failed", "boom", at=103.0))
    assert board.apply(progress_events.NodeEvent("run", "a#0", "running", "attempt 2", at=104.0)) is not None
    assert board.rows[("run", "a#0")].state == "running"


def test_plain_view_writes_one_safe_line_per_change() -> None:
    out = io.StringIO()
    view = progress.PlainView(out)
    view(progress_events.PlanEvent("r", "run", (("a#0", "m/a", "the [bold]best[/]"),)))
    view(progress_events.NodeEvent("r", "a#0", "running"))
    view(progress_events.NodeEvent("r", "a#0", "downloading", "w", 10, 100))  # partial download: no line
    view(progress_events.NodeEvent("r", "a#0", "failed", "model said \x1b[2Jbye"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "a#0 waiting -> m/a (the [bold]best[/])"
    assert lines[1] == "a#0 running"
    assert lines[2].startswith("a#0 failed: model said \\x1b[2Jbye in ") and len(lines) == 3


def test_transient_failures_are_told_apart() -> None:
    def failed(error: str) -> NodeResult:
        return NodeResult(id=0, task="image-to-text", status="failed", error=error)

    assert is_transient(failed("input http://h/p.png could not be fetched: HTTP 503 Service Unavailable"))
    assert is_transient(failed("model m (remote) failed: ReadTimeout: timed out"))
    assert not is_transient(failed("input file photo.png does not exist"))
    assert not is_transient(failed("model m failed on image-to-text: ValueError: bad shape 500x3"))
    assert not is_transient(NodeResult(id=0, task="image-to-text", status="skipped", error="timeout upstream"))


def test_links_of_stored_files(tmp_path: Path) -> None:
    from flows.artifacts import file_link

    local = tmp_path / "a b.png"
    assert file_link(str(local)) is None  # a browser refuses file:// from a page: no dead link
    assert file_link(local.as_uri()) is None
    assert file_link("https://cdn.example/x.png") == "https://cdn.example/x.png"

    class Signer:
        def sign(self, path: str, expiration: int) -> str:
            return f"https://s3.example/{path.removeprefix('s3://')}?X-Amz-Expires={expiration}"

    url = file_link("s3://bucket/run/image.png", Signer(), expires=60)
    assert url == "https://s3.example/bucket/run/image.png?X-Amz-Expires=60"
    assert file_link("s3://bucket/run/image.png") is None  # unsigned: not something a browser opens
    assert file_link("memory://run/image.png", object()) is None


def test_presigned_links_from_s3fs() -> None:
    from flows.artifacts import file_link

    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(key="AKIDEXAMPLE", secret="secret", client_kwargs={"endpoint_url": "http://127.0.0.1:9"})
    url = file_link("s3://bucket/run/nodes/0-text-to-image/image.png", fs, expires=600)
    assert url is not None and url.startswith("http://127.0.0.1:9/bucket/run/nodes/0-text-to-image/image.png?")
    import time
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    assert query["Signature"] and abs(int(query["Expires"][0]) - (time.time() + 600)) < 120


def test_run_names_tell_repeated_requests_apart() -> None:
    a, b = request_run_name("Caption   photo.jpg\nplease"), request_run_name("Caption   photo.jpg\nplease")
    assert a != b and a.startswith("Caption photo.jpg please · ")
    assert request_run_name("x" * 100, "abcd1234") == "x" * 57 + "... · abcd1234"


# ---------------------------------------------------------------------------
# under Prefect
# ---------------------------------------------------------------------------
pytestmark_prefect = pytest.mark.usefixtures("prefect_server")


@pytestmark_prefect
def test_transient_node_failure_is_retried_by_prefect(
    env: Path, llm, web, sample_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose input answers 503 once is retried by Prefect (HUGGINGGPT_NODE_RETRIES) and completes; a node
    that fails for good (a missing file) is not retried."""
    calls = {"n": 0}

    def flaky(h: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            h.send_error(503, "busy")
            return
        data = sample_files["photo"].read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    web.routes["/flaky.png"] = flaky
    url = web.url("/flaky.png")
    monkeypatch.setenv("HUGGINGGPT_NODE_RETRIES", "2")
    monkeypatch.setenv("HUGGINGGPT_NODE_RETRY_WAIT", "0")
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": url}},
            {"id": 1, "task": "image-classification", "dep": [-1], "args": {"image": "missing.png"}},
        ),
        respond="One worked.",
    )
    events: list[Any] = []
    with progress_events.subscribe(events.append):
        summary = run_request(RequestSpec(request=f"Classify {url} and missing.png", inputs=[url, "missing.png"]))
    by_id = {r.id: r for r in summary.results}
    assert by_id[0].status == "completed" and calls["n"] == 2
    assert by_id[1].status == "failed" and "missing.png" in (by_id[1].error or "")
    runs = task_runs(summary.flow_run_id, {"image-classification#0", "image-classification#1"})
    assert runs["image-classification#0"].run_count == 2 and runs["image-classification#0"].state.is_completed()
    assert runs["image-classification#1"].run_count == 1  # not transient: no retry
    states = [(e.node, e.state, e.detail) for e in events if isinstance(e, progress_events.NodeEvent)]
    assert ("image-classification#0", "running", "attempt 2") in states
    assert states[-1][1] in ("done", "failed")


@pytestmark_prefect
def test_runs_are_tagged_named_and_keep_artifact_history(env: Path, llm) -> None:
    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "so good"}}),
        respond="Positive.",
    )
    with prefect_run_settings(), tags("hugginggpt", "chat-abc"):
        first = run_request("Is 'so good' positive?")
        second = run_request("Is 'so good' positive?")

    ids = [first.flow_run_id, second.flow_run_id]
    runs = api_until(
        lambda client: client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))),
        lambda found: len(found) == 2,
        what="both flow runs",
    )
    arts = api_until(  # the key's history holds every run's summary: read those of these two runs
        lambda client: client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["hugginggpt-request-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=ids),
            )
        ),
        lambda found: len(found) == 2,
        what="the summary artifact of each run",
    )
    assert all({"hugginggpt", "chat-abc"} <= set(r.tags) for r in runs)
    names = {r.name for r in runs}
    assert len(names) == 2 and all(n.startswith("Is 'so good' positive? · ") for n in names)
    described = {a.description for a in arts}
    assert any(first.flow_run_id in d for d in described) and any(second.flow_run_id in d for d in described)

    rows = node_rows(first, links={})
    assert rows[0]["depends on"] == "none" and rows[0]["status"] == "completed"


def test_summary_markdown_links_files_and_shows_fetchable_images() -> None:
    from tasks.experts.base import ModelSpec
    from tasks.report import summary_markdown
    from tasks.schemas import Assignment, PlanNode, RunSummary

    summary = RunSummary(
        request="Draw a cat",
        flow_run_id="run-1",
        plan=[PlanNode(id=0, task="text-to-image", dep=[], args={"text": "a cat"})],
        assignments=[
            Assignment(
                node_id=0,
                task="text-to-image",
                model="m/draw",
                reason="one",
                spec=ModelSpec(id="m/draw", task="text-to-image"),
            )
        ],
        results=[
            NodeResult(id=0, task="text-to-image", status="completed", outputs={"image": "s3://b/run-1/image.png"})
        ],
        answer="Here is a cat.",
    )
    signed = "https://s3.example/b/run-1/image.png?X-Amz-Signature=abc"
    shown = summary_markdown(summary, {"s3://b/run-1/image.png": signed}, frozenset({"s3://b/run-1/image.png"}))
    assert f"![text-to-image#0]({signed})" in shown
    assert f"- **text-to-image#0**: image: [image.png]({signed})" in shown and "| none |" in shown  # no bare "-"
    hidden = summary_markdown(summary, {})  # no link a browser could open: the path as code, to copy
    assert "![" not in hidden and "](" not in hidden
    assert (
        "- **text-to-image#0**: image: `image.png`" in hidden
        and "- text-to-image#0 image: `s3://b/run-1/image.png`" in hidden
    )


@pytestmark_prefect
def test_a_run_created_with_its_name_keeps_it(env: Path, llm) -> None:
    """A flow run created already named (what run_deployment(flow_run_name=request_run_name(...)) does) keeps the
    name when it starts, and so does one given any other name (``prefect deployment run --flow-run-name``); one
    created with Prefect's made-up two-word name gets the request's."""
    from prefect.flow_engine import run_flow

    from flows.request import hugginggpt_request

    request = "Is 'so good' positive?"
    named = request_run_name(request, "given123")

    async def create(name: str | None) -> Any:
        async with get_client() as client:
            return await client.create_flow_run(
                hugginggpt_request, name=name, parameters={"spec": {"request": request}}
            )

    async def name_of(flow_run_id: Any) -> str:
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).name

    given_by_hand = "Caption photo.jpg · 120301"
    for given, expected in ((named, named), (given_by_hand, given_by_hand), ("random-fox", None)):
        flow_run = asyncio.run(create(given))
        with prefect_run_settings():
            run_flow(
                hugginggpt_request, flow_run=flow_run, parameters={"spec": {"request": request}}, return_type="state"
            )
        name = asyncio.run(name_of(flow_run.id))
        assert name == (expected or request_run_name(request, str(flow_run.id)[:8]))


def test_chat_session_bounds_history_and_offers_earlier_files() -> None:
    from flows.chat import ChatSession
    from tasks.schemas import RunSummary

    seen: list[tuple[str, list[str], list[str], list[str]]] = []

    def fake_run(spec: RequestSpec, run_tags: list[str]) -> RunSummary:
        seen.append((spec.request, spec.inputs, [t.content for t in spec.history], run_tags))
        n = len(seen)
        result = NodeResult(id=0, task="text-to-speech", status="completed", outputs={"audio": f"/runs/{n}/a.wav"})
        return RunSummary(request=spec.request, answer=f"answer {n}", results=[result])

    chat = ChatSession(history_turns=1, inputs=["photo.png"], session_id="s1", runner=fake_run)
    chat.ask("first")
    chat.ask("second", inputs=["extra.png"])
    chat.ask("third")
    assert seen[0] == ("first", ["photo.png"], [], ["hugginggpt", "chat-s1"])
    assert seen[1][1] == ["extra.png", "photo.png", "/runs/1/a.wav"]  # the earlier turn's file is an input
    assert seen[1][2] == ["first", "answer 1\n(files produced: /runs/1/a.wav)"]
    assert seen[2][1] == ["photo.png", "/runs/2/a.wav"] and seen[2][2][0] == "second"  # bounded to one turn
    assert len(chat.turns) == 3


@pytestmark_prefect
def test_hub_download_bars_become_node_events_and_print_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """huggingface_hub's download bar (what hf_hub_download opens) reports bytes for the node whose thread runs it,
    and writes nothing to the terminal, while library_progress() is active."""
    import logging

    from huggingface_hub.utils.tqdm import _get_progress_bar_context
    from prefect import flow, task

    @task(task_run_name="image-to-text#0")
    def download() -> None:
        with _get_progress_bar_context(desc="model.safetensors", log_level=logging.INFO, total=3_000_000) as bar:
            for _ in range(3):
                bar.update(1_000_000)

    @flow
    def one_node() -> None:
        download()

    events: list[Any] = []
    with prefect_run_settings(), library_bars.library_progress(), progress_events.subscribe(events.append):
        capfd.readouterr()
        one_node()
        err = capfd.readouterr().err
    downloads = [e for e in events if isinstance(e, progress_events.NodeEvent) and e.state == "downloading"]
    assert downloads and downloads[-1].node == "image-to-text#0" and downloads[-1].detail == "model.safetensors"
    assert (downloads[-1].done_bytes, downloads[-1].total_bytes) == (3_000_000, 3_000_000)
    assert "model.safetensors" not in err and "%|" not in err  # no bar on the terminal


def test_live_view_renders_states_as_text() -> None:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    view = progress.LiveView(console)
    view(progress_events.PlanEvent("r", "run", (("a#0", "m/[b]x[/b]", ""), ("b#1", "m/b", ""))))
    view(progress_events.NodeEvent("r", "a#0", "downloading", "w.bin", 2_500_000, 10_000_000))
    view(progress_events.NodeEvent("r", "b#1", "failed", "[/json] \x1b[2J gone"))
    console.print(view._render())
    shown = out.getvalue()
    assert "m/[b]x[/b]" in shown and "downloading w.bin 2.5 MB of 10.0 MB" in shown
    assert "failed: [/json] \\x1b[2J gone" in shown and "\x1b[2J" not in shown
    batch = progress.LiveView(console, batch=True)
    batch(progress_events.LineEvent(1, "completed", 1, 3))
    assert str(batch._render()).startswith("lines 1/3 done")


def test_prefect_s_failed_task_line_does_not_dump_the_node_s_result() -> None:
    """Prefect logs a task run that returned a Failed state with the state's whole repr (the node's result in it):
    that line is dropped; a retry's line is kept, the state named briefly."""
    import logging

    from prefect.states import Failed

    from tasks.schemas import NodeResult

    state = Failed(
        message="model m failed: boom", data=NodeResult(id=0, task="image-to-text", status="failed", error="x" * 500)
    )
    tidy = run_logs._TidyRunLogs()

    def record(msg: str, args: tuple = ()) -> logging.LogRecord:
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, msg, args, None)

    assert not tidy.filter(record(f"Task run failed with state: {state!r}"))
    retry = record("Task run failed with %s: %r - Retry %s/%s will start %s", ("state", state, 1, 2, "in 2 s"))
    assert tidy.filter(retry)
    assert (
        retry.getMessage() == "Task run failed with state: Failed('model m failed: boom') - Retry 1/2 will start in 2 s"
    )
    assert tidy.filter(record("Finished in state Failed('model m failed: boom')"))
    # Prefect's two INFO lines around each call of a node's own hooks say nothing to the user
    for hook in ("node_state_hook", "apply-tags"):
        running = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, f"Running hook {hook!r}", (), None)
        assert not tidy.filter(running)
    assert tidy.filter(logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, "Running hook 'x'", (), None))


def test_the_artifact_table_clips_long_outputs_and_lets_them_wrap() -> None:
    from tasks.schemas import PlanNode, RunSummary

    word = "ummarize" * 40  # a tiny model's output: one long word
    summary = RunSummary(
        request="Summarize",
        plan=[PlanNode(id=0, task="summarization", dep=[], args={"text": "a story"})],
        results=[NodeResult(id=0, task="summarization", status="completed", outputs={"text": word})],
    )
    cell = node_rows(summary, links={})[0]["output"]
    assert (
        cell.startswith("text: ummarizeummarizeumma\u200b")
        and f"\\[{len(word) - 60} more characters in summary\\.json\\]" in cell  # as markdown
    )
    assert all(len(part) <= 40 for part in cell.replace("\u200b", " ").split())  # no run the table cannot wrap
    assert summary.results[0].outputs["text"] == word  # the summary keeps it whole


def test_node_tagging_attaches_tags_for_acquisition_only_where_a_limit_exists() -> None:
    import pickle

    from prefect import tags as prefect_tags
    from prefect.context import TagsContext

    from flows.tag_limits import ApplyTags, node_tagging

    own = {"task:text-classification", "model:m/a", "backend:local"}
    with prefect_tags("hugginggpt", "batch-1"):
        with node_tagging(own, frozenset({"model:m/a"})) as limited:
            assert TagsContext.get().current_tags == {"hugginggpt", "batch-1"}  # Prefect acquires them all
        with node_tagging(own, None) as unknown:  # the limits could not be read: Prefect's own behaviour
            pass
        with node_tagging(own, frozenset({"model:m/b", "hugginggpt-x"})) as free:
            assert TagsContext.get().current_tags == set()  # nothing for Prefect to acquire
        assert TagsContext.get().current_tags == {"hugginggpt", "batch-1"}
    assert limited == {"tags": own, "on_running": []} and unknown == limited
    assert free["tags"] == set() and len(free["on_running"]) == 1
    hook = pickle.loads(pickle.dumps(free["on_running"][0]))  # travels to a Dask worker
    assert isinstance(hook, ApplyTags)

    class Run:
        tags = ["already"]

    run = Run()
    hook(None, run, None)
    assert set(run.tags) == own | {"hugginggpt", "batch-1", "already"}
