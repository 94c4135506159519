"""The contracts between the stages: plan, assignment, node result and run summary."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GENERATED_PREFIX = "<GENERATED>-"
GENERATED_RE = re.compile(r"<GENERATED>-(-?[0-9]{1,9})", re.ASCII)  # a reference to node k's output, inside an argument


class ModelSpec(BaseModel):
    """The model a node runs: a Hub id, optionally with a local folder of weights, a revision, an endpoint, or the
    Inference Provider that serves it remotely.

    ``trust_remote_code`` says the catalog entry allows running the Python code of the model's repository; the
    local backend does so only when its own setting (``HUGGINGGPT_TRUST_REMOTE_CODE``) allows it too.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    task: str
    local_path: str | None = None
    revision: str | None = None
    endpoint: str | None = None
    provider: str | None = None
    library: str = "transformers"
    trust_remote_code: bool = False

    @property
    def source(self) -> str:
        """What ``from_pretrained`` is given: the local folder when there is one, else the Hub id."""
        return self.local_path or self.id


class Attempt(BaseModel):
    """One candidate considered for a node: run (``ok`` or with an ``error``) or skipped with the reason."""

    model: str
    backend: str | None = None
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    skipped: bool = False

    def describe(self) -> str:
        if self.ok:
            return f"{self.model} [{self.backend}]: ok in {self.seconds:.2f} s"
        if self.skipped:
            return f"{self.model}: skipped ({self.error})"
        return f"{self.model} [{self.backend}]: failed after {self.seconds:.2f} s: {self.error}"


class ChatTurn(BaseModel):
    """An earlier turn of the conversation, passed to the planner as context."""

    role: Literal["user", "assistant"]
    content: str


#: The most characters one earlier message carries as history: a longer one (an answer of megabytes) is clipped.
MAX_HISTORY_MESSAGE_CHARS = 2_000
#: The most characters a whole history carries: the oldest messages are left out first. With the message bound, it
#: keeps the flow run's parameters (Prefect takes at most 512 kB), the planner's and the responder's prompts small.
MAX_HISTORY_CHARS = 12_000


def clip_history_text(text: str, limit: int = MAX_HISTORY_MESSAGE_CHARS) -> str:
    """``text`` as history carries it: whole when it fits ``limit`` characters, else its start and a note of how
    much was left out."""
    if len(text) <= limit:
        return text
    note = f" ... [{len(text) - limit:,} more characters left out]"
    return text[: max(0, limit - len(note))] + note


def bounded_history(
    history: Sequence[ChatTurn],
    *,
    message_chars: int = MAX_HISTORY_MESSAGE_CHARS,
    total_chars: int = MAX_HISTORY_CHARS,
) -> list[ChatTurn]:
    """``history`` within bounds: each message clipped to ``message_chars``, then the oldest messages left out
    until the rest holds at most ``total_chars`` (a history never starts with an answer whose question was left
    out). The one place that bounds history, wherever it goes: the chat, the flow's parameters, the planner, the
    responder."""
    turns = [
        t
        if len(t.content) <= message_chars
        else t.model_copy(update={"content": clip_history_text(t.content, message_chars)})
        for t in history
    ]
    total = sum(len(t.content) for t in turns)
    while turns and (total > total_chars or turns[0].role == "assistant"):
        total -= len(turns.pop(0).content)
    return turns


class PlanNode(BaseModel):
    """One node of a plan, in HuggingGPT's format."""

    model_config = ConfigDict(extra="ignore")

    id: int = Field(ge=0)
    task: str
    dep: list[int] = Field(default_factory=list, description="ids this node waits for; [] (or [-1]) for none")
    args: dict[str, str] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        """The node's display name, also its Prefect task-run name: ``image-to-text#0`` (``image-to-text#0 (cached)``
        once it reused earlier outputs, see :data:`CACHED_SUFFIX`)."""
        return f"{self.task}#{self.id}"


class RequestSpec(BaseModel):
    """One request, as the request flow takes it (its ``spec`` parameter), and as the CLI, a batch line, chat and
    library users give it to :func:`flows.request.run_request`. How to run it (storage, catalog, model, device...) is
    not part of it: that is :class:`~tasks.settings.RunOptions`."""

    model_config = ConfigDict(extra="forbid")

    request: str = Field(description="what the user asks, in plain language")
    inputs: list[str] = Field(default_factory=list, description="files it refers to: paths, http(s) or fsspec URLs")
    models: dict[str, str] = Field(default_factory=dict, description="pinned models, {task: model id}")
    history: list[ChatTurn] = Field(default_factory=list, description="earlier turns of the conversation")
    plan: list[PlanNode] | None = Field(default=None, description="an explicit plan: no planning call is made")
    plan_source: str | None = Field(
        default=None, description="where an explicit plan came from, recorded in the summary (a batch's plan cache)"
    )
    resume_from: str | None = Field(
        default=None,
        description="the flow run id of an earlier run of this request: its plan and model choices are reused, and "
        "its completed nodes are not run again",
    )

    @field_validator("history")
    @classmethod
    def _bounded(cls, v: list[ChatTurn]) -> list[ChatTurn]:
        """What a caller passes is bounded like a chat's (:func:`bounded_history`)."""
        return bounded_history(v)


#: appended to a node's task-run name when it reused earlier outputs, so the run graph (which colours by state type:
#: Cached is a Completed state) tells it from a node that ran
CACHED_SUFFIX = " (cached)"


class LLMUsage(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class PlanResult(BaseModel):
    """What stage 1 gives: the validated plan, the repairs it needed, and the LLM usage."""

    nodes: list[PlanNode]
    repairs: list[str] = Field(default_factory=list)
    attempts: int = 1
    usage: LLMUsage = Field(default_factory=LLMUsage)


Backend = Literal["local", "remote"]


class Assignment(BaseModel):
    """The model chosen for one node, with the candidates considered and why."""

    node_id: int
    task: str
    model: str
    backend: Backend = "local"
    candidates: list[str] = Field(default_factory=list)
    reason: str
    spec: ModelSpec
    fallbacks: list[ModelSpec] = Field(
        default_factory=list, description="next-ranked runnable candidates, tried in order if this model fails"
    )


class CandidateCheck(BaseModel):
    """Whether one catalog candidate can run here, where, and why (decided before selection)."""

    task: str
    model: str
    backend: Backend | None = Field(description="where it would run; None: it cannot run here")
    reason: str


class SelectionResult(BaseModel):
    assignments: list[Assignment]
    unassigned: dict[int, str] = Field(default_factory=dict, description="node id -> why no model could be chosen")
    usage: LLMUsage = Field(default_factory=LLMUsage)
    checks: list[CandidateCheck] = Field(
        default_factory=list, description="every candidate looked at for each task, and whether it can run here"
    )


NodeStatus = Literal["completed", "failed", "skipped"]


class NodeResult(BaseModel):
    """What one node did: its status, its outputs (text inline, files as URIs), timings and error."""

    id: int
    task: str
    model: str | None = None
    status: NodeStatus
    outputs: dict[str, str] = Field(default_factory=dict, description="modality -> text, or URI of the stored file")
    error: str | None = None
    seconds: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    backend: str | None = Field(default=None, description="where the model ran: local or remote")
    attempts: list[Attempt] = Field(default_factory=list, description="every model tried, in order, and why it failed")
    cached: bool = Field(default=False, description="outputs reused from an earlier identical node")
    reused_from: str | None = Field(default=None, description="the run whose outputs were reused")
    cache_key: str | None = None
    model_wait_seconds: float | None = Field(
        default=None, description="seconds the node waited for its model to download and load (0: it was ready)"
    )
    round: int = Field(default=0, ge=0, description="0: the node was planned first; k: by the k-th replan")

    @property
    def ok(self) -> bool:
        return self.status == "completed"


AnswerSource = Literal["llm", "direct", "fallback"]


class ResponseResult(BaseModel):
    answer: str
    source: AnswerSource
    error: str | None = None
    usage: LLMUsage = Field(default_factory=LLMUsage)


RunStatus = Literal["completed", "failed"]


class ReplanRound(BaseModel):
    """One replanning call after a round of the graph left nodes not completed."""

    round: int = Field(ge=1, description="the round it planned: 1 for the first replan")
    after: list[int] = Field(default_factory=list, description="the nodes that had failed or were skipped")
    tasks: list[int] = Field(default_factory=list, description="ids of the new tasks; none: answer with what there is")
    repairs: list[str] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the replan gave no usable tasks")
    seconds: float = 0.0
    usage: LLMUsage = Field(default_factory=LLMUsage)


class RunSummary(BaseModel):
    """Everything about one request; stored as ``summary.json`` beside the run's files."""

    request: str
    inputs: list[str] = Field(default_factory=list)
    status: RunStatus = "completed"
    plan: list[PlanNode] = Field(default_factory=list)
    plan_repairs: list[str] = Field(default_factory=list)
    plan_source: str = Field(
        default="llm", description="llm, explicit, resumed, or the batch line whose plan was reused"
    )
    resumed_from: str | None = Field(default=None, description="the flow run id of the run this one resumes")
    error_kind: Literal["configuration"] | None = Field(
        default=None, description="'configuration' when the run failed on a setting (an unreachable LLM, a refused key)"
    )
    assignments: list[Assignment] = Field(default_factory=list)
    candidate_checks: list[CandidateCheck] = Field(
        default_factory=list, description="every candidate looked at by selection, and where it can run or why not"
    )
    results: list[NodeResult] = Field(default_factory=list)
    answer: str = ""
    answer_source: AnswerSource = "llm"
    answer_error: str | None = None
    llm: LLMUsage = Field(default_factory=LLMUsage)
    flow_run_id: str | None = None
    storage_uri: str | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage and in total")
    error: str | None = None
    replans: list[ReplanRound] = Field(
        default_factory=list, description="each replan after a round left nodes not completed (its round, new tasks)"
    )
    plan_streamed: bool = Field(default=False, description="nodes started while the plan was still streaming")

    @property
    def failed_nodes(self) -> list[NodeResult]:
        return [r for r in self.results if r.status != "completed"]

    @property
    def last_round(self) -> int:
        return max((r.round for r in self.results), default=0)

    def unfinished(self) -> list[NodeResult]:
        """The nodes of the last round that did not complete: the request completed when there are none (earlier
        rounds' failures were answered by a replan)."""
        last = self.last_round
        return [r for r in self.results if r.round == last and r.status != "completed"]
