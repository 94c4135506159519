"""A chat template rendered as the untrusted code it is: sandboxed, bounded in time and size, its errors clear.

A model's ``chat_template.jinja`` comes with its weights, from the Hub or a folder: a template can loop for hours
(``{% for i in range(100000) %}{% for j in range(100000) %}...``), build a string of gigabytes, or stop with
``raise_exception``. :func:`render_chat_prompt` renders it in Jinja's immutable sandbox (the environment transformers
renders chat templates in, with its filters and globals) where every call, every step of ``range``, every ``*`` and
``**`` and every piece of output checks a deadline and a size bound; the whole rendering also runs within
:func:`tasks.timebound.within`, so the caller gets its answer on time whatever the template does.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from tasks import timebound

#: The longest prompt a template may render, in characters (far beyond any small model's context).
MAX_PROMPT_CHARS = 4_000_000


class ChatTemplateError(ValueError):
    """The chat template failed, ran past its time, or rendered more than it may; the message says which."""


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with a deadline and a size bound checked at every call, ``range`` step, repetition
    and power."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, deadline: float, max_chars: int, **options: Any) -> None:
        super().__init__(**options)
        self.deadline = deadline
        self.max_chars = max_chars
        self.globals["range"] = self._range

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError("the chat template ran past its time")

    def _range(self, *args: Any) -> Iterator[int]:
        for value in safe_range(*args):
            self.check()
            yield value

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.check()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        self.check()
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError(f"the chat template raises to the power {right}")
            return operator.pow(left, right)
        for sequence, times in ((left, right), (right, left)):
            if (
                isinstance(sequence, str | list | tuple)
                and isinstance(times, int)
                and len(sequence) * times > self.max_chars
            ):
                raise SecurityError(f"the chat template repeats {len(sequence)} items {times} times")
        return operator.mul(left, right)


def _environment(deadline: float, max_chars: int) -> _BoundedSandbox:
    """The bounded sandbox with what transformers gives chat templates (its extensions such as ``{% generation %}``,
    ``raise_exception``, ``strftime_now``, its ``tojson``), taken from the environment transformers compiles the
    template in."""
    extensions: list[Any] = ["jinja2.ext.loopcontrols"]
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        # an empty template: compiling this one there would fold its constants (``'x' * 10**9``) unbounded
        base = _compile_jinja_template("").environment
    except (ImportError, AttributeError):  # pragma: no cover - a transformers without it: the sandbox's own
        base = None
    if base is not None:
        extensions = [type(extension) for extension in base.extensions.values()]
    env = _BoundedSandbox(deadline, max_chars, trim_blocks=True, lstrip_blocks=True, extensions=extensions)
    if base is not None:
        env.filters.update(base.filters)
        env.globals.update({k: v for k, v in base.globals.items() if k != "range"})
    return env


def _render(
    template: str, context: Mapping[str, Any], deadline: float, max_chars: int
) -> str:  # runs in the bounded thread
    env = _environment(deadline, max_chars)
    compiled = env.from_string(template)
    pieces: list[str] = []
    size = 0
    for piece in compiled.generate(**context):
        env.check()
        size += len(piece)
        if size > max_chars:
            raise SecurityError(f"the chat template rendered more than {max_chars:,} characters")
        pieces.append(piece)
    return "".join(pieces)


def render_chat_prompt(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    seconds: float,
    what: str = "the chat template",
    max_chars: int = MAX_PROMPT_CHARS,
) -> str:
    """The prompt ``tokenizer``'s chat template renders for ``messages`` with the generation prompt, as
    ``tokenizer.apply_chat_template(..., tokenize=False)`` would, within ``seconds`` and ``max_chars``. Raises
    :class:`ChatTemplateError` naming ``what`` when the template fails (``raise_exception``, a syntax error, an
    unsafe operation), runs past ``seconds`` or renders more than ``max_chars``."""
    try:
        template = tokenizer.get_chat_template()
    except ValueError as exc:
        raise ChatTemplateError(f"{what}: {exc}") from None
    context = {
        **dict(getattr(tokenizer, "special_tokens_map", {}) or {}),
        "messages": [dict(m) for m in messages],
        "tools": None,
        "documents": None,
        "add_generation_prompt": True,
    }
    deadline = time.monotonic() + seconds

    def timed_out() -> ChatTemplateError:
        return ChatTemplateError(f"{what} did not render within {seconds:g} s (HUGGINGGPT_LLM_TIMEOUT)")

    try:
        return timebound.within(seconds, lambda: _render(template, context, deadline, max_chars), what, timed_out)
    except ChatTemplateError:
        raise
    except SecurityError as exc:
        if time.monotonic() > deadline:
            raise timed_out() from None
        raise ChatTemplateError(f"{what} was stopped: {exc}") from None
    except jinja2.TemplateError as exc:  # raise_exception("..."), a syntax error, an undefined name
        raise ChatTemplateError(f"{what} failed: {type(exc).__name__}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
        raise ChatTemplateError(f"{what} failed: {type(exc).__name__}: {exc}") from None
