"""A conversation with HuggingGPT: each turn one request flow run, with the earlier turns as its history.

    from flows.chat import ChatSession

    chat = ChatSession()
    chat.ask("Caption photo.jpg", inputs=["photo.jpg"])
    chat.ask("Now read the caption aloud")  # sees the first turn; its files are inputs of this one

Every turn's flow run is tagged ``hugginggpt`` and ``chat-{session id}``, so the UI lists a conversation's runs
together. The last ``history_turns`` turns (``HUGGINGGPT_CHAT_HISTORY``, default 5) go to the planner and the
answer as history (bounded in characters too: a long answer is clipped, the oldest messages left out first),
and the files those turns produced (their storage URIs) are inputs of the next request, so
"now make it French" can refer to an earlier result. ``hugginggpt chat`` is the same on a terminal.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tasks.schemas import (
    MAX_HISTORY_MESSAGE_CHARS,
    ChatTurn,
    RequestSpec,
    RunSummary,
    bounded_history,
    clip_history_text,
)
from tasks.settings import RunOptions

#: runs one turn: (its request, its Prefect tags) -> its summary
TurnRunner = Callable[[RequestSpec, list[str]], RunSummary]


@dataclass
class Turn:
    """One exchange: what was asked, the run's summary, and the files it produced."""

    request: str
    summary: RunSummary
    files: list[str] = field(default_factory=list)

    def as_history(self) -> list[ChatTurn]:
        """The turn as two messages, each within :data:`MAX_HISTORY_MESSAGE_CHARS`: a long answer is clipped, the
        note of its files kept."""
        answer = self.summary.answer or self.summary.error or "(no answer)"
        note = ""
        if self.files:
            note = clip_history_text(
                "\n(files produced: " + ", ".join(self.files) + ")", MAX_HISTORY_MESSAGE_CHARS // 2
            )
        answer = clip_history_text(answer, MAX_HISTORY_MESSAGE_CHARS - len(note)) + note
        return [ChatTurn(role="user", content=self.request), ChatTurn(role="assistant", content=answer)]


def produced_files(summary: RunSummary) -> list[str]:
    """The storage URIs of the files a run's completed nodes produced (text outputs are not files)."""
    return [uri for r in summary.results if r.ok for modality, uri in r.outputs.items() if modality != "text"]


def _run_with_prefect(options: RunOptions | None) -> TurnRunner:
    def run(spec: RequestSpec, tags: list[str]) -> RunSummary:
        from flows.request import run_request
        from tasks.settings import RunOptions

        # the session's pins: a turn need not use them all
        return run_request(spec, (options or RunOptions()).model_copy(update={"unused_pins": "ignore"}), tags=tags)

    return run


class ChatSession:
    """A multi-turn conversation; :meth:`ask` runs one turn and returns its :class:`RunSummary`."""

    def __init__(
        self,
        *,
        options: RunOptions | None = None,
        history_turns: int | None = None,
        inputs: Sequence[str] = (),
        models: Mapping[str, str] | None = None,
        session_id: str | None = None,
        runner: TurnRunner | None = None,
    ) -> None:
        if history_turns is None:
            from tasks.settings import load_settings

            history_turns = load_settings(options).chat_history
        if history_turns < 0:
            raise ValueError("history_turns must be 0 or more")
        self.session_id = session_id or uuid.uuid4().hex[:8]
        self.history_turns = history_turns
        self.inputs = list(inputs)
        self.models = dict(models or {})
        self.turns: list[Turn] = []
        self._run = runner or _run_with_prefect(options)

    @property
    def tags(self) -> list[str]:
        return ["hugginggpt", f"chat-{self.session_id}"]

    def recent(self) -> list[Turn]:
        """The turns the next request sees: the last ``history_turns``."""
        return self.turns[-self.history_turns :] if self.history_turns else []

    def history(self) -> list[ChatTurn]:
        """The recent turns as messages, bounded in characters as well as turns (:func:`bounded_history`)."""
        return bounded_history([message for turn in self.recent() for message in turn.as_history()])

    def next_inputs(self, inputs: Sequence[str] = ()) -> list[str]:
        """This turn's inputs, the session's, then the files of the recent turns, each once, in that order."""
        found = [*inputs, *self.inputs, *(f for turn in self.recent() for f in turn.files)]
        return list(dict.fromkeys(found))

    def ask(self, request: str, inputs: Sequence[str] = (), models: Mapping[str, str] | None = None) -> RunSummary:
        """Run ``request`` as the next turn; the summary is returned whatever happened, and kept as history."""
        spec = RequestSpec(
            request=request,
            inputs=self.next_inputs(inputs),
            models={**self.models, **dict(models or {})},
            history=self.history(),
        )
        summary = self._run(spec, self.tags)
        self.turns.append(Turn(request, summary, produced_files(summary)))
        return summary
