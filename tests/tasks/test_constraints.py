"""Replies valid by construction: the plan contract and the selection schema, decoded by random weights."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import torch

from tasks.constraints import (
    CONTRACT_KEY,
    PlanContract,
    PlanSteps,
    contract_of,
    fit_strings,
    for_endpoint,
    plan_schema,
    selection_schema,
    worst_case_bytes,
)
from tasks.experts.cache import ModelCache
from tasks.llm import FunctionModel, LLMClient, scripted
from tasks.local_llm import ContractLogitsProcessor, LocalChatModel, load_controller
from tasks.plan import (
    MAX_CONTRACT_NODES,
    parse_plan,
    plan_reply_schema,
    plan_request,
    validate_plan,
)
from tasks.select import _parse_choices
from tasks.settings import Settings
from tasks.task_types import EXECUTABLE_TASKS, TASK_TYPES
from tests.llm_server import plan_json
from tests.tiny_controller import build_tiny_controller

REQUESTS = [
    ("Caption photo.jpg, then read the caption aloud", ["photo.jpg"]),
    ("Is this positive: what a lovely day", []),
    ("Transcribe talk.wav and translate it into French", ["talk.wav"]),
    ("Draw a cat, then say what the drawing shows and how deep it is", []),
    ("Compare photo.jpg and scan.png, and read scan.png's title", ["photo.jpg", "scan.png"]),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("controllers")
    return {seed: build_tiny_controller(root / str(seed), seed=seed) for seed in (0, 1, 2)}


def _random_plan(grammar_tokenizer, contract: PlanContract, rng: random.Random, budget: int) -> tuple[str, int]:
    """Decode one plan with random scores at every step (any token the contract allows may come): the text and
    the tokens it took."""
    processor = ContractLogitsProcessor(PlanSteps(contract), grammar_tokenizer, 0, budget)
    generated: list[int] = []
    vocab = grammar_tokenizer.vocab_size
    eos = grammar_tokenizer.eos_token
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    # closing the plan is one choice against many: make it rarer, so that the walks write nodes
    closing = torch.tensor([grammar_tokenizer.decode_bytes([t]).startswith(b"]") for t in range(vocab)])
    for _ in range(budget):
        scores = torch.rand((1, vocab), generator=gen) - 0.7 * closing
        masked = processor(torch.tensor([generated], dtype=torch.long), scores)
        token = int(masked.argmax())
        assert masked[0, token] != float("-inf"), "the contract allowed no token"
        if token == eos:
            break
        generated.append(token)
    return grammar_tokenizer.decode_str(generated), len(generated)


def test_random_decoding_always_gives_a_valid_plan_within_the_budget(controllers: dict[int, Path]) -> None:
    """Property: whatever tokens a model prefers, the reply is a plan the validator accepts as it is (no repair),
    closed within the tokens allowed, over many seeds, requests, task sets and budgets."""
    grammar_tokenizer = load_controller(str(controllers[0]), "cpu").grammar_tokenizer
    rng = random.Random(22)
    tasks = sorted(EXECUTABLE_TASKS)
    nodes_seen = 0
    for _ in range(100):
        request, inputs = rng.choice(REQUESTS)
        allowed = tuple(rng.sample(tasks, rng.randint(1, len(tasks))))
        budget = rng.choice([8, 40, 120, 400])
        contract = PlanContract(allowed=allowed, inputs=tuple(inputs), max_nodes=rng.randint(0, 5), max_text=24)
        text, used = _random_plan(grammar_tokenizer, contract, rng, budget)
        assert used < budget  # closed, the end-of-sequence token included
        raw = parse_plan(text)
        nodes, repairs = validate_plan(raw, inputs=inputs, request=request, allowed=allowed)
        assert repairs == [] and [n["id"] for n in raw] == list(range(len(raw))) and len(raw) <= contract.max_nodes
        for node in raw:
            refs = [int(v.removeprefix("<GENERATED>-")) for v in node["args"].values() if v.startswith("<GEN")]
            assert set(refs) <= set(node["dep"])  # a reference only to a node in dep
        nodes_seen += len(nodes)
    assert nodes_seen > 60  # the walks did write plans, not only empty ones


def test_list_layout_is_huggingpts_format(controllers: dict[int, Path]) -> None:
    grammar_tokenizer = load_controller(str(controllers[0]), "cpu").grammar_tokenizer
    contract = PlanContract(allowed=("image-to-text", "text-to-speech"), inputs=("photo.jpg",), layout="list")
    for seed in range(6):
        text, _ = _random_plan(grammar_tokenizer, contract, random.Random(seed), 300)
        raw = json.loads(text)
        assert isinstance(raw, list)
        assert all(list(node) == ["task", "id", "dep", "args"] for node in raw)
        validate_plan(raw, inputs=["photo.jpg"], request="Caption photo.jpg", allowed=contract.allowed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_controller_plans_and_selects_validly_on_the_first_call(controllers: dict[int, Path], seed: int) -> None:
    """The embedded controller with random weights: every planning reply is valid on the first call, and every
    selection reply names one candidate of each node."""
    model = LocalChatModel(str(controllers[seed]), max_new_tokens=200, cache=ModelCache(2), max_items=3, max_length=12)
    for request, inputs in REQUESTS[:4]:
        result = plan_request(model, request, inputs=inputs)
        assert result.attempts == 1 and result.repairs == []
    pending = [(0, ["org/a", "org/b", "org/c"]), (3, ["x/one", "x/two"])]
    schema = selection_schema(pending)
    for request, _ in REQUESTS[:3]:
        reply, _ = model.chat([{"role": "user", "content": request}], stage="select", schema=schema)
        jsonschema.validate(json.loads(reply), schema)
        choices = _parse_choices(reply)
        assert set(choices) == {0, 3} and choices[0][0] in pending[0][1] and choices[3][0] in pending[1][1]


def test_plan_schema_for_an_endpoint() -> None:
    schema = plan_reply_schema(["image-to-text", "translation"], ["photo.jpg"])
    assert contract_of(schema) == PlanContract(
        allowed=("translation", "image-to-text"), inputs=("photo.jpg",), max_nodes=MAX_CONTRACT_NODES
    )
    sent = for_endpoint(schema)
    assert sent is not None and CONTRACT_KEY not in sent
    good = {"tasks": [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.jpg"}}]}
    jsonschema.validate(good, sent)
    for bad in (
        {"tasks": [{"id": 0, "task": "image-to-poem", "dep": [-1], "args": {"image": "photo.jpg"}}]},
        {"tasks": [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"picture": "photo.jpg"}}]},
        {"tasks": [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "other.jpg"}}]},
        {"tasks": [{"id": 0, "task": "translation", "dep": [-1], "args": {"target_language": "French"}}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, sent)
    assert for_endpoint(plan_reply_schema(["translation"], [], endpoint_schema=False)) is None


@pytest.mark.llm_http  # what the OpenAI client sends on the wire
def test_endpoint_is_sent_the_schema_without_the_contract(llm) -> None:
    llm.set(plan=plan_json({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.jpg"}}))
    plan_request(LLMClient(Settings()), "Caption photo.jpg", inputs=["photo.jpg"], allowed=["image-to-text"])
    sent = llm.stage_requests("plan")[-1]["response_format"]["json_schema"]["schema"]
    assert CONTRACT_KEY not in sent and sent["properties"]["tasks"]["items"]["anyOf"][0]["properties"]["task"] == {
        "const": "image-to-text"
    }


def test_stages_send_their_request_specific_schemas() -> None:
    model = FunctionModel(
        scripted(plan=plan_json({"id": 0, "task": "translation", "dep": [-1], "args": {"text": "x"}}))
    )
    plan_request(model, "Translate x", allowed=["translation"])
    contract = contract_of(model.calls[0].schema)
    assert contract is not None and contract.allowed == ("translation",) and contract.inputs == ()


def test_strings_fit_the_token_budget() -> None:
    schema = selection_schema([(0, ["a/b"]), (1, ["c/d", "e/f"])], max_reason=400)
    assert worst_case_bytes(schema) > 2000
    fitted = fit_strings(schema, 300, cap=400)
    assert worst_case_bytes(fitted) <= 300 < worst_case_bytes(fit_strings(schema, 10**6, cap=400))
    reasons = [c["properties"]["reason"]["maxLength"] for c in fitted["properties"]["choices"]["prefixItems"]]
    assert reasons[0] == reasons[1] > 10


def test_a_plan_needing_a_file_it_was_not_given_depends_on_a_producer() -> None:
    """No file given: an image task may only come after a node that makes an image, and must depend on it."""
    steps = PlanSteps(PlanContract(allowed=("image-to-text", "text-to-image"), max_nodes=3))
    first = steps.grammar(400)
    assert "image-to-text" not in first and "text-to-image" in first
    steps.advance('{"tasks": [{"id": 0, "task": "text-to-image", "dep": [-1]')
    steps.advance(', "args": {"text": "a cat"}}')
    second = steps.grammar(400)
    assert "image-to-text" in second
    steps.advance(', {"id": 1, "task": "image-to-text", "dep": [0]')
    assert '\\"<GENERATED>-0\\"' in steps.grammar(400)  # its image: node 0's


def test_plan_schema_lists_every_allowed_task() -> None:
    schema = plan_schema(sorted(EXECUTABLE_TASKS))
    names = [b["properties"]["task"]["const"] for b in schema["properties"]["tasks"]["items"]["anyOf"]]
    assert sorted(names) == sorted(EXECUTABLE_TASKS) and all(n in TASK_TYPES for n in names)
