"""The run's summary as people read it: a markdown report and a table, for Prefect artifacts and the CLI."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tasks.schemas import RunSummary

_KEY_BAD = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    key = "-".join(p for p in parts if p).lower()
    return _KEY_BAD.sub("-", key).strip("-")[:200]


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


def code_text(text: object) -> str:
    """``text`` as an inline code span, whatever backticks it holds (the fence is longer than any run of them)."""
    plain = " ".join(_CONTROL.sub("", str(text)).split())
    longest = max((len(run) for run in re.findall(r"`+", plain)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {plain} {fence}" if longest else f"`{plain}`"


def _link_text(text: str) -> str:
    return re.sub(r"([\[\]()\\`*_|<>])", r"\\\1", text)


def clip_shown(text: str, limit: int) -> str:
    """``text`` on one line, cut after ``limit`` characters with a marker saying how much is left out and where the
    whole is (``summary.json``, and ``--json``): for a table cell, never for what is stored."""
    one = " ".join(str(text).split())
    if len(one) <= limit:
        return one
    return f"{one[:limit]}… [{len(one) - limit} more characters in summary.json]"


def breakable(text: str, every: int = 20) -> str:
    """``text`` with a zero-width space every ``every`` characters of a run without spaces, so that a table cell
    can wrap it (a long word would widen the column past the page)."""
    return re.sub(
        rf"\S{{{every + 1},}}",
        lambda m: (
            m.group()
            if "://" in m.group()  # a URL stays whole: broken, the page would link to part of it
            else "\u200b".join(m.group()[i : i + every] for i in range(0, len(m.group()), every))
        ),
        text,
    )


#: characters of a text output or an error shown in a cell: the artifact's table, the terminal's
ARTIFACT_CELL_CHARS = 60
TERMINAL_CELL_CHARS = 240


def node_rows(
    summary: RunSummary,
    *,
    short_files: bool = False,
    links: Mapping[str, str] | None = None,
    max_chars: int | None = None,
) -> list[dict[str, str]]:
    """One row per plan node. ``short_files`` shows stored files by name only (their full URIs are listed apart);
    ``links`` (URI -> URL) makes them markdown links, for the artifacts (text clipped to
    :data:`ARTIFACT_CELL_CHARS` there); ``max_chars`` clips text outputs and errors (:func:`clip_shown`)."""
    if links is not None and max_chars is None:
        max_chars = ARTIFACT_CELL_CHARS
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
                        text = clip_shown(v, max_chars) if max_chars is not None else v
                        shown.append(f"{k}: {markdown_text(breakable(text)) if links is not None else text}")
                    elif links is not None and v in links:
                        shown.append(f"{k}: [{_link_text(v.rsplit('/', 1)[-1])}]({links[v]})")
                    elif links is not None:  # no link a browser could open: the name, the path under "Files"
                        shown.append(f"{k}: {code_text(v.rsplit('/', 1)[-1])}")
                    else:
                        shown.append(f"{k}: {v.rsplit('/', 1)[-1] if short_files else v}")
                output = "; ".join(shown)
                if r.cached:
                    run = r.reused_from or ""
                    output += f" (reused from run {run[:8] if links is not None else run})"
            else:
                output = clip_shown(r.error or "", max_chars) if max_chars is not None else r.error or ""
                output = markdown_text(breakable(output)) if links is not None else output
        rows.append(
            {
                "node": f"{node.name} (replan {r.round})" if r is not None and r.round else node.name,
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
    summary: RunSummary,
    links: Mapping[str, str] | None = None,
    fetchable: frozenset[str] = frozenset(),
    *,
    resumed_page: str | None = None,
) -> str:
    """The run as markdown. ``links`` (URI -> URL a browser can open) turns stored files into links; images whose
    URL a page can fetch (``fetchable``) are shown inline; every other file is listed under "Files" as its path in
    code, to copy (a local path or an unsigned ``s3://`` URI would be a dead link). A resumed run names the run it
    resumes, linked to ``resumed_page`` (its page in the UI) when given."""
    links = links or {}
    lines = [f"# HuggingGPT run: {summary.status}", "", f"**Request:** {markdown_text(summary.request)}", ""]
    if summary.resumed_from:
        run = code_text(summary.resumed_from)
        lines += [f"**Resumes run:** {f'[{run}]({resumed_page})' if resumed_page else run}", ""]
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
        rows = node_rows(summary, links=links)
        lines += [
            "## Tasks",
            "",
            "| node | depends on | model | status | seconds |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['node']} | {row['depends on']} | {row['model']} | {row['status']} | {row['seconds']} |"
            )
        lines.append("")
        # outputs and errors as a list, which wraps: the UI draws a table's cells on one line, past the page
        lines += ["## Outputs", "", *[f"- **{row['node']}**: {' '.join(row['output'].split())}" for row in rows], ""]
        lines += ["## Model choices", ""]
        for a in summary.assignments:
            lines.append(
                f"- **{a.task}#{a.node_id}**: {code_text(a.model)} of {len(a.candidates)} candidate(s): "
                f"{markdown_text(a.reason)}"
            )
        lines.append("")
    files = [(f"{r.task}#{r.id}", m, uri) for r in summary.results for m, uri in r.outputs.items() if m != "text"]
    if files:
        lines += ["## Files", ""]
        for name, modality, uri in files:
            shown = f"[{_link_text(uri.rsplit('/', 1)[-1])}]({links[uri]})" if uri in links else code_text(uri)
            lines.append(f"- {name} {modality}: {shown}")
        lines.append("")
    if summary.plan_repairs:
        lines += ["## Plan repairs", "", *[f"- {markdown_text(r)}" for r in summary.plan_repairs], ""]
    llm = summary.llm
    lines += [
        "## Run",
        "",
        f"- flow run: {code_text(summary.flow_run_id)}",
        f"- storage: {code_text(summary.storage_uri)}",
        f"- LLM: {llm.calls} call(s), {llm.prompt_tokens} prompt + {llm.completion_tokens} completion tokens",
        "- seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.timings.items()),
    ]
    if any(url != uri and url.startswith("http") and not uri.startswith("http") for uri, url in links.items()):
        lines.append("- file links are presigned and expire (`HUGGINGGPT_PRESIGN_SECONDS`)")
    return "\n".join(lines)
