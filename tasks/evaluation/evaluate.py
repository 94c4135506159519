"""Planner evaluation: run stage 1 on a dataset of requests and score the plans against gold plans.

Plain Python (no Prefect): dataset loaders (our JSONL format and TaskBench's), TaskBench's metrics, the shape
of a plan (single / chain / DAG), the runner and the table rows of a report. ``hugginggpt eval``
(``flows/eval_cli.py``) is the command around it.

This project's metrics (modelled on TaskBench's, over our task names and plans; counts are summed over the requests,
then divided). TaskBench's official figures, which differ in the details (sets, edges from references only, no
aliases, argument types), are :mod:`tasks.evaluation.taskbench`, reported beside these under ``taskbench``:

- **node** precision / recall / F1: task names of the predicted plan against the gold plan's. Names are
  counted as multisets: a plan that names a task twice is credited twice only if the gold plan does too.
  (TaskBench collapses repeats into a set; the figures agree for plans without repeated task types.)
- **edge** precision / recall / F1: dependency pairs ``(task of the dependency, task of the node)``.
- **NED**, normalized edit distance of the task sequences (nodes in dependency order): insertions and
  deletions over the sum of both lengths, which is TaskBench's ``1 - Levenshtein.ratio``; 0 is a perfect
  sequence, 1 has nothing in common; averaged over the requests.
- **argument name** F1: ``task:argument`` pairs; **argument value** F1: ``task:argument=value``, where a value
  ``<GENERATED>-k`` is compared as the *task* of node k (ids need not agree), literal values are compared
  after trimming quotes, whitespace, case and final punctuation, and file paths by their base name.
- **exact**: the share of requests whose plan has exactly the gold nodes, edges and argument values.

A metric with nothing to count (no gold and no predicted edges, say) is ``None``, shown as ``-``. A plan that
could not be obtained (invalid twice, not JSON, an LLM error) counts as an empty prediction, with its error.

Shapes, from the gold plan: ``empty`` (no task: the assistant answers directly), ``single`` (one task),
``chain`` (two or more tasks in one line: a single root, each task has at most one dependency and at most one
dependent) and ``dag`` (two or more tasks in any other arrangement: a task with two or more dependencies, a task
feeding two or more, or independent branches).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, computed_field

from tasks.evaluation.plan_styles import DemoSelector, PlanStyle, plan_with_style
from tasks.evaluation.taskbench import TaskBenchScores, score_taskbench, to_prediction
from tasks.llm import ChatModel, LLMError, LLMUnavailableError
from tasks.plan import GENERATED_RE, PlanningError, PlanValidationError, validate_plan
from tasks.schemas import ChatTurn, LLMUsage, PlanNode
from tasks.services import services_for
from tasks.settings import Settings
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


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------
class Counts(BaseModel):
    """True positives, false positives and false negatives of one metric; P/R/F1 derive from them."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(tp=self.tp + other.tp, fp=self.fp + other.fp, fn=self.fn + other.fn)

    @property
    def empty(self) -> bool:
        return self.tp == self.fp == self.fn == 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def precision(self) -> float | None:
        if self.empty:
            return None
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def recall(self) -> float | None:
        if self.empty:
            return None
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def f1(self) -> float | None:
        if self.empty:
            return None
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn)


def multiset_counts(gold: Iterable[Any], predicted: Iterable[Any]) -> Counts:
    """Counts of two multisets: an element predicted n times and in the gold m times gives min(n, m) hits."""
    g, p = Counter(gold), Counter(predicted)
    tp = sum((g & p).values())
    return Counts(tp=tp, fp=sum(p.values()) - tp, fn=sum(g.values()) - tp)


def node_names(nodes: Sequence[PlanNode]) -> list[str]:
    return [n.task for n in nodes]


def edges(nodes: Sequence[PlanNode]) -> list[tuple[str, str]]:
    """Dependency pairs ``(task of the dependency, task of the node)``."""
    task_of = {n.id: n.task for n in nodes}
    return [(task_of[d], n.task) for n in nodes for d in dict.fromkeys(n.dep) if d in task_of and d != n.id]


def normalize_value(value: str, task_of: dict[int, str]) -> str:
    """An argument value as compared: ``<GENERATED>-k`` -> ``<GENERATED>:task``; quotes, surrounding and
    repeated whitespace, case and final ``.!?`` dropped; a file path reduced to its base name."""
    text = GENERATED_RE.sub(lambda m: f"<GENERATED>:{task_of.get(int(m.group(1)), '?')}", value)
    text = " ".join(text.split()).strip().strip("'\"").strip().rstrip(".!?").strip().casefold()
    if _FILE_VALUE.match(text):
        text = PurePosixPath(text.replace("\\", "/")).name
    return text


def arg_names(nodes: Sequence[PlanNode]) -> list[str]:
    return [f"{n.task}:{name}" for n in nodes for name in n.args]


def arg_values(nodes: Sequence[PlanNode]) -> list[str]:
    task_of = {n.id: n.task for n in nodes}
    return [f"{n.task}:{name}={normalize_value(value, task_of)}" for n in nodes for name, value in n.args.items()]


def normalized_edit_distance(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Insertions and deletions needed to turn one sequence into the other, over the sum of their lengths
    (TaskBench's ``1 - Levenshtein.ratio``); 0.0 for two empty sequences."""
    total = len(gold) + len(predicted)
    if total == 0:
        return 0.0
    # longest common subsequence, one row at a time
    prev = [0] * (len(predicted) + 1)
    for g in gold:
        row = [0]
        for j, p in enumerate(predicted, start=1):
            row.append(prev[j - 1] + 1 if g == p else max(prev[j], row[j - 1]))
        prev = row
    return (total - 2 * prev[-1]) / total


class PlanScores(BaseModel):
    """The scores of one predicted plan against its gold plan."""

    node: Counts
    edge: Counts
    arg_name: Counts
    arg_value: Counts
    ned: float
    exact: bool


def score_plan(gold: Sequence[PlanNode], predicted: Sequence[PlanNode]) -> PlanScores:
    node = multiset_counts(node_names(gold), node_names(predicted))
    edge = multiset_counts(edges(gold), edges(predicted))
    arg_value = multiset_counts(arg_values(gold), arg_values(predicted))
    return PlanScores(
        node=node,
        edge=edge,
        arg_name=multiset_counts(arg_names(gold), arg_names(predicted)),
        arg_value=arg_value,
        ned=normalized_edit_distance(node_names(gold), node_names(predicted)),
        exact=all(c.fp == c.fn == 0 for c in (node, edge, arg_value)),
    )


# ---------------------------------------------------------------------------
# results and reports
# ---------------------------------------------------------------------------
class ItemResult(BaseModel):
    """One request: the gold plan, the predicted plan (empty when planning failed, with the error) and scores."""

    id: str
    request: str
    inputs: list[str] = Field(default_factory=list)
    shape: Shape
    predicted_shape: Shape
    gold: list[PlanNode]
    predicted: list[PlanNode]
    error: str | None = None
    last_reply: str | None = Field(default=None, description="the LLM's last reply, when planning failed")
    attempts: int = 0
    repairs: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    usage: LLMUsage = Field(default_factory=LLMUsage)
    scores: PlanScores

    @property
    def valid(self) -> bool:
        return self.error is None


class MetricSummary(BaseModel):
    """Metrics over a group of requests (all of them, or one shape)."""

    requests: int
    valid: int = Field(description="requests that got a valid plan (within the one re-ask)")
    first_try: int = Field(description="requests whose first reply was already a valid plan")
    node_precision: float | None
    node_recall: float | None
    node_f1: float | None
    edge_precision: float | None
    edge_recall: float | None
    edge_f1: float | None
    ned: float | None = Field(description="normalized edit distance of the task sequences, mean; lower is better")
    arg_name_f1: float | None
    arg_value_f1: float | None
    exact: float | None = Field(description="share of requests planned exactly as the gold plan")


def summarize(results: Sequence[ItemResult]) -> MetricSummary:
    node, edge, arg_name, arg_value = Counts(), Counts(), Counts(), Counts()
    for r in results:
        node, edge = node + r.scores.node, edge + r.scores.edge
        arg_name, arg_value = arg_name + r.scores.arg_name, arg_value + r.scores.arg_value
    n = len(results)
    return MetricSummary(
        requests=n,
        valid=sum(1 for r in results if r.valid),
        first_try=sum(1 for r in results if r.valid and r.attempts == 1),
        node_precision=node.precision,
        node_recall=node.recall,
        node_f1=node.f1,
        edge_precision=edge.precision,
        edge_recall=edge.recall,
        edge_f1=edge.f1,
        ned=sum(r.scores.ned for r in results) / n if n else None,
        arg_name_f1=arg_name.f1,
        arg_value_f1=arg_value.f1,
        exact=sum(1 for r in results if r.scores.exact) / n if n else None,
    )


class EvalReport(BaseModel):
    """What ``hugginggpt eval`` reports: the setup, the metrics overall and by shape, and every request."""

    dataset: str
    dataset_format: DatasetFormat
    style: PlanStyle
    prompt: str = Field(description="the style's short label, e.g. 'ours' or 'hugginggpt'")
    llm_model: str
    llm_base_url: str
    concurrency: int
    started_at: datetime
    seconds: float
    overall: MetricSummary
    by_shape: dict[str, MetricSummary]
    usage: LLMUsage
    taskbench: TaskBenchScores | None = Field(
        default=None,
        description="a TaskBench dataset: TaskBench's official figures of the same plans (tasks/evaluation/"
        "taskbench.py), over the records read",
    )
    skipped: list[SkippedRecord] = Field(default_factory=list)
    items: list[ItemResult]

    @property
    def errors(self) -> list[ItemResult]:
        return [r for r in self.items if r.error]


ProgressCallback = Callable[[ItemResult, int, int], None]


def _plan_item(
    client: ChatModel,
    item: EvalItem,
    style: PlanStyle,
    allowed: tuple[str, ...],
    selector: DemoSelector | None,
) -> ItemResult:
    start = time.perf_counter()
    predicted: list[PlanNode] = []
    error: str | None = None
    last_reply: str | None = None
    attempts = 0
    repairs: list[str] = []
    usage = LLMUsage()
    try:
        result = plan_with_style(
            client,
            item.request,
            style=style,
            inputs=item.inputs,
            history=item.history,
            allowed=allowed,
            selector=selector,
        )
    except LLMUnavailableError:
        raise
    except PlanningError as exc:
        error, last_reply, usage, attempts = str(exc), exc.last_reply, exc.usage, 2
    except LLMError as exc:
        error, usage = str(exc), exc.usage
    else:
        predicted, repairs, usage, attempts = result.nodes, result.repairs, result.usage, result.attempts
    return ItemResult(
        id=item.id,
        request=item.request,
        inputs=item.inputs,
        shape=item.shape,
        predicted_shape=plan_shape(predicted),
        gold=item.gold,
        predicted=predicted,
        error=error,
        last_reply=last_reply,
        attempts=attempts,
        repairs=repairs,
        seconds=round(time.perf_counter() - start, 3),
        usage=usage,
        scores=score_plan(item.gold, predicted),
    )


def evaluate(
    dataset: EvalDataset,
    llm: ChatModel | Settings,
    *,
    style: PlanStyle = PlanStyle(),  # noqa: B008 - frozen model
    concurrency: int = 4,
    allowed: Iterable[str] | None = None,
    selector: DemoSelector | None = None,
    progress: ProgressCallback | None = None,
) -> EvalReport:
    """Plan every request of ``dataset`` (stage 1 only), at most ``concurrency`` at a time, and score them.

    ``allowed`` defaults to every task type of the task table. A request whose plan is invalid twice, or
    whose LLM call fails, counts as an empty prediction with its error; an unreachable LLM stops the run
    (:class:`tasks.llm.LLMUnavailableError`). ``progress(result, done, total)`` is called after each request.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    client = services_for(llm).chat_model if isinstance(llm, Settings) else llm
    allowed_t = tuple(allowed) if allowed is not None else tuple(TASK_TYPES)
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    total = len(dataset.items)
    results: dict[int, ItemResult] = {}
    lock = threading.Lock()

    def run(index: int, item: EvalItem) -> None:
        result = _plan_item(client, item, style, allowed_t, selector)
        with lock:
            results[index] = result
            done = len(results)
        if progress is not None:
            progress(result, done, total)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        futures = [pool.submit(run, i, item) for i, item in enumerate(dataset.items)]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in finished if f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            raise failed.exception()  # type: ignore[misc]

    items = [results[i] for i in range(total)]
    by_shape = {
        shape: summarize([r for r in items if r.shape == shape])
        for shape in SHAPES
        if any(r.shape == shape for r in items)
    }
    usage = LLMUsage()
    for r in items:
        usage = usage + r.usage
    taskbench = None
    if any(item.record is not None for item in dataset.items):
        records, predictions = [], []
        for item, r in zip(dataset.items, items, strict=True):
            if item.record is not None:
                records.append({**item.record, "id": item.record.get("id", item.id)})
                predictions.append(to_prediction(records[-1]["id"], r.predicted))
        taskbench = score_taskbench(records, predictions)
    return EvalReport(
        dataset=dataset.path,
        dataset_format=dataset.format,
        style=style,
        prompt=style.label,
        llm_model=client.model,
        llm_base_url=client.base_url,
        concurrency=concurrency,
        started_at=started_at,
        seconds=round(time.perf_counter() - start, 3),
        overall=summarize(items),
        by_shape=by_shape,
        usage=usage,
        taskbench=taskbench,
        skipped=dataset.skipped,
        items=items,
    )


TABLE_COLUMNS = (
    "shape",
    "requests",
    "valid",
    "node P",
    "node R",
    "node F1",
    "edge F1",
    "NED (lower is better)",
    "arg name F1",
    "arg value F1",
    "exact",
)


def predictions_of(report: EvalReport, dataset: EvalDataset) -> list[dict[str, Any]]:
    """The report's plans as TaskBench prediction lines (:func:`tasks.evaluation.taskbench.to_prediction`), under
    each record's own id (a TaskBench record's ``id`` as written)."""
    by_id = {item.id: item for item in dataset.items}
    lines = []
    for r in report.items:
        record = by_id[r.id].record if r.id in by_id else None
        sample_id = record.get("id", r.id) if record is not None else r.id
        lines.append(to_prediction(sample_id, r.predicted))
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report_rows(report: EvalReport) -> list[dict[str, str]]:
    """One row per group (overall first, then each shape present), keyed by :data:`TABLE_COLUMNS`."""
    rows = []
    for name, m in [("overall", report.overall), *report.by_shape.items()]:
        values = (
            name,
            str(m.requests),
            f"{m.valid}/{m.requests}",
            _fmt(m.node_precision),
            _fmt(m.node_recall),
            _fmt(m.node_f1),
            _fmt(m.edge_f1),
            _fmt(m.ned),
            _fmt(m.arg_name_f1),
            _fmt(m.arg_value_f1),
            _fmt(m.exact),
        )
        rows.append(dict(zip(TABLE_COLUMNS, values, strict=True)))
    return rows
