"""The local expert backend and its model cache, on tiny random models built offline."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.experts.base import Audio, CannotRunHereError, ExpertError, ExpertOutput, ModelSpec
from tasks.experts.cache import ModelCache, default_cache
from tasks.experts.local import NOT_SERVED_LOCALLY, SUPPORTED_TASKS, LocalBackend
from tasks.task_types import EXECUTABLE_TASKS, TASK_TYPES
from tests.paths import ROOT
from tests.tiny_models import (
    AUDIO_LABELS,
    SEGMENT_LABELS,
    TASKS,
    VQA_LABELS,
    build_tiny_blip_captioner,
    build_tiny_blip_vqa,
    build_tiny_layoutlm,
    build_tiny_models,
    tiny_catalog_entries,
)

REPO = ROOT


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def backend() -> LocalBackend:
    return LocalBackend(cache=ModelCache(max_models=4), detection_threshold=0.0, max_new_tokens=8)


def spec(paths: dict[str, pathlib.Path], task: str) -> ModelSpec:
    return ModelSpec(id=f"tiny/{task}", task=task, local_path=str(paths[task]))


def picture(size: tuple[int, int] = (48, 40)) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(255, 0, size[1], dtype=np.uint8)[:, None]
    pixels[8:24, 10:30, 2] = 200
    return Image.fromarray(pixels, "RGB")


def sine(seconds: float = 1.0, rate: int = 16_000, freq: float = 440.0) -> Audio:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return Audio(array=(0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sampling_rate=rate)


# --- the tiny models themselves ---------------------------------------------------------------------------------


def test_tiny_models_cover_every_executable_task(tiny_models: dict[str, pathlib.Path]) -> None:
    assert set(tiny_models) == set(TASKS) == set(SUPPORTED_TASKS) == set(EXECUTABLE_TASKS)
    assert set(SUPPORTED_TASKS) | set(NOT_SERVED_LOCALLY) == set(TASK_TYPES)
    assert LocalBackend().tasks == frozenset(SUPPORTED_TASKS), "a runner for every supported task, and no other"
    for task, folder in tiny_models.items():
        assert (folder / "config.json").is_file(), task
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        assert size < 1_000_000, f"{task}: {size} bytes"
    assert tiny_models["summarization"] != tiny_models["translation"]


def test_registry_refuses_a_second_runner_and_tasks_not_served_locally() -> None:
    from tasks.experts.local.registry import REGISTRY, local_task

    existing = REGISTRY["translation"]
    with pytest.raises(ValueError, match="registered twice"):
        local_task("translation", existing.load)(existing.run)
    assert REGISTRY["translation"] is existing
    with pytest.raises(ValueError, match="not served locally"):
        local_task("text-to-image", existing.load)
    with pytest.raises(ValueError, match="not a task type"):
        local_task("no-such-task", existing.load)


def test_tiny_catalog_entries(tiny_models: dict[str, pathlib.Path]) -> None:
    entries = tiny_catalog_entries(tiny_models)
    assert [e["task"] for e in entries] == list(tiny_models)
    for entry in entries:
        assert entry["id"] == f"tiny/{entry['task']}"
        assert entry["tags"] == ["tiny", "test"]
        assert pathlib.Path(entry["local_path"]).is_absolute()
        assert pathlib.Path(entry["local_path"]).is_dir()
        json.dumps(entry)


# --- every task -------------------------------------------------------------------------------------------------


def run(backend: LocalBackend, paths: dict[str, pathlib.Path], task: str, **inputs: object) -> ExpertOutput:
    output = backend.run(task, spec(paths, task), inputs)
    assert isinstance(output, ExpertOutput)
    assert output.extra["model"] == f"tiny/{task}"
    json.dumps(output.json)
    return output


def test_text_classification(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "text-classification", text="I loved this movie, it was wonderful.")
    assert isinstance(out.json, list) and len(out.json) == 2
    assert {e["label"] for e in out.json} == {"POSITIVE", "NEGATIVE"}
    assert all(isinstance(e["score"], float) and 0.0 <= e["score"] <= 1.0 for e in out.json)
    assert out.json[0]["score"] >= out.json[1]["score"]
    assert out.text == f"{out.json[0]['label']} ({out.json[0]['score']:.2f})"


def test_token_classification(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    text = "Alice met Bob in London last summer."
    out = run(backend, tiny_models, "token-classification", text=text)
    assert isinstance(out.json, list)
    for entity in out.json:
        assert set(entity) == {"entity_group", "word", "score", "start", "end"}
        assert entity["entity_group"] in {"PER", "LOC", "ORG", "O"}
        assert 0 <= entity["start"] <= entity["end"] <= len(text)
    assert isinstance(out.text, str) and out.text
    if not out.json:
        assert out.text == "no entities found"


def test_token_classification_text_longer_than_the_model(
    backend: LocalBackend, tiny_models: dict[str, pathlib.Path]
) -> None:
    text = " ".join(["Alice met Bob in London last summer."] * 20)
    out = run(backend, tiny_models, "token-classification", text=text)
    assert isinstance(out.json, list)


def test_text_generation(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    prompt = "The dog runs across the park"
    out = run(backend, tiny_models, "text-generation", text=prompt)
    assert isinstance(out.text, str)
    assert not out.text.startswith(prompt)


def test_text_generation_prompt_longer_than_the_context(
    backend: LocalBackend, tiny_models: dict[str, pathlib.Path]
) -> None:
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 30)
    out = run(backend, tiny_models, "text-generation", text=prompt)
    assert isinstance(out.text, str)


def test_summarization(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    text = " ".join(["The report says the weather will be warm and dry."] * 40)
    out = run(backend, tiny_models, "summarization", text=text)
    assert isinstance(out.text, str)
    assert out.image is None and out.audio is None


def test_translation(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "translation", text="The house is wonderful.", target_language="French")
    assert isinstance(out.text, str)
    assert out.extra["target_language"] == "French"
    out = run(backend, tiny_models, "translation", text="The house is wonderful.")
    assert isinstance(out.text, str)


def test_question_answering(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    context = "Alice met Bob in London last summer."
    out = run(backend, tiny_models, "question-answering", text="Where did Alice meet Bob?", context=context)
    assert set(out.json) == {"answer", "score", "start", "end"}
    assert 0 <= out.json["start"] <= out.json["end"] <= len(context)
    assert 0.0 <= out.json["score"] <= 1.0
    assert out.text == out.json["answer"] == context[out.json["start"] : out.json["end"]].strip()
    assert out.text in context


def test_question_answering_long_context(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    context = " ".join(f"Sentence number {i} says that the capital of France is Paris." for i in range(30))
    out = run(backend, tiny_models, "question-answering", text="What is the capital of France?", context=context)
    assert 0 <= out.json["start"] <= out.json["end"] <= len(context)
    assert out.text in context


def _scores(out: ExpertOutput) -> dict[str, float]:
    return {e["label"]: e["score"] for e in out.json}


def _apart(a: dict[str, float], b: dict[str, float]) -> float:
    """How far two score sets are: the largest score difference over their labels (1 for a label in one only)."""
    return max(abs(a[k] - b[k]) if k in a and k in b else 1.0 for k in set(a) | set(b))


def test_text_classification_reads_its_text(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    """Two different texts get different scores, further apart than the same text twice: the runner classifies
    what it is given. (A random model barely leans: its scores differ in the sixth decimal, and do not differ at
    all for the same text.)"""
    loved, awful = "I loved this movie, it was wonderful.", "terrible food, cold soup, never again"
    first = _scores(run(backend, tiny_models, "text-classification", text=loved))
    second = _scores(run(backend, tiny_models, "text-classification", text=awful))
    again = _scores(run(backend, tiny_models, "text-classification", text=loved))
    assert set(first) == set(second) == {"POSITIVE", "NEGATIVE"}
    assert _apart(first, second) > 10 * _apart(first, again), (first, second, again)


def test_image_classification_reads_its_image(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    """Two different pictures get different scores, further apart than the same picture twice."""
    inverted = Image.fromarray(255 - np.asarray(picture()), "RGB")
    first = _scores(run(backend, tiny_models, "image-classification", image=picture()))
    second = _scores(run(backend, tiny_models, "image-classification", image=inverted))
    again = _scores(run(backend, tiny_models, "image-classification", image=picture()))
    assert _apart(first, second) > 10 * _apart(first, again), (first, second, again)


def test_image_classification(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "image-classification", image=picture())
    assert isinstance(out.json, list) and out.json
    assert {e["label"] for e in out.json} <= {"cat", "dog", "bird"}
    assert all(0.0 <= e["score"] <= 1.0 for e in out.json)
    assert out.text and out.text.startswith(out.json[0]["label"])


def test_object_detection(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    image = picture((64, 48))
    out = run(backend, tiny_models, "object-detection", image=image)
    assert isinstance(out.image, Image.Image)
    assert out.image.size == image.size
    assert out.image is not image
    assert isinstance(out.json, list) and out.json, "threshold 0 keeps every query"
    for obj in out.json:
        assert obj["label"] in {"cat", "dog", "person"}
        assert set(obj["box"]) == {"xmin", "ymin", "xmax", "ymax"}
        assert all(isinstance(v, int) for v in obj["box"].values())
    assert out.text and out.text.startswith(f"{len(out.json)} object")
    assert np.asarray(out.image).tobytes() != np.asarray(image.convert("RGB")).tobytes(), "boxes are drawn"


def test_object_detection_threshold(tiny_models: dict[str, pathlib.Path]) -> None:
    strict = LocalBackend(cache=ModelCache(max_models=1), detection_threshold=1.01)
    out = strict.run("object-detection", spec(tiny_models, "object-detection"), {"image": picture()})
    assert out.json == [] and out.text == "no objects found"
    assert isinstance(out.image, Image.Image) and out.image.size == picture().size


def test_image_to_text(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "image-to-text", image=picture())
    assert isinstance(out.text, str)


def test_image_to_text_blip(backend: LocalBackend, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_tiny_blip_captioner(tmp_path_factory.mktemp("blip") / "blip")
    model = ModelSpec(id="tiny/blip-captioner", task="image-to-text", local_path=str(folder))
    out = backend.run("image-to-text", model, {"image": picture()})
    assert isinstance(out.text, str) and out.text


@pytest.mark.parametrize("rate", [16_000, 8_000])
def test_automatic_speech_recognition(backend: LocalBackend, tiny_models: dict[str, pathlib.Path], rate: int) -> None:
    out = run(backend, tiny_models, "automatic-speech-recognition", audio=sine(1.0, rate))
    assert isinstance(out.text, str)
    assert "</s>" not in out.text and "<pad>" not in out.text
    assert out.extra["seconds"] == pytest.approx(1.0, abs=0.01)


def test_text_to_speech(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "text-to-speech", text="hello world")
    assert isinstance(out.audio, Audio)
    assert out.audio.sampling_rate > 0
    assert out.audio.array.dtype == np.float32 and out.audio.array.ndim == 1
    assert len(out.audio.array) > 0
    assert np.isfinite(out.audio.array).all()
    assert np.abs(out.audio.array).max() <= 1.0


def test_text_to_speech_is_clipped(tiny_models: dict[str, pathlib.Path]) -> None:
    short = LocalBackend(cache=ModelCache(max_models=1), max_audio_seconds=0.01)
    out = short.run("text-to-speech", spec(tiny_models, "text-to-speech"), {"text": "hello world, hello again"})
    assert out.audio is not None and out.audio.seconds <= 0.01 + 1e-9
    assert out.extra["clipped_to_seconds"] == 0.01, "a clipped reading says so"


def test_text2text_generation(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "text2text-generation", text="paraphrase: the cat sat on the mat")
    assert isinstance(out.text, str)
    assert out.image is None and out.json is None


def test_conversational_with_a_chat_template(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "conversational", text="Hello, how are you? " * 40)
    assert isinstance(out.text, str)
    assert out.extra["prompt"] == "chat-template"


def test_conversational_without_a_chat_template(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    model = ModelSpec(id="tiny/plain-chat", task="conversational", local_path=str(tiny_models["text-generation"]))
    out = backend.run("conversational", model, {"text": "Hello there"})
    assert isinstance(out.text, str) and "User:" not in out.text
    assert out.extra["prompt"] == "plain"


def test_sentence_similarity(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "sentence-similarity", text="A cat sits on the mat.", text2="A dog runs.")
    assert set(out.json) == {"similarity"} and -1.0 <= out.json["similarity"] <= 1.0
    assert out.text == f"similarity {out.json['similarity']:.2f}"
    same = run(backend, tiny_models, "sentence-similarity", text="A cat.", text2="A cat.")
    assert same.json["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_feature_extraction(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "feature-extraction", text="A cat sits on the mat.")
    assert isinstance(out.json, list) and len(out.json) == 16 == out.extra["dimensions"]
    assert all(isinstance(x, float) and np.isfinite(x) for x in out.json)


def test_zero_shot_classification(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(
        backend, tiny_models, "zero-shot-classification", text="The cat sat.", labels="animals, politics,animals,"
    )
    assert {e["label"] for e in out.json} == {"animals", "politics"}
    assert sum(e["score"] for e in out.json) == pytest.approx(1.0, abs=1e-4)
    assert out.text.startswith(out.json[0]["label"])
    with pytest.raises(ExpertError, match="no candidate labels"):
        run(backend, tiny_models, "zero-shot-classification", text="The cat sat.", labels=" , ")


def test_image_segmentation(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    image = picture((64, 48))
    out = run(backend, tiny_models, "image-segmentation", image=image)
    assert isinstance(out.image, Image.Image) and out.image.size == image.size and out.image.mode == "RGB"
    assert np.asarray(out.image).tobytes() != np.asarray(image).tobytes(), "masks are drawn"
    assert out.json and {e["label"] for e in out.json} <= set(SEGMENT_LABELS.values())
    assert all(e["score"] is None for e in out.json), "semantic segmentation has no scores"
    assert sum(e["area"] for e in out.json) == pytest.approx(1.0, abs=0.01)
    assert out.text.startswith(f"{len(out.json)} segment")


def test_depth_estimation(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    image = picture((64, 48))
    out = run(backend, tiny_models, "depth-estimation", image=image)
    assert isinstance(out.image, Image.Image) and out.image.mode == "L" and out.image.size == image.size
    assert out.extra["min"] <= out.extra["max"]


def test_image_to_image(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "image-to-image", image=picture((48, 40)), text="sharper")
    assert isinstance(out.image, Image.Image) and out.image.mode == "RGB"
    assert out.image.size == (96, 80) and out.extra["scale"] == 2
    out = run(backend, tiny_models, "image-to-image", image=picture((48, 40)))
    assert out.image is not None and out.image.size == (96, 80)


@pytest.mark.parametrize("instruction", ["make it look like winter", "remove the dog", "turn the sky red"])
def test_image_to_image_refuses_an_edit_it_cannot_make(
    backend: LocalBackend, tiny_models: dict[str, pathlib.Path], instruction: str
) -> None:
    """Super-resolution cannot follow an editing instruction: the node must not report an upscaled image as the
    edit, but refuse (CannotRunHereError: the fallback tries the next, remote, candidate) before loading anything."""
    with pytest.raises(CannotRunHereError, match="only upscale") as info:
        backend.run("image-to-image", spec(tiny_models, "image-to-image"), {"image": picture(), "text": instruction})
    assert instruction in str(info.value) and "tiny/image-to-image" in str(info.value)
    assert backend.cache.stats()["loads"] == 0


def test_visual_question_answering(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "visual-question-answering", image=picture(), text="How many cats are there?")
    assert out.text in set(VQA_LABELS.values())
    answers = out.extra["answers"]
    assert answers[0]["answer"] == out.text and all(0.0 <= a["score"] <= 1.0 for a in answers)


def test_visual_question_answering_generative(backend: LocalBackend, tmp_path: pathlib.Path) -> None:
    folder = build_tiny_blip_vqa(tmp_path / "blip-vqa")
    model = ModelSpec(id="tiny/blip-vqa", task="visual-question-answering", local_path=str(folder))
    out = backend.run("visual-question-answering", model, {"image": picture(), "text": "What is it?"})
    assert isinstance(out.text, str) and out.extra["answers"][0]["score"] is None


def test_document_question_answering(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = run(backend, tiny_models, "document-question-answering", image=picture(), text="What is the total?")
    assert isinstance(out.text, str) and "<" not in out.text


def test_document_question_answering_layoutlm_needs_the_ocr_program(
    backend: LocalBackend, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LayoutLM reads the page with tesseract: without the program the error names the model and tesseract."""
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract-here"))
    folder = build_tiny_layoutlm(tmp_path / "layoutlm")
    model = ModelSpec(id="tiny/layoutlm", task="document-question-answering", local_path=str(folder))
    with pytest.raises(ExpertError, match="tesseract") as info:
        backend.run("document-question-answering", model, {"image": picture(), "text": "total?"})
    assert "tiny/layoutlm" in str(info.value)


@pytest.mark.parametrize("rate", [16_000, 8_000])
def test_audio_classification(backend: LocalBackend, tiny_models: dict[str, pathlib.Path], rate: int) -> None:
    out = run(backend, tiny_models, "audio-classification", audio=sine(0.5, rate))
    assert {e["label"] for e in out.json} == set(AUDIO_LABELS.values())
    assert out.text.startswith(out.json[0]["label"])
    assert out.extra["seconds"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("task", sorted(NOT_SERVED_LOCALLY))
def test_tasks_not_served_locally_say_why(task: str, tiny_models: dict[str, pathlib.Path]) -> None:
    backend = LocalBackend(cache=ModelCache(max_models=1))
    model = ModelSpec(id=f"acme/{task}", task=task, local_path=str(tiny_models["text-generation"]))
    with pytest.raises(ExpertError, match="runs through the remote backend") as info:
        backend.run(task, model, {"text": "a cat", "table": b"a,b\n1,2\n", "audio": sine(0.1)})
    assert NOT_SERVED_LOCALLY[task] in str(info.value)
    assert backend.cache.stats()["loads"] == 0


def test_outputs_match_the_task_table(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    inputs = {
        "text": "Where did Alice meet Bob?",
        "text2": "Alice met Bob in London.",
        "labels": "people, places",
        "context": "Alice met Bob in London.",
        "image": picture(),
        "audio": sine(0.5),
    }
    for task in SUPPORTED_TASKS:
        # super-resolution takes no instruction (and refuses one it cannot follow)
        given = {k: v for k, v in inputs.items() if task != "image-to-image" or k != "text"}
        out = backend.run(task, spec(tiny_models, task), given)
        for modality in TASK_TYPES[task].outputs:
            value = out.json if modality == "json" else getattr(out, str(modality))
            assert value is not None, f"{task} produced no {modality}"


# --- cache ------------------------------------------------------------------------------------------------------


def test_concurrent_runs_load_the_model_once(tiny_models: dict[str, pathlib.Path]) -> None:
    cache = ModelCache(max_models=2)
    backend = LocalBackend(cache=cache)
    model = spec(tiny_models, "text-classification")
    texts = ["I loved it", "terrible food", "the dog runs", "a wonderful day"] * 2
    start = threading.Barrier(4)

    def classify(index: int) -> list[dict[str, object]]:
        if index < 4:
            start.wait(timeout=30)
        return backend.run("text-classification", model, {"text": texts[index]}).json

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(classify, range(len(texts))))
    stats = cache.stats()
    assert stats["loads"] == 1
    assert stats["hits"] == len(texts) - 1
    assert len(cache) == 1
    sequential = [backend.run("text-classification", model, {"text": t}).json for t in texts]
    for got, want in zip(results, sequential, strict=True):
        assert [e["label"] for e in got] == [e["label"] for e in want]
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want], abs=1e-5)
    assert cache.stats()["loads"] == 1


def test_cache_evicts_least_recently_used() -> None:
    cache = ModelCache(max_models=2)
    a = cache.get_or_load("a", lambda: "A")
    cache.get_or_load("b", lambda: "B")
    assert cache.get_or_load("a", lambda: "not again") is a
    cache.get_or_load("c", lambda: "C")
    assert cache.keys() == ["a", "c"]
    assert "b" not in cache
    assert cache.get_or_load("b", lambda: "B2").value == "B2"
    assert cache.keys() == ["c", "b"]
    stats = cache.stats()
    assert (stats["loads"], stats["hits"], stats["evictions"], stats["size"]) == (4, 1, 2, 2)
    assert stats["load_seconds"] >= 0.0


def test_cache_backend_eviction(tiny_models: dict[str, pathlib.Path]) -> None:
    cache = ModelCache(max_models=1)
    backend = LocalBackend(cache=cache)
    backend.run("text-classification", spec(tiny_models, "text-classification"), {"text": "hi"})
    backend.run("image-classification", spec(tiny_models, "image-classification"), {"image": picture()})
    backend.run("text-classification", spec(tiny_models, "text-classification"), {"text": "hi"})
    stats = cache.stats()
    assert (stats["loads"], stats["evictions"], stats["size"]) == (3, 2, 1)


def test_cache_loads_different_keys_concurrently() -> None:
    cache = ModelCache(max_models=4)
    running = threading.Semaphore(0)
    both = threading.Event()
    seen: list[str] = []

    def slow(name: str) -> str:
        running.release()
        seen.append(name)
        if len(seen) == 2:
            both.set()
        assert both.wait(timeout=60), "the second load never started while the first was running"
        return name

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(cache.get_or_load, key, lambda key=key: slow(key)) for key in ("x", "y")]
        values = sorted(f.result().value for f in futures)
    assert values == ["x", "y"]
    assert cache.stats()["loads"] == 2


def test_cache_same_key_waits_for_one_load() -> None:
    cache = ModelCache(max_models=4)
    calls: list[int] = []
    arrived = threading.Semaphore(0)

    def slow() -> object:  # the load lasts until every caller has asked for the same key
        calls.append(1)
        for _ in range(6):  # this caller and the five others
            assert arrived.acquire(timeout=60), "the other callers never came"
        return object()

    def load(_: int) -> Any:
        arrived.release()
        return cache.get_or_load("k", slow)

    with ThreadPoolExecutor(max_workers=6) as pool:
        entries = list(pool.map(load, range(6)))
    assert len(calls) == 1
    assert all(e is entries[0] for e in entries)
    assert all(isinstance(e.lock, type(threading.Lock())) for e in entries)
    assert cache.stats()["loads"] == 1 and cache.stats()["hits"] == 5


def test_cache_failed_load_is_not_cached() -> None:
    cache = ModelCache(max_models=2)

    def broken() -> str:
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        cache.get_or_load("k", broken)
    assert "k" not in cache
    assert cache.get_or_load("k", lambda: "ok").value == "ok"


def test_cache_rejects_zero_size() -> None:
    with pytest.raises(ValueError):
        ModelCache(max_models=0)


def test_default_cache_is_one_per_process() -> None:
    assert default_cache() is default_cache(max_models=9)


# --- errors -----------------------------------------------------------------------------------------------------


def test_missing_folder_names_the_model(tmp_path: pathlib.Path) -> None:
    backend = LocalBackend(cache=ModelCache(max_models=1))
    model = ModelSpec(id="acme/missing-model", task="image-to-text", local_path=str(tmp_path / "nowhere"))
    with pytest.raises(ExpertError, match="acme/missing-model") as info:
        backend.run("image-to-text", model, {"image": picture()})
    assert "could not load" in str(info.value) and "image-to-text" in str(info.value)


def test_bogus_model_folder_names_the_model(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "bogus"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    backend = LocalBackend(cache=ModelCache(max_models=1))
    model = ModelSpec(id="acme/bogus", task="text-classification", local_path=str(folder))
    with pytest.raises(ExpertError, match="acme/bogus"):
        backend.run("text-classification", model, {"text": "hi"})
    assert len(backend.cache) == 0


def test_unknown_hub_id_offline_names_the_model() -> None:
    backend = LocalBackend(cache=ModelCache(max_models=1))
    model = ModelSpec(id="acme/not-on-this-machine", task="text-classification")
    with pytest.raises(ExpertError, match="acme/not-on-this-machine"):
        backend.run("text-classification", model, {"text": "hi"})


def test_unsupported_task_lists_the_supported_ones(tiny_models: dict[str, pathlib.Path]) -> None:
    backend = LocalBackend(cache=ModelCache(max_models=1))
    model = ModelSpec(id="tiny/text-to-video", task="text-to-video", local_path=str(tiny_models["text-generation"]))
    with pytest.raises(ExpertError, match="text-to-video") as info:
        backend.run("text-to-video", model, {"text": "a cat"})
    assert "text-classification" in str(info.value)
    assert backend.cache.stats()["loads"] == 0


def test_missing_input_names_the_argument(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    with pytest.raises(ExpertError, match="context") as info:
        backend.run("question-answering", spec(tiny_models, "question-answering"), {"text": "why?"})
    assert "tiny/question-answering" in str(info.value)


def test_task_name_spellings(backend: LocalBackend, tiny_models: dict[str, pathlib.Path]) -> None:
    out = backend.run("Text_Classification", spec(tiny_models, "text-classification"), {"text": "fine"})
    assert out.text


# --- a Hub id resolves through the same code as a local folder --------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path: pathlib.Path, tiny_models: dict[str, pathlib.Path]) -> Iterator[pathlib.Path]:
    """An offline Hugging Face cache holding the tiny text classifier as ``tiny-org/sentiment`` at main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--sentiment"
    shutil.copytree(tiny_models["text-classification"], repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    yield tmp_path / "hub"


def test_hub_id_loads_from_the_offline_cache(hub_cache: pathlib.Path) -> None:
    script = (
        "from tasks.experts.local import LocalBackend\n"
        "from tasks.experts.base import ModelSpec\n"
        "out = LocalBackend().run('text-classification', ModelSpec(id='tiny-org/sentiment', "
        "task='text-classification'), {'text': 'hello'})\n"
        "print(out.text)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().split()[0] in {"POSITIVE", "NEGATIVE"}


def test_different_models_load_safely_at_the_same_time(tiny_models: dict[str, pathlib.Path]) -> None:
    """Loads of different models from several threads must not corrupt each other (transformers' meta-device
    loading patches torch process-wide)."""
    backend = LocalBackend(cache=ModelCache(max_models=8))
    jobs = [
        ("summarization", {"text": "the cat sat on the mat and looked at the dog"}),
        ("translation", {"text": "hello world"}),
        ("text-classification", {"text": "great"}),
        ("token-classification", {"text": "Maria met Tom"}),
        ("question-answering", {"text": "who?", "context": "Maria met Tom"}),
        ("text-generation", {"text": "once upon"}),
    ]
    start = threading.Barrier(len(jobs))

    def go(job: tuple[str, dict[str, object]]) -> ExpertOutput:
        task, inputs = job
        start.wait(timeout=30)
        return backend.run(task, spec(tiny_models, task), inputs)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outputs = list(pool.map(go, jobs))
    assert all(isinstance(o.text, str) for o in outputs)
    assert backend.cache.stats()["loads"] == len(jobs)
