"""What goes over the wire to an inference server and back: inputs as the client sends them, answers as outputs.

Images are sent as PNG bytes and audio as 16-bit WAV bytes; images come back as PIL images (RGB), audio through
``soundfile`` as :class:`~tasks.experts.base.Audio`, video as MP4 bytes (:func:`is_mp4`), and lists of results
flattened however the server nested them (:func:`flat`).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from tasks.experts.base import Audio, ExpertError
from tasks.experts.outputs import waveform_audio


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wav(audio: Audio) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    samples = np.clip(np.asarray(audio.array, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buffer, samples, int(audio.sampling_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def rgb(image: Any) -> Image.Image:
    """The server's image (a PIL image or encoded bytes) as RGB; an :class:`ExpertError` for anything else."""
    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(bytes(image)))
    if not isinstance(image, Image.Image):
        raise ExpertError(f"the server returned a {type(image).__name__}, not an image")
    image.load()
    return image.convert("RGB")


def decode_audio(data: bytes, max_seconds: float) -> Audio:
    """The server's encoded audio as mono :class:`Audio`, at most ``max_seconds`` long."""
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ExpertError(f"the server's audio could not be decoded ({len(data)} bytes): {exc}") from exc
    return waveform_audio(samples.mean(axis=1), int(rate), max_seconds)


def flat(result: Any) -> list[Any]:
    """A list of result elements, whether the server nested it in another list (``[[...]]``) or not."""
    if result is None:
        return []
    if isinstance(result, dict):
        return [result]
    items = list(result)
    if len(items) == 1 and isinstance(items[0], list):
        items = list(items[0])
    flattened: list[Any] = []
    for item in items:
        if isinstance(item, list):
            flattened.extend(item)
        else:
            flattened.append(item)
    return flattened


def is_mp4(data: bytes) -> bool:
    """Whether ``data`` starts like an ISO base media file (MP4, MOV): a box, then ``ftyp``."""
    return len(data) >= 12 and data[4:8] == b"ftyp"
