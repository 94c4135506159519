"""What is known about a model (:mod:`tasks.model_facts`): weights on disk, the Hub's ``model_info`` kept on disk, the
catalog's record. The Hub is ``tests/fake_hub.py`` on 127.0.0.1, asked through huggingface_hub's real ``HfApi``.

How the availability rule decides from these facts is tested in ``tests/tasks/test_availability.py``; hostile Hub
answers and weight headers in ``tests/system/test_hostile_metadata.py``.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from models_catalog.catalog import CatalogEntry
from tasks.model_facts import HubInfo, facts_of_entry, facts_of_folder
from tests.fake_hub import FakeHub, HubModel


def test_the_hub_is_asked_once_per_model_and_every_process_reuses_the_answer(
    hub: FakeHub, tmp_path: pathlib.Path
) -> None:
    hub.add(
        HubModel(id="acme/a", pipeline_tag="text-to-image", model_type="unet", params=10, providers={"fal-ai": "live"})
    )
    hub.add(HubModel(id="acme/b", pipeline_tag="text-classification", model_type="bert", params=20, library="timm"))
    folder = tmp_path / "hub-info"
    a, why = HubInfo(folder, ttl=3600).get("acme/a")
    b, _ = HubInfo(folder, ttl=3600).get("acme/b")
    assert why is None and a is not None and b is not None
    assert (a.architecture, a.params, a.library, a.providers, a.source) == (
        "unet",
        10,
        "transformers",
        ["fal-ai"],
        "the Hub",
    )
    assert (b.architecture, b.params, b.library, b.providers) == ("bert", 20, "timm", [])
    for _ in range(2):  # another process: the answers on disk
        assert HubInfo(folder, ttl=3600).get("acme/a")[0] == a
    assert hub.asked("/api/models/acme/a") == ["/api/models/acme/a"]
    assert len(list(folder.glob("*.json"))) == 2
    HubInfo(folder, ttl=0).get("acme/a")  # stale at once: asked again
    assert len(hub.asked("/api/models/acme/a")) == 2


def test_a_repository_the_hub_does_not_know_is_a_fact_and_offline_is_a_reason(
    hub: FakeHub, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = HubInfo(tmp_path / "hub-info", ttl=3600)
    gone, why = info.get("acme/gone")
    assert why is None and gone is not None and not gone.found
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert info.get("acme/gone")[0] == gone, "kept on disk: read back offline"
    assert info.get("acme/other") == (None, "the Hub is offline (HF_HUB_OFFLINE)")


def test_facts_of_a_folder_and_of_a_catalog_entry(tmp_path: pathlib.Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 400)
    here = facts_of_folder(tmp_path)
    assert (here.architecture, here.params, here.problem, here.source) == ("bert", 100, None, f"weights in {tmp_path}")
    (tmp_path / "model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0[]")  # a header that is no JSON object
    broken = facts_of_folder(tmp_path)
    assert broken.params is None and broken.problem is not None and "model.safetensors" in broken.problem
    entry = CatalogEntry(id="acme/x", task="text-classification", architecture="roberta", params=7, providers=["hf"])
    recorded = facts_of_entry(entry)
    assert (recorded.architecture, recorded.params, recorded.providers, recorded.source) == (
        "roberta",
        7,
        ["hf"],
        "catalog",
    )
    assert facts_of_entry(None).source == "nothing recorded"
