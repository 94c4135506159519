"""The run's summary as people read it: a markdown report and a table, for Prefect artifacts and the CLI."""

from __future__ import annotations

import re

from tasks.schemas import RunSummary

_KEY_BAD = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    key = "-".join(p for p in parts if p).lower()
    return _KEY_BAD.sub("-", key).strip("-")[:200]


def node_rows(summary: RunSummary, *, short_files: bool = False) -> list[dict[str, str]]:
    """One row per plan node; ``short_files`` shows stored files by name only (their full URIs are listed apart)."""
    by_id = {a.node_id: a for a in summary.assignments}
    rows = []
    for node in summary.plan:
        r = next((x for x in summary.results if x.id == node.id), None)
        a = by_id.get(node.id)
        output = ""
        if r is not None:
            if r.ok:
                shown = {k: (v.rsplit("/", 1)[-1] if short_files and k != "text" else v) for k, v in r.outputs.items()}
                output = "; ".join(f"{k}: {v}" for k, v in shown.items())
                if r.cached:
                    output += f" (reused from run {r.reused_from})"
            else:
                output = r.error or ""
        rows.append(
            {
                "node": node.name,
                "task": node.task,
                "depends on": ", ".join(str(d) for d in node.dep) or "-",
                "model": a.model if a else "-",
                "status": r.status if r else "not run",
                "seconds": f"{r.seconds:.2f}" if r else "-",
                "output": output,
            }
        )
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: RunSummary) -> str:
    lines = [f"# HuggingGPT run: {summary.status}", "", f"**Request:** {_cell(summary.request)}", ""]
    if summary.inputs:
        lines += [f"**Inputs:** {', '.join(summary.inputs)}", ""]
    if summary.error:
        lines += [f"**Error:** {_cell(summary.error)}", ""]
    lines += ["## Answer", "", summary.answer or "(none)", ""]
    if summary.answer_source == "fallback":
        lines += [
            f"_The LLM could not write the answer ({summary.answer_error}); this one is built from the results._",
            "",
        ]
    if summary.plan:
        lines += [
            "## Tasks",
            "",
            "| node | depends on | model | status | seconds | output |",
            "|---|---|---|---|---|---|",
        ]
        for row in node_rows(summary):
            lines.append(
                f"| {row['node']} | {row['depends on']} | {row['model']} | {row['status']} | {row['seconds']} "
                f"| {_cell(row['output'])} |"
            )
        lines.append("")
        lines += ["## Model choices", ""]
        for a in summary.assignments:
            lines.append(
                f"- **{a.task}#{a.node_id}**: `{a.model}` of {len(a.candidates)} candidate(s): {_cell(a.reason)}"
            )
        lines.append("")
    if summary.plan_repairs:
        lines += ["## Plan repairs", "", *[f"- {r}" for r in summary.plan_repairs], ""]
    llm = summary.llm
    lines += [
        "## Run",
        "",
        f"- storage: `{summary.storage_uri}`",
        f"- LLM: {llm.calls} call(s), {llm.prompt_tokens} prompt + {llm.completion_tokens} completion tokens",
        "- seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.timings.items()),
    ]
    return "\n".join(lines)
