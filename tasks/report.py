"""The run's summary as people read it: a markdown report and a table, for Prefect artifacts and the CLI."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.parsing import clip
from tasks.schemas import RunSummary

_KEY_BAD = re.compile(r"[^a-z0-9-]+")
_CELL_CHARS = 60


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    key = "-".join(p for p in parts if p).lower()
    return _KEY_BAD.sub("-", key).strip("-")[:200]


def browser_link(uri: str, fs: Any = None, *, expires: int = 3600) -> tuple[str, bool]:
    """Where a stored file can be opened from a browser, and whether a page (the Prefect UI) can fetch it.

    http(s) URLs as they are; object storage that can sign (s3fs, gcsfs) as a presigned URL; a local file as a
    ``file://`` URL, which a browser opens only from the same machine and a web page cannot fetch. Without ``fs``,
    nothing is signed.
    """
    if uri.startswith(("http://", "https://")):
        return uri, True
    if "://" not in uri:
        return Path(uri).expanduser().resolve().as_uri(), False
    if uri.startswith("file://"):
        return uri, False
    if fs is not None:
        try:
            signed = fs.sign(uri, expiration=expires)
        except Exception:  # NotImplementedError for most file systems, no credentials to sign with, ...
            signed = None
        if isinstance(signed, str) and signed.startswith(("http://", "https://")):
            return signed, True
    return uri, False


# Characters markdown gives meaning inside a line (emphasis, code, links and images, headings, lists, HTML, tables)
# and those autolinks are made of (``:`` of ``http://``, ``.`` of ``www.``, ``@`` of an email). The first set is
# escaped with a backslash (every markdown dialect knows those escapes); the others are written as HTML character
# references, which every renderer shows as the character and no autolinker or table reads.
_MARKDOWN_ESCAPED = re.compile(r"([\\`*_{}\[\]()#+\-.!])")
_AS_ENTITY = {c: f"&#{ord(c)};" for c in '&<>":@=~|'}
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def markdown_text(text: object, *, one_line: bool = True) -> str:
    """``text`` (from the LLM, a model or the user) as markdown that shows exactly that text: every character
    markdown or HTML would read as a link, an image, a heading, a table, emphasis or a tag is escaped, autolinks
    (``http://``, ``www.``, emails) are broken, control characters dropped. ``one_line``: newlines become spaces
    (a table cell); otherwise each line stays a line (its paragraph breaks kept)."""
    plain = _CONTROL.sub("", str(text))
    escaped = "".join(_AS_ENTITY.get(c, c) for c in _MARKDOWN_ESCAPED.sub(r"\\\1", plain))
    if one_line:
        return " ".join(escaped.split())
    lines = [line.strip() for line in escaped.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "  \n".join(line for line in lines)  # a hard break keeps each line; a blank line keeps a paragraph


def _code(text: object) -> str:
    """``text`` as an inline code span, whatever backticks it holds (the fence is longer than any run of them)."""
    plain = " ".join(_CONTROL.sub("", str(text)).split())
    longest = max((len(run) for run in re.findall(r"`+", plain)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {plain} {fence}" if longest else f"`{plain}`"


def _link_text(text: str) -> str:
    return re.sub(r"([\[\]()\\`*_|<>])", r"\\\1", text)


def node_rows(
    summary: RunSummary, *, short_files: bool = False, links: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """One row per plan node. ``short_files`` shows stored files by name only (their full URIs are listed apart);
    ``links`` (URI -> URL) makes them markdown links, for the artifacts; long text is clipped there too."""
    by_id = {a.node_id: a for a in summary.assignments}
    rows = []
    for node in summary.plan:
        r = next((x for x in summary.results if x.id == node.id), None)
        a = by_id.get(node.id)
        output = ""
        if r is not None:
            if r.ok:
                shown = []
                for k, v in r.outputs.items():
                    if k == "text":
                        shown.append(f"{k}: {markdown_text(clip(v, _CELL_CHARS)) if links is not None else v}")
                    elif links is not None:
                        shown.append(f"{k}: [{_link_text(v.rsplit('/', 1)[-1])}]({links.get(v, v)})")
                    else:
                        shown.append(f"{k}: {v.rsplit('/', 1)[-1] if short_files else v}")
                output = "; ".join(shown)
                if r.cached:
                    run = r.reused_from or ""
                    output += f" (reused from run {run[:8] if links is not None else run})"
            else:
                output = markdown_text(clip(r.error or "", _CELL_CHARS)) if links is not None else r.error or ""
        rows.append(
            {
                "node": node.name,
                "task": node.task,
                "depends on": ", ".join(str(d) for d in node.dep) or "none",
                "model": (markdown_text(a.model) if links is not None else a.model) if a else "no model",
                "status": ("cached" if r.cached else r.status) if r else "not run",
                "seconds": f"{r.seconds:.2f}" if r else "",
                "output": output,
            }
        )
    return rows


def summary_markdown(
    summary: RunSummary, links: Mapping[str, str] | None = None, fetchable: frozenset[str] = frozenset()
) -> str:
    """The run as markdown. ``links`` (URI -> URL) turns stored files into links; images whose URL a browser can
    fetch (``fetchable``) are shown inline."""
    links = links or {}
    lines = [f"# HuggingGPT run: {summary.status}", "", f"**Request:** {markdown_text(summary.request)}", ""]
    if summary.inputs:
        lines += [f"**Inputs:** {', '.join(markdown_text(i) for i in summary.inputs)}", ""]
    if summary.error:
        lines += [f"**Error:** {markdown_text(summary.error)}", ""]
    lines += ["## Answer", "", markdown_text(summary.answer, one_line=False) if summary.answer else "(none)", ""]
    if summary.answer_source == "fallback" and not summary.error:
        lines += [
            f"_The LLM could not write the answer ({markdown_text(summary.answer_error or '')}); this one is built "
            "from the results._",
            "",
        ]
    images = [
        (f"{r.task}#{r.id}", links[uri])
        for r in summary.results
        for modality, uri in r.outputs.items()
        if modality == "image" and uri in links and uri in fetchable
    ]
    if images:
        lines += ["## Images", ""]
        lines += [f"![{name}]({url})" + "\n\n" + f"_{name}_" + "\n" for name, url in images]
    if summary.plan:
        lines += [
            "## Tasks",
            "",
            "| node | depends on | model | status | seconds | output |",
            "|---|---|---|---|---|---|",
        ]
        for row in node_rows(summary, links=links):
            lines.append(
                f"| {row['node']} | {row['depends on']} | {row['model']} | {row['status']} | {row['seconds']} "
                f"| {' '.join(row['output'].split())} |"
            )
        lines.append("")
        lines += ["## Model choices", ""]
        for a in summary.assignments:
            lines.append(
                f"- **{a.task}#{a.node_id}**: {_code(a.model)} of {len(a.candidates)} candidate(s): "
                f"{markdown_text(a.reason)}"
            )
        lines.append("")
    if summary.plan_repairs:
        lines += ["## Plan repairs", "", *[f"- {markdown_text(r)}" for r in summary.plan_repairs], ""]
    llm = summary.llm
    lines += [
        "## Run",
        "",
        f"- flow run: {_code(summary.flow_run_id)}",
        f"- storage: {_code(summary.storage_uri)}",
        f"- LLM: {llm.calls} call(s), {llm.prompt_tokens} prompt + {llm.completion_tokens} completion tokens",
        "- seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.timings.items()),
    ]
    if any(url != uri and url.startswith("http") and not uri.startswith("http") for uri, url in links.items()):
        lines.append("- file links are presigned and expire (`HUGGINGGPT_PRESIGN_SECONDS`)")
    return "\n".join(lines)
