"""Where a model can run here, and why: the one place that decides.

Every can-run decision comes from :class:`Availability`, built once per run (:class:`tasks.services.Services`):
selection drops the candidates it rejects before the LLM sees them (and records why, per candidate), the planner is only
offered task types with at least one runnable candidate, execution walks the fallback candidates with it, and
``hugginggpt models`` prints its verdicts.

**Local** only when the task has a local runner, the model's library is transformers, its architecture (the
config's ``model_type``) is one the local backend has proven for the task (``PROVEN_ARCHITECTURES``; or the model brings
its own code and both its catalog entry and ``HUGGINGGPT_TRUST_REMOTE_CODE`` allow it), what it ``requires``
is installed (Python distributions, programs as ``bin:NAME``), its weights are on this machine or the Hub can be
reached, and its size fits the local budget: ``HUGGINGGPT_MAX_LOCAL_PARAMS``, by default what the machine's memory
holds (:func:`default_max_local_params`).

**Remote** only when an endpoint is configured (the catalog entry's, or ``HUGGINGGPT_HF_INFERENCE_URL``) or, with the
Hub reachable and a token, the Hub says an Inference Provider serves the model.

What is known about a model comes, best first, from its weights on disk (``config.json``, safetensors headers), the
Hub's ``model_info`` (asked at most once per model and kept on disk for ``HUGGINGGPT_HUB_INFO_TTL`` seconds), and
the catalog's recorded metadata, which stands in when the Hub cannot be asked.

*Hybrid* prefers local when the weights are here or the size is known to fit; otherwise remote when it can serve;
otherwise local after all (weights downloaded from the Hub).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from models_catalog.catalog import Catalog, CatalogEntry, load_catalog
from tasks.experts.base import ModelSpec
from tasks.experts.fallback import Chooser
from tasks.experts.local import PROVEN_ARCHITECTURES, requirement_refusal
from tasks.experts.local import SUPPORTED_TASKS as LOCAL_TASKS
from tasks.experts.remote import SUPPORTED_TASKS as REMOTE_TASKS
from tasks.experts.remote import RemoteBackend
from tasks.schemas import CandidateCheck
from tasks.settings import MAX_PARAMS, Settings
from tasks.shared import shared
from tasks.task_types import normalize_task_name

InferenceMode = Literal["local", "remote", "hybrid"]
INFERENCE_MODES: tuple[str, ...] = ("local", "remote", "hybrid")

#: Libraries the local backend loads.
LOCAL_LIBRARIES = frozenset({"transformers"})

# --- memory budget --------------------------------------------------------------------------------------------------

#: A model's weights on CPU are float32.
BYTES_PER_PARAM = 4
#: Loading and running need more than the weights: activations, a second copy while loading, the tokenizer.
HEADROOM = 1.5
#: The share of the machine's memory the local models may take (the rest: the OS, Prefect, other models).
MEMORY_FRACTION = 0.5


def total_memory() -> int | None:
    """The machine's physical memory in bytes, or ``None`` when the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def default_max_local_params(memory: int | None = None) -> int | None:
    """The largest model (parameters) run locally by default: ``params * BYTES_PER_PARAM * HEADROOM`` must stay within
    ``MEMORY_FRACTION`` of ``memory`` (default: this machine's). 24 GB gives 2B parameters: never a 6B model."""
    memory = total_memory() if memory is None else memory
    if memory is None:
        return None
    return int(memory * MEMORY_FRACTION / (BYTES_PER_PARAM * HEADROOM))


def local_budget(settings: Settings) -> tuple[int | None, str]:
    """The local parameter budget and where it comes from (for reasons)."""
    if settings.max_local_params is not None:
        return settings.max_local_params, "HUGGINGGPT_MAX_LOCAL_PARAMS"
    budget = default_max_local_params()
    gib = (total_memory() or 0) / 2**30
    return budget, f"the default for {gib:.0f} GiB of memory; raise HUGGINGGPT_MAX_LOCAL_PARAMS to allow more"


# --- what is known about a model ----------------------------------------------------------------------------------


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


# --- the decision ---------------------------------------------------------------------------------------------------


class Verdict(BaseModel):
    """Where one model can run, each side with its reason, and what was known."""

    model: str
    task: str
    local: bool = False
    local_reason: str = ""
    weights_here: bool = False
    remote: bool = False
    remote_reason: str = ""
    remote_where: str | None = Field(default=None, description="the endpoint, or the providers serving it")
    facts: ModelFacts = Field(default_factory=ModelFacts)


class Availability:
    """Every can-run decision under one set of settings."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog | None = None,
        *,
        proven: Mapping[str, frozenset[str]] | None = None,
        hub: HubInfo | None = None,
        remote: RemoteBackend | None = None,
    ) -> None:
        self.settings = settings
        #: the remote backend whose endpoints and providers the remote side checks (the run's, from
        #: :class:`tasks.services.Services`; by default one built from the settings)
        self.remote = remote if remote is not None else RemoteBackend.from_settings(settings)
        self.catalog = catalog if catalog is not None else load_catalog(settings.catalog)
        #: task type -> the architectures the local backend is proven to run for it
        self.proven: Mapping[str, frozenset[str]] = PROVEN_ARCHITECTURES if proven is None else proven
        self.hub = hub or hub_info_for(settings)
        self.budget, self.budget_source = local_budget(settings)
        self.mode: InferenceMode = settings.inference_mode
        if self.mode not in INFERENCE_MODES:
            raise ValueError(f"unknown inference mode {self.mode!r}; expected one of {', '.join(INFERENCE_MODES)}")
        self._token = settings.hf_token is not None or _token_configured()
        self._lock = threading.Lock()
        self._decided: dict[tuple[Any, ...], tuple[str | None, str]] = {}

    # -- facts ---------------------------------------------------------------------------------------------------

    def _facts(self, spec: ModelSpec, entry: CatalogEntry | None) -> tuple[ModelFacts, Path | None, str | None]:
        """(facts, the folder of weights on this machine or None, why the Hub could not be asked)."""
        folder = Path(spec.local_path) if spec.local_path else hf_cache_folder(spec.id, spec.revision)
        recorded = facts_of_entry(entry)
        if folder is not None and folder.is_dir():
            on_disk = facts_of_folder(folder)
            merged = on_disk.model_copy(
                update={
                    "architecture": on_disk.architecture or recorded.architecture,
                    "params": on_disk.params or recorded.params,
                    "library": recorded.library or on_disk.library,
                    "providers": recorded.providers,
                }
            )
            return merged, folder, None
        return recorded, None, None

    def _hub_facts(self, spec: ModelSpec, facts: ModelFacts) -> tuple[ModelFacts, str | None]:
        """``facts`` completed by the Hub's; the reason when the Hub could not be asked."""
        if spec.local_path:
            return facts, None
        hub, why = self.hub.get(spec.id, spec.revision)
        if hub is None:
            return facts, why
        if not hub.found:
            return hub, None
        return (
            ModelFacts(
                architecture=hub.architecture or facts.architecture,
                params=hub.params or facts.params,
                library=hub.library or facts.library,
                providers=hub.providers,
                source="the Hub",
            ),
            None,
        )

    # -- local --------------------------------------------------------------------------------------------------

    def _local(
        self, spec: ModelSpec, entry: CatalogEntry | None, facts: ModelFacts, folder: Path | None
    ) -> tuple[bool, str, ModelFacts]:
        task = normalize_task_name(spec.task)
        if task not in LOCAL_TASKS:
            return False, f"task {task} is not served by the local backend", facts
        why = self._refusal(spec, entry, facts)  # what is known already, before any download or question
        if why:
            return False, why, facts
        if spec.local_path and folder is None:
            return False, f"the local weights folder {spec.local_path} does not exist", facts
        if folder is not None and facts.problem:
            return False, facts.problem, facts
        if folder is None and hub_offline():
            return False, "no local weights and the Hub is offline (HF_HUB_OFFLINE)", facts
        hub_why: str | None = None
        if folder is None and (facts.architecture is None or facts.params is None):
            facts, hub_why = self._hub_facts(spec, facts)
            if not facts.found:
                return False, "the Hub has no such model", facts
            why = self._refusal(spec, entry, facts)
            if why:
                return False, why, facts
        if facts.architecture is None:
            known = f"; {hub_why}" if hub_why else ""
            return False, f"architecture unknown (no config.json here, none recorded in the catalog{known})", facts
        if self.budget is not None and facts.params is not None and facts.params > self.budget:
            return (
                False,
                f"too large for local inference ({facts.params:,} params > {self.budget:,}, {self.budget_source})",
                facts,
            )
        where = f"weights in {folder}" if folder is not None else "weights downloadable from the Hub"
        if facts.architecture not in self.proven.get(task, frozenset()):
            where += " (the repository's own code: trust_remote_code)"
        size = f", {facts.params:,} params" if facts.params is not None else ", size unknown"
        return True, f"{facts.architecture}{size}, {where}", facts

    def _refusal(self, spec: ModelSpec, entry: CatalogEntry | None, facts: ModelFacts) -> str | None:
        """Why the model cannot run locally from what is known (library, architecture, requirements), or None."""
        library = (entry.library if entry is not None else None) or facts.library or "transformers"
        if library not in LOCAL_LIBRARIES:
            return f"library {library}: transformers cannot load it"
        own_code = spec.trust_remote_code and self.settings.trust_remote_code
        task = normalize_task_name(spec.task)
        architecture = facts.architecture
        if architecture is not None and not own_code and architecture not in self.proven.get(task, frozenset()):
            return f"architecture {architecture} is not proven for {task} by the local backend's tests"
        requires = entry.requires if entry is not None else ()
        untested = requirement_refusal(requires)
        if untested:
            return untested
        missing = missing_requirements(requires)
        if missing:
            return f"needs {', '.join(missing)} (not installed)"
        return None

    # -- remote -------------------------------------------------------------------------------------------------

    def _remote(self, spec: ModelSpec, facts: ModelFacts) -> tuple[bool, str, str | None, ModelFacts]:
        task = normalize_task_name(spec.task)
        if task not in REMOTE_TASKS:
            return False, f"task {task} is not served by the remote backend", None, facts
        backend = self.remote
        target = backend.target(spec)
        if target.startswith(("http://", "https://")):
            refused = backend.refusal(task, spec)
            if refused:
                return False, refused, None, facts
            return True, f"endpoint {target}", target, facts
        if spec.local_path:
            return False, "a local folder of weights has no endpoint", None, facts
        if hub_offline():
            return False, "no endpoint and the Hub is offline (HF_HUB_OFFLINE)", None, facts
        if not self._token:
            return False, "no endpoint, and Inference Providers need HF_TOKEN", None, facts
        facts, hub_why = (facts, None) if facts.source == "the Hub" else self._hub_facts(spec, facts)
        if not facts.found:
            return False, "the Hub has no such model", None, facts
        providers = facts.providers
        if providers is None:
            reason = hub_why or "none recorded in the catalog"
            return False, f"not known to be served by an Inference Provider ({reason})", None, facts
        wanted = backend.provider_for(spec)
        if wanted != "auto":
            if wanted not in providers:
                served = ", ".join(providers) or "none"
                return False, f"provider {wanted} does not serve it (served by: {served})", None, facts
            providers = [wanted]
        if not providers:
            return False, "no Inference Provider serves it", None, facts
        where = ", ".join(providers)
        recorded = "" if hub_why is None else f", as the catalog records ({hub_why})"
        return True, f"Inference Providers: {where}{recorded}", where, facts

    # -- verdicts -----------------------------------------------------------------------------------------------

    def verdict(self, spec: ModelSpec, *, local: bool = True, remote: bool = True) -> Verdict:
        """Both sides for ``spec`` (each only when asked)."""
        entry = self.catalog.get(normalize_task_name(spec.task), spec.id)
        facts, folder, _ = self._facts(spec, entry)
        out = Verdict(model=spec.id, task=spec.task, weights_here=folder is not None, facts=facts)
        if local:
            out.local, out.local_reason, out.facts = self._local(spec, entry, out.facts, folder)
        if remote:
            out.remote, out.remote_reason, out.remote_where, out.facts = self._remote(spec, out.facts)
        return out

    def choose(self, spec: ModelSpec) -> tuple[str | None, str]:
        """The backend that runs ``spec`` under the inference mode (``None`` when none can), and why."""
        key = (spec.task, spec.id, spec.revision, spec.local_path, spec.endpoint, spec.provider, spec.library)
        with self._lock:
            if key in self._decided:
                return self._decided[key]
        decided = self._choose(spec)
        with self._lock:
            self._decided[key] = decided
        return decided

    def _choose(self, spec: ModelSpec) -> tuple[str | None, str]:
        if self.mode == "local":
            v = self.verdict(spec, remote=False)
            return ("local", v.local_reason) if v.local else (None, f"local mode: {v.local_reason}")
        if self.mode == "remote":
            v = self.verdict(spec, local=False)
            return ("remote", v.remote_reason) if v.remote else (None, f"remote mode: {v.remote_reason}")
        v = self.verdict(spec, remote=False)
        if v.local and (v.weights_here or v.facts.params is not None):
            return "local", v.local_reason
        ok, remote_why, _, _ = self._remote(spec, v.facts)
        if ok:
            return "remote", f"{remote_why} (local: {v.local_reason})"
        if v.local:
            return "local", f"{v.local_reason} (remote: {remote_why})"
        return None, f"local: {v.local_reason}; remote: {remote_why}"

    def check(self, entry: CatalogEntry) -> CandidateCheck:
        backend, reason = self.choose(entry.spec())
        return CandidateCheck(task=entry.task, model=entry.id, backend=backend, reason=reason)  # type: ignore[arg-type]

    def runnable(
        self, task: str, limit: int | None = None
    ) -> tuple[list[tuple[CatalogEntry, str]], list[CandidateCheck]]:
        """The catalog's entries for ``task``, best first (recommended, then weights at hand, then downloads), that can
        run, as ``(entry, backend)``, at most ``limit`` of them; and the check of every entry looked at."""
        entries = sorted(self.catalog.ranked(task), key=lambda e: (e.tier != "recommended", not self.has_weights(e)))
        kept: list[tuple[CatalogEntry, str]] = []
        checks: list[CandidateCheck] = []
        for entry in entries:
            if limit is not None and len(kept) >= limit:
                break
            check = self.check(entry)
            checks.append(check)
            if check.backend is not None:
                kept.append((entry, check.backend))
        return kept, checks

    def runnable_tasks(self) -> set[str]:
        """Task types with at least one catalog model that can run."""
        return {task for task in self.catalog.tasks() if self.runnable(task, limit=1)[0]}

    def has_weights(self, entry: CatalogEntry) -> bool:
        if entry.local_path:
            return Path(entry.local_path).is_dir()
        return hf_cache_folder(entry.id, entry.revision) is not None


def available_candidates(
    specs: Sequence[ModelSpec], choose: Chooser
) -> tuple[list[tuple[ModelSpec, str, str]], list[tuple[ModelSpec, str]]]:
    """Split ``specs`` into those that can run (``(spec, backend, reason)``) and those that cannot (``(spec, reason)``),
    keeping their order."""
    kept: list[tuple[ModelSpec, str, str]] = []
    removed: list[tuple[ModelSpec, str]] = []
    for spec in specs:
        backend, reason = choose(spec)
        if backend is None:
            removed.append((spec, reason))
        else:
            kept.append((spec, backend, reason))
    return kept, removed


# --- requirements -----------------------------------------------------------------------------------------------


def missing_requirements(requires: Iterable[str]) -> list[str]:
    """The entries of ``requires`` not installed here: Python distributions (importlib.metadata), programs
    (``bin:NAME``, on PATH)."""
    missing: list[str] = []
    for need in requires:
        if need.startswith("bin:"):
            if shutil.which(need[4:]) is None:
                missing.append(f"the program {need[4:]}")
            continue
        try:
            importlib.metadata.distribution(need)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"the Python package {need}")
    return missing


# --- the Hub and its cache ----------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def hf_cache_folder(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of the model in the Hugging Face cache when its ``config.json`` is there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:
        return None
    return Path(found).parent if isinstance(found, str) else None


def _token_configured() -> bool:
    from huggingface_hub import get_token

    try:
        return bool(get_token())
    except Exception:
        return False


# --- sizes ----------------------------------------------------------------------------------------------------------

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
