"""Where a model can run: the one availability rule, against tiny models on disk and a fake Hub on 127.0.0.1.

Every check goes through :class:`tasks.availability.Availability`, the object selection, planning and execution
use; live facts come from huggingface_hub's real ``HfApi.model_info`` answered by ``tests/fake_hub.py``.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

import models_catalog.catalog as catalog_module
import tasks.execute as fallback_module
import tasks.experts.remote as remote_module
from models_catalog.catalog import Catalog, CatalogEntry
from tasks import memory_budget
from tasks.availability import Availability
from tasks.experts.base import ModelSpec
from tasks.experts.local import PROVEN_ARCHITECTURES
from tasks.settings import Settings
from tasks.sizing import estimate_params
from tests.fake_hub import FakeHub, HubModel
from tests.tiny_models import build_tiny_models

GIB = 2**30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-availability"), tasks=("text-classification",))[
        "text-classification"
    ]


def available(tmp_path: pathlib.Path, *entries: CatalogEntry, **settings: Any) -> Availability:
    options: dict[str, Any] = {"hub_info_cache": tmp_path / "hub-info", "hub_info_ttl": 3600.0}
    options.update(settings)
    return Availability(Settings(**options), Catalog(entries))


def test_one_home_for_every_can_run_decision() -> None:
    """The duplicates are gone: the catalog, the fallback and the remote backend no longer decide."""
    for module, name in [
        (catalog_module, "is_available"),
        (catalog_module, "hub_offline"),
        (catalog_module, "has_local_weights"),
        (fallback_module, "can_run"),
        (fallback_module, "make_chooser"),
        (fallback_module, "in_hf_cache"),
        (remote_module, "_hub_offline"),
    ]:
        assert not hasattr(module, name), f"{module.__name__}.{name} still decides availability"


def test_choice_by_mode_offline(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    here = ModelSpec(id="tiny/tc", task="text-classification", local_path=str(tiny))
    both = here.model_copy(update={"endpoint": "http://127.0.0.1:9/x"})
    missing = ModelSpec(id="acme/missing", task="text-classification", local_path=str(tmp_path / "nowhere"))
    hub_only = ModelSpec(id="acme/not-cached", task="text-classification")
    drawn = ModelSpec(id="acme/sd", task="text-to-image", endpoint="http://127.0.0.1:9/sd")

    def choose(spec: ModelSpec, mode: str) -> tuple[str | None, str]:
        return available(tmp_path, inference_mode=mode).choose(spec)

    params = estimate_params(tiny)
    assert choose(here, "local") == ("local", f"bert, {params:,} params, weights in {tiny}")
    assert choose(both, "remote") == ("remote", "endpoint http://127.0.0.1:9/x")
    assert choose(here, "remote") == (None, "remote mode: a local folder of weights has no endpoint")
    assert choose(both, "hybrid")[0] == "local", "hybrid prefers weights at hand"
    assert choose(missing, "hybrid") == (
        None,
        f"local: the local weights folder {tmp_path / 'nowhere'} does not exist; "
        "remote: a local folder of weights has no endpoint",
    )
    assert choose(hub_only, "local") == (None, "local mode: no local weights and the Hub is offline (HF_HUB_OFFLINE)")
    assert choose(drawn, "local") == (None, "local mode: task text-to-image is not served by the local backend")
    assert choose(drawn, "hybrid")[0] == "remote"
    with pytest.raises(ValueError, match="inference mode"):
        Availability(Settings().model_copy(update={"inference_mode": "cloud"}), Catalog())


def test_a_tested_requirement_missing_here_is_named(
    tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ocr = CatalogEntry(
        id="acme/ocr", task="text-classification", local_path=str(tiny), requires=["pytesseract", "bin:tesseract"]
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract program on this PATH
    assert available(tmp_path, ocr, inference_mode="local").choose(ocr.spec()) == (
        None,
        "local mode: needs the program tesseract (not installed)",
    )


def test_architecture_requirements_and_library_decide_local(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "gpt_neox"}')
    needs = CatalogEntry(
        id="acme/needs",
        task="text-classification",
        local_path=str(tiny),
        requires=["no-such-distribution-xyz", "bin:no-such-program-xyz", "pytest"],
    )
    other = CatalogEntry(id="acme/pipeline", task="text-classification", local_path=str(tiny), library="sklearn")
    a = available(tmp_path, needs, other, inference_mode="local")
    assert a.choose(ModelSpec(id="acme/odd", task="text-classification", local_path=str(odd))) == (
        None,
        "local mode: architecture gpt_neox is not proven for text-classification by the local backend's tests",
    )
    assert a.choose(needs.spec()) == (
        None,
        "local mode: it needs no-such-distribution-xyz: the local backend's tests do not install it",
    )
    assert a.choose(other.spec()) == (None, "local mode: library sklearn: transformers cannot load it")
    # a model with its own code runs only with both opt-ins (entry and setting), whatever its architecture
    custom = CatalogEntry(id="acme/custom", task="text-classification", local_path=str(odd), trust_remote_code=True)
    assert available(tmp_path, custom, inference_mode="local").choose(custom.spec())[0] is None
    allowed = available(tmp_path, custom, inference_mode="local", trust_remote_code=True).choose(custom.spec())
    assert allowed[0] == "local" and allowed[1].endswith("(the repository's own code: trust_remote_code)")
    # the proven set is one function: the architecture is accepted once it is in it
    proven = dict(PROVEN_ARCHITECTURES)
    proven["text-classification"] = proven["text-classification"] | {"gpt_neox"}
    wider = Availability(a.settings, a.catalog, proven=proven)
    assert wider.choose(ModelSpec(id="acme/odd", task="text-classification", local_path=str(odd)))[0] == "local"


def test_the_default_budget_follows_the_machine_memory(
    hub: FakeHub, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_budget, "total_memory", lambda: 24 * GIB)
    hub.add(HubModel(id="acme/six-b", pipeline_tag="text-generation", model_type="gpt2", params=6 * 10**9))
    hub.add(HubModel(id="acme/small", pipeline_tag="text-generation", model_type="gpt2", params=10**8))
    big, small = ModelSpec(id="acme/six-b", task="text-generation"), ModelSpec(id="acme/small", task="text-generation")
    backend, reason = available(tmp_path).choose(big)
    assert backend is None
    assert reason.startswith(
        "local: too large for local inference (6,000,000,000 params > 2,147,483,648, the default for 24 GiB of "
        "memory; raise HUGGINGGPT_MAX_LOCAL_PARAMS to allow more)"
    )
    assert available(tmp_path).choose(small) == ("local", "gpt2, 100,000,000 params, weights downloadable from the Hub")
    assert available(tmp_path, max_local_params=7 * 10**9).choose(big)[0] == "local"
    backend, reason = available(tmp_path, max_local_params=10**7).choose(small)
    assert backend is None and "(100,000,000 params > 10,000,000, HUGGINGGPT_MAX_LOCAL_PARAMS)" in reason


def test_the_hub_is_asked_once_per_model_and_the_answer_kept_on_disk(hub: FakeHub, tmp_path: pathlib.Path) -> None:
    hub.add(HubModel(id="acme/asked", pipeline_tag="text-classification", model_type="bert", params=4242))
    spec = ModelSpec(id="acme/asked", task="text-classification")
    first = available(tmp_path).verdict(spec)
    assert (first.facts.architecture, first.facts.params, first.facts.source) == ("bert", 4242, "the Hub")
    assert first.local and first.local_reason == "bert, 4,242 params, weights downloadable from the Hub"
    for _ in range(3):  # other runs, other processes: the answer on disk
        assert available(tmp_path).verdict(spec).facts.params == 4242
    assert hub.asked("/api/models/acme/asked") == ["/api/models/acme/asked"]
    assert len(list((tmp_path / "hub-info").glob("*.json"))) == 1
    available(tmp_path, hub_info_ttl=0).verdict(spec)  # stale at once: asked again
    assert len(hub.asked("/api/models/acme/asked")) == 2


def test_remote_only_when_a_provider_serves_it(hub: FakeHub, tmp_path: pathlib.Path) -> None:
    hub.add(HubModel(id="acme/served", pipeline_tag="text-to-image", providers={"fal-ai": "live", "nebius": "error"}))
    hub.add(HubModel(id="acme/unserved", pipeline_tag="text-to-image"))
    served = ModelSpec(id="acme/served", task="text-to-image")
    unserved = ModelSpec(id="acme/unserved", task="text-to-image")
    assert available(tmp_path).choose(served) == (
        None,
        "local: task text-to-image is not served by the local backend; "
        "remote: no endpoint, and Inference Providers need HF_TOKEN",
    )
    with_token = available(tmp_path, hf_token="hf_test_token")
    assert with_token.choose(served) == (
        "remote",
        "Inference Providers: fal-ai (local: task text-to-image is not served by the local backend)",
    )
    assert with_token.choose(unserved)[1].endswith("remote: no Inference Provider serves it")
    named = served.model_copy(update={"provider": "replicate"})
    assert with_token.choose(named)[1].endswith("remote: provider replicate does not serve it (served by: fal-ai)")
    gone = ModelSpec(id="acme/gone", task="text-to-image")
    assert with_token.choose(gone)[1].endswith("remote: the Hub has no such model")


def test_without_the_hub_the_catalog_stands_in(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online but the Hub cannot be reached: the catalog's recorded architecture, size and providers decide, the
    reason says so, and the Hub is not asked again for every candidate."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    recorded = CatalogEntry(id="acme/recorded", task="text-to-image", library="diffusers", providers=["fal-ai"])
    unknown = CatalogEntry(id="acme/unknown", task="text-classification")
    known = CatalogEntry(id="acme/known", task="text-classification", architecture="bert", params=10**8)
    a = available(tmp_path, recorded, unknown, known, hf_token="hf_test_token", hub_info_timeout=2.0)
    backend, reason = a.choose(recorded.spec())
    assert backend == "remote" and reason.startswith("Inference Providers: fal-ai, as the catalog records (the Hub")
    v = a.verdict(unknown.spec(), remote=False)
    assert not v.local and v.local_reason.startswith("architecture unknown (no config.json here, none recorded")
    assert "the Hub could not be reached" in v.local_reason
    assert a.choose(known.spec()) == ("local", "bert, 100,000,000 params, weights downloadable from the Hub")


def test_reasons_reach_the_run_summary_fields(tmp_path: pathlib.Path, tiny: pathlib.Path) -> None:
    entry = CatalogEntry(id="tiny/tc", task="text-classification", local_path=str(tiny))
    gone = CatalogEntry(id="acme/gone", task="text-classification", local_path=str(tmp_path / "x"), downloads=9)
    kept, checks = available(tmp_path, entry, gone).runnable("text-classification")
    assert [e.id for e, _ in kept] == ["tiny/tc"]
    assert [(c.model, c.backend) for c in checks] == [("tiny/tc", "local"), ("acme/gone", None)]
    from tasks.schemas import RunSummary, SelectionResult

    assert "checks" in SelectionResult.model_fields and "candidate_checks" in RunSummary.model_fields
