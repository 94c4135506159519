"""The embedded controller: a tiny random Qwen2 instruct model, built here, answering the stages in process."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import torch

from flows.cli import main
from tasks.experts.cache import ModelCache
from tasks.llm import LLMClient
from tasks.local_llm import LocalChatModel, LocalLLMUnavailableError, bounded_schema, key_pattern
from tasks.plan import PLAN_SCHEMA, build_plan_messages
from tasks.schemas import RequestSpec
from tasks.select import SELECT_SCHEMA
from tasks.services import chat_model_for
from tasks.settings import Settings
from tests.llm_server import plan_json
from tests.tiny_controller import build_tiny_controller

SCHEMAS = {"plan": PLAN_SCHEMA, "select": SELECT_SCHEMA}
PROMPTS = [
    build_plan_messages("Caption photo.jpg, then read the caption aloud", ["photo.jpg"]),
    [{"role": "user", "content": "Pick a model for each task."}],
    [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "The dog runs in the park."}],
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: a model this small only waits on a second one (and on a busy machine, for long)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two tiny controllers with different random weights."""
    root = tmp_path_factory.mktemp("controllers")
    return {seed: build_tiny_controller(root / str(seed), seed=seed) for seed in (0, 1)}


@pytest.fixture(scope="module")
def controller_dir(controllers: dict[int, Path]) -> Path:
    return controllers[0]


#: With at most 2 items and 8 characters a string (or a key), the longest plan this schema allows is under 240
#: characters, so under 240 tokens: every reply closes.
MAX_NEW_TOKENS = 240


def _model(folder: Path, cache: ModelCache | None = None) -> LocalChatModel:
    cache = cache if cache is not None else ModelCache(2)
    return LocalChatModel(str(folder), max_new_tokens=MAX_NEW_TOKENS, cache=cache, max_items=2, max_length=8)


@pytest.mark.parametrize("stage", ["plan", "select"])
@pytest.mark.parametrize("seed", [0, 1])
def test_constrained_replies_match_their_schema(controllers: dict[int, Path], stage: str, seed: int) -> None:
    """Random weights, so unconstrained the model writes noise; constrained, every reply is JSON of the schema."""
    model = _model(controllers[seed])
    key = "tasks" if stage == "plan" else "choices"
    # the stage's schema, and the same with at least one item, so the model must write nodes or choices
    at_least_one = copy.deepcopy(SCHEMAS[stage])
    at_least_one["properties"][key]["minItems"] = 1
    for messages in PROMPTS:
        reply, usage = model.chat(messages, stage=stage, schema=SCHEMAS[stage])
        jsonschema.validate(json.loads(reply), SCHEMAS[stage])
        assert usage.calls == 1 and 0 < usage.completion_tokens <= MAX_NEW_TOKENS and usage.prompt_tokens > 0
        reply, _ = model.chat(messages, stage=stage, schema=at_least_one)
        value = json.loads(reply)
        jsonschema.validate(value, SCHEMAS[stage])
        assert 1 <= len(value[key]) <= 2 and all(len(v) <= 8 for item in value[key] for v in _strings(item))
    free, _ = model.chat(PROMPTS[1], stage="respond")
    with pytest.raises(ValueError):
        jsonschema.validate(json.loads(free), SCHEMAS[stage])


def test_the_embedded_controller_streams_its_reply_into_the_plan_parser(controller_dir: Path) -> None:
    """The pieces handed out while generating make the reply chat gives, and the incremental parser reads the tasks
    of a constrained plan from them as they come."""
    from tasks.parsing import PlanStreamParser

    model = _model(controller_dir)
    at_least_one = copy.deepcopy(SCHEMAS["plan"])
    at_least_one["properties"]["tasks"]["minItems"] = 1
    parser = PlanStreamParser()
    pieces: list[str] = []
    tasks: list[object] = []

    def on_text(text: str) -> None:
        pieces.append(text)
        tasks.extend(parser.feed(text))

    reply, usage = model.stream(PROMPTS[0], on_text=on_text, stage="plan", schema=at_least_one)
    assert "".join(pieces) == reply and len(pieces) > 1 and usage.calls == 1
    assert reply == model.chat(PROMPTS[0], stage="plan", schema=at_least_one)[0]  # greedy: the same reply
    assert tasks == json.loads(reply)["tasks"] and tasks


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_bounded_schema_bounds_what_has_no_bound() -> None:
    bounded = bounded_schema(PLAN_SCHEMA, max_items=4, max_length=20, max_int=9)
    node = bounded["properties"]["tasks"]["items"]
    assert bounded["properties"]["tasks"]["maxItems"] == 4
    assert node["properties"]["id"] == {"type": "integer", "minimum": -1, "maximum": 9}
    assert node["properties"]["dep"]["maxItems"] == 4 and node["properties"]["task"]["maxLength"] == 20
    args = node["properties"]["args"]
    assert args["maxProperties"] == 4 and args["additionalProperties"] is False
    assert args["patternProperties"] == {"^[A-Za-z_][A-Za-z0-9_-]{0,19}$": {"type": "string", "maxLength": 20}}
    assert key_pattern(8) == "^[A-Za-z_][A-Za-z0-9_-]{0,7}$"
    assert bounded["additionalProperties"] is False and node["additionalProperties"] is False
    assert PLAN_SCHEMA["properties"]["tasks"].get("maxItems") is None  # the stage's schema is left as it was


def test_loads_once_in_the_shared_model_cache(controller_dir: Path) -> None:
    cache = ModelCache(max_models=1)
    first, second = _model(controller_dir, cache), _model(controller_dir, cache)
    first.chat(PROMPTS[1], stage="select", schema=SELECT_SCHEMA)
    second.chat(PROMPTS[1], stage="select", schema=SELECT_SCHEMA)
    assert cache.stats()["loads"] == 1 and first.load_seconds > 0 and second.load_seconds == 0
    # an expert model loaded into the same cache takes the controller's place: one budget for both
    cache.get_or_load(("text-classification", "tiny/cls", None, "cpu"), lambda: object())
    assert ("controller", str(controller_dir), None, "cpu") not in cache


def test_the_settings_controller_shares_the_experts_cache(controller_dir: Path) -> None:
    from tasks.services import local_backend_for

    settings = Settings(local_llm=str(controller_dir), device="cpu", max_models=3)
    model = chat_model_for(settings)
    assert isinstance(model, LocalChatModel)
    assert model.cache is local_backend_for(settings).cache and model.cache.max_models == 3
    assert model.model == str(controller_dir) and model.max_new_tokens == settings.local_llm_max_new_tokens


def test_missing_weights_say_what_to_set(tmp_path: Path) -> None:
    model = LocalChatModel(str(tmp_path / "nowhere"), cache=ModelCache(1))
    with pytest.raises(LocalLLMUnavailableError) as caught:
        model.chat(PROMPTS[1])
    message = str(caught.value)
    assert "OPENAI_API_KEY" in message and "OPENAI_BASE_URL" in message and "HUGGINGGPT_LOCAL_LLM" in message


def test_cli_offline_without_the_weights_says_once_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Hub out of reach (HF_HUB_OFFLINE=1 for the suite), the default model not in an empty Hugging Face cache."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("HUGGINGGPT_LOCAL_LLM", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no .env here
    assert main(["run", "Describe photo.jpg"]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("hugginggpt: ")]
    assert len(problems) == 1 and "Traceback" not in err
    assert "Qwen/Qwen2.5-0.5B-Instruct cannot be loaded" in problems[0] and "Hub cannot be reached" in problems[0]
    for setting in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUGGINGGPT_LOCAL_LLM"):
        assert setting in problems[0]


@pytest.fixture
def local_env(controller_dir: Path, tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No LLM endpoint; the tiny controller, the tiny catalog and a fresh storage folder."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("HUGGINGGPT_LOCAL_LLM", str(controller_dir))
    monkeypatch.setenv("HUGGINGGPT_LOCAL_LLM_MAX_NEW_TOKENS", "160")
    monkeypatch.setenv("HUGGINGGPT_DEVICE", "cpu")
    monkeypatch.setenv("HUGGINGGPT_CATALOG", str(tiny_catalog))
    monkeypatch.setenv("HUGGINGGPT_STORAGE", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.mark.usefixtures("prefect_server")
def test_whole_request_through_the_embedded_controller(
    local_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI with no LLM configured: the embedded controller plans (valid on the first call: the plan contract is
    decoded), selects and answers, and the summary counts every call it made."""
    assert isinstance(chat_model_for(Settings()), LocalChatModel)
    made: list[str] = []
    real_stream = LocalChatModel.stream

    def counted(self: LocalChatModel, messages: list, **kwargs: object) -> tuple[str, object]:
        made.append(str(kwargs.get("stage")))  # every call, streamed (planning) or not (chat streams to nowhere)
        return real_stream(self, messages, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalChatModel, "stream", counted)
    code = main(["run", "Is this positive: what a lovely day", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert captured.err.count("controller: ") == 1 and "embedded" in captured.err and "OPENAI_API_KEY" in captured.err
    summary = json.loads(captured.out)
    assert summary["error"] is None and summary["status"] == "completed"
    assert made.count("plan") == 1 and made[-1] == "respond"  # no re-ask
    assert summary["llm"]["calls"] == len(made) and summary["llm"]["completion_tokens"] > 0
    assert summary["answer"]


@pytest.mark.usefixtures("prefect_server")
def test_selection_and_answer_through_the_embedded_controller(local_env: Path) -> None:
    """An explicit plan whose task has two runnable candidates: the controller's constrained selection reply is
    read (a choice, or no choice: either way parsed, never a parse failure), the node runs, the controller answers."""
    from flows.request import run_request
    from tasks.plan import validate_plan

    nodes, _ = validate_plan(
        json.loads(plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "Great!"}}))[
            "tasks"
        ]
    )
    summary = run_request(RequestSpec(request="Is 'Great!' positive?", plan=nodes))
    assert summary.error is None and [r.status for r in summary.results] == ["completed"]
    (assignment,) = summary.assignments
    assert len(assignment.candidates) == 2 and "selection by the LLM failed" not in assignment.reason
    assert summary.llm.calls == 2  # selection and the answer


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.llm_http  # the endpoint the environment names
def test_a_configured_endpoint_wins(env: Path, llm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With OPENAI_BASE_URL set, every stage goes to it, whatever HUGGINGGPT_LOCAL_LLM says."""
    from flows.request import run_request

    monkeypatch.setenv("HUGGINGGPT_LOCAL_LLM", str(tmp_path / "never-loaded"))
    assert isinstance(chat_model_for(Settings()), LLMClient)
    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "Great!"}}),
        respond="Positive.",
    )
    summary = run_request("Is 'Great!' positive?")
    assert summary.error is None and summary.answer == "Positive."
    assert llm.calls["plan"] == 1 and llm.calls["select"] == 1 and llm.calls["respond"] == 1


def test_eval_llm_local_uses_the_embedded_controller_whatever_is_configured(
    llm, controller_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUGGINGGPT_LOCAL_LLM", str(controller_dir))
    monkeypatch.setenv("HUGGINGGPT_LOCAL_LLM_MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))
    out = tmp_path / "report.json"
    code = main(["eval", "--llm", "local", "--limit", "1", "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    report = json.loads(captured.out)
    assert report["llm_model"] == str(controller_dir) and report["llm_base_url"] == "in-process (transformers)"
    assert report["overall"]["requests"] == 1 and report["usage"]["calls"] >= 1
    assert sum(llm.calls.values()) == 0  # the configured endpoint was not asked
    assert captured.err.count("controller: ") == 1
