from __future__ import annotations

import json
from pathlib import Path

import pytest

from models_catalog.build_catalog import convert_record, trim_description
from models_catalog.catalog import Catalog, CatalogEntry, CatalogError, load_catalog, read_catalog_file
from tasks.llm import FunctionModel, LLMError, scripted
from tasks.schemas import PlanNode
from tasks.select import SELECT_SCHEMA, SelectionError, parse_pins, select_models

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "jarvis_p0_models.jsonl"


def _entries(tmp_path: Path) -> Catalog:
    folder = tmp_path / "weights"
    folder.mkdir(exist_ok=True)
    return Catalog(
        [
            CatalogEntry(id="a/cls-popular", task="text-classification", downloads=900, local_path=str(folder)),
            CatalogEntry(id="b/cls-liked", task="text-classification", downloads=100, likes=50, local_path=str(folder)),
            CatalogEntry(id="c/cls-gone", task="text-classification", downloads=5000, local_path=str(tmp_path / "no")),
            CatalogEntry(id="d/sum", task="summarization", downloads=1, local_path=str(folder)),
            CatalogEntry(id="e/hub-only", task="translation", downloads=10**6),
        ]
    )


NODES = [
    PlanNode(id=0, task="text-classification", args={"text": "great"}),
    PlanNode(id=1, task="summarization", args={"text": "long"}),
    PlanNode(id=2, task="text-classification", args={"text": "bad"}),
]


def test_builtin_catalog_is_the_hub_snapshot() -> None:
    catalog = load_catalog()
    assert len(catalog) == 673
    assert {"image-to-text", "text-to-speech", "object-detection"} <= catalog.tasks()
    entry = catalog.get("image-to-text", "nlpconnect/vit-gpt2-image-captioning")
    assert entry is not None and entry.downloads > 0 and entry.description


@pytest.mark.skipif(not REF.exists(), reason="reference data not beside the project")
def test_builtin_catalog_matches_its_build_from_the_reference() -> None:
    raws = [json.loads(line) for line in REF.open(encoding="utf-8") if line.strip()]
    built = {(e.task, e.id): e for e in map(convert_record, raws)}
    shipped = {(e.task, e.id): e for e in load_catalog()}
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
    assert len(catalog) == 674


def test_broken_catalog_line_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "x", "task": "summarization"}\n{"id": "y", "task": \n')
    with pytest.raises(CatalogError, match=r"bad.jsonl:2: not valid JSON"):
        read_catalog_file(path)
    path.write_text('{"id": "x"}\n')
    with pytest.raises(CatalogError, match=r"bad.jsonl:1: not a catalog entry \(task: Field required\)"):
        read_catalog_file(path)


def test_ranking_puts_runnable_popular_first_and_drops_missing_weights(tmp_path: Path) -> None:
    catalog = _entries(tmp_path)
    assert [e.id for e in catalog.ranked("text-classification")] == ["a/cls-popular", "b/cls-liked"]


def test_hub_only_models_unavailable_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = _entries(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert catalog.ranked("translation") == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert [e.id for e in catalog.ranked("translation")] == ["e/hub-only"]


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
    result = select_models(NODES, _entries(tmp_path), llm=model, request="r", top_k=5)
    assert [c.stage for c in model.calls] == ["select"] and model.calls[0].schema == SELECT_SCHEMA
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
    result = select_models(NODES[1:2], _entries(tmp_path), llm=model, request="r")
    assert model.calls == [] and result.assignments[0].model == "d/sum"


def _fails(call: object) -> str:
    raise LLMError("the LLM at http://127.0.0.1 answered HTTP 500: scripted failure")


def test_choice_outside_candidates_and_llm_failure_take_top_ranked(tmp_path: Path) -> None:
    stray = json.dumps({"choices": [{"id": 0, "model": "https://evil.example/model", "reason": "x"}]})
    result = select_models(NODES[:1], _entries(tmp_path), llm=FunctionModel(scripted(select=stray)), request="r")
    assert result.assignments[0].model == "a/cls-popular"
    assert "not a candidate" in result.assignments[0].reason
    result = select_models(NODES[:1], _entries(tmp_path), llm=FunctionModel(_fails), request="r")
    assert result.assignments[0].model == "a/cls-popular"
    assert "selection by the LLM failed" in result.assignments[0].reason and "HTTP 500" in result.assignments[0].reason


def test_pins(tmp_path: Path) -> None:
    catalog = _entries(tmp_path)
    model = FunctionModel(scripted())
    result = select_models(NODES, catalog, llm=model, request="r", pins=parse_pins(["Text_Classification=b/cls-liked"]))
    assert {a.model for a in result.assignments if a.task == "text-classification"} == {"b/cls-liked"}
    assert result.assignments[0].reason == "pinned by the user"
    with pytest.raises(SelectionError, match="not in the catalog for task 'summarization'"):
        select_models(NODES, catalog, llm=model, request="r", pins={"summarization": "nobody/x"})
    with pytest.raises(SelectionError, match="pins task\\(s\\) depth-estimation that the plan does not use"):
        select_models(NODES, catalog, llm=model, request="r", pins={"depth-estimation": "x/y"})
    with pytest.raises(SelectionError, match="TASK=MODEL_ID"):
        parse_pins(["image-to-text"])


def test_task_without_runnable_model_is_left_unassigned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    node = PlanNode(id=0, task="translation", args={"text": "x"})
    result = select_models([node], _entries(tmp_path), llm=FunctionModel(scripted()), request="r")
    assert result.assignments == []
    assert "no runnable model for task 'translation'" in result.unassigned[0]
