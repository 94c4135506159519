"""Hostile model metadata: malformed safetensors headers, Hub answers with escape sequences, bad Hub entries.

The weights and the Hub's answers are untrusted input: each is a clear refusal or a skipped entry, never a
traceback, a negative size that passes the budget, or terminal codes printed raw.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
from typing import Any

import pytest

from flows.cli import main
from flows.models_cli import refreshed_entries
from models_catalog.catalog import Catalog, CatalogEntry, read_catalog_file
from tasks.availability import Availability
from tasks.experts.base import ModelSpec
from tasks.settings import Settings
from tasks.sizing import WeightsError, estimate_params, size_hint
from tests.fake_hub import FakeHub, HubModel
from tests.tiny_models import build_tiny_models

EVIL = "[red]x[/red]\x1b[31m\x1b]8;;http://evil/\x07"

MALFORMED: dict[str, Any] = {
    "shape-abc": {"w": {"dtype": "F32", "shape": ["abc"], "data_offsets": [0, 4]}},
    "header-list": [1, 2],
    "offsets-short": {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}},
    "shape-negative": {"w": {"dtype": "F32", "shape": [-(10**12)], "data_offsets": [0, 0]}},
    "shape-bool": {"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}},
    "entry-string": {"w": "F32"},
    "offsets-reversed": {"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}},
    "size-mismatch": {"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4]}},
}


def _safetensors(path: pathlib.Path, header: Any) -> None:
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-hostile"), tasks=("text-classification",))[
        "text-classification"
    ]


def _with_extra(tiny: pathlib.Path, root: pathlib.Path, name: str) -> pathlib.Path:
    folder = root / name
    shutil.copytree(tiny, folder)
    _safetensors(folder / "extra.safetensors", MALFORMED[name])
    return folder


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_safetensors_header_is_a_clear_refusal(tiny: pathlib.Path, tmp_path: pathlib.Path, name: str) -> None:
    folder = _with_extra(tiny, tmp_path, name)
    with pytest.raises(WeightsError, match=r"extra\.safetensors"):
        estimate_params(folder)
    assert size_hint(ModelSpec(id="x/y", task="text-classification", local_path=str(folder))) is None
    settings = Settings(hub_info_cache=tmp_path / "hub-info", max_local_params=10)
    spec = ModelSpec(id="x/y", task="text-classification", local_path=str(folder))
    backend, reason = Availability(settings, Catalog()).choose(spec)
    assert backend is None
    assert f"the weights in {folder} cannot be read: extra.safetensors" in reason
    # the same folder without the bad file is counted, and the budget holds
    (folder / "extra.safetensors").unlink()
    count = estimate_params(folder)
    assert count is not None and count > 10
    assert "too large for local inference" in Availability(settings, Catalog()).choose(spec)[1]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("name", ["shape-abc", "header-list", "offsets-short", "shape-negative"])
def test_cli_pin_of_malformed_weights_exits_2_without_a_traceback(
    env: pathlib.Path,
    llm,
    tiny: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    name: str,
) -> None:
    folder = _with_extra(tiny, tmp_path, name)
    monkeypatch.setenv("HUGGINGGPT_MAX_LOCAL_PARAMS", "10")
    assert main(["run", "Is this positive: I love it", "-m", f"text-classification={folder}"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read: extra.safetensors" in err and "Traceback" not in err
    assert sum(llm.calls.values()) == 0


def test_hub_total_that_is_no_positive_count_is_unknown() -> None:
    from types import SimpleNamespace

    from tasks.model_facts import facts_of_model_info

    def info(total: Any, model_type: Any = "bert") -> Any:
        return SimpleNamespace(
            config={"model_type": model_type}, safetensors=SimpleNamespace(total=total), library_name="transformers"
        )

    assert facts_of_model_info(info(125)).params == 125
    for bad in (-(10**12), 0, True, "12", 10**30):
        assert facts_of_model_info(info(bad)).params is None
    assert facts_of_model_info(info(5, EVIL)).architecture is None
    assert facts_of_model_info(info(5, "xlm-roberta")).architecture == "xlm-roberta"


# --- the Hub's answers in `models` and `catalog refresh` ------------------------------------------------------------


def _cli(args: list[str], hub: FakeHub, home: pathlib.Path) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.update(
        {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    )
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=environment, capture_output=True, text=True, timeout=120
    )


def test_catalog_refresh_skips_bad_entries_and_writes_the_rest(hub: FakeHub, tmp_path: pathlib.Path) -> None:
    task = "text-classification"
    hub.add(HubModel(id="acme/evil", pipeline_tag=task, model_type=EVIL, params=10**6, downloads=60, tags=[EVIL]))
    hub.add(HubModel(id="acme/negative", pipeline_tag=task, model_type="bert", params=-5, downloads=50))
    hub.add(HubModel(id="../../etc", pipeline_tag=task, model_type="bert", downloads=40))
    hub.add(HubModel(id="acme/" + "x" * 300, pipeline_tag=task, model_type="bert", downloads=30))
    hub.add(HubModel(id="acme/good", pipeline_tag=task, model_type="bert", params=10**6, downloads=20))
    out = tmp_path / "catalog.jsonl"
    done = _cli(["catalog", "refresh", "--tasks", task, "--limit", "10", "--out", str(out)], hub, tmp_path / "home")
    assert done.returncode == 0, done.stderr
    entries = {e.id: e for e in read_catalog_file(out)}
    assert sorted(entries) == ["acme/evil", "acme/good", "acme/negative"]
    assert entries["acme/evil"].architecture is None and entries["acme/evil"].tags == []
    assert entries["acme/negative"].params is None and entries["acme/good"].params == 10**6
    assert "\x1b" not in out.read_text() and "[red]" not in out.read_text()
    assert "skipped '../../etc': not a Hub repository id" in done.stderr
    assert "skipped 'acme/xxxxxxxx" in done.stderr and "\x1b" not in done.stderr
    assert "wrote 3 model(s) of 1 task(s)" in done.stdout and "2 skipped" in done.stdout


def test_catalog_refresh_asks_about_models_concurrently(hub: FakeHub) -> None:
    """With ``workers`` calls in flight, that many answers are awaited at once: a listing of N models whose every
    answer is held until ``workers`` requests are waiting completes; one at a time it could not."""
    import threading

    task = "text-classification"
    for n in range(8):
        hub.add(HubModel(id=f"acme/m{n}", pipeline_tag=task, model_type="bert", params=10, downloads=n))
    waiting = threading.Semaphore(0)
    release = threading.Event()
    original = hub._model_api

    def held(handler: Any, rest: str, query: Any, *, head: bool) -> None:
        waiting.release()
        assert release.wait(30), "the refresh never had 4 answers in flight"
        original(handler, rest, query, head=head)

    hub._model_api = held  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=refreshed_entries([task], 8, set(), {}, workers=4)), daemon=True
    )
    thread.start()
    try:
        for _ in range(4):
            assert waiting.acquire(timeout=30), "fewer than 4 model_info calls were in flight at once"
    finally:
        release.set()
    thread.join(60)
    entries, skipped = outcome["result"]
    assert [e.id for e in entries] == [f"acme/m{n}" for n in reversed(range(8))] and skipped == []


def test_models_prints_hub_and_catalog_text_escaped(tmp_path: pathlib.Path, capsys) -> None:
    catalog = tmp_path / "evil.jsonl"
    entry = CatalogEntry(id="acme/evil", task="text-classification", architecture=EVIL, description=EVIL)
    catalog.write_text(entry.model_dump_json() + "\n", encoding="utf-8")
    assert main(["models", "--task", "text-classification", "--catalog", str(catalog)]) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if "acme/evil" in li)
    assert "\x1b" not in out and "\x07" not in out
    assert "[red]x[/red]\\x1b[31m\\x1b]8;;http://evil/\\x07" in line
    assert main(["models", "--task", "text-classification", "--catalog", str(catalog), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    record = next(json.loads(li) for li in out.splitlines() if "acme/evil" in li)
    assert record["architecture"] == EVIL  # the JSON keeps the value, escaped as JSON
