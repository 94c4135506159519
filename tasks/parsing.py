"""One bounded parser for untrusted text: LLM replies, plan files, batch lines, records read back from storage.

Every entry point checks the size and the nesting depth of a document *before* ``json`` or ``yaml`` recurse into
it, reads YAML with a loader that refuses anchors, aliases and tags, coerces ids without trusting ``str.isdigit``,
and raises :class:`ParseError` (a ``ValueError``) whose message quotes at most :data:`QUOTE_CHARS` characters of
what it read. Nothing here raises ``RecursionError``, ``MemoryError`` or a YAML/JSON exception of its own.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

MAX_DOCUMENT_CHARS = 256_000
"""Largest document read (an LLM reply, a plan file, one batch line)."""
MAX_DEPTH = 64
"""Deepest nesting of lists and objects accepted (a plan needs 4)."""
QUOTE_CHARS = 200
"""Most characters of a document quoted in an error message."""
MAX_ID = 1_000_000
"""Largest plan id accepted."""
_MAX_JSON_STARTS = 64  # candidate positions tried when a JSON value is looked for inside prose
_FENCE = re.compile(r"```(?:json|JSON|yaml|YAML|yml)?[ \t]*\n?(.*?)```", re.DOTALL)
_ID = re.compile(r"-?[0-9]{1,9}", re.ASCII)
PLAN_KEYS = ("tasks", "plan", "nodes", "task_nodes")


class ParseError(ValueError):
    """A document could not be read; the message says why and quotes at most a few hundred characters of it."""


class JSONExtractError(ParseError):
    """No JSON value could be read from a reply."""


def quote(text: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of ``text`` clipped to ``limit`` characters (with the full length when clipped)."""
    value = text if isinstance(text, str) else repr(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_size(text: str, what: str, limit: int = MAX_DOCUMENT_CHARS) -> None:
    if len(text) > limit:
        raise ParseError(f"{what} is {len(text)} characters long; the limit is {limit}")


_BRACKET_OR_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def nesting_depth(text: str, stop_at: int = MAX_DEPTH) -> int:
    """The deepest nesting of ``[``/``{`` outside JSON strings in ``text`` (counting stops past ``stop_at``).

    A linear scan with no recursion, run before a parser that recurses. Brackets inside double-quoted strings are
    not counted (an unterminated string's are: the count errs on the high side); YAML's single-quoted strings and
    block nesting are bounded by the YAML loader instead.
    """
    depth = deepest = 0
    for match in _BRACKET_OR_STRING.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_at:
                    return deepest
        elif token in "]}":
            depth = max(depth - 1, 0)
    return deepest


def check_depth(text: str, what: str, limit: int = MAX_DEPTH) -> None:
    if nesting_depth(text, limit) > limit:
        raise ParseError(f"{what} nests lists or objects more than {limit} deep")


def loads_json(text: str, what: str = "the document", *, limit: int = MAX_DOCUMENT_CHARS) -> Any:
    """One JSON document, size and depth checked first."""
    check_size(text, what, limit)
    check_depth(text, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise ParseError(f"{what} is not usable JSON ({clip(str(exc))})") from None


def extract_json(text: str | None, what: str = "the reply") -> Any:
    """The first JSON list or object of an LLM reply: a bare value, one inside a code fence, or one surrounded by
    prose ("Here is the plan: [...] Hope it helps")."""
    if text is None or not text.strip():
        raise JSONExtractError(f"{what} was empty")
    check_size(text, what)
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    tried = 0
    for chunk in candidates:
        chunk = chunk.strip()
        if nesting_depth(chunk, MAX_DEPTH) > MAX_DEPTH:
            raise JSONExtractError(f"{what} nests lists or objects more than {MAX_DEPTH} deep")
        start = -1
        while tried < _MAX_JSON_STARTS:
            start = _next_start(chunk, start + 1)
            if start < 0:
                break
            tried += 1
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except ValueError:
                continue
            return value
    raise JSONExtractError(f"no JSON object or list found in {what}: {quote(text.strip().replace(chr(10), ' '))}")


def _next_start(text: str, pos: int) -> int:
    starts = [i for i in (text.find("[", pos), text.find("{", pos)) if i >= 0]
    return min(starts) if starts else -1


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------
class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases and explicit tags (``!!python/...``, ``!foo``) and nesting
    deeper than :data:`MAX_DEPTH`, so a small document cannot expand into a huge one nor recurse without bound."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ParseError(f"YAML aliases are not accepted (alias *{clip(str(event.anchor), 40)} at {_mark(event)})")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise ParseError(f"YAML anchors are not accepted (&{clip(str(event.anchor), 40)} at {_mark(event)})")
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            raise ParseError(f"YAML tags are not accepted ({clip(str(tag), 60)} at {_mark(event)})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ParseError(f"the YAML nests lists or mappings more than {MAX_DEPTH} deep (at {_mark(event)})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _mark(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "unknown position"


def loads_yaml(text: str, what: str = "the document", *, limit: int = MAX_DOCUMENT_CHARS) -> Any:
    """One YAML document (JSON is YAML), size and flow-style depth checked first, with :class:`BoundedSafeLoader`."""
    check_size(text, what, limit)
    check_depth(text, what)
    try:
        return yaml.load(text, Loader=BoundedSafeLoader)
    except ParseError as exc:
        raise ParseError(f"{what}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1} column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        raise ParseError(f"{what} is neither JSON nor YAML ({clip(str(exc.problem or exc))}{where})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ParseError(f"{what} is neither JSON nor YAML ({clip(str(exc))})") from None


# ---------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------
def plan_nodes(value: Any, what: str = "the plan") -> list[Any]:
    """The raw node list of a parsed plan: a list, an object holding one under ``tasks`` (or ``plan``, ``nodes``,
    ``task_nodes``), or one bare node."""
    if isinstance(value, dict):
        for key in PLAN_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        if "task" in value:
            return [value]
        keys = ", ".join(clip(str(k), 40) for k in list(value)[:10]) or "none"
        raise ParseError(f"{what} is a JSON object without a 'tasks' list (keys: {keys})")
    if isinstance(value, list):
        return value
    raise ParseError(f"{what} must be a list of tasks, not {type(value).__name__}")


def parse_plan_reply(text: str | None) -> list[Any]:
    """The raw nodes of an LLM's planning reply (JSON, possibly fenced or inside prose)."""
    try:
        value = extract_json(text, "the plan")
    except JSONExtractError as exc:
        raise ParseError(f"the plan is not JSON ({exc})") from None
    return plan_nodes(value)


def parse_plan_text(text: str, what: str = "the plan") -> list[Any]:
    """The raw nodes of a plan written by a person or a program: JSON or YAML text, possibly in a code fence."""
    fenced = _FENCE.search(text) if len(text) <= MAX_DOCUMENT_CHARS else None
    body = fenced.group(1) if fenced else text
    if body.lstrip().startswith(("[", "{")):
        try:
            return plan_nodes(loads_json(body, what), what)
        except ParseError:
            pass  # YAML flow style is not always JSON: let the YAML reader say what is wrong
    return plan_nodes(loads_yaml(body, what), what)


def parse_plan_value(value: Any, what: str = "the plan") -> list[Any]:
    """The raw nodes of a plan given as a value: text (:func:`parse_plan_text`), a list, or an object."""
    if isinstance(value, str):
        return parse_plan_text(value, what)
    return plan_nodes(value, what)


def coerce_id(value: Any) -> int | None:
    """A plan id or dependency as an ``int``, or ``None`` when it is not one: an integer (not a bool), an integral
    float, or ASCII digits (an optional minus), within ``±MAX_ID``. ``"²"`` or ``"٣"`` are not ids."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _ID.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None or abs(number) > MAX_ID:
        return None
    return number


# ---------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------
def split_lines(text: str) -> list[str]:
    """The lines of a JSON-lines file: split on ``\\n`` only (``\\r`` before it dropped), never on the other
    characters ``str.splitlines`` treats as line ends (U+2028, U+0085, ...), which are legal inside JSON strings."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (``...`` where cut): what a message quotes."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# plans, as they stream
# ---------------------------------------------------------------------------
class PlanStreamParser:
    """Reads a planning reply as it arrives and hands out each task object as soon as it closes.

    :meth:`feed` takes the next piece of the reply and returns the raw task objects completed by it (each read by
    :func:`loads_json`, so bounded like any document). The task list is the first JSON list of the reply when the
    reply is a list, or the list under one of :data:`PLAN_KEYS` when it is an object; prose or a code fence around
    it is skipped. The parser only ever reads ahead: the whole reply, read by :func:`parse_plan_reply` once it has
    arrived, is what counts, and a caller compares what was handed out with it. Past :data:`MAX_DOCUMENT_CHARS` or
    :data:`MAX_DEPTH`, or at a task object that is not JSON, it stops handing out tasks (``stopped`` says why).
    """

    def __init__(self, limit: int = MAX_DOCUMENT_CHARS) -> None:
        self.limit = limit
        self.chars = 0
        self.stopped: str | None = None
        self.done = False  # the task list has closed
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False
        self._started = False
        self._list_level: int | None = None  # len(stack) inside the task list
        self._key: list[str] | None = None  # characters of a string at the top object's level
        self._last_key = ""
        self._node: list[str] | None = None  # characters of the task object being read
        self._handed = 0

    def feed(self, chunk: str) -> list[Any]:
        """The task objects that ``chunk`` completes, in order."""
        out: list[Any] = []
        if self.stopped or self.done or not chunk:
            return out
        self.chars += len(chunk)
        if self.chars > self.limit:
            self.stopped = f"the reply is longer than {self.limit} characters"
            return out
        for ch in chunk:
            if self._node is not None:
                self._node.append(ch)
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                    if self._key is not None:
                        self._last_key = "".join(self._key)
                        self._key = None
                elif self._key is not None and len(self._key) < 64:
                    self._key.append(ch)
                continue
            if not self._started:
                if ch not in "[{":
                    continue
                self._started = True
            if ch == '"':
                self._in_string = True
                self._escape = False
                if len(self._stack) == 1 and self._stack[0] == "{":
                    self._key = []
            elif ch in "[{":
                self._stack.append(ch)
                if len(self._stack) > MAX_DEPTH:
                    self.stopped = f"the reply nests lists or objects more than {MAX_DEPTH} deep"
                    return out
                level = len(self._stack)
                if self._list_level is None and ch == "[":
                    top_list = level == 1
                    under_key = level == 2 and self._stack[0] == "{" and self._last_key in PLAN_KEYS
                    if top_list or under_key:
                        self._list_level = level
                elif ch == "{" and self._list_level is not None and level == self._list_level + 1:
                    self._node = ["{"]
            elif ch in "]}":
                if not self._stack:
                    continue
                self._stack.pop()
                level = len(self._stack)
                if ch == "}" and self._node is not None and self._list_level is not None and level == self._list_level:
                    text, self._node = "".join(self._node), None
                    try:
                        out.append(loads_json(text, "a task of the plan"))
                    except ParseError as exc:
                        self.stopped = str(exc)
                        return out
                elif ch == "]" and self._list_level is not None and level == self._list_level - 1:
                    if self._handed or out:
                        self.done = True
                        self._handed += len(out)
                        return out
                    self._list_level = None  # an empty list, or prose in brackets: look further
                if not self._stack and self._list_level is None:
                    self._started = False  # a value that held no task list: look for the next one
        self._handed += len(out)
        return out
