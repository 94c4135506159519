"""Reading a node's inputs: local paths, http(s) URLs and fsspec URLs, decoded by modality."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from tasks.experts.base import Audio
from tasks.storage import StorageError, read_uri
from tasks.task_types import Modality

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
MAX_INPUT_BYTES = 200 * 1024 * 1024


class InputError(ValueError):
    """An input could not be read or is not of the kind the task needs; the message names it."""


def read_input_bytes(ref: str, *, timeout: float = 30.0, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    m = _SCHEME.match(ref)
    scheme = m.group(1).lower() if m else ""
    if scheme in {"http", "https"}:
        try:
            req = urllib.request.Request(ref, headers={"User-Agent": "hugginggpt-prefect"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise InputError(f"input {ref} could not be fetched: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InputError(f"input {ref} could not be fetched: {reason}") from None
    elif scheme and scheme != "file":
        try:
            data = read_uri(ref)
        except StorageError as exc:
            raise InputError(f"input {exc}") from None
    else:
        path = Path(ref[len("file://") :] if scheme == "file" else ref).expanduser()
        if not path.is_file():
            raise InputError(f"input file {ref} does not exist")
        if path.stat().st_size > max_bytes:
            raise InputError(f"input file {ref} is larger than {max_bytes} bytes")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise InputError(f"input {ref} is larger than {max_bytes} bytes")
    return data


def decode_image(data: bytes, ref: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"input {ref} is not a readable image ({exc})") from None
    return img.convert("RGB")


def decode_audio(data: bytes, ref: str) -> Audio:
    import soundfile as sf

    try:
        array, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(f"input {ref} is not readable audio ({exc})") from None
    mono = array.mean(axis=1).astype(np.float32)
    if mono.size == 0:
        raise InputError(f"input {ref} is empty audio")
    return Audio(array=mono, sampling_rate=int(rate))


def decode_text(data: bytes, ref: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"input {ref} is not UTF-8 text") from None


def load_input(ref: str, modality: Modality, *, timeout: float = 30.0) -> Any:
    """Read ``ref`` and decode it as ``modality`` (images -> PIL, audio -> :class:`Audio`, text -> str, else bytes)."""
    data = read_input_bytes(ref, timeout=timeout)
    if modality == Modality.IMAGE:
        return decode_image(data, ref)
    if modality == Modality.AUDIO:
        return decode_audio(data, ref)
    if modality == Modality.TEXT:
        return decode_text(data, ref)
    return data
