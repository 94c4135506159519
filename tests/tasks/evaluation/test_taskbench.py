"""TaskBench's official figures (tasks/evaluation/taskbench.py) against TaskBench's own evaluate.py.

The expected figures below were computed by running TaskBench's script itself (microsoft/JARVIS,
``taskbench/evaluate.py`` at commit c62e0fa) on the two files of ``data/`` (``taskbench_data.jsonl`` as
``data_huggingface/data.json``, ``taskbench_predictions.jsonl`` as ``data_huggingface/predictions/sample.json``,
with ``tool_desc.json`` of the same folder), in a throwaway virtual environment outside this repository (numpy,
scipy, scikit-learn, Levenshtein 0.21.1, click, datasets 2.14.5):

    python evaluate.py --data_dir data_huggingface --prediction_dir predictions --llm sample \\
        --dependency_type resource --prompting direct

which writes ``node_micro_{precision,recall,f1}_no_matching``, ``link_binary_f1``,
``argument_task_argname_binary_f1_no_matching``, ``argument_task_argname_value_binary_f1_no_matching`` and
``edit_distance`` (and logs "Parsing Error: 'result', Ignore #id s-broken"). ROUGE: the same script run with
``-m rouge`` (datasets' ROUGE metric, rouge-score underneath, with a random bootstrap) gave ROUGE-1 0.6236, 0.6261
and 0.6359 on three runs; the per-sample mean of rouge-score's F-measures on the same step texts, which this
project reports, is 0.6283 (ROUGE-2 0.4724; bootstrap with numpy seed 0: 0.6302 / 0.4676).

The predictions cover: an exact plan (tool written with underscores), an empty one, a dropped node, duplicated and
extra nodes, a reversed edge, a renamed tool (Image-to-Image for Image Editing), an unknown tool, wrong arguments
with a dropped edge, arguments as objects, a line without ``result`` (left out), an id not in the data; the gold
side has ``<output_of_...>`` references (no edge), a 1-based reference to the node itself (dropped) and a tool
outside the 23.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from tasks.evaluation.taskbench import read_jsonl, score_taskbench, to_prediction, tool_name
from tasks.schemas import PlanNode

DATA = Path(__file__).parent / "data"

#: TaskBench's evaluate.py on data/taskbench_*.jsonl (see the module doc)
OFFICIAL = {
    "n_precision": 0.8125,
    "n_recall": 0.7647,
    "n_f1": 0.7879,
    "e_f1": 0.3333,
    "t_f1": 0.6486,
    "v_f1": 0.4000,
    "ed": 0.2783,
}


def _files() -> tuple[list[dict], list[dict]]:
    return (
        read_jsonl(str(DATA / "taskbench_data.jsonl"), "dataset"),
        read_jsonl(str(DATA / "taskbench_predictions.jsonl"), "predictions"),
    )


def test_figures_match_taskbench_evaluate_py() -> None:
    scores = score_taskbench(*_files())
    assert scores is not None
    assert {k: round(getattr(scores, k), 4) for k in OFFICIAL} == OFFICIAL
    assert scores.samples == 10 and [i.split(":")[0] for i in scores.ignored] == ["s-broken"]
    assert (round(scores.r1, 4), round(scores.r2, 4), scores.step_samples) == (0.6283, 0.4724, 10)
    assert 0.6236 - 0.01 < scores.r1 < 0.6359 + 0.01  # the official bootstrap's spread


def test_each_difference_from_this_projects_metrics_is_taskbenchs() -> None:
    data, _ = _files()
    gold = {r["id"]: r for r in data}

    def one(sample_id: str, nodes: list[dict]) -> dict:
        scores = score_taskbench([gold[sample_id]], [{"id": sample_id, "result": {"task_nodes": nodes}}])
        assert scores is not None
        return scores.model_dump()

    poem = gold["d-poem"]["task_nodes"]
    assert one("d-poem", [*poem, poem[2]])["n_f1"] == 1.0  # a duplicated node is free: sets
    edited = one("s-edit", [{"task": "Image-to-Image", "arguments": ["Make the sky blue", "example.jpg"]}])
    assert edited["n_f1"] == 0.0  # no alias between Image Editing and Image-to-Image
    # edges come from <node-k> references only: the gold's <output_of_...> make none, so a right edge is extra
    doc = gold["c-doc"]["task_nodes"]
    linked = one("c-doc", [doc[0], {"task": doc[1]["task"], "arguments": ["<node-0>", "What is the main subject?"]}])
    assert linked["e_f1"] == 0.0 and one("c-doc", doc)["e_f1"] == 0.0
    # an unknown tool is kept in the plan: it does not count as a node, and it still costs edit distance
    unknown = one("s-unknown", [{"task": "Audio Quality Enhancer", "arguments": ["example.wav"]}])
    assert unknown["ed"] == 0.0 and unknown["n_f1"] == 0.0 and unknown["v_f1"] == 1.0


def test_no_shared_id_scores_nothing() -> None:
    data, _ = _files()
    assert score_taskbench(data, [{"id": "elsewhere", "result": {"task_nodes": []}}]) is None


def test_our_plans_in_taskbench_format() -> None:
    plan = [
        PlanNode(id=3, task="image-to-text", dep=[], args={"image": "example.jpg"}),
        PlanNode(id=7, task="text-to-speech", dep=[3], args={"text": "<GENERATED>-3"}),
        PlanNode(id=8, task="text-classification", dep=[], args={"text": "fine"}),
    ]
    line = to_prediction("42", plan)
    assert line == {
        "id": "42",
        "result": {
            "task_nodes": [
                {"task": "Image-to-Text", "arguments": ["example.jpg"]},
                {"task": "Text-to-Speech", "arguments": ["<node-0>"]},
                {"task": "Text Classification", "arguments": ["fine"]},
            ],
            "task_links": [{"source": "Image-to-Text", "target": "Text-to-Speech"}],
        },
    }
    assert tool_name("image-to-image") == "Image-to-Image" and tool_name("audio-to-audio") == "Audio-to-Audio"
    gold = {"id": "42", "task_nodes": line["result"]["task_nodes"][:2]}
    scores = score_taskbench([gold], [line])
    assert scores is not None and (scores.n_f1, scores.e_f1, scores.ed) == (1.0, 1.0, pytest.approx(0.2))


def test_eval_scores_saved_predictions_without_an_llm(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    args = ["eval", str(DATA / "taskbench_data.jsonl"), "--format", "taskbench"]
    code = main([*args, "--predictions", str(DATA / "taskbench_predictions.jsonl"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)["taskbench"]
    assert {k: round(report[k], 4) for k in OFFICIAL} == OFFICIAL and report["r1"] is not None
    assert "s-broken" in captured.err
    code = main([*args, "--predictions", str(tmp_path / "missing.jsonl")])
    assert code == 2 and "cannot read the predictions" in capsys.readouterr().err
    code = main([*args[:2], "--format", "ours", "--predictions", str(DATA / "taskbench_predictions.jsonl")])
    assert code == 2 and "--format taskbench" in capsys.readouterr().err
