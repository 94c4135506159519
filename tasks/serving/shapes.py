"""The messages of the HTTP API: OpenAI's chat completions, files and errors, HuggingGPT's own server (JARVIS), and
how a conversation becomes one request (:func:`to_request`) and a run becomes a reply (:func:`reply_text`).

Pure: no FastAPI, no Prefect. What a chat front end shows while a request runs is written here too
(:func:`event_chunk`, :func:`sse`): OpenAI's ``chat.completion.chunk`` objects whose ``content`` says what happens
in words (any client shows it), each with a ``hugginggpt`` field carrying the same event as data (the chat page
draws the plan and the nodes' states from it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.schemas import ChatTurn, PlanNode, RunSummary

MODEL_ID = "hugginggpt"
MAX_MESSAGES = 200
_URL = re.compile(r"https?://[^\s<>\"'`]+")
_FILE_ID = re.compile(r"\bfile-[A-Za-z0-9]{8,64}\b")
_TRAILING = ".,;:!?)]}'\""


class RequestShapeError(ValueError):
    """A request body the API cannot use; the message says what is wrong (answered as a 400)."""


# ---------------------------------------------------------------------------
# OpenAI's request
# ---------------------------------------------------------------------------
class ContentPart(BaseModel):
    """One part of a message's content: ``text``, ``image_url`` (an http(s) URL), or ``file`` (an uploaded file)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: dict[str, Any] | str | None = None
    file: dict[str, Any] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's ``POST /v1/chat/completions`` body. Sampling options (``temperature``...) are accepted and ignored;
    ``plan`` (HuggingGPT's format: no planning call) and ``models`` (``{task: model id}`` pins) are this API's own,
    given with the ``openai`` client as ``extra_body``."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    plan: list[PlanNode] | None = None
    models: dict[str, str] = Field(default_factory=dict)
    user: str | None = None


class JarvisRequest(BaseModel):
    """The body of HuggingGPT's own server: ``{"messages": [{"role": ..., "content": ...}]}``."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    plan: list[PlanNode] | None = None
    models: dict[str, str] = Field(default_factory=dict)


class MappedRequest(BaseModel):
    """A conversation as one request: the last user message, its inputs, and the earlier turns."""

    request: str
    inputs: list[str] = Field(default_factory=list)
    history: list[ChatTurn] = Field(default_factory=list)


def _text_and_refs(message: ChatMessage) -> tuple[str, list[str], list[str]]:
    """The text of ``message``, the URLs its parts give, and the file ids its parts give."""
    if message.content is None:
        return "", [], []
    if isinstance(message.content, str):
        return message.content, [], []
    texts: list[str] = []
    urls: list[str] = []
    file_ids: list[str] = []
    for part in message.content:
        if part.type in ("text", "input_text") and part.text is not None:
            texts.append(part.text)
        elif part.type == "image_url" and part.image_url is not None:
            url = part.image_url if isinstance(part.image_url, str) else str(part.image_url.get("url", ""))
            if url.startswith("data:"):
                raise RequestShapeError(
                    "inline data: URLs are not taken as inputs; upload the file with POST /v1/files and refer to its id"
                )
            urls.append(url)
        elif part.type == "file" and part.file is not None:
            file_id = str(part.file.get("file_id", ""))
            if not file_id:
                raise RequestShapeError("a 'file' content part needs a file_id from POST /v1/files")
            file_ids.append(file_id)
        else:
            raise RequestShapeError(f"content parts of type {part.type!r} are not supported (text, image_url, file)")
    return "\n".join(texts), urls, file_ids


def _urls_in(text: str) -> list[str]:
    return [m.group().rstrip(_TRAILING) for m in _URL.finditer(text)]


def to_request(
    messages: Sequence[ChatMessage], resolve_file: Callable[[str], tuple[str, str]], *, history_turns: int = 5
) -> MappedRequest:
    """The last user message as the request, the http(s) URLs it holds and the files it names (``file-...`` ids,
    in its text or as ``file`` parts) as inputs, and up to ``history_turns`` earlier user and assistant turns as
    history (system messages are not part of a HuggingGPT request).

    ``resolve_file(file_id)`` gives an uploaded file's stored URI and name (raising :class:`RequestShapeError` for an
    unknown id); a file id in the text is replaced by the file's name, which the plan's arguments refer to."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last is None:
        raise RequestShapeError("the conversation has no user message: the last user message is the request")
    text, urls, file_ids = _text_and_refs(messages[last])
    inputs: list[str] = []
    for file_id in [*file_ids, *(m.group() for m in _FILE_ID.finditer(text))]:
        uri, name = resolve_file(file_id)
        text = text.replace(file_id, name)
        if file_id in file_ids and name not in text:
            text = f"{text} ({name})" if text else name
        inputs.append(uri)
    inputs += urls + _urls_in(text)
    turns: list[ChatTurn] = []
    for message in messages[:last]:
        if message.role in ("user", "assistant"):
            earlier, _, _ = _text_and_refs(message)
            if earlier.strip():
                turns.append(ChatTurn(role=message.role, content=earlier))  # type: ignore[arg-type]
    text = text.strip()
    if not text:
        raise RequestShapeError("the last user message is empty")
    return MappedRequest(
        request=text,
        inputs=list(dict.fromkeys(inputs)),
        history=turns[-history_turns:] if history_turns > 0 else [],
    )


# ---------------------------------------------------------------------------
# what a run gives back
# ---------------------------------------------------------------------------
class OutputFile(BaseModel):
    """A file a node produced, with the signed link the server serves it from."""

    node: str
    modality: str
    name: str
    url: str


def output_files(summary: RunSummary, link: Callable[[str], str | None]) -> list[OutputFile]:
    """Every file the run produced, linked by ``link(uri)`` (``None``: a file the server cannot serve)."""
    files = []
    for result in summary.results:
        for modality, uri in result.outputs.items():
            if modality == "text":
                continue
            url = link(uri)
            if url is not None:
                name = uri.rsplit("/", 1)[-1]
                files.append(OutputFile(node=f"{result.task}#{result.id}", modality=modality, name=name, url=url))
    return files


def reply_text(summary: RunSummary, files: Sequence[OutputFile]) -> str:
    """The assistant's message: the answer, then the files as markdown links (images as images)."""
    text = summary.answer or (summary.error or "The request produced no answer.")
    if files:
        lines = [f"- {f.node} {f.modality}: {'!' if f.modality == 'image' else ''}[{f.name}]({f.url})" for f in files]
        text += "\n\nFiles:\n" + "\n".join(lines)
    return text


def run_info(summary: RunSummary, files: Sequence[OutputFile], flow_run_url: str | None) -> dict[str, Any]:
    """The ``hugginggpt`` field of a reply: the flow run, its status, plan, nodes and files, as data."""
    return {
        "flow_run_id": summary.flow_run_id,
        "flow_run_url": flow_run_url,
        "status": summary.status,
        "error": summary.error,
        "plan": [n.model_dump() for n in summary.plan],
        "results": [
            {
                "node": f"{r.task}#{r.id}",
                "model": r.model,
                "status": r.status,
                "text": r.outputs.get("text"),
                "error": r.error,
                "seconds": round(r.seconds, 3),
            }
            for r in summary.results
        ],
        "files": [f.model_dump() for f in files],
    }


def completion(completion_id: str, answer: str, info: Mapping[str, Any], usage: Mapping[str, int]) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": dict(usage),
        "hugginggpt": dict(info),
    }


def usage_of(summary: RunSummary) -> dict[str, int]:
    """The LLM's tokens of a run, in OpenAI's usage shape."""
    return {
        "prompt_tokens": summary.llm.prompt_tokens,
        "completion_tokens": summary.llm.completion_tokens,
        "total_tokens": summary.llm.prompt_tokens + summary.llm.completion_tokens,
    }


# ---------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------
def chunk(
    completion_id: str,
    content: str | None = None,
    *,
    event: Mapping[str, Any] | None = None,
    role: bool = False,
    finish: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``: ``content`` as the delta, ``event`` as its ``hugginggpt`` field."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if finish else None}],
    }
    if event is not None:
        body["hugginggpt"] = dict(event)
    return body


_MARKS = {"running": "▶", "done": "✓", "cached": "✓", "skipped": "-", "failed": "✗"}


def plan_event(nodes: Sequence[tuple[str, str, str]]) -> tuple[str, dict[str, Any]]:
    """The plan, in words and as data: ``(node name, model, why)`` per node."""
    if not nodes:
        return "Plan: no task, answering directly.\n", {"event": "plan", "nodes": []}
    words = "Plan: " + "; ".join(f"{name} → {model or 'no model'}" for name, model, _ in nodes) + "\n"
    return words, {"event": "plan", "nodes": [{"node": n, "model": m, "why": w} for n, m, w in nodes]}


def node_event(node: str, state: str, detail: str = "") -> tuple[str | None, dict[str, Any]]:
    """A node's new state; words only for its start and its end (downloads and loads are data only)."""
    data = {"event": "node", "node": node, "state": state, "detail": detail}
    mark = _MARKS.get(state)
    if mark is None:
        return None, data
    tail = f": {detail}" if detail and state in ("failed", "skipped") else ""
    return f"{mark} {node} {state}{tail}\n", data


def sse(payload: Mapping[str, Any] | str) -> str:
    """One Server-Sent Event carrying ``payload`` (JSON, or a bare string such as ``[DONE]``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


# ---------------------------------------------------------------------------
# errors, models, files
# ---------------------------------------------------------------------------
def error_body(message: str, *, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def models_list(created: int) -> dict[str, Any]:
    model = {"id": MODEL_ID, "object": "model", "created": created, "owned_by": "hugginggpt"}
    return {"object": "list", "data": [model]}


def file_object(file_id: str, name: str, size: int, created: int, purpose: str) -> dict[str, Any]:
    """OpenAI's ``file`` object."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created,
        "filename": name,
        "purpose": purpose,
        "status": "processed",
    }


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """An uploaded file's name as it is stored: its last part, letters, digits, ``._-`` only, never hidden."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _SAFE_NAME.sub("_", base).strip("._")[:100]
    return cleaned or "upload"


# ---------------------------------------------------------------------------
# HuggingGPT's own server (JARVIS)
# ---------------------------------------------------------------------------
def jarvis_tasks(nodes: Sequence[PlanNode]) -> list[dict[str, Any]]:
    """``POST /tasks``: the plan in HuggingGPT's format (``dep`` is ``[-1]`` for a node without dependencies)."""
    return [{"task": n.task, "id": n.id, "dep": n.dep or [-1], "args": dict(n.args)} for n in nodes]


def jarvis_results(summary: RunSummary, files: Sequence[OutputFile]) -> dict[str, Any]:
    """``POST /results``: per node id, the task, the model chosen and why, and what it produced (files as links)."""
    by_node = {a.node_id: a for a in summary.assignments}
    links = {(f.node, f.modality): f.url for f in files}
    results: dict[str, Any] = {}
    for node in summary.plan:
        result = next((r for r in summary.results if r.id == node.id), None)
        chosen = by_node.get(node.id)
        inference: dict[str, Any] = {}
        if result is not None:
            for modality, value in result.outputs.items():
                inference[modality] = value if modality == "text" else links.get((node.name, modality), value)
            if result.error:
                inference["error"] = result.error
        results[str(node.id)] = {
            "task": jarvis_tasks([node])[0],
            "choose model result": {"id": chosen.model, "reason": chosen.reason} if chosen else None,
            "inference result": inference,
            "status": result.status if result else "not run",
        }
    return results
