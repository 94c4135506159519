"""``hugginggpt models``, ``models pull`` and ``catalog refresh``, run as a user runs them, against a fake Hub.

The commands run in a subprocess with ``HF_ENDPOINT`` pointing at ``tests/fake_hub.py`` and a fresh ``HF_HOME``, so
listing, metadata and downloads go through huggingface_hub's real client.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from models_catalog.catalog import RECOMMENDED_PATH, Catalog, CatalogEntry, read_catalog_file
from tasks.availability import Availability
from tasks.settings import Settings
from tests.fake_hub import FakeHub, HubModel
from tests.tiny_models import build_tiny_models


@pytest.fixture(scope="module")
def _hub() -> Iterator[FakeHub]:
    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def hub(_hub: FakeHub) -> FakeHub:
    _hub.models.clear()
    _hub.requests.clear()
    return _hub


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models-cli"), tasks=("text-classification",))[
        "text-classification"
    ]


def hugginggpt(args: list[str], hub: FakeHub, home: pathlib.Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI online against the fake Hub, with its own Hugging Face home."""
    environment = dict(os.environ)
    environment.update(
        {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=environment, capture_output=True, text=True, timeout=120
    )


def test_models_says_where_each_candidate_runs(hub: FakeHub, tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    hub.add(HubModel(id="acme/hub-bert", pipeline_tag="text-classification", model_type="bert", params=5 * 10**6))
    hub.add(
        HubModel(
            id="acme/huge",
            pipeline_tag="text-classification",
            model_type="bert",
            params=10**13,
            providers={"hf-inference": "live"},
        )
    )
    catalog = tmp_path / "catalog.jsonl"
    records = [
        {"id": "tiny/tc", "task": "text-classification", "local_path": str(tiny)},
        {"id": "acme/hub-bert", "task": "text-classification"},
        {"id": "acme/huge", "task": "text-classification"},
        {
            "id": "acme/ocr",
            "task": "text-classification",
            "architecture": "bert",
            "params": 9,
            "requires": ["bin:nope"],
        },
    ]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = hugginggpt(
        ["models", "--task", "Text_Classification", "--json", "--catalog", str(catalog)],
        hub,
        tmp_path / "home",
        HF_TOKEN="hf_test_token",
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert {"id", "task", "tier", "architecture", "params", "local", "remote"} <= set(lines[0])
    assert lines[0]["tier"] == "recommended", "the recommended tier comes first"
    assert by_id["tiny/tc"]["local"] == "ready" and by_id["tiny/tc"]["architecture"] == "bert"
    hub_bert = by_id["acme/hub-bert"]
    assert (hub_bert["local"], hub_bert["params"], hub_bert["architecture"]) == ("downloadable", 5 * 10**6, "bert")
    assert hub_bert["remote"] == "not served: no Inference Provider serves it"
    huge = by_id["acme/huge"]
    assert huge["local"].startswith("not here: too large for local inference (10,000,000,000,000 params")
    assert huge["remote"] == "Inference Providers: hf-inference"
    assert by_id["acme/ocr"]["local"] == "not here: it needs bin:nope: the local backend's tests do not install it"
    assert hub.asked("/api/models/acme/hub-bert") == ["/api/models/acme/hub-bert"]


def test_models_offline_ranks_weights_here_first_with_a_header(
    hub: FakeHub, tiny: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Offline, the models whose weights are on this machine come first, as selection ranks them; the listing has a
    header; ``--runnable`` keeps only those that can run; a tiny model's size is not ``0M``."""
    catalog = tmp_path / "catalog.jsonl"
    records = [
        {
            "id": "acme/popular",
            "task": "text-classification",
            "downloads": 10**6,
            "architecture": "bert",
            "params": 10**8,
        },
        {"id": "acme/liked", "task": "text-classification", "downloads": 10**5, "architecture": "bert"},
        {"id": "tiny/tc", "task": "text-classification", "downloads": 1, "local_path": str(tiny), "params": 9_000},
    ]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["models", "--task", "text-classification", "--catalog", str(catalog)]
    done = hugginggpt(args, hub, tmp_path / "home", HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:6] == ["#", "task", "model", "tier", "architecture", "size"]
    assert rows[0].split()[:3] == ["1", "text-classification", "tiny/tc"]  # the weights are here: it runs
    assert " 9k  local: ready" in rows[0] and " 0M " not in done.stdout
    assert [r.split()[2] for r in rows].index("acme/popular") < [r.split()[2] for r in rows].index("acme/liked")

    runnable = hugginggpt([*args, "--runnable", "--json"], hub, tmp_path / "home", HF_HUB_OFFLINE="1")
    assert [json.loads(line)["id"] for line in runnable.stdout.splitlines()] == ["tiny/tc"]


def test_pull_downloads_with_the_hub_client_and_refuses_offline(hub: FakeHub, tmp_path: pathlib.Path) -> None:
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"\0" * 64, "tf_model.h5": b"tf"}
    hub.add(HubModel(id="acme/pullme", pipeline_tag="text-classification", files=files))
    home = tmp_path / "home"
    done = hugginggpt(["models", "pull", "acme/pullme"], hub, home)
    assert done.returncode == 0, done.stderr
    model_id, folder = done.stdout.strip().split("\t")
    assert model_id == "acme/pullme"
    snapshot = pathlib.Path(folder)
    assert snapshot.is_relative_to(home / "hub" / "models--acme--pullme")
    assert (snapshot / "config.json").read_bytes() == files["config.json"]
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (snapshot / "tf_model.h5").exists(), "other frameworks' weights are not pulled"
    assert "[1/1] acme/pullme" in done.stderr and "pulled 1 of 1 model(s)" in done.stderr

    offline = hugginggpt(["models", "pull", "acme/pullme"], hub, home, HF_HUB_OFFLINE="1")
    assert offline.returncode == 2
    assert "the Hub is offline (HF_HUB_OFFLINE=1): nothing can be downloaded" in offline.stderr


def test_pull_tiers(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from flows.models_cli import pull_plan

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    entry: dict[str, Any] = {"task": "summarization", "architecture": "t5", "params": 10**6}
    catalog = Catalog(
        [
            CatalogEntry(id="r/first", tier="recommended", **entry),
            CatalogEntry(id="r/unproven", tier="recommended", **{**entry, "architecture": "mamba"}),
            CatalogEntry(id="r/second", tier="recommended", **entry),
            CatalogEntry(id="c/tail", downloads=10, **entry),
            CatalogEntry(id="x/translator", task="translation", tier="recommended", architecture="t5", params=1),
        ]
    )
    available = Availability(Settings(hub_info_cache=tmp_path / "info"), catalog)

    def ids(targets: list[str], tier: str) -> list[str]:
        return [e.id for e in pull_plan(available, targets, tier)[0]]

    assert ids(["summarization"], "minimal") == ["r/first"]
    assert ids(["summarization"], "standard") == ["r/first", "r/second"]
    assert ids(["summarization"], "full") == ["r/first", "r/second", "c/tail"]
    assert ids([], "minimal") == ["r/first", "x/translator"]
    assert ids(["acme/any-model"], "minimal") == ["acme/any-model"]
    _, skipped = pull_plan(available, ["summarization"], "standard")
    assert skipped == [
        "r/unproven (summarization): architecture mamba is not proven for summarization by the local backend's tests"
    ]


def test_catalog_refresh_rebuilds_the_long_tail_from_the_hub(hub: FakeHub, tmp_path: pathlib.Path) -> None:
    recommended = next(e for e in read_catalog_file(RECOMMENDED_PATH) if e.task == "text-classification")
    hub.add(HubModel(id=recommended.id, pipeline_tag="text-classification", downloads=10**9))
    hub.add(
        HubModel(
            id="acme/most",
            pipeline_tag="text-classification",
            model_type="roberta",
            params=125 * 10**6,
            downloads=5000,
            likes=7,
            tags=["text-classification", "license:mit", "en"],
            providers={"hf-inference": "live"},
        )
    )
    hub.add(HubModel(id="acme/less", pipeline_tag="text-classification", model_type="bert", downloads=300))
    hub.add(HubModel(id="acme/least", pipeline_tag="text-classification", downloads=1))
    hub.add(HubModel(id="acme/other-task", pipeline_tag="summarization", downloads=10**6))
    out = tmp_path / "catalog.jsonl"
    done = hugginggpt(
        ["catalog", "refresh", "--tasks", "text-classification", "--limit", "3", "--out", str(out)],
        hub,
        tmp_path / "home",
    )
    assert done.returncode == 0, done.stderr
    entries = read_catalog_file(out)
    assert [e.id for e in entries] == ["acme/most", "acme/less"], "the recommended model stays in its own tier"
    most = entries[0]
    assert (most.task, most.downloads, most.likes, most.license) == ("text-classification", 5000, 7, "mit")
    assert (most.architecture, most.params, most.providers, most.library) == (
        "roberta",
        125 * 10**6,
        ["hf-inference"],
        "transformers",
    )
    assert hub.asked("/api/models/acme/least") == [], "--limit bounds the listing"
    assert sorted(p for p in hub.asked("/api/models/") if "acme" in p) == [
        "/api/models/acme/less",
        "/api/models/acme/most",
    ]
    assert "wrote 2 model(s) of 1 task(s)" in done.stdout

    offline = hugginggpt(["catalog", "refresh", "--out", str(out)], hub, tmp_path / "home", HF_HUB_OFFLINE="1")
    assert offline.returncode == 2 and "the Hub is offline" in offline.stderr
