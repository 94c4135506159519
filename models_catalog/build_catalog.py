"""Build ``models_catalog/data/catalog.jsonl`` from a snapshot of Hub model metadata.

The source is HuggingGPT's catalog (``p0_models.jsonl``: id, task, downloads,
likes, meta, description per model). Each record is trimmed to what ranking
and the selection prompt use.

    python -m models_catalog.build_catalog ../shared/reference/jarvis_p0_models.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from models_catalog.catalog import DEFAULT_CATALOG_PATH, CatalogEntry

_CODE = re.compile(r"(```|~~~).*?(\1|$)", re.DOTALL)
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_IMG = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_HTML = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def trim_description(text: str, limit: int = 300) -> str:
    """Code blocks, images and HTML dropped, markdown links kept as their text, whitespace collapsed, cut at a word."""
    text = _CODE.sub(" ", text or "")
    text = _IMG.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _HTML.sub(" ", text)
    text = text.replace("#", " ").replace("*", "").replace("`", "")
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + "..."


#: Libraries other than transformers that model cards name in their tags.
OTHER_LIBRARIES = (
    "espnet",
    "speechbrain",
    "fairseq",
    "diffusers",
    "asteroid",
    "pyannote",
    "nemo",
    "paddlenlp",
    "timm",
    "keras",
    "spacy",
    "flair",
    "sentence-transformers",
    "stanza",
    "fastai",
    "allennlp",
    "fasttext",
    "sklearn",
    "skops",
    "ultralytics",
    "yolov5",
    "doctr",
    "open_clip",
    "tensorflowtts",
    "coqui",
    "onnx",
    "stable-diffusion",
)


#: Owners whose models the 2023 snapshot's cards do not label, and the library that loads them.
LIBRARY_BY_OWNER = {"pyannote": "pyannote-audio", "damo-vilab": "diffusers"}


def guess_library(meta: dict, tags: list[str], model_id: str = "") -> str:
    """The library that loads the model: the card's ``library_name``, else one named in its tags, else its owner's
    (:data:`LIBRARY_BY_OWNER`), else transformers."""
    named = meta.get("library_name") or meta.get("library_tag")
    if isinstance(named, str) and named.strip():
        return named.strip().lower()
    lowered = {t.lower() for t in tags}
    for lib in OTHER_LIBRARIES:
        if lib in lowered:
            return "diffusers" if lib == "stable-diffusion" else lib
    return LIBRARY_BY_OWNER.get(model_id.split("/", 1)[0], "transformers")


def convert_record(raw: dict) -> CatalogEntry:
    meta = raw.get("meta") or {}
    tags = [str(t) for t in (meta.get("tags") or []) if isinstance(t, str | int)]
    language = meta.get("language")
    if isinstance(language, str):
        language = [language]
    languages = [str(x) for x in (language or []) if isinstance(x, str)]
    return CatalogEntry(
        id=raw["id"],
        task=raw.get("task") or raw["pipeline_tag"],
        downloads=int(raw.get("downloads") or 0),
        likes=int(raw.get("likes") or 0),
        tags=tags[:12],
        library=guess_library(meta, tags, raw["id"]),
        languages=languages[:8],
        license=meta.get("license") if isinstance(meta.get("license"), str) else None,
        description=trim_description(raw.get("description") or ""),
    )


def build(source: Path, dest: Path) -> int:
    entries = []
    with source.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                entries.append(convert_record(json.loads(line)))
    entries.sort(key=lambda e: (e.task, -e.downloads, e.id))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", encoding="utf-8") as fh:
        for e in entries:
            fh.write(e.model_dump_json(exclude_none=True, exclude={"requires", "tier", "trust_remote_code"}) + "\n")
    return len(entries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="p0_models.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_CATALOG_PATH)
    args = parser.parse_args(argv)
    n = build(args.source, args.out)
    print(f"wrote {n} models to {args.out}")


if __name__ == "__main__":
    main()
