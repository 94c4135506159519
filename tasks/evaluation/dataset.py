"""Evaluation datasets: requests with gold plans, read from this project's JSONL format or TaskBench's, each
gold plan judged by the plan rules (:mod:`tasks.plan_rules`), and the shape of a plan (``empty``, ``single``,
``chain``, ``dag``: see :mod:`tasks.evaluation.evaluate`). Plain Python: the evaluation scores against these, and
the demo library (:mod:`tasks.demos`) takes TaskBench's gold plans as demos."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from tasks.plan_rules import PlanValidationError, validate_plan
from tasks.schemas import ChatTurn, PlanNode
from tasks.task_types import TASK_TYPES, Modality, normalize_task_name

Shape = Literal["empty", "single", "chain", "dag"]
SHAPES: tuple[Shape, ...] = ("empty", "single", "chain", "dag")
DatasetFormat = Literal["ours", "taskbench"]

#: TaskBench tool names that are not spellings of one of our task types.
TASKBENCH_ALIASES: dict[str, str] = {"image-editing": "image-to-image"}

_TB_REF = re.compile(r"<node-(\d+)>")
_EXTENSIONS: dict[Modality, frozenset[str]] = {
    Modality.IMAGE: frozenset({"jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "svg", "ico"}),
    Modality.AUDIO: frozenset({"wav", "mp3", "flac", "ogg", "m4a", "aac", "wma", "aiff", "au"}),
    Modality.VIDEO: frozenset({"mp4", "avi", "mov", "mkv", "webm", "flv", "wmv", "m4v", "mpg", "mpeg"}),
    Modality.TABLE: frozenset({"csv", "tsv", "xls", "xlsx"}),
}
_ALL_EXT = "|".join(sorted(e for exts in _EXTENSIONS.values() for e in exts))
_FILE_IN_TEXT = re.compile(
    rf"(?<![\w/.-])((?:[a-zA-Z][a-zA-Z0-9+.-]*://)?[\w./~-]*\w\.(?:{_ALL_EXT}))\b", re.IGNORECASE
)
_FILE_VALUE = re.compile(rf"^\S+\.(?:{_ALL_EXT})$", re.IGNORECASE)


class DatasetError(ValueError):
    """A dataset could not be read; the message names the file, the line and what was wrong."""


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
class EvalItem(BaseModel):
    """One request with its gold plan."""

    id: str
    request: str
    inputs: list[str] = Field(default_factory=list)
    history: list[ChatTurn] = Field(default_factory=list)
    gold: list[PlanNode]
    shape: Shape
    line: int = Field(default=0, description="line (or position) in the dataset file, from 1")
    notes: list[str] = Field(default_factory=list, description="how the record was read, when not as written")
    record: dict[str, Any] | None = Field(
        default=None, exclude=True, description="a TaskBench record as read, for TaskBench's own figures"
    )


class SkippedRecord(BaseModel):
    line: int
    id: str | None = None
    reason: str


class EvalDataset(BaseModel):
    name: str
    path: str
    format: DatasetFormat
    items: list[EvalItem]
    skipped: list[SkippedRecord] = Field(default_factory=list)

    def shape_counts(self) -> dict[str, int]:
        counts = Counter(item.shape for item in self.items)
        return {shape: counts[shape] for shape in SHAPES if counts[shape]}


def plan_shape(nodes: Sequence[PlanNode]) -> Shape:
    """``empty``, ``single``, ``chain`` or ``dag`` (see the module docstring)."""
    if not nodes:
        return "empty"
    if len(nodes) == 1:
        return "single"
    ids = {n.id for n in nodes}
    indegree = {n.id: len({d for d in n.dep if d in ids and d != n.id}) for n in nodes}
    outdegree: Counter[int] = Counter()
    for n in nodes:
        for d in {d for d in n.dep if d in ids and d != n.id}:
            outdegree[d] += 1
    roots = sum(1 for i in ids if indegree[i] == 0)
    if roots == 1 and all(v <= 1 for v in indegree.values()) and all(v <= 1 for v in outdegree.values()):
        return "chain"
    return "dag"


def builtin_gold_path() -> Path:
    """``tasks/evaluation/data/gold.jsonl``: requests written for this project, with their gold plans."""
    return Path(str(resources.files("tasks.evaluation.data").joinpath("gold.jsonl")))


def load_gold_set() -> EvalDataset:
    return load_dataset(builtin_gold_path(), "ours")


def _read_records(path: Path) -> list[tuple[int, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(records, list):
                return list(enumerate(records, start=1))
    out: list[tuple[int, Any]] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((no, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{no}: not a JSON line ({exc.msg})") from None
    return out


def detect_format(record: Any) -> DatasetFormat:
    """``taskbench`` for a record with TaskBench's keys (``user_request``/``instruction``, ``task_nodes``/
    ``tool_nodes``), ``ours`` for one with ``request``."""
    if isinstance(record, dict):
        if any(k in record for k in ("task_nodes", "tool_nodes", "user_request", "instruction")):
            return "taskbench"
        if "request" in record:
            return "ours"
    raise DatasetError(
        "cannot tell the dataset's format: a record needs 'request' and 'plan' (ours) or "
        "'user_request'/'instruction' and 'task_nodes'/'tool_nodes' (TaskBench)"
    )


def load_dataset(path: str | Path, fmt: DatasetFormat | Literal["auto"] = "auto") -> EvalDataset:
    """Read a dataset of requests with gold plans.

    Records that cannot be scored (no gold plan, a TaskBench tool with no task type here, an invalid gold
    plan) are left out and listed in ``skipped`` with the reason; a file that cannot be read raises
    :class:`DatasetError`.
    """
    path = Path(path)
    records = _read_records(path)
    if not records:
        raise DatasetError(f"dataset {path} holds no records")
    if fmt == "auto":
        fmt = detect_format(records[0][1])
    reader = _read_ours if fmt == "ours" else _read_taskbench
    items: list[EvalItem] = []
    skipped: list[SkippedRecord] = []
    for no, record in records:
        rid = str(record.get("id", no)) if isinstance(record, dict) else None
        try:
            if not isinstance(record, dict):
                raise DatasetError(f"the record is a JSON {type(record).__name__}, not an object")
            items.append(reader(record, no))
        except DatasetError as exc:
            skipped.append(SkippedRecord(line=no, id=rid, reason=str(exc)))
    return EvalDataset(name=path.name, path=str(path), format=fmt, items=items, skipped=skipped)


def _read_ours(record: dict[str, Any], line: int) -> EvalItem:
    request = record.get("request")
    if not isinstance(request, str) or not request.strip():
        raise DatasetError("no 'request' text")
    raw_plan = record.get("plan", record.get("tasks"))
    if not isinstance(raw_plan, list):
        raise DatasetError("no gold plan ('plan': a list of tasks)")
    inputs = record.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise DatasetError("'inputs' must be a list of file names")
    try:
        history = [ChatTurn.model_validate(t) for t in record.get("history", [])]
    except ValidationError as exc:
        raise DatasetError(f"invalid 'history': {exc.errors()[0]['msg']}") from None
    try:
        gold, repairs = validate_plan(raw_plan, inputs=inputs, request=request, allowed=TASK_TYPES)
    except PlanValidationError as exc:
        raise DatasetError(f"invalid gold plan: {'; '.join(exc.problems)}") from None
    return EvalItem(
        id=str(record.get("id", line)),
        request=request,
        inputs=list(inputs),
        history=history,
        gold=gold,
        shape=plan_shape(gold),
        line=line,
        notes=repairs,
    )


def taskbench_task_name(tool: str) -> str | None:
    """Our task type for a TaskBench tool name ("Image-to-Text" -> "image-to-text"), or ``None``."""
    key = normalize_task_name(tool)
    key = TASKBENCH_ALIASES.get(key, key)
    return key if key in TASK_TYPES else None


def literal_modality(value: str) -> Modality:
    """The modality of a literal argument: a file by its extension, text otherwise."""
    token = value.strip().strip("'\"")
    if _FILE_VALUE.match(token):
        ext = token.rsplit(".", 1)[-1].lower()
        for modality, exts in _EXTENSIONS.items():
            if ext in exts:
                return modality
    return Modality.TEXT


def _tb_argument_values(raw: Any) -> list[tuple[str | None, str]]:
    """TaskBench arguments as (name hint, value): a list of strings, of {name, value} objects or of
    single-key objects, or one object mapping names to values."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        if "value" in raw:
            raw = [raw]
        else:
            return [(str(k), _tb_text(v)) for k, v in raw.items()]
    if not isinstance(raw, list):
        raw = [raw]
    out: list[tuple[str | None, str]] = []
    for arg in raw:
        if isinstance(arg, dict):
            if "value" in arg:
                out.append((str(arg["name"]) if arg.get("name") is not None else None, _tb_text(arg["value"])))
            elif len(arg) == 1:
                (name, value), *_ = arg.items()
                out.append((str(name), _tb_text(value)))
            else:
                out.extend((str(k), _tb_text(v)) for k, v in arg.items())
        else:
            out.append((None, _tb_text(arg)))
    return out


def _tb_text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_tb_text(v) for v in value)
    return str(value)


def _read_taskbench(record: dict[str, Any], line: int) -> EvalItem:
    request = record.get("user_request", record.get("instruction"))
    if not isinstance(request, str) or not request.strip():
        raise DatasetError("no 'user_request' (or 'instruction') text")
    raw_nodes = record.get("task_nodes", record.get("tool_nodes"))
    if not isinstance(raw_nodes, list):
        raise DatasetError("no gold plan ('task_nodes' or 'tool_nodes')")
    raw_links = record.get("task_links", record.get("tool_links")) or []

    names: list[str] = []
    unknown: list[str] = []
    for pos, raw in enumerate(raw_nodes):
        tool = raw.get("task", raw.get("name", raw.get("id"))) if isinstance(raw, dict) else raw
        if not isinstance(tool, str):
            raise DatasetError(f"node {pos} has no tool name")
        task = taskbench_task_name(tool)
        if task is None:
            unknown.append(tool)
        names.append(task or "")
    if unknown:
        raise DatasetError(
            f"unknown TaskBench tool(s) {', '.join(repr(u) for u in unknown)}: no task type of that name in the "
            "task table (tasks/task_types.py)"
        )

    notes: list[str] = []
    deps: list[list[int]] = [[] for _ in names]
    args: list[dict[str, str]] = [{} for _ in names]
    inputs: list[str] = []
    for i, raw in enumerate(raw_nodes):
        tt = TASK_TYPES[names[i]]
        values = _tb_argument_values(raw.get("arguments", raw.get("args")) if isinstance(raw, dict) else None)
        for hint, value in values:
            refs = [int(j) for j in _TB_REF.findall(value)]
            bad = [j for j in refs if j == i or j >= len(names)]
            if bad:
                notes.append(f"node {i}: reference(s) to node {', '.join(map(str, bad))} ignored")
                continue
            if refs:
                value = _TB_REF.sub(lambda m: f"<GENERATED>-{m.group(1)}", value)
                wanted = {m for j in refs for m in TASK_TYPES[names[j]].outputs}
                for j in refs:
                    if j not in deps[i]:
                        deps[i].append(j)
            else:
                value = value.strip()
                wanted = {literal_modality(value)}
                if wanted & set(_EXTENSIONS) and value not in inputs:
                    inputs.append(value)
            free = [a for a in tt.args if a.name not in args[i]]
            spec = next((a for a in free if a.name == hint), None)
            spec = spec or next((a for a in free if a.modality in wanted), None)
            if spec is None and free:
                spec = free[0]
                notes.append(f"node {i} ({tt.name}): {value!r} read as its {spec.name!r} argument")
            if spec is None:
                notes.append(f"node {i} ({tt.name}): extra argument {value!r} left out")
                continue
            args[i][spec.name] = value

    for link in raw_links:
        if not isinstance(link, dict):
            continue
        source = taskbench_task_name(str(link.get("source", "")))
        target = taskbench_task_name(str(link.get("target", "")))
        targets = [t for t, name in enumerate(names) if name == target]
        sources = [s for s, name in enumerate(names) if name == source]
        for t in targets:
            candidates = [s for s in sources if s != t]
            if not candidates or any(s in deps[t] for s in candidates):
                continue
            before = [s for s in candidates if s < t]
            deps[t].append(before[-1] if before else candidates[0])
            break

    for found in _FILE_IN_TEXT.findall(request):
        if found not in inputs:
            inputs.append(found)
    gold = [PlanNode(id=i, task=names[i], dep=sorted(deps[i]), args=args[i]) for i in range(len(names))]
    return EvalItem(
        id=str(record.get("id", line)),
        request=request,
        inputs=inputs,
        gold=gold,
        shape=plan_shape(gold),
        line=line,
        notes=notes,
        record=record,
    )
