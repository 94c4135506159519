from __future__ import annotations

import json
from pathlib import Path

import pytest

from models_catalog.build_catalog import convert_record, trim_description
from models_catalog.catalog import (
    DEFAULT_CATALOG_PATH,
    RECOMMENDED_PATH,
    Catalog,
    CatalogEntry,
    CatalogError,
    load_catalog,
    read_catalog_file,
)
from tasks.availability import Availability
from tasks.constraints import selection_schema
from tasks.llm import FunctionModel, LLMClient, LLMError, scripted
from tasks.schemas import PlanNode, RequestSpec
from tasks.select import SelectionError, check_pins, parse_pins, select_models
from tasks.settings import RunOptions, Settings
from tasks.task_types import NOT_SERVED_LOCALLY, TASK_TYPES
from tests.paths import REFERENCE
from tests.tiny_models import build_tiny_models

REF = REFERENCE / "jarvis_p0_models.jsonl"


def _entries(tmp_path: Path) -> Catalog:
    folder = tmp_path / "weights"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    summarizer = tmp_path / "summarizer"
    summarizer.mkdir(exist_ok=True)
    (summarizer / "config.json").write_text('{"model_type": "bart"}')  # proven for summarization, as bert is not
    return Catalog(
        [
            CatalogEntry(id="a/cls-popular", task="text-classification", downloads=900, local_path=str(folder)),
            CatalogEntry(id="b/cls-liked", task="text-classification", downloads=100, likes=50, local_path=str(folder)),
            CatalogEntry(id="c/cls-gone", task="text-classification", downloads=5000, local_path=str(tmp_path / "no")),
            CatalogEntry(id="d/sum", task="summarization", downloads=1, local_path=str(summarizer)),
            CatalogEntry(id="e/hub-only", task="translation", downloads=10**6, architecture="t5", params=10**8),
        ]
    )


def _available(tmp_path: Path, catalog: Catalog | None = None, **settings: object) -> Availability:
    """What production selection uses (``select_task``): the availability of these settings over ``catalog``."""
    options: dict[str, object] = {"hub_info_cache": tmp_path / "hub-info"}
    options.update(settings)
    return Availability(Settings(**options), catalog if catalog is not None else _entries(tmp_path))


NODES = [
    PlanNode(id=0, task="text-classification", args={"text": "great"}),
    PlanNode(id=1, task="summarization", args={"text": "long"}),
    PlanNode(id=2, task="text-classification", args={"text": "bad"}),
]


def test_builtin_catalog_is_the_recommended_tier_over_the_hub_snapshot() -> None:
    catalog = load_catalog()
    snapshot = read_catalog_file(DEFAULT_CATALOG_PATH)
    recommended = read_catalog_file(RECOMMENDED_PATH)
    assert len(snapshot) == 673 and {e.tier for e in recommended} == {"recommended"}
    assert len(catalog) == len({(e.task, e.id) for e in [*snapshot, *recommended]})
    entry = catalog.get("image-to-text", "nlpconnect/vit-gpt2-image-captioning")
    assert entry is not None and entry.tier == "recommended" and entry.architecture == "vision-encoder-decoder"
    # recommended first, in the tier's own order; the 2023 entries follow by downloads
    assert [e.id for e in catalog.ranked("text-to-speech")[:2]] == ["facebook/mms-tts-eng", "microsoft/speecht5_tts"]
    conversational = [e.id for e in catalog.ranked("conversational")]
    assert conversational[:2] == ["Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct"]
    assert conversational.index("PygmalionAI/pygmalion-6b") == 2, "the long tail keeps its download order"
    # wrong library labels of the snapshot are fixed
    assert catalog.get("automatic-speech-recognition", "pyannote/speaker-diarization").library == "pyannote-audio"
    assert catalog.get("text-to-video", "damo-vilab/text-to-video-ms-1.7b").library == "diffusers"


def test_every_task_type_has_a_recommended_model_that_fits_a_cpu_or_is_remote_only() -> None:
    recommended = read_catalog_file(RECOMMENDED_PATH)
    by_task: dict[str, list[CatalogEntry]] = {}
    for entry in recommended:
        by_task.setdefault(entry.task, []).append(entry)
    assert set(by_task) == set(TASK_TYPES)
    for task, entries in by_task.items():
        assert 1 <= len(entries) <= 7, task
        for entry in entries:
            if task in NOT_SERVED_LOCALLY:
                assert entry.library != "transformers", f"{entry.id} is remote-only: its library must say so"
                continue
            assert entry.library == "transformers" and entry.architecture, entry.id
            assert entry.params is not None and entry.params <= 10**9, f"{entry.id} is too large for a CPU"
    layoutlm = next(e for e in recommended if e.id == "impira/layoutlm-document-qa")
    assert layoutlm.requires == ["pytesseract", "bin:tesseract"]
    assert next(e for e in recommended if e.id == "facebook/detr-resnet-50").revision == "no_timm"


@pytest.mark.skipif(not REF.exists(), reason="reference data not beside the project")
def test_builtin_catalog_matches_its_build_from_the_reference() -> None:
    raws = [json.loads(line) for line in REF.open(encoding="utf-8") if line.strip()]
    built = {(e.task, e.id): e for e in map(convert_record, raws)}
    shipped = {(e.task, e.id): e for e in read_catalog_file(DEFAULT_CATALOG_PATH)}
    assert built == shipped


def test_trim_description_drops_markup() -> None:
    text = "## Model\n\n![img](x.png) See [the paper](http://x) <b>now</b>.\n```python\nimport x\n```\nDone."
    assert trim_description(text) == "Model See the paper now . Done."


def test_extra_catalog_overrides_and_adds(tmp_path: Path) -> None:
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        json.dumps({"id": "nlpconnect/vit-gpt2-image-captioning", "task": "image-to-text", "local_path": "w"})
        + "\n"
        + json.dumps({"id": "me/new", "task": "image-to-text"})
        + "\n"
    )
    catalog = load_catalog(extra)
    assert catalog.get("image-to-text", "nlpconnect/vit-gpt2-image-captioning").local_path == str(tmp_path / "w")
    assert catalog.get("image-to-text", "me/new") is not None
    assert len(catalog) == len(load_catalog()) + 1


def test_broken_catalog_line_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "x", "task": "summarization"}\n{"id": "y", "task": \n')
    with pytest.raises(CatalogError, match=r"bad.jsonl:2: not valid JSON"):
        read_catalog_file(path)
    path.write_text('{"id": "x"}\n')
    with pytest.raises(CatalogError, match=r"bad.jsonl:1: not a catalog entry \(task: Field required\)"):
        read_catalog_file(path)


def test_runnable_candidates_are_ranked_and_missing_weights_dropped(tmp_path: Path) -> None:
    kept, checks = _available(tmp_path).runnable("text-classification")
    assert [(e.id, backend) for e, backend in kept] == [("a/cls-popular", "local"), ("b/cls-liked", "local")]
    gone = next(c for c in checks if c.model == "c/cls-gone")
    assert gone.backend is None and f"the local weights folder {tmp_path / 'no'} does not exist" in gone.reason


def test_hub_only_models_unavailable_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    kept, checks = _available(tmp_path).runnable("translation")
    assert kept == [] and "no local weights and the Hub is offline" in checks[0].reason
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    kept, checks = _available(tmp_path).runnable("translation")
    assert [(e.id, b) for e, b in kept] == [("e/hub-only", "local")]
    assert checks[0].reason == "t5, 100,000,000 params, weights downloadable from the Hub"


def test_one_llm_call_for_all_nodes_with_several_candidates(tmp_path: Path) -> None:
    reply = json.dumps(
        {
            "choices": [
                {"id": 0, "model": "b/cls-liked", "reason": "liked by users"},
                {"id": 2, "model": "a/cls-popular", "reason": "most downloaded"},
            ]
        }
    )
    model = FunctionModel(scripted(select=reply))
    result = select_models(NODES, _available(tmp_path), llm=model, request="r", top_k=5)
    assert [c.stage for c in model.calls] == ["select"] and model.calls[0].schema == selection_schema(
        [(0, ["a/cls-popular", "b/cls-liked"]), (2, ["a/cls-popular", "b/cls-liked"])]
    )
    by_node = {a.node_id: a for a in result.assignments}
    assert by_node[0].model == "b/cls-liked" and by_node[0].reason == "liked by users"
    assert by_node[0].candidates == ["a/cls-popular", "b/cls-liked"]
    assert by_node[1].model == "d/sum" and by_node[1].reason == "the only runnable candidate"
    assert by_node[2].model == "a/cls-popular"
    asked = model.calls[0].messages[-1]["content"]
    assert '"id": 0' in asked and '"id": 2' in asked and "d/sum" not in asked
    assert result.usage.calls == 1


def test_no_llm_call_when_every_node_has_one_candidate(tmp_path: Path) -> None:
    model = FunctionModel(scripted())
    result = select_models(NODES[1:2], _available(tmp_path), llm=model, request="r")
    assert model.calls == [] and result.assignments[0].model == "d/sum"


def _fails(call: object) -> str:
    raise LLMError("the LLM at http://127.0.0.1 answered HTTP 500: scripted failure")


def test_choice_outside_candidates_and_llm_failure_take_top_ranked(tmp_path: Path) -> None:
    stray = json.dumps({"choices": [{"id": 0, "model": "https://evil.example/model", "reason": "x"}]})
    result = select_models(NODES[:1], _available(tmp_path), llm=FunctionModel(scripted(select=stray)), request="r")
    assert result.assignments[0].model == "a/cls-popular"
    assert "not a candidate" in result.assignments[0].reason
    result = select_models(NODES[:1], _available(tmp_path), llm=FunctionModel(_fails), request="r")
    assert result.assignments[0].model == "a/cls-popular"
    assert "selection by the LLM failed" in result.assignments[0].reason and "HTTP 500" in result.assignments[0].reason


def test_pins(tmp_path: Path) -> None:
    model = FunctionModel(scripted())
    available = _available(tmp_path)
    result = select_models(
        NODES, available, llm=model, request="r", pins=parse_pins(["Text_Classification=b/cls-liked"])
    )
    assert {a.model for a in result.assignments if a.task == "text-classification"} == {"b/cls-liked"}
    assert result.assignments[0].reason == f"pinned by the user (bert, size unknown, weights in {tmp_path / 'weights'})"
    with pytest.raises(SelectionError, match="summarization=nobody/x: not in the catalog for task 'summarization'"):
        select_models(NODES, available, llm=model, request="r", pins={"summarization": "nobody/x"})
    with pytest.raises(SelectionError, match="pins task\\(s\\) depth-estimation that the plan does not use"):
        select_models(NODES, available, llm=model, request="r", pins={"depth-estimation": "x/y"})
    with pytest.raises(SelectionError, match="TASK=MODEL_ID or TASK=FOLDER"):
        parse_pins(["image-to-text"])


def test_a_folder_of_weights_is_pinned_without_a_catalog_edit(tmp_path: Path, tiny_classifier: Path) -> None:
    available = _available(tmp_path, Catalog())
    pins = check_pins(parse_pins([f"text-classification={tiny_classifier}"]), available)
    assert pins == {"text-classification": str(tiny_classifier)}
    result = select_models(NODES[:1], available, llm=FunctionModel(scripted()), request="r", pins=pins)
    (assignment,) = result.assignments
    assert (assignment.model, assignment.backend) == (str(tiny_classifier), "local")
    assert assignment.spec.local_path == str(tiny_classifier)
    assert result.checks[0].reason.startswith("bert, ")  # the architecture comes from its config.json


def test_every_pin_is_checked_before_planning(tmp_path: Path) -> None:
    available = _available(tmp_path)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "no-such-architecture"}')
    cases = {
        "image-to-txt=x/y": "unknown task 'image-to-txt'",
        "text-classification=./nowhere": "the folder .* does not exist",
        f"text-classification={no_config}": "has no config.json",
        f"text-classification={odd}": "cannot run here: local: architecture no-such-architecture is not proven",
        "text-classification=c/cls-gone": "cannot run here: local: the local weights folder .* does not exist",
    }
    for pin, message in cases.items():
        with pytest.raises(SelectionError, match=message):
            check_pins(parse_pins([pin]), available)


def test_run_refuses_a_bad_pin_before_any_llm_call(llm, tmp_path: Path) -> None:
    from flows.cli import main

    code = main(["run", "Classify this text", "--model", f"text-classification={tmp_path / 'nowhere'}"])
    assert code == 2
    assert sum(llm.calls.values()) == 0


def test_every_candidate_check_is_recorded(tmp_path: Path) -> None:
    result = select_models(
        NODES, _available(tmp_path), llm=FunctionModel(scripted()), request="r", top_k=1, max_fallbacks=0
    )
    assert [(c.task, c.model, c.backend) for c in result.checks] == [
        ("summarization", "d/sum", "local"),
        ("text-classification", "a/cls-popular", "local"),
    ]
    result = select_models(NODES, _available(tmp_path), llm=FunctionModel(scripted()), request="r")
    gone = next(c for c in result.checks if c.model == "c/cls-gone")
    assert gone.backend is None and "does not exist" in gone.reason


@pytest.mark.llm_http  # an LLMClient over HTTP
def test_the_recommended_tier_is_offered_alone_when_it_can_run(llm, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    catalog = _entries(tmp_path)
    catalog.extend(
        [
            CatalogEntry(id="r/one", task="text-classification", tier="recommended", local_path=str(folder)),
            CatalogEntry(id="r/two", task="text-classification", tier="recommended", local_path=str(folder)),
        ]
    )
    llm.set(select=json.dumps({"choices": [{"id": 0, "model": "a/cls-popular", "reason": "most downloaded"}]}))
    result = select_models(NODES[:1], _available(tmp_path, catalog), llm=LLMClient(Settings()), request="r")
    (assignment,) = result.assignments
    assert assignment.candidates == ["r/one", "r/two"]
    assert assignment.model == "r/one" and "not a candidate" in assignment.reason
    assert [f.id for f in assignment.fallbacks] == ["r/two", "a/cls-popular"], "the long tail as fallbacks"


def test_task_without_runnable_model_is_left_unassigned(tmp_path: Path) -> None:
    node = PlanNode(id=0, task="translation", args={"text": "x"})
    result = select_models([node], _available(tmp_path), llm=FunctionModel(scripted()), request="r")
    assert result.assignments == []
    assert "no runnable model for task 'translation'" in result.unassigned[0]
    assert "e/hub-only: local: no local weights and the Hub is offline" in result.unassigned[0]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-select"), tasks=("text-classification",))[
        "text-classification"
    ]


def test_selection_through_its_prefect_task_reads_the_settings_catalog(tmp_path: Path, tiny_classifier: Path) -> None:
    """The path production takes: ``select_task`` builds the availability of its settings (catalog file included)."""
    from tasks.select import select_task

    catalog = tmp_path / "catalog.jsonl"
    records = [
        {"id": "tiny/tc", "task": "text-classification", "local_path": str(tiny_classifier)},
        {"id": "acme/gone", "task": "text-classification", "local_path": str(tmp_path / "gone"), "downloads": 9},
    ]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = Settings(catalog=catalog, hub_info_cache=tmp_path / "hub-info")
    result = select_task.fn(settings, "r", NODES[:1], {})
    assert [(a.model, a.backend) for a in result.assignments] == [("tiny/tc", "local")]
    by_model = {c.model: c for c in result.checks}
    assert by_model["tiny/tc"].backend == "local"
    assert by_model["acme/gone"].backend is None and "does not exist" in by_model["acme/gone"].reason


@pytest.mark.usefixtures("prefect_server")
def test_the_run_summary_records_every_candidate_check(llm, tmp_path: Path, tiny_classifier: Path) -> None:
    from flows.request import run_request
    from tests.llm_server import plan_json

    catalog = tmp_path / "catalog.jsonl"
    records = [
        {"id": "tiny/tc", "task": "text-classification", "local_path": str(tiny_classifier)},
        {"id": "acme/gone", "task": "text-classification", "local_path": str(tmp_path / "gone"), "downloads": 9},
    ]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    llm.set(plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "lovely"}}))
    summary = run_request(
        RequestSpec(request="Is 'lovely' positive?"), RunOptions(storage=str(tmp_path / "runs"), catalog=str(catalog))
    )
    assert summary.status == "completed", summary.error
    checks = {c.model: c for c in summary.candidate_checks}
    assert checks["tiny/tc"].backend == "local"
    assert checks["acme/gone"].backend is None and "does not exist" in checks["acme/gone"].reason
    stored = json.loads(Path(summary.storage_uri, "summary.json").read_text())
    assert {"tiny/tc", "acme/gone"} <= {c["model"] for c in stored["candidate_checks"]}  # built-in ones too
