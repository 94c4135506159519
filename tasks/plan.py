"""Stage 1, task planning: the LLM turns a request into a validated graph of tasks.

The core (:func:`parse_plan`, :func:`validate_plan`, :func:`plan_request`) is plain
Python over pydantic models; :func:`plan_task` is its Prefect wrapper.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.constraints import Layout, contract_only, plan_schema
from tasks.inputs import InputPolicy
from tasks.llm import ChatModel, LLMError, stream_chat, with_usage
from tasks.parsing import PlanStreamParser, coerce_id, quote
from tasks.plan_rules import (
    MAX_PLAN_NODES,
    PlanValidationError,
    parse_plan,
    validate_plan,
)
from tasks.schemas import GENERATED_RE, ChatTurn, LLMUsage, PlanNode, PlanResult, bounded_history
from tasks.services import services_for
from tasks.settings import Settings
from tasks.task_types import EXECUTABLE_TASKS, TASK_TYPES

if TYPE_CHECKING:
    from tasks.availability import Availability

#: The most tasks a plan reply may hold where the reply is constrained to the plan contract.
MAX_CONTRACT_NODES = 12


class PlanningError(RuntimeError):
    """Planning failed after the re-ask; the message carries the last validation error, and the error the LLM usage
    of every call and the last reply, for the record."""

    def __init__(self, message: str, *, usage: LLMUsage | None = None, last_reply: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage if usage is not None else LLMUsage()
        self.last_reply = last_reply

    def __reduce__(self) -> tuple[Any, ...]:  # keeps the usage through a pickled task state
        return (_rebuild_planning_error, (str(self), self.usage, self.last_reply))


def _rebuild_planning_error(message: str, usage: LLMUsage, last_reply: str | None) -> PlanningError:
    return PlanningError(message, usage=usage, last_reply=last_reply)


# ---------------------------------------------------------------------------
# prompt
# ---------------------------------------------------------------------------
@cache
def _prompt_file(name: str) -> str:
    return resources.files("tasks.prompts").joinpath(name).read_text(encoding="utf-8")


def load_demos() -> list[dict[str, Any]]:
    """The few-shot demos (``tasks/prompts/plan_demos.json``)."""
    return json.loads(_prompt_file("plan_demos.json"))


def describe_task_types(allowed: Iterable[str] = EXECUTABLE_TASKS) -> str:
    lines = []
    for name in sorted(allowed):
        tt = TASK_TYPES[name]
        args = ", ".join(f"{a.name}: {a.modality}{'' if a.required else ' (optional)'}" for a in tt.args)
        outs = ", ".join(str(m) for m in tt.outputs)
        lines.append(f"- {name}({args}) -> {outs}: {tt.description}")
    return "\n".join(lines)


def _user_message(request: str, inputs: Sequence[str]) -> str:
    given = ", ".join(inputs) if inputs else "none"
    return f"Request: {request}\nInputs: {given}"


def build_plan_messages(
    request: str,
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    *,
    demos: Sequence[Mapping[str, Any]] | None = None,
    task_table: bool = True,
) -> list[dict[str, str]]:
    """System prompt with the task table (or, without ``task_table``, the task names only), the few-shot demos as
    turns (``request``, ``inputs`` and ``plan`` each; default :func:`load_demos`), the chat history, then the
    request."""
    allowed = tuple(allowed)
    table = describe_task_types(allowed) if task_table else "\n".join(f"- {name}" for name in sorted(allowed))
    system = _prompt_file("plan_system.txt").replace("{task_types}", table)
    messages = [{"role": "system", "content": system}]
    for demo in load_demos() if demos is None else demos:
        messages.append({"role": "user", "content": _user_message(demo["request"], demo["inputs"])})
        messages.append({"role": "assistant", "content": json.dumps({"tasks": demo["plan"]})})
    history = bounded_history(history)
    if history:
        convo = "\n".join(f"{t.role}: {t.content}" for t in history)
        messages.append(
            {"role": "user", "content": f"Earlier in this conversation (context only, do not re-plan it):\n{convo}"}
        )
        messages.append({"role": "assistant", "content": '{"tasks": []}'})
    messages.append({"role": "user", "content": _user_message(request, inputs)})
    return messages


PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "task": {"type": "string"},
                    "dep": {"type": "array", "items": {"type": "integer"}},
                    "args": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["id", "task", "dep", "args"],
            },
        }
    },
    "required": ["tasks"],
}


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------
def plan_request(
    llm: ChatModel,
    request: str,
    *,
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    policy: InputPolicy | None = None,
    demos: Sequence[Mapping[str, Any]] | None = None,
) -> PlanResult:
    """Ask the LLM for a plan (the reply constrained to the request's plan contract where the LLM can be:
    :func:`plan_reply_schema`), validate it (file arguments against ``policy``, when given), re-ask once with the
    validation error, then give up with it. ``demos`` default to the fixed ones (:func:`load_demos`)."""
    allowed = tuple(allowed)
    messages = build_plan_messages(request, inputs, history, allowed, demos=demos)
    schema = plan_reply_schema(allowed, inputs, policy)
    return ask_for_plan(llm, messages, request=request, inputs=inputs, allowed=allowed, policy=policy, schema=schema)


def plan_reply_schema(
    allowed: Iterable[str],
    inputs: Sequence[str],
    policy: InputPolicy | None = None,
    *,
    layout: Layout = "tasks",
    endpoint_schema: bool = True,
) -> dict[str, Any]:
    """The reply schema of a planning call: the plan contract of this request (:mod:`tasks.constraints`), over
    the inputs ``policy`` allows; with ``endpoint_schema`` False, only the contract (an endpoint is then asked
    for no JSON schema)."""
    usable = [i for i in inputs if policy is None or policy.refusal(i) is None]
    if not endpoint_schema:
        return contract_only(allowed, usable, max_nodes=MAX_CONTRACT_NODES, layout=layout)
    return plan_schema(allowed, usable, max_nodes=MAX_CONTRACT_NODES, layout=layout)


def ask_for_plan(
    llm: ChatModel,
    messages: list[dict[str, str]],
    *,
    request: str,
    inputs: Sequence[str],
    allowed: Sequence[str],
    policy: InputPolicy | None = None,
    schema: dict[str, Any] | None = PLAN_SCHEMA,
    correction: str = 'Reply with the corrected plan only, as {"tasks": [...]}.',
    first_attempt: int = 1,
) -> PlanResult:
    """Send the planning ``messages``, validate the reply; when it is invalid, send the problems back once (followed
    by ``correction``); raise :class:`PlanningError` with them when the second reply is invalid too
    (``first_attempt=2``: ``messages`` already send an invalid reply back; one call is left)."""
    usage = LLMUsage()
    last_error: PlanValidationError | None = None
    reply = ""
    for attempt in range(first_attempt, 3):
        try:
            reply, call_usage = llm.chat(messages, stage="plan", schema=schema)
        except LLMError as exc:
            raise with_usage(exc, usage) from None
        usage = usage + call_usage
        try:
            raw = parse_plan(reply)
            nodes, repairs = validate_plan(raw, inputs=inputs, request=request, allowed=allowed, policy=policy)
        except PlanValidationError as exc:
            last_error = exc
            messages = [
                *messages,
                {"role": "assistant", "content": reply},
                {"role": "user", "content": f"That plan is invalid: {'; '.join(exc.problems)}. {correction}"},
            ]
            continue
        return PlanResult(nodes=nodes, repairs=repairs, attempts=attempt, usage=usage)
    assert last_error is not None
    raise PlanningError(
        f"the LLM's plan was invalid twice; last error: {str(last_error).removeprefix('invalid plan: ')}",
        usage=usage,
        last_reply=reply,
    )


class StreamedPlanError(PlanningError):
    """The whole streamed plan turned out invalid after some of its tasks had been handed out (and may be running);
    ``started`` lists them, and ``retry`` is the conversation that sends the invalid plan back with its problems
    (for :func:`plan_again`)."""

    def __init__(
        self,
        message: str,
        *,
        started: Sequence[PlanNode],
        retry: list[dict[str, str]],
        usage: LLMUsage,
        last_reply: str,
    ) -> None:
        super().__init__(message, usage=usage, last_reply=last_reply)
        self.started = list(started)
        self.retry = retry

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_streamed_error, (str(self), self.started, self.retry, self.usage, self.last_reply))


def _rebuild_streamed_error(
    message: str, started: list[PlanNode], retry: list[dict[str, str]], usage: LLMUsage, last_reply: str
) -> StreamedPlanError:
    return StreamedPlanError(message, started=started, retry=retry, usage=usage, last_reply=last_reply or "")


def _sent_back(messages: list[dict[str, str]], reply: str, problems: Sequence[str]) -> list[dict[str, str]]:
    correction = 'Reply with the corrected plan only, as {"tasks": [...]}.'
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": f"That plan is invalid: {'; '.join(problems)}. {correction}"},
    ]


def plan_again(
    llm: ChatModel,
    messages: list[dict[str, str]],
    *,
    request: str,
    inputs: Sequence[str] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    policy: InputPolicy | None = None,
) -> PlanResult:
    """The second planning call, not streamed: ``messages`` send an invalid plan back with its problems
    (:attr:`StreamedPlanError.retry`); a second invalid plan is a :class:`PlanningError`, as in :func:`ask_for_plan`."""
    allowed = tuple(allowed)
    schema = plan_reply_schema(allowed, inputs, policy)
    return ask_for_plan(
        llm, messages, request=request, inputs=inputs, allowed=allowed, policy=policy, schema=schema, first_attempt=2
    )


@task(name="plan", cache_policy=NO_CACHE)
def plan_again_task(settings: Settings, request: str, inputs: list[str], messages: list[dict[str, str]]) -> PlanResult:
    """Prefect task: the planning call that follows a streamed plan found invalid (see :func:`plan_again`)."""
    services = services_for(settings)
    return plan_again(
        services.chat_model,
        messages,
        request=request,
        inputs=inputs,
        allowed=plannable_tasks(services.availability),
        policy=InputPolicy.from_settings(settings),
    )


def plan_request_streamed(
    llm: ChatModel,
    request: str,
    on_node: Callable[[PlanNode], None],
    *,
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    policy: InputPolicy | None = None,
    demos: Sequence[Mapping[str, Any]] | None = None,
) -> PlanResult:
    """:func:`plan_request` with the reply streamed: ``on_node`` gets each task, validated, as soon as it and the tasks
    it depends on have arrived (:class:`StreamedPlan`); the whole plan comes back at the end.

    A reply found invalid before any task was handed out is sent back once with its problems, as
    :func:`plan_request` does (without streaming: the tasks come back whole). Once tasks were handed out, an invalid
    whole plan is a :class:`StreamedPlanError`: no more tasks are handed out, the caller stops what it has not
    started, and sends the plan back itself (:func:`plan_again`)."""
    allowed = tuple(allowed)
    messages = build_plan_messages(request, inputs, history, allowed, demos=demos)
    schema = plan_reply_schema(allowed, inputs, policy)
    streamed = StreamedPlan(inputs=inputs, request=request, allowed=allowed, policy=policy)

    def on_text(text: str) -> None:
        for node in streamed.feed(text):
            on_node(node)

    reply, usage = stream_chat(llm, messages, on_text=on_text, stage="plan", schema=schema)
    try:
        nodes, repairs = streamed.finish(reply)
        return PlanResult(nodes=nodes, repairs=repairs, attempts=1, usage=usage)
    except PlanValidationError as exc:
        if streamed.accepted:
            raise StreamedPlanError(
                f"the LLM's plan turned out invalid once {len(streamed.accepted)} of its task(s) had arrived: "
                f"{str(exc).removeprefix('invalid plan: ')}",
                started=streamed.accepted,
                retry=_sent_back(messages, reply, exc.problems),
                usage=usage,
                last_reply=reply,
            ) from None
        again = _sent_back(messages, reply, exc.problems)
    try:
        result = ask_for_plan(
            llm,
            again,
            request=request,
            inputs=inputs,
            allowed=allowed,
            policy=policy,
            schema=schema,
            first_attempt=2,
        )
    except (PlanningError, LLMError) as exc:
        exc.usage = usage + exc.usage
        raise
    return result.model_copy(update={"usage": usage + result.usage})


@task(name="plan", cache_policy=NO_CACHE)
def plan_streamed_task(
    settings: Settings,
    request: str,
    inputs: list[str],
    history: list[ChatTurn],
    on_node: Callable[[PlanNode], None],
) -> PlanResult:
    """Prefect task: stage 1 with the reply streamed, each task handed to ``on_node`` as soon as it is valid (see
    :func:`plan_task`)."""
    services = services_for(settings)
    return plan_request_streamed(
        services.chat_model,
        request,
        on_node,
        inputs=inputs,
        history=history,
        allowed=plannable_tasks(services.availability),
        policy=InputPolicy.from_settings(settings),
    )


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(
    settings: Settings,
    request: str,
    inputs: list[str],
    history: list[ChatTurn],
) -> PlanResult:
    """Prefect task: stage 1, with the run's services (:func:`tasks.services.services_for`). The planner is offered
    the task types that have a model able to run here, and the demos the settings ask for (:func:`demos_for`); file
    arguments must be inputs the settings allow (:class:`~tasks.inputs.InputPolicy`)."""
    services = services_for(settings)
    return plan_request(
        services.chat_model,
        request,
        inputs=inputs,
        history=history,
        allowed=plannable_tasks(services.availability),
        policy=InputPolicy.from_settings(settings),
        demos=demos_for(settings, request),
    )


def demos_for(settings: Settings, request: str) -> list[dict[str, Any]] | None:
    """The demos a planning call shows: with ``HUGGINGGPT_DEMOS=similar``, the ``HUGGINGGPT_N_DEMOS`` closest to
    the request from the demo library, the user's own demos in the storage included (:mod:`tasks.demos`);
    ``None`` (the fixed demos) with ``fixed``. Demos that cannot be read are left out, never the planning."""
    if settings.demos == "fixed":
        return None
    from tasks.demos import pick_demos
    from tasks.storage import StorageError, store_for

    try:
        store = store_for(settings, "demos")
    except StorageError:
        store = None
    try:
        picked = pick_demos(request, settings.n_demos, store)
    except StorageError:
        picked = pick_demos(request, settings.n_demos)
    return [d.model_dump(include={"request", "inputs", "plan"}) for d in picked]


def plannable_tasks(availability: Availability) -> list[str]:
    """Task types of the table with at least one catalog model that can run (as ``availability`` decides)."""
    runnable = availability.runnable_tasks() & set(TASK_TYPES)
    return sorted(runnable) if runnable else sorted(EXECUTABLE_TASKS)


# ---------------------------------------------------------------------------
# a plan as it streams
# ---------------------------------------------------------------------------
class StreamedPlan:
    """Validates a planning reply task by task while it streams (see :class:`~tasks.parsing.PlanStreamParser`).

    :meth:`feed` takes the next piece of the reply and returns the tasks it made ready: a task is validated, with
    the same rules as :func:`validate_plan`, once every task it depends on (``dep`` and ``<GENERATED>-k``) has been
    accepted; until then it waits. A task that breaks a rule stops the stream: ``problem`` holds the error and no
    task is handed out after it. :meth:`finish` reads the whole reply as :func:`validate_plan` does and checks
    that every task handed out is the whole plan's task of the same id; it raises :class:`PlanValidationError`
    otherwise.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[str] = (),
        request: str = "",
        allowed: Iterable[str] = EXECUTABLE_TASKS,
        policy: InputPolicy | None = None,
    ) -> None:
        self.inputs = tuple(inputs)
        self.request = request
        self.allowed = tuple(allowed)
        self.policy = policy
        self.parser = PlanStreamParser()
        self.accepted: list[PlanNode] = []
        self.problem: PlanValidationError | None = None
        self._raw: list[dict[str, Any]] = []  # accepted tasks, as they were written
        self._waiting: list[dict[str, Any]] = []
        self._chunks: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def feed(self, chunk: str) -> list[PlanNode]:
        """The tasks that ``chunk`` made ready, validated, in the order they became ready."""
        self._chunks.append(chunk)
        if self.problem is not None:
            return []
        ready: list[PlanNode] = []
        for raw in self.parser.feed(chunk):
            if not isinstance(raw, dict) or len(self._raw) + len(self._waiting) >= MAX_PLAN_NODES:
                self.problem = PlanValidationError([f"task {quote(raw, 60)} cannot be read as a task"])
                break
            self._waiting.append(raw)
            ready += self._release()
            if self.problem is not None:
                break
        return ready

    def _needs(self, raw: dict[str, Any]) -> set[int]:
        dep_raw = raw.get("dep", [])
        deps = dep_raw if isinstance(dep_raw, list) else [dep_raw]
        needed = {d for d in (coerce_id(x) for x in deps) if d is not None and d >= 0}
        args = raw.get("args")
        for value in args.values() if isinstance(args, dict) else ():
            if isinstance(value, str):
                needed |= {int(k) for k in GENERATED_RE.findall(value)}
        return needed - {coerce_id(raw.get("id"))}

    def _release(self) -> list[PlanNode]:
        ready: list[PlanNode] = []
        progress = True
        while progress and self.problem is None:
            progress = False
            have = {n.id for n in self.accepted}
            for raw in list(self._waiting):
                if not self._needs(raw) <= have:
                    continue
                self._waiting.remove(raw)
                try:
                    nodes, _ = validate_plan(
                        [*self._raw, raw],
                        inputs=self.inputs,
                        request=self.request,
                        allowed=self.allowed,
                        policy=self.policy,
                    )
                except PlanValidationError as exc:
                    self.problem = exc
                    return ready
                known = {n.id for n in self.accepted}
                node = next(n for n in nodes if n.id not in known)
                self._raw.append(raw)
                self.accepted.append(node)
                ready.append(node)
                progress = True
                break
        return ready

    def finish(self, reply: str | None = None) -> tuple[list[PlanNode], list[str]]:
        """The whole plan (from ``reply``, or the pieces fed) and its repairs, once the tasks handed out agree
        with it."""
        text = self.text if reply is None else reply
        nodes, repairs = validate_plan(
            parse_plan(text), inputs=self.inputs, request=self.request, allowed=self.allowed, policy=self.policy
        )
        by_id = {n.id: n for n in nodes}
        for early in self.accepted:
            whole = by_id.get(early.id)
            if (
                whole is None
                or whole.task != early.task
                or set(whole.dep) != set(early.dep)
                or whole.args != early.args
            ):
                raise PlanValidationError(
                    [f"task {early.id} ({early.task}) was read one way while the reply streamed and another at its end"]
                )
        if self.problem is not None:  # the whole reply validated although a task did not when it arrived
            raise self.problem
        return nodes, repairs
