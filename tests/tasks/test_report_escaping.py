"""The summary artifact under hostile text: what the LLM, a model or the user wrote shows as that text, never as a
link, an image, HTML, a heading or a table of the report's own."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import markdown
import pytest
from markdown_it import MarkdownIt

from tasks.report import markdown_text, summary_markdown
from tasks.schemas import Assignment, ModelSpec, NodeResult, PlanNode, RunSummary
from tests.llm_server import plan_json
from tests.prefect_api import api_until

HOSTILE_ANSWER = (
    "[click](javascript:alert(1)) ![x](http://169.254.169.254/latest/meta-data/iam) <img src=x onerror=alert(1)>\n"
    "\n"
    "## Tasks\n"
    "| node | model |\n"
    "| --- | --- |\n"
    "| 9 | forged |\n"
    "Setext heading\n"
    "===\n"
    "<script>alert(2)</script> see www.evil.example or mail me@evil.example, **bold** `code` ~~gone~~"
)
HOSTILE_REQUEST = "Is this positive: [open](javascript:alert(3)) <b>now</b> I love it"


def _html(text: str) -> list[str]:
    """The markdown rendered by two renderers: CommonMark with GitHub tables (as Prefect's UI reads it: every ASCII
    punctuation character can be escaped), and Python-Markdown with tables (which knows fewer escapes)."""
    return [MarkdownIt("commonmark").enable("table").render(text), markdown.markdown(text, extensions=["tables"])]


def _hostile_summary() -> RunSummary:
    return RunSummary(
        request=HOSTILE_REQUEST,
        inputs=["http://evil.example/x.png"],
        flow_run_id="run`1",
        plan=[PlanNode(id=0, task="text-classification", dep=[], args={"text": "x"})],
        assignments=[
            Assignment(
                node_id=0,
                task="text-classification",
                model="acme/m`x` [a](javascript:1)",
                reason="[pick me](javascript:alert(4)) <img src=x>",
                spec=ModelSpec(id="acme/m", task="text-classification"),
            )
        ],
        results=[
            NodeResult(
                id=0, task="text-classification", status="completed", outputs={"text": "<img src=y> [l](http://e.x)"}
            )
        ],
        plan_repairs=["dropped [r](javascript:5)"],
        answer=HOSTILE_ANSWER,
    )


def test_hostile_text_is_shown_as_text_in_the_summary_markdown() -> None:
    shown = summary_markdown(_hostile_summary(), {})
    outside_code = re.sub(r"(`+) .*? \1", "", shown)  # the model id is shown in a code span: text there is text
    assert "javascript:" not in outside_code and "http://" not in outside_code and "www." not in outside_code
    for commonmark, html in zip((True, False), _html(shown), strict=True):
        assert "<a " not in html and "<img" not in html and "<script" not in html and "<b>" not in html
        assert "<strong>bold" not in html and "<code>code" not in html
        assert re.findall(r"<h[1-6]>([^<]*)</h", html) == [
            "HuggingGPT run: completed",
            "Answer",
            "Tasks",
            "Outputs",
            "Model choices",
            "Plan repairs",
            "Run",
        ]
        assert html.count("<table>") == 1 and "forged" not in html.split("<table>")[1].split("</table>")[0]
        if not commonmark:  # Python-Markdown shows some escapes (``\\:``) as typed: safe, not exact
            continue
        # the text itself is all there, as text
        text = unescape(re.sub(r"<[^>]+>", "", html))
        assert "[click](javascript:alert(1)) ![x](http://169.254.169.254/latest/meta-data/iam)" in text
        assert "<img src=x onerror=alert(1)>" in text and "<script>alert(2)</script>" in text
        assert "## Tasks" in text and "| 9 | forged |" in text and "www.evil.example or mail me@evil.example" in text
        assert HOSTILE_REQUEST in text and "[pick me](javascript:alert(4)) <img src=x>" in text
    assert "acme/m`x` [a](javascript:1)" in MarkdownIt("commonmark").render(shown)  # the model id in its code span


def test_markdown_text_keeps_lines_and_drops_controls() -> None:
    assert markdown_text("a\x1b[31mb\u202ec") == "a\\[31mbc"
    kept = markdown_text("one\ntwo\n\nthree", one_line=False)
    html = MarkdownIt("commonmark").render(kept)
    assert html.count("<p>") == 2 and "one<br />\ntwo" in html
    assert markdown_text("one\ntwo") == "one two"
    # plain text is untouched apart from its escapes: two different texts stay different
    assert markdown_text("rated 3.5 of 5") != markdown_text("rated 4.5 of 5")
    # no HTML character references, which Prefect's UI would show as typed (``http&#58;//``): backslash escapes,
    # which CommonMark shows as the characters themselves, with no autolink
    url = 'see http://127.0.0.1:9/gone.png & "a"<b> me@x.io a=b~c|d'
    assert "&#" not in markdown_text(url)
    html = MarkdownIt("commonmark").enable("table").enable("linkify").render(markdown_text(url))
    assert unescape(re.sub(r"<[^>]+>", "", html)).strip() == url and "<a " not in html


@pytest.mark.usefixtures("prefect_server")
def test_the_published_artifact_escapes_the_llm_answer_and_the_request(env: Path, llm) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.request import run_request

    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "I love it"}}),
        respond=HOSTILE_ANSWER,
    )
    summary = run_request(HOSTILE_REQUEST)
    assert summary.answer == HOSTILE_ANSWER  # the summary keeps the text as it came

    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary.flow_run_id]))
    found = api_until(
        lambda client: client.read_artifacts(artifact_filter=by_run),
        lambda found: any(a.key == "hugginggpt-request-summary" for a in found),
        what="the run's summary artifact",
    )
    report = next(a for a in found if a.key == "hugginggpt-request-summary").data
    assert "javascript:" not in report and "http://" not in report
    for html in _html(report):
        links = re.findall(r'<a href="([^"]*)"', html)  # only the run's own files are linked
        assert all(Path(summary.storage_uri).as_uri() in link for link in links), links
        assert "<img" not in html
        assert re.findall(r"<h2>([^<]*)</h2>", html) == ["Answer", "Tasks", "Outputs", "Model choices", "Files", "Run"]
        assert html.count("<table>") == 1
