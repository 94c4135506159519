"""Planner evaluation: run stage 1 on a dataset of requests and score the plans against gold plans.

Plain Python (no Prefect): this project's metrics over a dataset (read by :mod:`tasks.evaluation.dataset`), the shape
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

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, Field, computed_field

from tasks.evaluation.dataset import (
    _FILE_VALUE,
    SHAPES,
    DatasetFormat,
    EvalDataset,
    EvalItem,
    Shape,
    SkippedRecord,
    plan_shape,
)
from tasks.evaluation.plan_styles import DemoSelector, PlanStyle, plan_with_style
from tasks.evaluation.taskbench import TaskBenchScores, score_taskbench, to_prediction
from tasks.llm import ChatModel, LLMError, LLMUnavailableError
from tasks.plan import GENERATED_RE, PlanningError
from tasks.schemas import LLMUsage, PlanNode
from tasks.services import services_for
from tasks.settings import Settings
from tasks.task_types import TASK_TYPES


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
