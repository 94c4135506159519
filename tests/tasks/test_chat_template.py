"""The embedded controller's chat template is untrusted code: rendered sandboxed, within HUGGINGGPT_LLM_TIMEOUT and a
size bound, its failures a clear error; and the whole generation is bounded by the same timeout."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tasks.chat_template import ChatTemplateError, render_chat_prompt
from tasks.experts.cache import ModelCache
from tasks.llm import LLMError
from tasks.local_llm import LocalChatModel
from tests.tiny_controller import build_tiny_controller

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Caption photo.jpg"}]
LOUD_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
QUIET_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_controller(tmp_path_factory.mktemp("controller") / "ctl")


def _with_template(controller: Path, root: Path, template: str) -> Path:
    folder = root / "hostile"
    shutil.copytree(controller, folder)
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _bounded(call: Callable[[], Any]) -> BaseException | Any:
    """``call()``'s outcome, waited for at most a minute (a hang is a failure, not a stuck suite)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert "value" in outcome, "the call did not return within its bound"
    return outcome["value"]


def test_rendering_is_what_transformers_renders(controller: Path, tmp_path: Path) -> None:
    tokenizer = _tokenizer(controller)
    expected = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert render_chat_prompt(tokenizer, MESSAGES, seconds=30) == expected
    # transformers' globals, filters and special tokens are there too
    rich = (
        "{{ bos_token or '' }}{% for m in messages %}{{ m | tojson }}{% if m.role == 'tool' %}"
        "{{ raise_exception('no tools') }}{% endif %}{% endfor %}{{ strftime_now('%Y') | length }}"
    )
    folder = _with_template(controller, tmp_path, rich)
    rich_tokenizer = _tokenizer(folder)
    expected = rich_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert render_chat_prompt(rich_tokenizer, MESSAGES, seconds=30) == expected


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ('{{ raise_exception("boom") }}', "failed: TemplateError: boom"),
        ("{% for m in messages %}{{ m.content", "failed: TemplateSyntaxError"),
        ("{{ 'x' * 10**9 }}", "was stopped: the chat template repeats 1 items 1000000000 times"),
        ("{{ ().__class__.__base__.__subclasses__() }}", "was stopped: access to attribute '__class__'"),
        (LOUD_LOOP, "did not render within 1 s (HUGGINGGPT_LLM_TIMEOUT)"),
        (QUIET_LOOP, "did not render within 1 s (HUGGINGGPT_LLM_TIMEOUT)"),
    ],
)
def test_hostile_templates_end_in_a_clear_error(controller: Path, tmp_path: Path, template: str, said: str) -> None:
    tokenizer = _tokenizer(_with_template(controller, tmp_path, template))
    outcome = _bounded(lambda: render_chat_prompt(tokenizer, MESSAGES, seconds=1, what="the template"))
    assert isinstance(outcome, ChatTemplateError), outcome
    assert said in str(outcome)


def test_controller_call_with_a_hostile_template_is_an_llm_error(controller: Path, tmp_path: Path) -> None:
    folder = _with_template(controller, tmp_path, LOUD_LOOP)
    model = LocalChatModel(str(folder), max_new_tokens=8, timeout=1, cache=ModelCache(1))
    outcome = _bounded(lambda: model.chat(MESSAGES, stage="plan"))
    assert isinstance(outcome, LLMError), outcome
    assert "did not render within 1 s (HUGGINGGPT_LLM_TIMEOUT)" in str(outcome) and outcome.usage.calls == 1


def test_generation_is_bounded_by_the_llm_timeout(controller: Path) -> None:
    """A model that takes longer than the timeout for each token: the call ends with an error once the time is
    spent, after the token under way, instead of going on for every token it may generate."""
    model = LocalChatModel(str(controller), max_new_tokens=10_000, timeout=1, cache=ModelCache(1))
    loaded = model.loaded().value.model

    def slow(module: Any, args: Any, output: Any) -> Any:
        deadline = time.monotonic() + 0.5  # each forward pass takes half the timeout
        while time.monotonic() < deadline:
            threading.Event().wait(0.05)
        return output

    handle = loaded.register_forward_hook(slow)
    try:
        outcome = _bounded(lambda: model.chat([{"role": "user", "content": "hi"}]))
    finally:
        handle.remove()
    assert isinstance(outcome, LLMError), outcome
    assert "not finished within 1 s (HUGGINGGPT_LLM_TIMEOUT)" in str(outcome)


def test_cli_plan_with_a_raising_template_says_so_without_a_traceback(
    controller: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = _with_template(controller, tmp_path, '{{ raise_exception("boom") }}')
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUGGINGGPT_LOCAL_LLM", str(folder))
    monkeypatch.setenv("HUGGINGGPT_LLM_TIMEOUT", "5")
    assert main(["plan", "Is this positive: I love it"]) == 1
    err = capsys.readouterr().err
    assert "the chat template of the embedded controller" in err and "TemplateError: boom" in err
    assert "Traceback" not in err
