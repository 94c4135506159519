"""Inputs from paths, http(s) and fsspec URLs; the artifact store; settings from the environment and .env."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tasks.experts.base import Audio
from tasks.inputs import InputError, decode, read_input_bytes
from tasks.settings import LLMNotConfiguredError, Settings
from tasks.storage import ArtifactStore, StorageError
from tasks.task_types import Modality


@pytest.fixture
def http_root(tmp_path: Path, sample_files) -> Iterator[str]:
    (tmp_path / "photo.png").write_bytes(Path(sample_files["photo"]).read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def load_input(ref: str, modality: Modality) -> object:
    return decode(read_input_bytes(ref), modality, ref)


def test_inputs_from_path_http_and_fsspec(http_root: str, sample_files) -> None:
    local = load_input(str(sample_files["photo"]), Modality.IMAGE)
    remote = load_input(f"{http_root}/photo.png", Modality.IMAGE)
    assert local.size == remote.size == (64, 48)
    fsspec.filesystem("memory").pipe("/inputs/photo.png", Path(sample_files["photo"]).read_bytes())
    assert load_input("memory://inputs/photo.png", Modality.IMAGE).size == (64, 48)
    audio = load_input(str(sample_files["speech"]), Modality.AUDIO)
    assert isinstance(audio, Audio) and audio.sampling_rate == 16000 and audio.array.dtype.name == "float32"


def test_input_errors_name_the_input(http_root: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"input file nowhere\.png does not exist"):
        load_input("nowhere.png", Modality.IMAGE)
    with pytest.raises(InputError, match=r"/missing\.png could not be fetched: HTTP 404"):
        load_input(f"{http_root}/missing.png", Modality.IMAGE)
    with pytest.raises(InputError, match=r"/notes\.txt is not a readable image"):
        load_input(f"{http_root}/notes.txt", Modality.IMAGE)
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(InputError, match=r"bad\.wav is not readable audio"):
        load_input(str(bad_wav), Modality.AUDIO)


def test_store_writes_atomically_under_the_run_folder(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "runs"), "run-1")
    uri = store.put_bytes("nodes/0-x/image.png", b"png")
    assert uri == str(tmp_path / "runs" / "run-1" / "nodes" / "0-x" / "image.png")
    assert Path(uri).read_bytes() == b"png"
    assert [p.name for p in Path(uri).parent.iterdir()] == ["image.png"]  # no temporary left behind
    assert store.read_bytes(store.put_json("plan.json", {"a": 1})) == b'{\n  "a": 1\n}'


def test_store_errors_name_the_url(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = ArtifactStore(str(blocker), "run-1")
    with pytest.raises(StorageError, match=f"could not write {blocker}/run-1/a.txt"):
        store.put_text("a.txt", "x")
    with pytest.raises(StorageError, match="cannot open storage 'nosuchproto://x'"):
        ArtifactStore("nosuchproto://x", "r")


def test_settings_from_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OPENAI_BASE_URL=http://127.0.0.1:8000/v1\nHUGGINGGPT_TOP_K=3\n")
    monkeypatch.setenv("HUGGINGGPT_STORAGE", "s3://bucket/prefix/")
    s = Settings()
    assert s.openai_base_url == "http://127.0.0.1:8000/v1" and s.top_k == 3 and s.storage == "s3://bucket/prefix"
    assert s.llm_configured
    assert s.with_overrides(storage="/tmp/x", catalog=None).storage == "/tmp/x"
    (tmp_path / ".env").write_text("")
    with pytest.raises(LLMNotConfiguredError, match="Set OPENAI_API_KEY"):
        Settings().require_llm()
    assert "sk-secret" not in repr(Settings(openai_api_key="sk-secret"))


def test_an_undecodable_input_is_named_without_the_decoder_s_buffer() -> None:
    from tasks.task_types import Modality

    for modality, kind in ((Modality.IMAGE, "a readable image"), (Modality.AUDIO, "readable audio")):
        with pytest.raises(InputError) as caught:
            decode(b"these bytes are no picture nor sound", modality, "photo.png")
        assert str(caught.value).startswith(f"input photo.png is not {kind} (")
        assert "BytesIO" not in str(caught.value) and " at 0x" not in str(caught.value)
