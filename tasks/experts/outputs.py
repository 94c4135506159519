"""Turning raw model results into :class:`~tasks.experts.base.ExpertOutput`, shared by the local and remote backends.

Both backends format through these functions, so a downstream node cannot tell which backend produced an output:
labels best first, boxes and masks drawn on a copy of the image, depth maps as grey images, waveforms as mono
float32 audio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tasks.experts.base import Audio, ExpertOutput

_BOX_COLORS: tuple[str, ...] = ("red", "lime", "blue", "yellow", "magenta", "cyan", "orange", "white")
_MASK_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


def format_text_classification(scores: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Every label with its score, best first; the text names the best one."""
    labels = _label_scores(scores)
    best = labels[0] if labels else None
    return ExpertOutput(text=f"{best['label']} ({best['score']:.2f})" if best else "no label", json=labels)


def format_token_classification(found: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Entities as ``{entity_group, word, score, start, end}``; the text lists ``word: group``."""
    entities = [
        {
            "entity_group": str(e.get("entity_group") or e.get("entity") or ""),
            "word": str(e.get("word", "")),
            "score": float(e.get("score") or 0.0),
            "start": _int_or_none(e.get("start")),
            "end": _int_or_none(e.get("end")),
        }
        for e in found
    ]
    summary = ", ".join(f"{e['word']}: {e['entity_group']}" for e in entities) if entities else "no entities found"
    return ExpertOutput(text=summary, json=entities)


def format_question_answering(answer: str, score: float, start: int, end: int) -> ExpertOutput:
    return ExpertOutput(
        text=answer, json={"answer": answer, "score": float(score), "start": int(start), "end": int(end)}
    )


def format_image_classification(scores: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Labels best first; the text lists each with its score."""
    labels = _label_scores(scores)
    summary = ", ".join(f"{s['label']} ({s['score']:.2f})" for s in labels) if labels else "no label"
    return ExpertOutput(text=summary, json=labels)


#: Audio classification and zero-shot classification read like image classification.
format_audio_classification = format_image_classification
format_zero_shot_classification = format_image_classification


def format_sentence_similarity(score: float) -> ExpertOutput:
    return ExpertOutput(text=f"similarity {score:.2f}", json={"similarity": float(score)})


def format_feature_extraction(vector: Any) -> ExpertOutput:
    """One embedding as a list of floats (token embeddings are mean-pooled first)."""
    array = np.asarray(vector, dtype=np.float32)
    while array.ndim > 1:
        array = array.mean(axis=0)
    return ExpertOutput(json=[float(x) for x in array.reshape(-1)], extra={"dimensions": int(array.size)})


def format_object_detection(image: Image.Image, found: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Objects best first, with integer boxes, drawn on a copy of ``image``."""
    objects = [
        {
            "label": str(d["label"]),
            "score": float(d["score"]),
            "box": {k: round(float(v)) for k, v in dict(d["box"]).items()},
        }
        for d in found
    ]
    objects.sort(key=lambda d: d["score"], reverse=True)
    drawn = draw_boxes(image, objects)
    if objects:
        noun = "object" if len(objects) == 1 else "objects"
        summary = f"{len(objects)} {noun}: " + ", ".join(f"{d['label']} ({d['score']:.2f})" for d in objects)
    else:
        summary = "no objects found"
    return ExpertOutput(text=summary, image=drawn, json=objects)


def format_image_segmentation(image: Image.Image, segments: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Segments as ``{label, score, area}`` (area: the fraction of the image), masks drawn on a copy of ``image``.

    Each segment has a ``label``, a ``score`` (``None`` for semantic segmentation) and a ``mask`` (a greyscale
    PIL image or an array, non-zero inside).
    """
    segments = list(segments)
    masks = [_mask_array(s["mask"], image.size) for s in segments]
    total = float(image.size[0] * image.size[1]) or 1.0
    found = [
        {
            "label": str(s.get("label", "")),
            "score": None if s.get("score") is None else float(s["score"]),
            "area": round(float(mask.sum()) / total, 4),
        }
        for s, mask in zip(segments, masks, strict=True)
    ]
    drawn = draw_masks(image, [(f["label"], m) for f, m in zip(found, masks, strict=True)])
    if found:
        noun = "segment" if len(found) == 1 else "segments"
        parts = [
            f"{f['label']} ({f['area']:.0%})"
            if f["score"] is None
            else f"{f['label']} {f['score']:.2f} ({f['area']:.0%})"
            for f in found
        ]
        summary = f"{len(found)} {noun}: " + ", ".join(parts)
    else:
        summary = "no segments found"
    return ExpertOutput(text=summary, image=drawn, json=found)


def format_depth_estimation(depth: Any, size: tuple[int, int] | None = None) -> ExpertOutput:
    """The depth map as a grey image (the model's values scaled to 0-255), resized to ``size`` when given."""
    array = np.asarray(depth, dtype=np.float32)
    image = depth_image(array)
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    finite = array[np.isfinite(array)]
    extra = {"min": float(finite.min()), "max": float(finite.max())} if finite.size else {}
    return ExpertOutput(image=image, extra=extra)


def format_visual_question_answering(answers: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """The best answer as text; every candidate (``answer``, ``score``) in ``extra["answers"]``."""
    ranked = [
        {"answer": str(a.get("answer") or ""), "score": None if a.get("score") is None else float(a["score"])}
        for a in answers
    ]
    ranked.sort(key=lambda a: -1.0 if a["score"] is None else a["score"], reverse=True)
    return ExpertOutput(text=ranked[0]["answer"] if ranked else "", extra={"answers": ranked})


#: Document question answering reads like visual question answering.
format_document_question_answering = format_visual_question_answering


def format_tabular_classification(labels: Iterable[Any]) -> ExpertOutput:
    """One label per row: ``{row, label}`` (rows counted from 1); the text counts each label."""
    rows = [{"row": number, "label": str(label)} for number, label in enumerate(labels, 1)]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    noun = "row" if len(rows) == 1 else "rows"
    summary = f"{len(rows)} {noun}: " + ", ".join(f"{label} x{count}" for label, count in counts.items())
    return ExpertOutput(text=summary if rows else "no rows", json=rows)


def waveform_audio(samples: Any, rate: int, max_seconds: float | None = None) -> Audio:
    """Mono float32 audio in [-1, 1] from a model's waveform (any shape with one channel, or channels first)."""
    if rate <= 0:
        raise ValueError(f"the model reported a sampling rate of {rate}")
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim > 1:
        array = array.reshape(-1) if 1 in array.shape else array.mean(axis=0)
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=-1.0)
    if max_seconds is not None:
        array = array[: int(max_seconds * rate)]
    return Audio(array=np.clip(array, -1.0, 1.0).astype(np.float32), sampling_rate=int(rate))


def draw_boxes(image: Image.Image, objects: list[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` with each object's box and ``label score`` drawn on it."""
    drawn = image.convert("RGB").copy()
    draw = ImageDraw.Draw(drawn)
    width = max(1, round(min(drawn.size) / 150))
    for index, obj in enumerate(objects):
        box = obj["box"]
        color = _BOX_COLORS[index % len(_BOX_COLORS)]
        corners = (box["xmin"], box["ymin"], max(box["xmin"], box["xmax"]), max(box["ymin"], box["ymax"]))
        draw.rectangle(corners, outline=color, width=width)
        label = f"{obj['label']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((corners[0], corners[1]), label)
        text_top = max(0, corners[1] - (bottom - top) - 2)
        draw.rectangle(
            (corners[0], text_top, corners[0] + (right - left) + 2, text_top + (bottom - top) + 2), fill=color
        )
        draw.text((corners[0] + 1, text_top), label, fill="black")
    return drawn


def draw_masks(image: Image.Image, masks: list[tuple[str, np.ndarray]]) -> Image.Image:
    """A copy of ``image`` with each boolean mask blended in its own colour and its label at the mask's centre."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, (_, mask) in enumerate(masks):
        color = np.asarray(_MASK_COLORS[index % len(_MASK_COLORS)], dtype=np.float32)
        base[mask] = base[mask] * 0.45 + color * 0.55
    drawn = Image.fromarray(base.round().clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(drawn)
    for label, mask in masks:
        ys, xs = np.nonzero(mask)
        if len(xs) and label:
            draw.text((float(xs.mean()), float(ys.mean())), label, fill="white", anchor="mm")
    return drawn


def depth_image(depth: np.ndarray) -> Image.Image:
    """A 2-D depth map as a grey image, its values scaled to 0-255 (a flat map gives a black image)."""
    array = np.nan_to_num(np.asarray(depth, dtype=np.float32).squeeze(), nan=0.0, posinf=0.0, neginf=0.0)
    if array.ndim != 2:
        raise ValueError(f"a depth map has two dimensions, this one has shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return Image.fromarray((scaled * 255.0).round().astype(np.uint8), "L")


def cosine_similarity(a: Any, b: Any) -> float:
    first = np.asarray(a, dtype=np.float64).reshape(-1)
    second = np.asarray(b, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(first) * np.linalg.norm(second))
    return float(first @ second / norm) if norm > 0 else 0.0


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _label_scores(scores: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    labels = [{"label": str(s["label"]), "score": float(s["score"])} for s in scores]
    labels.sort(key=lambda s: s["score"], reverse=True)
    return labels


def _mask_array(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """A segment's mask as a boolean array of the image's size (``size`` is PIL's width, height)."""
    if not isinstance(mask, Image.Image):
        array = np.asarray(mask)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        mask = Image.fromarray(array.astype(np.uint8))
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return np.asarray(mask) > 127
