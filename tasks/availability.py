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
holds (:mod:`tasks.memory_budget`).

**Remote** only when an endpoint is configured (the catalog entry's, or ``HUGGINGGPT_HF_INFERENCE_URL``) or, with the
Hub reachable and a token, the Hub says an Inference Provider serves the model.

The rule decides from what is known about a model (:mod:`tasks.model_facts`: best first, its weights on disk, the
Hub's ``model_info``, the catalog's recorded metadata), the memory budget (:mod:`tasks.memory_budget`) and what
the backends offer. The facts, their sizing (:mod:`tasks.sizing`) and the Hub's local state (:mod:`tasks.hub`) each
have their own module; this one only decides.

*Hybrid* prefers local when the weights are here or the size is known to fit; otherwise remote when it can serve;
otherwise local after all (weights downloaded from the Hub).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from models_catalog.catalog import Catalog, CatalogEntry, load_catalog
from tasks.experts.base import Chooser, ModelSpec
from tasks.experts.local import PROVEN_ARCHITECTURES, requirement_refusal
from tasks.experts.local import SUPPORTED_TASKS as LOCAL_TASKS
from tasks.experts.remote import SUPPORTED_TASKS as REMOTE_TASKS
from tasks.experts.remote import RemoteBackend
from tasks.hub import hf_cache_folder, hub_offline, token_configured
from tasks.memory_budget import local_budget
from tasks.model_facts import HubInfo, ModelFacts, facts_of_entry, facts_of_folder, hub_info_for
from tasks.schemas import CandidateCheck
from tasks.settings import Settings
from tasks.task_types import normalize_task_name

InferenceMode = Literal["local", "remote", "hybrid"]
INFERENCE_MODES: tuple[str, ...] = ("local", "remote", "hybrid")

#: Libraries the local backend loads.
LOCAL_LIBRARIES = frozenset({"transformers"})

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
        self._token = settings.hf_token is not None or token_configured()
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
