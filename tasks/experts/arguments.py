"""Reading a node's arguments for an expert, shared by the local and remote backends.

Each reader takes the node's inputs and an argument name and gives the value in the form models take (``str``,
an RGB ``PIL.Image.Image``, mono :class:`~tasks.experts.base.Audio`), or raises
:class:`~tasks.experts.base.ExpertError` naming the argument.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
from PIL import Image

from tasks.experts.base import Audio, ExpertError, ExpertInputs


def _required(inputs: ExpertInputs, name: str) -> Any:
    value = inputs.get(name)
    if value is None:
        given = ", ".join(sorted(inputs)) or "none"
        raise ExpertError(f"missing input {name!r} (given: {given})")
    return value


def text_input(inputs: ExpertInputs, name: str) -> str:
    value = _required(inputs, name)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def image_input(inputs: ExpertInputs, name: str) -> Image.Image:
    value = _required(inputs, name)
    if isinstance(value, bytes):
        value = Image.open(io.BytesIO(value))
    elif isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    if not isinstance(value, Image.Image):
        raise ExpertError(f"input {name!r} is a {type(value).__name__}, not an image")
    return value.convert("RGB")


def audio_input(inputs: ExpertInputs, name: str) -> Audio:
    value = _required(inputs, name)
    if isinstance(value, bytes):
        import soundfile

        array, rate = soundfile.read(io.BytesIO(value), dtype="float32", always_2d=False)
        value = Audio(array=array, sampling_rate=int(rate))
    if not isinstance(value, Audio):
        raise ExpertError(f"input {name!r} is a {type(value).__name__}, not audio")
    array = np.asarray(value.array, dtype=np.float32)
    if array.ndim > 1:
        array = array.mean(axis=1) if array.shape[0] > array.shape[1] else array.mean(axis=0)
    return Audio(array=np.nan_to_num(array), sampling_rate=int(value.sampling_rate))


def parse_labels(text: str) -> list[str]:
    """Candidate labels from a comma- (or newline-) separated string, in order, without blanks or repeats."""
    labels = list(dict.fromkeys(p.strip() for p in re.split(r"[,\n]", text) if p.strip()))
    if not labels:
        raise ExpertError(f"no candidate labels in {text!r} (give them comma-separated)")
    return labels


def parse_csv_table(data: bytes | str) -> dict[str, list[str]]:
    """A CSV table (header row first) as ``{column: [values]}``, the form tabular models take."""
    import csv

    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ExpertError("the table needs a header row and at least one row of values")
    header = [h.strip() for h in rows[0]]
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise ExpertError(f"row {number} of the table has {len(row)} cells, the header has {len(header)}")
    return {name: [row[i].strip() for row in rows[1:]] for i, name in enumerate(header)}


#: Language names (lower case) and their ISO 639-1 codes, for matching a requested target with a model's.
LANGUAGE_CODES: dict[str, str] = {
    "arabic": "ar",
    "chinese": "zh",
    "czech": "cs",
    "danish": "da",
    "dutch": "nl",
    "english": "en",
    "finnish": "fi",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hindi": "hi",
    "hungarian": "hu",
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "norwegian": "no",
    "polish": "pl",
    "portuguese": "pt",
    "romanian": "ro",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "turkish": "tr",
    "ukrainian": "uk",
    "vietnamese": "vi",
}


def language_code(language: str) -> str:
    """The ISO 639-1 code of a language name or code (``"French"``, ``"fr"``, ``"fra"`` -> ``"fr"``); a name not
    in :data:`LANGUAGE_CODES` is returned lower-cased as it is."""
    key = language.strip().lower()
    if key in LANGUAGE_CODES:
        return LANGUAGE_CODES[key]
    return key.split("_")[0].split("-")[0] if len(key) <= 7 else key


def language_pair_from_name(name: str) -> tuple[str, str] | None:
    """(source, target) of a model named after one language pair (Marian ``opus-mt-SRC-TGT``), else ``None``."""
    found = re.search(r"opus-mt-(?:tc-(?:big-)?)?([A-Za-z_]+)-([A-Za-z_]+)$", name.rstrip("/"))
    return (found.group(1), found.group(2)) if found else None
