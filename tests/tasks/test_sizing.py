"""Weight sizing (:mod:`tasks.sizing`): parameter counts read from the weights in a folder, without loading them.

Malformed safetensors headers (hostile metadata) are tested in ``tests/system/test_hostile_metadata.py``.
"""

from __future__ import annotations

import json
import pathlib
import struct

from tasks.experts.base import ModelSpec
from tasks.sizing import estimate_params, size_hint
from tests.tiny_models import build_tiny_models


def _safetensors(path: pathlib.Path, shapes: dict[str, list[int]]) -> None:
    """A float32 safetensors file with tensors of these shapes (zeros)."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\0" * offset)


def test_size_estimates(tmp_path: pathlib.Path) -> None:
    from transformers import AutoModelForSequenceClassification

    tiny = build_tiny_models(tmp_path / "tiny", tasks=("text-classification",))["text-classification"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny)
    assert estimate_params(tiny) == sum(p.numel() for p in model.parameters())
    assert size_hint(ModelSpec(id="tiny/tc", task="text-classification", local_path=str(tiny))) == estimate_params(tiny)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "pytorch_model.bin").write_bytes(b"\0" * 4000)
    assert estimate_params(legacy) == 1000
    assert estimate_params(tmp_path / "nowhere") is None
    assert size_hint(ModelSpec(id="acme/not-cached", task="text-classification")) is None


def test_safetensors_headers_are_counted_exactly_and_preferred_to_other_weights(tmp_path: pathlib.Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    for folder in (small, large):
        folder.mkdir()
    _safetensors(small / "model.safetensors", {"a": [3, 4], "b": [5]})
    _safetensors(large / "model-00001.safetensors", {"a": [100, 10]})
    _safetensors(large / "model-00002.safetensors", {"b": [7]})
    (large / "pytorch_model.bin").write_bytes(b"\0" * 40_000)  # the same weights again: not counted
    assert estimate_params(small) == 17
    assert estimate_params(large) == 1007
