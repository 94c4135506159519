"""Weight sizing: how many parameters the weights in a folder hold, read without loading them.

safetensors files are counted exactly from their JSON headers (an untrusted header that does not add up is a
:class:`WeightsError` naming the file and the tensor); other weight files are estimated from their size. Read by the
Hub facts of a folder (:mod:`tasks.model_facts`), prefetch (:mod:`tasks.prefetch`) and the cold-start bench.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from tasks.experts.base import ModelSpec
from tasks.hub import hf_cache_folder
from tasks.settings import MAX_PARAMS

#: Weight files counted by :func:`estimate_params`, by preference (a repo often ships the same weights twice).
_WEIGHT_SUFFIXES: tuple[tuple[str, ...], ...] = ((".safetensors",), (".bin", ".pt", ".pth"))
_BYTES_PER_DTYPE: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class WeightsError(ValueError):
    """A weight file that cannot be what it says (a malformed safetensors header); the message names the file."""


#: Longest safetensors header read (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000


def estimate_params(folder: str | Path) -> int | None:
    """The parameter count of the weights in ``folder``, or ``None`` when it holds none.

    safetensors files are counted exactly from their headers (no tensor is read); other weight files (``.bin``,
    ``.pt``, ``.pth``) are estimated as their size in bytes / 4 (float32). When a folder has both, only the
    safetensors files count (they hold the same weights). Raises :class:`WeightsError` when a safetensors header is
    malformed: such a file cannot be loaded, and a count made from it (negative shapes) would mean nothing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = [f for f in folder.iterdir() if f.is_file()]
    for suffixes in _WEIGHT_SUFFIXES:
        weights = [f for f in files if f.name.endswith(suffixes) and not f.name.startswith("training_args")]
        if not weights:
            continue
        total = 0
        for weight in weights:
            counted = _safetensors_params(weight) if weight.suffix == ".safetensors" else None
            total += counted if counted is not None else weight.stat().st_size // 4
        return total
    return None


def size_hint(spec: ModelSpec) -> int | None:
    """:func:`estimate_params` of the model's local folder, or of its snapshot in the Hugging Face cache; ``None``
    when unknown (no weights, or weights whose header is malformed)."""
    folder = Path(spec.local_path) if spec.local_path else hf_cache_folder(spec.id, spec.revision)
    if folder is None:
        return None
    try:
        return estimate_params(folder)
    except WeightsError:
        return None


def _whole(value: Any) -> bool:
    """A non-negative whole number (JSON ``true`` is no number)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _safetensors_params(path: Path) -> int | None:
    """Parameters in a safetensors file, from its JSON header; ``None`` when the file cannot be read (too short, a
    header longer than the format allows); :class:`WeightsError` when the header is not a safetensors header."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length <= 0 or length > MAX_HEADER_BYTES:
                return None
            header = json.loads(fh.read(length))
    except (OSError, struct.error):
        return None
    except ValueError as exc:
        raise WeightsError(f"{path.name}: the safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path.name}: the safetensors header is a JSON {type(header).__name__}, not an object")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        what = f"{path.name}: tensor {str(name)[:80]!r}"
        if not isinstance(info, dict):
            raise WeightsError(f"{what} is described by a JSON {type(info).__name__}, not an object")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(_whole(dim) for dim in shape):
            raise WeightsError(f"{what} has shape {str(shape)[:80]}, not a list of whole numbers of at least 0")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_whole(o) for o in offsets)
            or offsets[1] < offsets[0]
        ):
            raise WeightsError(f"{what} has data_offsets {str(offsets)[:80]}, not [begin, end] with 0 <= begin <= end")
        count = 1
        for dim in shape:
            count *= dim
        width = _BYTES_PER_DTYPE.get(str(info.get("dtype")))
        if width is not None and count * width != offsets[1] - offsets[0]:
            raise WeightsError(
                f"{what}: shape {shape} of {info.get('dtype')} needs {count * width} bytes, "
                f"data_offsets {offsets} hold {offsets[1] - offsets[0]}"
            )
        total += count
    if total > MAX_PARAMS:
        raise WeightsError(f"{path.name}: the header claims {total:,} parameters, more than any model has")
    return total
