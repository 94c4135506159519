"""A few thousand generated hostile documents fed to the plan parser and the batch reader: each ends in a plan or a
clear error of the parser's own types, within a time and a memory bound, with a short message."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Callable, Iterator

from tasks.batch_lines import parse_requests
from tasks.parsing import MAX_DOCUMENT_CHARS, ParseError, parse_plan_text
from tasks.plan import PlanValidationError, parse_plan, validate_plan
from tests.waiting import returns_within

SEED = 14
DOCUMENTS = 2000
ODD = ["\u2028", "\u2029", "\u0085", "\x00", "\ufeff", "\u202e", "²", "٣", "\U0001f600", "\x1b[31m", "\r", "\t"]
GOOD = [
    {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.png"}},
    {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
]
ODD_VALUES: list[object] = [None, True, 1.5, -1, 10**30, "²", "", [], {}, "x" * 5000, [[[[1]]]], {"a": {"b": {}}}]


def _deep(rng: random.Random) -> str:
    depth = rng.choice([65, 100, 1000, 50_000])
    kind = rng.randrange(5)
    if kind == 0:
        return "[" * depth + "]" * depth
    if kind == 1:
        return '{"a":' * depth + "1" + "}" * depth
    if kind == 2:
        return "".join("  " * i + "- \n" for i in range(min(depth, 300)))
    if kind == 3:
        return "".join("  " * i + "k:\n" for i in range(min(depth, 300)))
    return '{"tasks": ' + "[" * depth


def _alias(rng: random.Random) -> str:
    levels = rng.randint(2, 9)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


def _tag(rng: random.Random) -> str:
    return rng.choice(
        [
            "!!python/object/apply:os.system ['echo owned']",
            "- !!python/name:os.system\n",
            "tasks: !custom [1]",
            "- id: !!binary aGVsbG8=\n  task: x",
            "tasks:\n  - &anchor {id: 0}\n",
        ]
    )


def _huge(rng: random.Random) -> str:
    size = rng.choice([2_000, 20_000, 300_000, 2_000_000])
    filler = rng.choice(["x", "[", "\u2028", '"', "é"])
    return rng.choice(
        [
            json.dumps([{"id": 0, "task": filler * size, "dep": [], "args": {}}]),
            filler * size,
            '{"tasks": [' + ",".join(['{"id": 0}'] * (size // 10)) + "]}",
            "1" * size,
        ]
    )


def _odd_unicode(rng: random.Random) -> str:
    plan = json.loads(json.dumps(GOOD))
    node = rng.choice(plan)
    where = rng.randrange(3)
    odd = "".join(rng.choices(ODD, k=rng.randint(1, 5)))
    if where == 0:
        node["id"] = odd
    elif where == 1:
        node["task"] = node["task"] + odd
    else:
        node["args"] = {odd: odd}
    return json.dumps(plan, ensure_ascii=rng.random() < 0.5)


def _wrong_types(rng: random.Random) -> str:
    plan = json.loads(json.dumps(GOOD))
    node = rng.choice(plan)
    node[rng.choice(["id", "task", "dep", "args"])] = rng.choice(ODD_VALUES)
    shape = rng.randrange(4)
    if shape == 0:
        return json.dumps({"tasks": plan})
    if shape == 1:
        return json.dumps(rng.choice(ODD_VALUES))
    if shape == 2:
        return json.dumps({"tasks": rng.choice(ODD_VALUES)})
    return json.dumps(plan)


def _mutated(rng: random.Random) -> str:
    text = json.dumps({"tasks": GOOD})
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(3)
        pos = rng.randrange(len(chars))
        if op == 0:
            del chars[pos]
        elif op == 1:
            chars.insert(pos, rng.choice('[]{}":,&*!-\n' + "".join(ODD)))
        else:
            chars[pos] = rng.choice("0123456789abc[]{}")
    return "".join(chars)


GENERATORS: list[Callable[[random.Random], str]] = [_deep, _alias, _tag, _huge, _odd_unicode, _wrong_types, _mutated]


def _documents(count: int) -> Iterator[str]:
    rng = random.Random(SEED)
    for n in range(count):
        yield GENERATORS[n % len(GENERATORS)](rng)


def _plan_text(doc: str) -> None:
    validate_plan(parse_plan_text(doc))


def _plan_reply(doc: str) -> None:
    validate_plan(parse_plan(doc))


def _batch(doc: str) -> None:
    """Three lines: the document as a line, as a line's plan, as a line's request and id; each line must be read
    (a valid request) or refused with a short message: the batch reader never raises."""
    doc = doc[: MAX_DOCUMENT_CHARS + 1]  # longer ones are refused the same way, by their size
    lines = [doc, json.dumps({"request": "Rate: hi", "plan": doc}), json.dumps({"request": doc[:30_000], "id": doc})]
    refused = [p.error for p in parse_requests("\n".join(lines)) if not p.valid]
    if refused:
        longest = max(len(e or "") for e in refused)
        assert longest < 2000, f"a {longest}-character error"
        raise ParseError(refused[0] or "")


READERS: list[Callable[[str], None]] = [_plan_text, _plan_reply, _batch]


def _read(reader: Callable[[str], None], doc: str) -> bool:
    """Whether ``reader`` accepted ``doc``; a refusal must be one of the parser's errors, with a short message."""
    try:
        reader(doc)
    except (ParseError, PlanValidationError) as exc:
        assert len(str(exc)) < 2000, f"a {len(str(exc))}-character message for {doc[:80]!r}"
        return False
    return True


def test_hostile_documents_end_in_clear_errors_within_time() -> None:
    """Each reading ends: a document that makes a parser blow up (an alias bomb, deep nesting, a huge body) would
    hold it for far longer than the bound, which a busy machine does not come near (a document takes milliseconds)."""
    refused = accepted = 0
    for n, doc in enumerate(_documents(DOCUMENTS)):
        for reader in READERS:
            if returns_within(lambda reader=reader, doc=doc: _read(reader, doc), what=f"{reader.__name__} of #{n}"):
                accepted += 1
            else:
                refused += 1
    assert refused > DOCUMENTS * len(READERS) * 0.8, (refused, accepted)


def test_hostile_documents_end_in_clear_errors_within_memory() -> None:
    """A sample of each kind of document, traced: none may make the readers hold more than a few MB."""
    sample = [doc for n, doc in enumerate(_documents(DOCUMENTS)) if n % 100 < len(GENERATORS)]
    for doc in sample:
        tracemalloc.start()
        try:
            for reader in READERS:
                _read(reader, doc)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * len(doc) + 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for {doc[:80]!r}"
