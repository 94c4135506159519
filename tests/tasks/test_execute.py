"""The executor's core, without Prefect: input resolution, skipping, fallback, caching."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from tasks.execute import execute_node, resolve_args
from tasks.experts.base import ExpertError, ExpertOutput, ModelSpec
from tasks.result_cache import ResultCache
from tasks.schemas import Assignment, NodeResult, PlanNode
from tasks.storage import ArtifactStore


class FakeBackend:
    name = "local"

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.calls: list[str] = []

    def run(self, task: str, model: ModelSpec, inputs: dict[str, Any]) -> ExpertOutput:
        self.calls.append(model.id)
        if model.id in self.fail:
            raise ExpertError(f"model {model.id!r} exploded")
        size = inputs["image"].size if "image" in inputs else None
        return ExpertOutput(text=f"{model.id} saw {size or inputs.get('text')}", json=[{"label": "x", "score": 1.0}])


def _assign(node: PlanNode, model: str, *fallbacks: str) -> Assignment:
    return Assignment(
        node_id=node.id,
        task=node.task,
        model=model,
        reason="test",
        spec=ModelSpec(id=model, task=node.task),
        fallbacks=[ModelSpec(id=f, task=node.task) for f in fallbacks],
    )


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, format="PNG")
    return buf.getvalue()


def test_generated_refs_take_the_output_of_the_wanted_modality(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path), "run")
    drawn = store.put_bytes("nodes/0-object-detection/image.png", _png((20, 10)))
    detections = NodeResult(
        id=0, task="object-detection", status="completed", outputs={"image": drawn, "text": "2 objects: cat, dog"}
    )
    as_image = PlanNode(id=1, task="image-classification", dep=[0], args={"image": "<GENERATED>-0"})
    as_text = PlanNode(id=2, task="translation", dep=[0], args={"text": "Found: <GENERATED>-0"})
    values, digests = resolve_args(as_image, {0: detections}, store)
    assert values["image"].size == (20, 10) and len(digests["image"]) == 64
    values, _ = resolve_args(as_text, {0: detections}, store)
    assert values["text"] == "Found: 2 objects: cat, dog"


def test_dependents_of_a_failed_node_are_skipped(tmp_path: Path) -> None:
    node = PlanNode(id=1, task="summarization", dep=[0], args={"text": "<GENERATED>-0"})
    failed = NodeResult(id=0, task="image-to-text", status="failed", error="boom")
    result = execute_node(node, _assign(node, "m"), {0: failed}, ArtifactStore(str(tmp_path), "r"), FakeBackend())
    assert result.status == "skipped" and "upstream task 0 (image-to-text) failed" in result.error


def test_fallback_candidates_in_order_with_every_attempt(tmp_path: Path) -> None:
    node = PlanNode(id=0, task="summarization", args={"text": "hello"})
    backend = FakeBackend(fail={"a/first"})
    result = execute_node(
        node,
        _assign(node, "a/first", "b/second", "c/third"),
        {},
        ArtifactStore(str(tmp_path), "r"),
        backend,
        max_attempts=3,
    )
    assert result.status == "completed" and result.model == "b/second"
    assert backend.calls == ["a/first", "b/second"]
    assert [(a.model, a.ok) for a in result.attempts] == [("a/first", False), ("b/second", True)]
    assert "exploded" in result.attempts[0].error

    backend = FakeBackend(fail={"a/first", "b/second"})
    result = execute_node(
        node, _assign(node, "a/first", "b/second"), {}, ArtifactStore(str(tmp_path), "r2"), backend, max_attempts=2
    )
    assert result.status == "failed" and "every model candidate for summarization failed" in result.error
    assert len(result.attempts) == 2


def test_identical_node_reuses_outputs_by_content(tmp_path: Path) -> None:
    image_a, image_b = tmp_path / "a.png", tmp_path / "b.png"
    image_a.write_bytes(_png((8, 8)))
    image_b.write_bytes(_png((8, 8)))  # same content, another name
    backend = FakeBackend()
    first_store = ArtifactStore(str(tmp_path / "s"), "run-1")
    node = PlanNode(id=0, task="image-classification", args={"image": str(image_a)})
    first = execute_node(node, _assign(node, "m"), {}, first_store, backend, cache=ResultCache(first_store))
    second_store = first_store.for_run("run-2")
    node_b = PlanNode(id=0, task="image-classification", args={"image": str(image_b)})
    second = execute_node(node_b, _assign(node_b, "m"), {}, second_store, backend, cache=ResultCache(second_store))
    assert backend.calls == ["m"]
    assert second.cached and second.reused_from == "run-1" and second.outputs == first.outputs
    image_b.write_bytes(_png((9, 9)))  # changed content under the same name: a miss
    third = execute_node(node_b, _assign(node_b, "m"), {}, second_store, backend, cache=ResultCache(second_store))
    assert not third.cached and backend.calls == ["m", "m"]
