"""The model catalog: Hub model metadata per task, loaded, merged, filtered and ranked.

The built-in catalog is the recommended tier (``data/recommended.jsonl``: current models, with their
architecture, size and requirements, ranked first) over a 2023 snapshot of Hub metadata (``data/catalog.jsonl``,
the long tail); an extra JSONL (``HUGGINGGPT_CATALOG``) adds entries or overrides built-in ones
with the same (task, id), for instance to point an entry at a local folder of
weights (``local_path``) or an endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.schemas import ModelSpec

DEFAULT_CATALOG_PATH = Path(__file__).parent / "data" / "catalog.jsonl"
#: The recommended tier: current models proven to run here (or remote-only), ranked first.
RECOMMENDED_PATH = Path(__file__).parent / "data" / "recommended.jsonl"


class CatalogError(ValueError):
    """A catalog file could not be read; the message names the file and line."""


def repo_id_problem(model_id: object) -> str | None:
    """Why ``model_id`` is no Hub repository id (``name`` or ``namespace/name``, at most 96 characters of letters,
    digits, ``-``, ``_`` and ``.``; no ``..``), or ``None`` when it is one."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(model_id, str):
        return f"the id is a {type(model_id).__name__}, not text"
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        return (
            "not a Hub repository id (name or namespace/name, at most 96 letters, digits, '-', '_' or '.', "
            "no '..' or '--')"
        )
    return None


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    downloads: int = 0
    likes: int = 0
    tags: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    license: str | None = None
    library: str = Field(default="transformers", description="the library that loads it")
    description: str = ""
    local_path: str | None = None
    revision: str | None = None
    endpoint: str | None = None
    provider: str | None = Field(
        default=None,
        description="the Inference Provider that serves it remotely when it has no endpoint (fal-ai, novita, "
        "replicate, together, ...); default: HUGGINGGPT_HF_PROVIDER, else auto",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="the model needs the Python code of its repository; it runs only if HUGGINGGPT_TRUST_REMOTE_CODE "
        "allows it too",
    )
    architecture: str | None = Field(
        default=None, description="the model_type of its config (bert, vits, whisper, ...), as transformers names it"
    )
    params: int | None = Field(default=None, ge=0, description="parameter count")
    requires: list[str] = Field(
        default_factory=list,
        description="what it needs besides transformers: Python packages by distribution name, programs as 'bin:NAME'",
    )
    providers: list[str] | None = Field(
        default=None,
        description="the Inference Providers the Hub said serve it when the catalog was built (None: not recorded); "
        "stands in for the Hub's answer when the Hub cannot be asked",
    )
    tier: Literal["recommended", "catalog"] = Field(
        default="catalog",
        description="'recommended': current, proven to run here, ranked first; 'catalog': the long tail",
    )

    def spec(self) -> ModelSpec:
        return ModelSpec(
            id=self.id,
            task=self.task,
            local_path=self.local_path,
            revision=self.revision,
            endpoint=self.endpoint,
            provider=self.provider,
            library=self.library,
            trust_remote_code=self.trust_remote_code,
        )


def read_catalog_file(path: Path | str) -> list[CatalogEntry]:
    """Entries of one JSONL file; a broken line raises :class:`CatalogError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog file {path} does not exist")
    entries: list[CatalogEntry] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entry = CatalogEntry.model_validate(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CatalogError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            except ValidationError as exc:
                fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise CatalogError(f"{path}:{lineno}: not a catalog entry ({fields})") from None
            if entry.local_path and not Path(entry.local_path).is_absolute():
                entry.local_path = str((path.parent / entry.local_path).resolve())
            entries.append(entry)
    return entries


class Catalog:
    """Entries keyed by (task, id), with filtering and ranking."""

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self._entries: dict[tuple[str, str], CatalogEntry] = {}
        self.extend(entries)

    def extend(self, entries: Iterable[CatalogEntry]) -> None:
        """Add entries; one with the (task, id) of an existing entry replaces it."""
        for e in entries:
            self._entries[(e.task, e.id)] = e

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries.values())

    def get(self, task: str, model_id: str) -> CatalogEntry | None:
        return self._entries.get((task, model_id))

    def for_task(self, task: str) -> list[CatalogEntry]:
        return [e for (t, _), e in self._entries.items() if t == task]

    def tasks(self) -> set[str]:
        return {t for t, _ in self._entries}

    def ranked(self, task: str) -> list[CatalogEntry]:
        """Entries for ``task``, best first: the recommended tier in its own order, then the rest by downloads, then
        likes."""
        return sorted(self.for_task(task), key=_rank)


def _rank(entry: CatalogEntry) -> tuple[bool, int, int, str]:
    if entry.tier == "recommended":
        return (False, 0, 0, "")  # a stable sort keeps the tier's own order
    return (True, -entry.downloads, -entry.likes, entry.id)


def load_catalog(extra: Path | str | None = None, *, builtin: bool = True) -> Catalog:
    """The built-in catalog plus ``extra``, which adds and overrides, and comes first: its recommended entries rank
    before the built-in tier (a user's own choice of models wins)."""
    catalog = Catalog(read_catalog_file(extra) if extra is not None else ())
    if builtin:
        catalog.extend(e for e in _builtin_entries() if catalog.get(e.task, e.id) is None)
    return catalog


@cache
def _builtin_entries() -> tuple[CatalogEntry, ...]:
    """The recommended tier, in its order, then the snapshot's other entries (a recommended entry replaces the
    snapshot's of the same task and id)."""
    merged = {(e.task, e.id): e for e in read_catalog_file(RECOMMENDED_PATH)}
    for entry in read_catalog_file(DEFAULT_CATALOG_PATH):
        merged.setdefault((entry.task, entry.id), entry)
    return tuple(merged.values())
