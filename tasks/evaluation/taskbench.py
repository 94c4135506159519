"""TaskBench's official figures (``taskbench/evaluate.py`` of microsoft/JARVIS, ``--dependency_type resource``).

Written anew from what that script computes, so that figures can be set beside the paper's; the definitions:

- Samples: the ids present both in the dataset (``data.json`` lines) and in the predictions (``{"id": ...,
  "result": {"task_nodes": [...], "task_links": [...], "task_steps": [...]}}`` lines); a later line of the same id
  replaces an earlier one. A sample the official script cannot read (no ``task_nodes``, a node without ``task``,
  a tool name that is not a string, ...) is left out of every figure, as the script does; they are listed in
  ``ignored``.
- Tool names: ``_`` read as a space; names outside the 23 tools of ``tool_desc.json`` are kept in the plans and
  dropped only where a figure counts tools (node F1), or read as "not a tool" (edit distance); no aliases.
- Arguments (resource dependencies): each argument of a node is read as a string (an object: its first value; a
  list: its items joined by spaces). One that holds ``<node-k>`` names node k's tool as its value and the tool's
  first output type as its type (``other`` for an unknown tool), and makes the edge (tool of k, this node's
  tool); a node referring to itself has that argument dropped. Any other argument's type is ``image``, ``audio``,
  ``video`` (by a file extension inside it) or ``text``, and its value is the argument as written. ``task_links``
  are not read.
- **n_f1**: per sample, the set of tool names (of the 23) in the gold plan and in the prediction; true and false
  positives and negatives summed over the samples (micro precision, recall and F1). **e_f1**: the same over the
  sets of edges. **t_f1**: over the sets of ``tool-type`` of the arguments; **v_f1**: of ``tool-type-value``.
- **ed**: 1 minus the mean over the samples of the Levenshtein ratio (indel) of the two sequences of tools (each
  tool as its index in the table, every unknown name as one same "not a tool").
- **r1**, **r2**: ROUGE-1 and ROUGE-2 F-measure of the predicted ``task_steps`` (joined by new lines) against the
  gold ones, with the rouge-score package as the script uses it (no stemming), over the samples whose prediction
  has ``task_steps``; the script reports the median of a random bootstrap of the mean (``BootstrapAggregator``),
  this is the mean itself (the two agree to within the bootstrap's noise). ``None`` when no prediction has
  steps. BERTScore is left out: it needs roberta-large from the Hub.

Where the official script meets an argument it cannot read (a number, an empty object, a ``<node-k>`` whose k is
not a node), it keeps the argument read before it (whichever that was, in an order set by Python's string hashing);
this keeps the one read before it in the order of the dataset file, so such samples can differ from a given run
of the script.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.schemas import GENERATED_RE, PlanNode
from tasks.task_types import normalize_task_name

_IMAGE_EXT = ("jpg", "png", "jpeg", "gif", "bmp", "tiff", "svg", "ico")
_AUDIO_EXT = ("mp3", "wav", "wma", "ogg", "aac", "flac", "aiff", "au")
_VIDEO_EXT = ("mp4", "avi", "mov", "flv", "wmv", "mkv", "webm", "m4v", "mpg", "mpeg")


class TaskBenchError(ValueError):
    """Predictions or data that cannot be scored at all; the message names the file, line and what was wrong."""


class Tool(BaseModel):
    id: str
    output_type: str = Field(description="the first output type, 'none' when the tool has none")


@cache
def taskbench_tools() -> tuple[Tool, ...]:
    """TaskBench's 23 Hugging Face tools (``tasks/evaluation/data/taskbench_tool_desc.json``, its
    ``tool_desc.json``), in the file's order."""
    text = resources.files("tasks.evaluation.data").joinpath("taskbench_tool_desc.json").read_text(encoding="utf-8")
    nodes = json.loads(text)["nodes"]
    return tuple(Tool(id=n["id"], output_type=(n["output-type"] or ["none"])[0]) for n in nodes)


def tool_name(task: str) -> str:
    """TaskBench's name for one of our task types (``image-to-text`` -> ``Image-to-Text``); a task type with no
    TaskBench tool gets its words capitalized (``text-classification`` -> ``Text Classification``), a name the
    official script does not count as a tool."""
    for tool in taskbench_tools():
        if normalize_task_name(tool.id) == task:
            return tool.id
    return " ".join(word.capitalize() for word in task.split("-"))


class TaskBenchScores(BaseModel):
    """TaskBench's figures over one set of samples (see the module doc), under the paper's names."""

    samples: int = Field(description="ids both in the data and the predictions, read as the script reads them")
    ignored: list[str] = Field(default_factory=list, description="ids the official script leaves out, and why")
    n_precision: float
    n_recall: float
    n_f1: float
    e_f1: float
    t_f1: float
    v_f1: float
    ed: float = Field(description="normalized edit distance of the tool sequences; lower is better")
    r1: float | None = None
    r2: float | None = None
    step_samples: int = Field(default=0, description="samples scored for r1/r2: their prediction has task_steps")


class _Unread(Exception):
    """A sample the official script leaves out."""


class _Reader:
    """Reads arguments as the script does; ``last`` is its argument read before (see the module doc)."""

    def __init__(self, output_types: Mapping[str, str]) -> None:
        self.output_types = output_types
        self.last: tuple[str, str] | None = None

    def nodes(
        self, nodes: Sequence[Any], names: Sequence[str], *, gold: bool
    ) -> tuple[list[list[tuple[str, str]]], list[tuple[str, str]]]:
        """Each node's arguments as (type, value), and the edges."""
        out: list[list[tuple[str, str]]] = []
        links: list[tuple[str, str]] = []
        for index, node in enumerate(nodes):
            raw = node["arguments"] if gold else node.get("arguments", [])
            read: list[tuple[str, str]] = []
            for argument in raw:
                try:
                    self.last = self._argument(argument, index, names, node, links, gold=gold)
                except _SelfReference:
                    continue
                except Exception:  # the script keeps the argument read before
                    pass
                if self.last is None:
                    raise _Unread("an argument that cannot be read, before any argument was read")
                read.append(self.last)
            out.append(read)
        return out, links

    def _argument(
        self,
        argument: Any,
        index: int,
        names: Sequence[str],
        node: Mapping[str, Any],
        links: list[tuple[str, str]],
        *,
        gold: bool,
    ) -> tuple[str, str]:
        if isinstance(argument, dict):
            argument = next(iter(argument.values()))
        if isinstance(argument, list):
            argument = " ".join(argument)
        refers = ("<node-" in argument) if gold else (isinstance(argument, str) and "<node-" in argument)
        if refers:
            start = argument.index("<node-") + 6
            end = argument.index(">")
            k = int(argument[start:end])
            if k == index:
                raise _SelfReference
            source = names[k]
            links.append((source, node["task"]))
            return self.output_types.get(source, "other"), source
        return content_type(argument), argument


class _SelfReference(Exception):
    pass


def content_type(value: str) -> str:
    """``image``, ``audio`` or ``video`` when a file extension of that kind appears in ``value``, else ``text``."""
    value = value.strip("'")
    for kind, exts in (("image", _IMAGE_EXT), ("audio", _AUDIO_EXT), ("video", _VIDEO_EXT)):
        if any("." + ext in value for ext in exts):
            return kind
    return "text"


def _steps_text(steps: Any) -> str:
    """The predicted steps as one text, as the script joins them."""
    try:
        first = steps[0]
        if isinstance(first, str):
            return "\n".join(steps)
        for key in ("task", "step", "id", "step_name"):
            if key in first:
                return "\n".join(step[key] for step in steps)
        return "\n".join(step["description"] for step in steps)
    except Exception:  # the script scores the list as written
        return str(steps)


class _Sample(BaseModel):
    names: tuple[list[str], list[str]]
    links: tuple[list[tuple[str, str]], list[tuple[str, str]]]
    arg_types: tuple[list[str], list[str]]
    arg_values: tuple[list[str], list[str]]


def _pooled(pairs: Iterable[tuple[Iterable[Any], Iterable[Any]]], known: set[str] | None = None) -> tuple[int, ...]:
    """(tp, fp, fn) summed over samples of the sets of gold and predicted items (items outside ``known`` left
    out, when given)."""
    tp = fp = fn = 0
    for gold_items, predicted_items in pairs:
        gold, predicted = set(gold_items), set(predicted_items)
        if known is not None:
            gold, predicted = gold & known, predicted & known
        tp += len(gold & predicted)
        fp += len(predicted - gold)
        fn += len(gold - predicted)
    return tp, fp, fn


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """Levenshtein's ratio: 1 - indel distance / total length (1.0 for two empty sequences)."""
    total = len(a) + len(b)
    if total == 0:
        return 1.0
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, start=1):
            row.append(prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1]))
        prev = row
    return 2 * prev[-1] / total


def score_taskbench(
    data: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
) -> TaskBenchScores | None:
    """TaskBench's figures of ``predictions`` against ``data`` (records as read from the two files), or ``None``
    when no sample can be scored (the script says "No supports, skip")."""
    tools = taskbench_tools()
    index = {t.id: i + 1 for i, t in enumerate(tools)}
    reader = _Reader({t.id: t.output_type for t in tools})
    by_id: dict[Any, Mapping[str, Any]] = {}
    for record in predictions:
        by_id[record["id"]] = record
    labels: dict[Any, Mapping[str, Any]] = {}
    for record in data:
        labels[record["id"]] = record
    samples: list[_Sample] = []
    ignored: list[str] = []
    steps: list[tuple[str, str]] = []
    for sid, label in labels.items():
        if sid not in by_id:
            continue
        prediction = by_id[sid]
        try:
            result = prediction["result"]
            if isinstance(result, Mapping) and "task_steps" in result:
                steps.append((_steps_text(result["task_steps"]), "\n".join(label["task_steps"])))
            samples.append(_read_sample(reader, label, result))
        except Exception as exc:  # the script leaves the sample out, whatever went wrong
            ignored.append(f"{sid}: {type(exc).__name__}: {str(exc)[:120]}")
    if not samples:
        return None
    tp, fp, fn = _pooled((s.names for s in samples), set(index))
    ratios = [_ratio([index.get(n, 0) for n in s.names[1]], [index.get(n, 0) for n in s.names[0]]) for s in samples]
    rouge: dict[str, float | None] = {"r1": None, "r2": None}
    if steps:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
        scores = [scorer.score(gold, predicted) for predicted, gold in steps]
        rouge = {
            "r1": sum(s["rouge1"].fmeasure for s in scores) / len(scores),
            "r2": sum(s["rouge2"].fmeasure for s in scores) / len(scores),
        }
    return TaskBenchScores(
        samples=len(samples),
        ignored=ignored,
        n_precision=tp / (tp + fp) if tp + fp else 0.0,
        n_recall=tp / (tp + fn) if tp + fn else 0.0,
        n_f1=_f1(tp, fp, fn),
        e_f1=_f1(*_pooled(s.links for s in samples)),
        t_f1=_f1(*_pooled(s.arg_types for s in samples)),
        v_f1=_f1(*_pooled(s.arg_values for s in samples)),
        ed=1 - sum(ratios) / len(ratios),
        step_samples=len(steps),
        **rouge,
    )


def _read_sample(reader: _Reader, label: Mapping[str, Any], result: Any) -> _Sample:
    gold_nodes = label["task_nodes"]
    predicted_nodes = result["task_nodes"]
    gold_names = [node["task"].replace("_", " ") for node in gold_nodes]
    predicted_names = [node["task"].replace("_", " ") for node in predicted_nodes]
    gold_args, gold_links = reader.nodes(gold_nodes, gold_names, gold=True)
    predicted_args, predicted_links = reader.nodes(predicted_nodes, predicted_names, gold=False)

    def types(names: list[str], args: list[list[tuple[str, str]]]) -> list[str]:
        return [f"{task}-{kind}" for task, node_args in zip(names, args, strict=True) for kind, _ in node_args]

    def values(names: list[str], args: list[list[tuple[str, str]]]) -> list[str]:
        return [
            f"{task}-{kind}-{value}" for task, node_args in zip(names, args, strict=True) for kind, value in node_args
        ]

    return _Sample(
        names=(gold_names, predicted_names),
        links=(gold_links, predicted_links),
        arg_types=(types(gold_names, gold_args), types(predicted_names, predicted_args)),
        arg_values=(values(gold_names, gold_args), values(predicted_names, predicted_args)),
    )


# ---------------------------------------------------------------------------
# files, and this project's plans in TaskBench's prediction format
# ---------------------------------------------------------------------------
def read_jsonl(path: str, what: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, each with an ``id``; :class:`TaskBenchError` naming the line
    otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskBenchError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    records: list[dict[str, Any]] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskBenchError(f"{path}:{no}: not a JSON line ({exc.msg})") from None
        if not isinstance(record, dict) or "id" not in record:
            raise TaskBenchError(f"{path}:{no}: a {what} line must be a JSON object with an 'id'")
        try:
            hash(record["id"])
        except TypeError:
            raise TaskBenchError(f"{path}:{no}: the id must be a string or a number") from None
        records.append(record)
    return records


def to_prediction(sample_id: Any, nodes: Sequence[PlanNode]) -> dict[str, Any]:
    """One of this project's plans as a TaskBench prediction line: tools by TaskBench's names, each argument's
    value in the order of the task type's arguments, ``<GENERATED>-k`` written ``<node-i>`` with i the position
    of node k, and a link per dependency (no ``task_steps``: the planner does not write steps)."""
    position = {n.id: i for i, n in enumerate(nodes)}
    task_nodes = []
    links = []
    for node in nodes:
        args = [
            GENERATED_RE.sub(lambda m: f"<node-{position.get(int(m.group(1)), int(m.group(1)))}>", value)
            for value in node.args.values()
        ]
        task_nodes.append({"task": tool_name(node.task), "arguments": args})
        links.extend(
            {"source": tool_name(nodes[position[d]].task), "target": tool_name(node.task)}
            for d in node.dep
            if d in position
        )
    return {"id": sample_id, "result": {"task_nodes": task_nodes, "task_links": links}}
