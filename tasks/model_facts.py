"""What is known about a model, and where it comes from: :class:`ModelFacts`.

Best first: its weights on disk (``config.json``, safetensors headers: :func:`facts_of_folder`), the Hub's
``model_info`` (:class:`HubInfo`: asked at most once per model and kept on disk for ``HUGGINGGPT_HUB_INFO_TTL``
seconds, :func:`facts_of_model_info`), and the catalog's recorded metadata (:func:`facts_of_entry`), which stands in
when the Hub cannot be asked. Everything the Hub says is untrusted text (:func:`hub_name`). The availability rule
(:mod:`tasks.availability`) decides from these facts; ``hugginggpt models`` prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from models_catalog.catalog import CatalogEntry
from tasks.hub import hub_offline
from tasks.settings import MAX_PARAMS, Settings
from tasks.shared import shared
from tasks.sizing import WeightsError, estimate_params


class ModelFacts(BaseModel):
    """What is known about a model, and where it comes from."""

    architecture: str | None = None
    params: int | None = None
    library: str | None = None
    providers: list[str] | None = Field(default=None, description="Inference Providers serving it; None: unknown")
    found: bool = Field(default=True, description="False when the Hub says the repository does not exist")
    source: str = "catalog"
    problem: str | None = Field(default=None, description="why the weights at hand cannot be used (a bad header)")


def facts_of_entry(entry: CatalogEntry | None) -> ModelFacts:
    if entry is None:
        return ModelFacts(source="nothing recorded")
    return ModelFacts(
        architecture=entry.architecture,
        params=entry.params,
        library=entry.library,
        providers=entry.providers,
        source="catalog",
    )


def facts_of_folder(folder: Path) -> ModelFacts:
    """Facts read from a folder of weights: ``config.json``'s ``model_type`` and the parameter count (a weight file
    whose header is malformed is a ``problem``: such weights cannot be loaded, and their size is unknown)."""
    architecture: str | None = None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if isinstance(config, dict) and isinstance(config.get("model_type"), str):
            architecture = config["model_type"]
    except (OSError, ValueError):
        pass
    params: int | None = None
    problem: str | None = None
    try:
        params = estimate_params(folder)
    except WeightsError as exc:
        problem = f"the weights in {folder} cannot be read: {exc}"
    return ModelFacts(
        architecture=architecture,
        params=params,
        library="transformers",
        source=f"weights in {folder}",
        problem=problem,
    )


def facts_of_model_info(info: Any) -> ModelFacts:
    """Facts from a huggingface_hub ``ModelInfo`` asked with :data:`HUB_EXPAND`: untrusted text, so a name that is no
    plain name (markup, terminal escapes, spaces) is dropped, and a size that is no positive count is unknown."""
    config = info.config if isinstance(getattr(info, "config", None), dict) else {}
    safetensors = getattr(info, "safetensors", None)
    mapping = getattr(info, "inference_provider_mapping", None) or []
    providers = [hub_name(getattr(m, "provider", None)) for m in mapping if getattr(m, "status", "live") == "live"]
    return ModelFacts(
        architecture=hub_name(config.get("model_type")),
        params=_param_count(getattr(safetensors, "total", None)),
        library=hub_name(getattr(info, "library_name", None)),
        providers=[p for p in providers if p is not None],
        source="the Hub",
    )


_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def hub_name(value: Any, *, allow: str = "") -> str | None:
    """``value`` when it is a plain name as the Hub uses them (an architecture, a library, a provider, a tag; the
    characters of ``allow`` also allowed), else ``None``."""
    if not isinstance(value, str):
        return None
    if not allow:
        return value if _HUB_NAME.fullmatch(value) else None
    pattern = rf"[A-Za-z0-9][A-Za-z0-9_.\-{re.escape(allow)}]{{0,99}}"
    return value if re.fullmatch(pattern, value) else None


def _param_count(value: Any) -> int | None:
    """A parameter count from an untrusted answer (the Hub's ``safetensors.total``): a whole number from 1 to
    :data:`MAX_PARAMS`, else ``None`` (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_PARAMS:
        return None
    return value


#: What ``model_info`` is asked for (huggingface_hub's ``ExpandModelProperty_T`` names).
HUB_EXPAND: list[Any] = ["inferenceProviderMapping", "safetensors", "config", "library_name"]


#: Seconds the Hub is not asked again after it could not be reached.
UNREACHABLE_PAUSE = 60.0


class HubInfo:
    """``model_info`` per model, asked once and kept on disk for ``ttl`` seconds (one JSON file per model), so every
    process and every run reuses the answer.

    :meth:`get` returns ``(facts, None)``, or ``(None, why)`` when the Hub could not be asked (offline, unreachable);
    a repository the Hub does not know is a fact (``found=False``), kept like the others.
    """

    def __init__(self, folder: Path, ttl: float, timeout: float = 10.0) -> None:
        self.folder = folder
        self.ttl = ttl
        self.timeout = timeout
        self._unreachable: tuple[float, str] | None = None  # (until when, why): not asked again meanwhile

    def _path(self, model_id: str, revision: str | None) -> Path:
        key = hashlib.sha256(f"{model_id}@{revision or ''}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.json"

    def _read(self, path: Path) -> ModelFacts | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if time.time() - float(data["fetched_at"]) > self.ttl:
                return None
            return ModelFacts.model_validate(data["facts"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, stale or unreadable: ask again

    def get(self, model_id: str, revision: str | None = None) -> tuple[ModelFacts | None, str | None]:
        path = self._path(model_id, revision)
        facts = self._read(path)
        if facts is not None:
            result: tuple[ModelFacts | None, str | None] = (facts, None)
        elif hub_offline():
            return None, "the Hub is offline (HF_HUB_OFFLINE)"
        elif self._unreachable is not None and time.monotonic() < self._unreachable[0]:
            return None, self._unreachable[1]
        else:
            result = self._ask(model_id, revision)
            if result[0] is not None and self.ttl > 0:
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
                record = {"id": model_id, "revision": revision, "fetched_at": time.time()}
                tmp.write_text(json.dumps(record | {"facts": result[0].model_dump()}), encoding="utf-8")
                tmp.replace(path)
        return result

    def _ask(self, model_id: str, revision: str | None) -> tuple[ModelFacts | None, str | None]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            info = HfApi().model_info(model_id, revision=revision, expand=HUB_EXPAND, timeout=self.timeout)
        except GatedRepoError:
            return None, "the repository is gated (log in with a token that has access)"
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return ModelFacts(found=False, source="the Hub"), None
        except HfHubHTTPError as exc:  # an answer, but not about this model (5xx, a proxy's page)
            return None, f"the Hub could not be asked ({type(exc).__name__}: {str(exc)[:160]})"
        except Exception as exc:  # no answer at all: not asked again for a while
            why = f"the Hub could not be reached ({type(exc).__name__}: {str(exc)[:160]})"
            self._unreachable = (time.monotonic() + UNREACHABLE_PAUSE, why)
            return None, why
        return facts_of_model_info(info), None


def hub_info_for(settings: Settings) -> HubInfo:
    """The process-wide :class:`HubInfo` for these settings (its in-memory answers are shared)."""
    folder = settings.hub_info_cache or _default_hub_info_folder()
    key = (Path(folder), settings.hub_info_ttl, settings.hub_info_timeout)
    return shared("hub-info", key, lambda: HubInfo(*key))


def _default_hub_info_folder() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hugginggpt" / "model-info"
