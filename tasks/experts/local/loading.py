"""Loading models for the local backend, and the limits read from a model's config and tokenizer.

Every loader goes through :func:`hub_kwargs`, so a Hub id (with its revision and token) and a folder written by
``save_pretrained`` load through the same ``from_pretrained`` / ``pipeline`` code.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from tasks.experts.base import ModelSpec
from tasks.experts.local.registry import LocalOptions

#: transformers builds models on the meta device through process-global patches of torch: two loads at once in one
#: process corrupt each other ("Cannot copy out of meta tensor"), so loads take this lock.
LOAD_LOCK = threading.Lock()


def trusts(options: LocalOptions, model: ModelSpec) -> bool:
    """Whether ``model``'s repository code may run: its catalog entry and the backend's setting both say so."""
    return bool(options.trust_remote_code and model.trust_remote_code)


def hub_kwargs(options: LocalOptions, model: ModelSpec) -> dict[str, Any]:
    """What every ``from_pretrained`` call of ``model`` is given: revision, token, ``trust_remote_code``."""
    kwargs: dict[str, Any] = {"trust_remote_code": trusts(options, model)}
    if model.revision:
        kwargs["revision"] = model.revision
    if options.token:
        kwargs["token"] = options.token
    return kwargs


#: Pipelines whose tokenizer limit is set from the model's positions (so long inputs are truncated, not fatal).
_BOUNDED_PIPELINES: dict[str, int] = {
    "text-classification": 512,
    "token-classification": 512,
    "text-generation": 2048,
    "zero-shot-classification": 512,
}


def load_pipeline(options: LocalOptions, task: str, model: ModelSpec) -> Any:
    """``transformers.pipeline(task)`` for ``model`` on the backend's device."""
    from transformers import pipeline

    pipe = pipeline(task, model=model.source, device=options.device, **hub_kwargs(options, model))
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None and task in _BOUNDED_PIPELINES:
        positions = max_positions(pipe.model.config)
        tokenizer.model_max_length = input_limit(tokenizer, positions, default=_BOUNDED_PIPELINES[task])
    return pipe


def pipeline_loader(task: str) -> Callable[[LocalOptions, ModelSpec], Any]:
    """A loader that builds ``transformers.pipeline(task)``."""

    def load(options: LocalOptions, model: ModelSpec) -> Any:
        return load_pipeline(options, task, model)

    load.__name__ = f"load_{task.replace('-', '_')}_pipeline"
    return load


def to_device(encoded: Any, device: str) -> dict[str, Any]:
    """A processor's output as a dict with every tensor on ``device``."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in dict(encoded).items()}


def max_positions(config: Any) -> int | None:
    """The number of positions a model can attend to, when its config says so."""
    for name in ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def input_limit(tokenizer: Any, positions: int | None, default: int) -> int:
    """How many tokens an input may have: the smaller of the tokenizer's and the model's limits."""
    limits = [n for n in (getattr(tokenizer, "model_max_length", None), positions) if isinstance(n, int) and n > 0]
    limits = [n for n in limits if n < 1_000_000]
    return min(limits) if limits else default


def bounded_new_tokens(max_new_tokens: int, positions: int | None) -> int:
    if positions is None:
        return max_new_tokens
    return max(1, min(max_new_tokens, positions - 2))


def forward_arg_names(model: Any) -> list[str]:

    try:
        return list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return []


def accepted_inputs(model: Any, encoded: Any, device: str) -> dict[str, Any]:
    """The tensors of ``encoded`` that ``model.forward`` takes, on ``device``."""
    accepted = set(forward_arg_names(model))
    return {k: v.to(device) for k, v in dict(encoded).items() if not accepted or k in accepted}


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling (good enough for speech recognition input)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target or len(samples) == 0:
        return samples
    duration = len(samples) / rate
    count = max(1, round(duration * target))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(len(samples), dtype=np.float64), samples).astype(np.float32)


def hub_unreachable(exc: BaseException) -> bool:
    """Whether loading failed because the Hub could not be reached (not because the model is broken)."""
    text = str(exc)
    return "couldn't connect to" in text or "Connection" in type(exc).__name__ or "offline mode" in text.lower()


def describe(model: ModelSpec) -> str:
    if model.source != model.id:
        return f"{model.id!r} (from {model.source})"
    return repr(model.id)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is running out of memory: ``MemoryError``, torch's
    ``OutOfMemoryError``, or a runtime error saying "out of memory" (MPS, ROCm)."""
    import torch

    oom_types: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)
    if hasattr(torch, "OutOfMemoryError"):
        oom_types = (*oom_types, torch.OutOfMemoryError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, oom_types):
            return True
        if isinstance(current, RuntimeError) and "out of memory" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def release_accelerator_memory() -> None:
    """Give evicted models' GPU memory back to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
