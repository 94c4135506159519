"""The remote expert backend against an inference server on 127.0.0.1, and the hybrid choice and fallback core.

The server answers the routes huggingface_hub's ``InferenceClient`` calls when a model's endpoint is a URL (the
client POSTs to that URL; chat goes to ``{url}/v1/chat/completions``), in the formats the client parses. Every request
goes through the real ``InferenceClient``; the Hub stays unreachable (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image

from models_catalog.catalog import Catalog
from tasks.availability import Availability
from tasks.execute import AllCandidatesFailed, Attempt, run_with_fallback
from tasks.experts.base import Audio, CannotRunHereError, ExpertError, ExpertOutput, ModelSpec
from tasks.experts.cache import ModelCache
from tasks.experts.local import SUPPORTED_TASKS as LOCAL_TASKS
from tasks.experts.local import LocalBackend
from tasks.experts.remote import SUPPORTED_TASKS as REMOTE_TASKS
from tasks.experts.remote import RemoteBackend
from tasks.settings import Settings
from tasks.task_types import TASK_TYPES
from tests.tiny_models import build_tiny_models
from tests.waiting import FakeClock, returns_within, wait_for

# --- an inference server on 127.0.0.1 -----------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer: a status, a body (bytes as they are, anything else as JSON), a delay before answering
    (cut short when the server is reset or stopped: a long delay is a server that answers only once a test is over)."""

    body: Any = None
    status: int = 200
    content_type: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class InferenceServer:
    """Answers GETs and POSTs with the replies scripted per path (the last one repeats); records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append(Request(path, {k.lower(): v for k, v in self.headers.items()}, body))
                    replies = server.routes.get(path)
                    reply = (replies.pop(0) if len(replies) > 1 else replies[0]) if replies else None
                    released = server._released
                if reply is None:
                    reply = Reply({"error": f"no route {path}"}, status=404)
                if reply.delay:
                    released.wait(reply.delay)
                data, content_type = reply.encoded()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, *replies: Reply) -> str:
        """Script ``path``; return its URL."""
        with self._lock:
            self.routes[path] = list(replies)
        return self.url(path)

    def received(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.requests.clear()
            self._released.set()  # delayed replies still waiting answer now
            self._released = threading.Event()

    def start(self) -> InferenceServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def _server() -> Iterator[InferenceServer]:
    server = InferenceServer().start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: InferenceServer) -> InferenceServer:
    _server.reset()
    return _server


@pytest.fixture
def remote() -> RemoteBackend:
    return RemoteBackend(token="hf_test_token", timeout=5.0, max_retries=2, retry_wait=0.01, detection_threshold=0.0)


def endpoint_spec(url: str, task: str, model_id: str | None = None) -> ModelSpec:
    return ModelSpec(id=model_id or f"acme/{task}", task=task, endpoint=url)


def picture(size: tuple[int, int] = (48, 40)) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    pixels[8:24, 10:30, 2] = 200
    return Image.fromarray(pixels, "RGB")


def sine(seconds: float = 0.5, rate: int = 16_000) -> Audio:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return Audio(array=(0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sampling_rate=rate)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(audio: Audio) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.array, audio.sampling_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def check_table_outputs(task: str, out: ExpertOutput) -> None:
    for modality in TASK_TYPES[task].outputs:
        value = out.json if modality == "json" else getattr(out, str(modality))
        assert value is not None, f"{task} produced no {modality}"


# --- every task the client has a call for, through the real InferenceClient ----------------------------------------

MASK = Image.new("L", (48, 40), 0)
MASK.paste(255, (0, 0, 24, 40))
CHAT = {
    "id": "chat-1",
    "object": "chat.completion",
    "created": 0,
    "model": "acme/chat",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": " Hello there! "}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


@dataclass
class Case:
    task: str
    inputs: dict[str, Any]
    reply: Reply
    check: Callable[[ExpertOutput, Request], None]
    route: str = ""


def _is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG")


def sent_file(request: Request) -> bytes:
    """The file a binary-input task sent: the raw body, or base64 under ``inputs`` when it sent parameters too."""
    if request.headers.get("content-type") == "application/json":
        return base64.b64decode(request.json()["inputs"])
    return request.body


CASES: list[Case] = [
    Case(
        "text-classification",
        {"text": "I loved it"},
        Reply([[{"label": "NEGATIVE", "score": 0.1}, {"label": "POSITIVE", "score": 0.9}]]),
        lambda out, req: (
            req.json()["inputs"] == "I loved it"
            and out.text == "POSITIVE (0.90)"
            and [e["label"] for e in out.json] == ["POSITIVE", "NEGATIVE"]
        ),
    ),
    Case(
        "token-classification",
        {"text": "Alice met Bob"},
        Reply([{"entity_group": "PER", "word": "Alice", "score": 0.99, "start": 0, "end": 5}]),
        lambda out, req: (
            out.json[0] == {"entity_group": "PER", "word": "Alice", "score": 0.99, "start": 0, "end": 5}
            and out.text == "Alice: PER"
        ),
    ),
    Case(
        "summarization",
        {"text": "a very long report"},
        Reply([{"summary_text": "short"}]),
        lambda out, req: out.text == "short" and req.json()["inputs"] == "a very long report",
    ),
    Case(
        "translation",
        {"text": "the house", "target_language": "French"},
        Reply([{"translation_text": "la maison"}]),
        lambda out, req: out.text == "la maison" and out.extra["target_language"] == "French",
    ),
    Case(
        "question-answering",
        {"text": "Where?", "context": "Alice met Bob in London."},
        Reply({"answer": "London", "score": 0.8, "start": 17, "end": 23}),
        lambda out, req: (
            out.text == "London"
            and out.json == {"answer": "London", "score": 0.8, "start": 17, "end": 23}
            and req.json()["inputs"] == {"question": "Where?", "context": "Alice met Bob in London."}
        ),
    ),
    Case(
        "conversational",
        {"text": "hi"},
        Reply(CHAT),
        lambda out, req: out.text == "Hello there!" and req.json()["messages"] == [{"role": "user", "content": "hi"}],
        route="/v1/chat/completions",
    ),
    Case(
        "text-generation",
        {"text": "Once upon"},
        Reply([{"generated_text": " a time"}]),
        lambda out, req: out.text == " a time" and req.json()["parameters"]["return_full_text"] is False,
    ),
    Case(
        "text2text-generation",
        {"text": "paraphrase: the cat sat"},
        Reply([{"generated_text": "a cat was sitting"}]),
        lambda out, req: out.text == "a cat was sitting",
    ),
    Case(
        "sentence-similarity",
        {"text": "a cat", "text2": "a kitten"},
        Reply([0.87]),
        lambda out, req: (
            out.json == {"similarity": 0.87}
            and req.json()["inputs"] == {"source_sentence": "a cat", "sentences": ["a kitten"]}
        ),
    ),
    Case(
        "zero-shot-classification",
        {"text": "the cat sat", "labels": "politics, animals"},
        Reply([{"label": "animals", "score": 0.9}, {"label": "politics", "score": 0.1}]),
        lambda out, req: (
            out.json[0] == {"label": "animals", "score": 0.9}
            and req.json()["parameters"]["candidate_labels"] == ["politics", "animals"]
        ),
    ),
    Case(
        "feature-extraction",
        {"text": "a cat"},
        Reply([[0.5, 1.0, -1.0, 0.0]]),
        lambda out, req: out.json == [0.5, 1.0, -1.0, 0.0],
    ),
    Case(
        "tabular-classification",
        {"table": b"age,income\n30,1000\n45,3000\n50,2500\n"},
        Reply(["no", "yes", "yes"]),
        lambda out, req: (
            req.json()["table"] == {"age": ["30", "45", "50"], "income": ["1000", "3000", "2500"]}
            and out.json == [{"row": 1, "label": "no"}, {"row": 2, "label": "yes"}, {"row": 3, "label": "yes"}]
            and out.text == "3 rows: no x1, yes x2"
        ),
    ),
    Case(
        "object-detection",
        {"image": picture()},
        Reply([{"label": "cat", "score": 0.95, "box": {"xmin": 2, "ymin": 3, "xmax": 20, "ymax": 25}}]),
        lambda out, req: (
            _is_png(sent_file(req))
            and req.json()["parameters"] == {"threshold": 0.0}
            and out.json == [{"label": "cat", "score": 0.95, "box": {"xmin": 2, "ymin": 3, "xmax": 20, "ymax": 25}}]
            and out.image.size == (48, 40)
            and out.image.tobytes() != picture().tobytes()
            and out.text == "1 object: cat (0.95)"
        ),
    ),
    Case(
        "image-classification",
        {"image": picture()},
        Reply([{"label": "dog", "score": 0.3}, {"label": "cat", "score": 0.7}]),
        lambda out, req: (
            out.text == "cat (0.70), dog (0.30)" and req.json()["parameters"]["top_k"] == 5 and _is_png(sent_file(req))
        ),
    ),
    Case(
        "image-to-image",
        {"image": picture(), "text": "make it blue"},
        Reply(png_bytes(picture((96, 80))), content_type="image/png"),
        lambda out, req: (
            out.image.size == (96, 80)
            and out.image.mode == "RGB"
            and req.json()["parameters"]["prompt"] == "make it blue"
            and _is_png(base64.b64decode(req.json()["inputs"]))
        ),
    ),
    Case(
        "image-to-text",
        {"image": picture()},
        Reply([{"generated_text": "a red square"}]),
        lambda out, req: out.text == "a red square" and _is_png(sent_file(req)),
    ),
    Case(
        "text-to-image",
        {"text": "a cat on a mat"},
        Reply(png_bytes(picture((32, 32)).convert("RGBA")), content_type="image/png"),
        lambda out, req: (
            out.image.size == (32, 32)
            and out.image.mode == "RGB"
            and req.json()["inputs"] == "a cat on a mat"
            and req.headers["accept"] == "image/png"
        ),
    ),
    Case(
        "visual-question-answering",
        {"image": picture(), "text": "how many cats?"},
        Reply([{"answer": "one", "score": 0.2}, {"answer": "two", "score": 0.7}]),
        lambda out, req: out.text == "two" and req.json()["question"] == "how many cats?",
    ),
    Case(
        "document-question-answering",
        {"image": picture(), "text": "what is the total?"},
        Reply([{"answer": "42", "score": 0.8, "start": 3, "end": 3}]),
        lambda out, req: (
            out.text == "42"
            and req.json()["inputs"]["question"] == "what is the total?"
            and _is_png(base64.b64decode(req.json()["inputs"]["image"]))
        ),
    ),
    Case(
        "image-segmentation",
        {"image": picture()},
        Reply([{"label": "cat", "score": 0.9, "mask": base64.b64encode(png_bytes(MASK)).decode()}]),
        lambda out, req: (
            out.json == [{"label": "cat", "score": 0.9, "area": 0.5}]
            and out.image.size == (48, 40)
            and out.image.tobytes() != picture().tobytes()
            and out.text == "1 segment: cat 0.90 (50%)"
        ),
    ),
    Case(
        "text-to-speech",
        {"text": "hello world"},
        Reply(wav_bytes(sine(0.25, 22_050)), content_type="audio/wav"),
        lambda out, req: (
            out.audio.sampling_rate == 22_050
            and out.audio.array.dtype == np.float32
            and abs(out.audio.seconds - 0.25) < 0.01
        ),
    ),
    Case(
        "automatic-speech-recognition",
        {"audio": sine()},
        Reply({"text": " hello  world "}),
        lambda out, req: out.text == "hello world" and sent_file(req).startswith(b"RIFF"),
    ),
    Case(
        "audio-to-audio",
        {"audio": sine()},
        Reply([{"label": "speech", "content-type": "audio/wav", "blob": base64.b64encode(wav_bytes(sine())).decode()}]),
        lambda out, req: out.audio.sampling_rate == 16_000 and out.extra["labels"] == ["speech"],
    ),
    Case(
        "audio-classification",
        {"audio": sine()},
        Reply([{"label": "speech", "score": 0.8}, {"label": "music", "score": 0.2}]),
        lambda out, req: out.json[0] == {"label": "speech", "score": 0.8} and sent_file(req).startswith(b"RIFF"),
    ),
]


def test_cases_cover_every_remote_task() -> None:
    covered = {c.task for c in CASES}
    assert covered == set(REMOTE_TASKS) - {"text-to-video"}  # through Inference Providers: tests below
    assert RemoteBackend().tasks == frozenset(REMOTE_TASKS), "a call for every supported task, and no other"
    assert set(LOCAL_TASKS) | set(REMOTE_TASKS) == set(TASK_TYPES), "every task type has a backend"


@pytest.mark.parametrize("case", CASES, ids=[c.task for c in CASES])
def test_remote_task(case: Case, server: InferenceServer, remote: RemoteBackend) -> None:
    url = server.add(f"/{case.task}{case.route}", case.reply)
    out = remote.run(case.task, endpoint_spec(url.removesuffix(case.route), case.task), case.inputs)
    (request,) = server.received(f"/{case.task}{case.route}")
    assert request.headers["authorization"] == "Bearer hf_test_token"
    assert case.check(out, request), (out, request.body[:200])
    check_table_outputs(case.task, out)
    assert out.extra["backend"] == "remote" and out.extra["model"] == f"acme/{case.task}"
    json.dumps(out.json)


def test_a_model_of_one_language_pair_is_not_asked_for_another(server: InferenceServer, remote: RemoteBackend) -> None:
    url = server.add("/opus", Reply([{"translation_text": "la maison"}]))
    spec = endpoint_spec(url, "translation", "Helsinki-NLP/opus-mt-en-fr")
    with pytest.raises(CannotRunHereError, match="translates en to fr only, not into German"):
        remote.run("translation", spec, {"text": "the house", "target_language": "German"})
    assert server.received("/opus") == [], "nothing was sent: the model cannot do what was asked"
    assert remote.run("translation", spec, {"text": "the house", "target_language": "French"}).text == "la maison"
    (request,) = server.received("/opus")
    assert request.json()["parameters"] == {"src_lang": "en", "tgt_lang": "fr"}  # the target is asked for


def test_base_url_template_names_the_model(server: InferenceServer) -> None:
    server.add("/models/acme/sentiment", Reply([[{"label": "POSITIVE", "score": 1.0}]]))
    backend = RemoteBackend(timeout=5.0, base_url=server.url("/models/{model}"))
    out = backend.run("text-classification", ModelSpec(id="acme/sentiment", task="text-classification"), {"text": "x"})
    assert out.text == "POSITIVE (1.00)"
    assert out.extra["endpoint"] == server.url("/models/acme/sentiment")
    assert "authorization" not in server.requests[0].headers, "no token configured, none sent"


# --- errors and waits ------------------------------------------------------------------------------------------------


def test_server_error_is_retried_then_reported(server: InferenceServer, remote: RemoteBackend) -> None:
    url = server.add("/broken", Reply({"error": "CUDA out of memory"}, status=500))
    with pytest.raises(ExpertError) as info:
        remote.run("text-classification", endpoint_spec(url, "text-classification", "acme/broken"), {"text": "x"})
    message = str(info.value)
    assert "acme/broken" in message and url in message and "HTTP 500" in message and "CUDA out of memory" in message
    assert "tried 3 times" in message
    assert len(server.received("/broken")) == 3, "one call and two retries"


def test_server_error_then_success(server: InferenceServer, remote: RemoteBackend) -> None:
    url = server.add(
        "/flaky", Reply({"error": "bad gateway"}, status=502), Reply([[{"label": "POSITIVE", "score": 0.6}]])
    )
    out = remote.run("text-classification", endpoint_spec(url, "text-classification"), {"text": "x"})
    assert out.text == "POSITIVE (0.60)"
    assert len(server.received("/flaky")) == 2


def test_timeout_is_reported_in_bounded_time(server: InferenceServer) -> None:
    backend = RemoteBackend(timeout=0.3, max_retries=3, retry_wait=0.01)
    url = server.add("/slow", Reply([[{"label": "POSITIVE", "score": 0.6}]], delay=60))  # answers when the test ends
    with pytest.raises(ExpertError, match=r"timed out after 0\.3 s"):
        returns_within(
            lambda: backend.run("text-classification", endpoint_spec(url, "text-classification"), {"text": "x"})
        )
    assert len(server.received("/slow")) == 1, "a timeout is not retried"


def test_model_loading_waits_then_succeeds(server: InferenceServer) -> None:
    clock = FakeClock()
    remote = RemoteBackend(timeout=5.0, retry_wait=0.01, clock=clock, sleep=clock.sleep)
    loading = Reply({"error": "Model acme/asr is currently loading", "estimated_time": 0.3}, status=503)
    url = server.add("/loading", loading, Reply({"text": "hello"}))
    out = remote.run(
        "automatic-speech-recognition", endpoint_spec(url, "automatic-speech-recognition"), {"audio": sine()}
    )
    assert out.text == "hello"
    assert clock.waits == [0.3], "waited the estimated time, once"
    assert len(server.received("/loading")) == 2


def test_model_loading_wait_is_bounded(server: InferenceServer) -> None:
    clock = FakeClock()
    backend = RemoteBackend(timeout=5.0, max_loading_wait=0.4, retry_wait=0.01, clock=clock, sleep=clock.sleep)
    url = server.add(
        "/never", Reply({"error": "Model acme/x is currently loading", "estimated_time": 500.0}, status=503)
    )
    with pytest.raises(ExpertError, match=r"still loading the model after waiting 0\.4 s \(it estimated 500 s\)"):
        backend.run("text-classification", endpoint_spec(url, "text-classification"), {"text": "x"})
    assert sum(clock.waits) == pytest.approx(0.4), clock.waits
    assert len(server.received("/never")) == len(clock.waits) + 1, "asked again after each wait"


def test_unauthorized_asks_for_a_token(server: InferenceServer, remote: RemoteBackend) -> None:
    url = server.add("/private", Reply({"error": "Invalid credentials"}, status=401))
    with pytest.raises(ExpertError, match="HF_TOKEN") as info:
        remote.run("text-classification", endpoint_spec(url, "text-classification"), {"text": "x"})
    assert "401" in str(info.value)
    assert len(server.received("/private")) == 1, "not retried"


def test_not_found_says_not_served(server: InferenceServer, remote: RemoteBackend) -> None:
    with pytest.raises(ExpertError, match=r"not served there \(HTTP 404\)"):
        remote.run("text-classification", endpoint_spec(server.url("/nothing"), "text-classification"), {"text": "x"})


def test_unreachable_endpoint(remote: RemoteBackend) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gone"
    with pytest.raises(ExpertError, match="cannot reach") as info:
        remote.run("text-classification", endpoint_spec(url, "text-classification"), {"text": "x"})
    assert url in str(info.value)


def test_bad_answer_names_the_model(server: InferenceServer, remote: RemoteBackend) -> None:
    url = server.add("/garbage", Reply(b"not an image", content_type="image/png"))
    with pytest.raises(ExpertError, match="acme/text-to-image"):
        remote.run("text-to-image", endpoint_spec(url, "text-to-image"), {"text": "a cat"})


def test_hub_model_fails_clearly_offline(remote: RemoteBackend) -> None:
    from huggingface_hub import constants

    assert constants.is_offline_mode(), "the suite runs with HF_HUB_OFFLINE=1"
    with pytest.raises(ExpertError, match="Hub is offline"):
        remote.run("text-classification", ModelSpec(id="acme/no-endpoint", task="text-classification"), {"text": "x"})


def test_hub_stays_blocked_while_endpoints_are_allowed(server: InferenceServer, remote: RemoteBackend) -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    url = server.add("/ok", Reply([[{"label": "POSITIVE", "score": 1.0}]]))
    remote.run("text-classification", endpoint_spec(url, "text-classification"), {"text": "x"})
    for hub_url in ("https://huggingface.co/api/models/gpt2", "https://router.huggingface.co/hf-inference/models/x"):
        with pytest.raises(OfflineModeIsEnabled):
            get_session().get(hub_url)


# --- text-to-video, through Inference Providers ------------------------------------------------------------------

#: The smallest ISO base media file a client would call an MP4: an ``ftyp`` box and an empty ``free`` box.
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free"


def point_hub_at(server: InferenceServer, monkeypatch: pytest.MonkeyPatch) -> InferenceServer:
    """The Hub's model API and the Inference Providers router, both answered by ``server``: huggingface_hub online,
    with its Hub endpoint and its router URL pointed at 127.0.0.1."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.base_url)
    monkeypatch.setattr(constants, "INFERENCE_PROXY_TEMPLATE", server.base_url + "/router/{provider}")
    return server


@pytest.fixture
def hub(server: InferenceServer, monkeypatch: pytest.MonkeyPatch) -> InferenceServer:
    return point_hub_at(server, monkeypatch)


def serve_video_model(
    hub: InferenceServer,
    model: str,
    *providers: str,
    video: bytes = MP4,
    fal_statuses: Sequence[str] = ("IN_PROGRESS", "COMPLETED"),
) -> None:
    """Script the Hub's provider mapping of ``model`` (``providers`` in the user's order) and each provider's
    text-to-video route, whose answer points at a video file on the same server; fal-ai's job reports
    ``fal_statuses`` in turn (the last one repeats)."""
    mapping = {
        p: {"status": "live", "providerId": f"{p}-{model.split('/')[-1]}", "task": "text-to-video"} for p in providers
    }
    hub.add(f"/api/models/{model}", Reply({"_id": "0" * 24, "id": model, "inferenceProviderMapping": mapping}))
    hub.add("/files/clip.mp4", Reply(video, content_type="video/mp4"))
    for provider, info in mapping.items():
        pid = info["providerId"]
        if provider == "novita":  # POST {router}/novita/v3/hf/{id} -> {"video": {"video_url": ...}}
            hub.add(f"/router/novita/v3/hf/{pid}", Reply({"video": {"video_url": hub.url("/files/clip.mp4")}}))
        elif provider == "replicate":  # POST {router}/replicate/v1/models/{id}/predictions -> {"output": url}
            hub.add(f"/router/replicate/v1/models/{pid}/predictions", Reply({"output": hub.url("/files/clip.mp4")}))
        elif provider == "fal-ai":  # a queued job: POST, then GET .../status until COMPLETED, then GET the result
            job = f"/router/fal-ai/{pid}/requests/job-1"
            hub.add(
                f"/router/fal-ai/{pid}",
                Reply({"request_id": "job-1", "status": "IN_QUEUE", "response_url": hub.url(job)}),
            )
            hub.add(f"{job}/status", *(Reply({"status": status}) for status in fal_statuses))
            hub.add(job, Reply({"video": {"url": hub.url("/files/clip.mp4")}}))
        else:
            raise ValueError(provider)


def test_text_to_video_through_inference_providers(hub: InferenceServer) -> None:
    """Provider ``auto``: the client reads the model's provider mapping from the Hub, sends the prompt through the
    router to the first provider, and fetches the video it points at."""
    serve_video_model(hub, "acme/tiny-video", "novita", "replicate")
    remote = RemoteBackend(token="hf_test_token", timeout=5.0)
    out = remote.run("text-to-video", ModelSpec(id="acme/tiny-video", task="text-to-video"), {"text": "a cat surfing"})
    assert out.video == MP4
    assert (out.extra["provider"], out.extra["backend"], out.extra["model"]) == ("auto", "remote", "acme/tiny-video")
    (sent,) = hub.received("/router/novita/v3/hf/novita-tiny-video")
    assert sent.json() == {"prompt": "a cat surfing"}
    assert sent.headers["authorization"] == "Bearer hf_test_token"
    assert len(hub.received("/files/clip.mp4")) == 1
    assert hub.received("/router/replicate/v1/models/replicate-tiny-video/predictions") == []


def test_text_to_video_with_the_provider_named_by_the_catalog(hub: InferenceServer) -> None:
    serve_video_model(hub, "acme/tiny-video-2", "novita", "replicate")
    remote = RemoteBackend(token="hf_test_token", timeout=5.0, base_url=hub.url("/tgi"))  # not used: it names one
    spec = ModelSpec(id="acme/tiny-video-2", task="text-to-video", provider="replicate")
    out = remote.run("text-to-video", spec, {"text": "a dog skating"})
    assert out.video == MP4 and out.extra["provider"] == "replicate"
    (sent,) = hub.received("/router/replicate/v1/models/replicate-tiny-video-2/predictions")
    assert sent.json() == {"input": {"prompt": "a dog skating"}}
    assert hub.received("/router/novita/v3/hf/novita-tiny-video-2") == []


def test_text_to_video_through_a_provider_job_queue(hub: InferenceServer) -> None:
    serve_video_model(hub, "acme/queued-video", "fal-ai")
    remote = RemoteBackend(token="hf_test_token", timeout=5.0, job_timeout=30.0)
    out = remote.run("text-to-video", ModelSpec(id="acme/queued-video", task="text-to-video"), {"text": "waves"})
    assert out.video == MP4 and out.extra["provider"] == "auto"
    (sent,) = hub.received("/router/fal-ai/fal-ai-queued-video")
    assert sent.json() == {"prompt": "waves"}
    assert len(hub.received("/router/fal-ai/fal-ai-queued-video/requests/job-1/status")) == 2  # polled to the end


def test_a_provider_job_that_never_completes_is_abandoned_in_bounded_time(hub: InferenceServer) -> None:
    serve_video_model(hub, "acme/stuck-video", "fal-ai", fal_statuses=("IN_PROGRESS",))
    remote = RemoteBackend(token="hf_test_token", timeout=5.0, job_timeout=1.5)
    with pytest.raises(ExpertError, match=r"no result after 1.5 s \(HUGGINGGPT_REMOTE_JOB_TIMEOUT\)") as info:
        returns_within(
            lambda: remote.run(
                "text-to-video", ModelSpec(id="acme/stuck-video", task="text-to-video"), {"text": "waves"}
            )
        )
    assert "acme/stuck-video" in str(info.value)
    assert hub.received("/router/fal-ai/fal-ai-stuck-video/requests/job-1/status")  # it was polling
    hub.reset()  # the abandoned poller's next request gets a 404 and its thread ends
    wait_for(
        lambda: not any(t.name.startswith("remote call:") for t in threading.enumerate()),
        what="the abandoned poller's thread ended",
    )


def test_text_to_video_that_is_not_an_mp4_is_an_error(hub: InferenceServer) -> None:
    serve_video_model(hub, "acme/gif-maker", "novita", video=b"GIF89a" + b"\x00" * 20)
    remote = RemoteBackend(token="hf_test_token", timeout=5.0, max_retries=0)
    with pytest.raises(ExpertError, match="not an MP4 video") as info:
        remote.run("text-to-video", ModelSpec(id="acme/gif-maker", task="text-to-video"), {"text": "a cat"})
    assert "acme/gif-maker" in str(info.value)


def test_text_to_video_model_unknown_to_the_provider(hub: InferenceServer) -> None:
    serve_video_model(hub, "acme/novita-only", "novita")
    remote = RemoteBackend(token="hf_test_token", timeout=5.0, max_retries=0)
    spec = ModelSpec(id="acme/novita-only", task="text-to-video", provider="replicate")
    with pytest.raises(ExpertError, match="not supported by provider replicate") as info:
        remote.run("text-to-video", spec, {"text": "a cat"})
    assert "acme/novita-only" in str(info.value)


def test_tasks_not_served(server: InferenceServer, remote: RemoteBackend) -> None:
    with pytest.raises(ExpertError, match="no depth-estimation call"):
        remote.run("depth-estimation", endpoint_spec(server.url("/d"), "depth-estimation"), {"image": picture()})
    with pytest.raises(ExpertError, match="Inference Provider"):
        remote.run("text-to-video", endpoint_spec(server.url("/v"), "text-to-video"), {"text": "a cat"})
    assert server.requests == []


def test_missing_input_names_the_argument(server: InferenceServer, remote: RemoteBackend) -> None:
    with pytest.raises(ExpertError, match="'text2'"):
        remote.run("sentence-similarity", endpoint_spec(server.url("/s"), "sentence-similarity"), {"text": "a"})


# --- fallback ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-router"), tasks=("text-classification",))


@pytest.fixture
def broken_model(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder availability accepts (a proven architecture) that cannot be loaded: no weights, no tokenizer."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    return folder


@pytest.fixture
def backends(remote: RemoteBackend) -> dict[str, Any]:
    return {"local": LocalBackend(cache=ModelCache(max_models=2)), "remote": remote}


def hybrid_offline() -> Callable[[ModelSpec], tuple[str | None, str]]:
    """What execution uses: the availability of the default (hybrid) settings, offline, with no catalog entry."""
    return Availability(Settings(), Catalog()).choose


def test_missing_weights_are_skipped(
    tiny: dict[str, pathlib.Path], tmp_path: pathlib.Path, backends: dict[str, Any]
) -> None:
    candidates = [
        ModelSpec(id="acme/missing", task="text-classification", local_path=str(tmp_path / "nowhere")),
        ModelSpec(id="tiny/tc", task="text-classification", local_path=str(tiny["text-classification"])),
    ]
    out, attempts = run_with_fallback(
        "text-classification", candidates, {"text": "hi"}, backends=backends, choose=hybrid_offline(), max_attempts=1
    )
    assert out.text and out.extra["model"] == "tiny/tc" and out.extra["backend"] == "local"
    assert [(a.model, a.backend, a.ok, a.skipped) for a in attempts] == [
        ("acme/missing", None, False, True),
        ("tiny/tc", "local", True, False),
    ]
    assert "does not exist" in (attempts[0].error or "")
    assert out.extra["attempts"] == [a.model_dump() for a in attempts]


def test_load_failure_falls_back_to_the_next_candidate(
    tiny: dict[str, pathlib.Path], broken_model: pathlib.Path, backends: dict[str, Any]
) -> None:
    candidates = [
        ModelSpec(id="acme/broken", task="text-classification", local_path=str(broken_model)),
        ModelSpec(id="tiny/tc", task="text-classification", local_path=str(tiny["text-classification"])),
    ]
    out, attempts = run_with_fallback(
        "text-classification", candidates, {"text": "hi"}, backends=backends, choose=hybrid_offline(), max_attempts=3
    )
    assert out.extra["model"] == "tiny/tc"
    first, second = attempts
    assert (first.model, first.backend, first.ok, first.skipped) == ("acme/broken", "local", False, False)
    assert "could not load model 'acme/broken'" in (first.error or "")
    assert (second.model, second.backend, second.ok) == ("tiny/tc", "local", True)
    assert all(isinstance(a, Attempt) and a.seconds >= 0 for a in attempts)


def test_remote_failure_falls_back_to_local(
    tiny: dict[str, pathlib.Path], server: InferenceServer, backends: dict[str, Any]
) -> None:
    url = server.add("/down", Reply({"error": "overloaded"}, status=503))
    candidates = [
        ModelSpec(id="acme/remote", task="text-classification", endpoint=url),
        ModelSpec(id="tiny/tc", task="text-classification", local_path=str(tiny["text-classification"])),
    ]
    out, attempts = run_with_fallback(
        "text-classification", candidates, {"text": "hi"}, backends=backends, choose=hybrid_offline(), max_attempts=2
    )
    assert [(a.model, a.backend, a.ok) for a in attempts] == [
        ("acme/remote", "remote", False),
        ("tiny/tc", "local", True),
    ]
    assert "HTTP 503" in (attempts[0].error or "") and "overloaded" in (attempts[0].error or "")
    assert out.extra["backend"] == "local"


def test_hybrid_runs_remote_when_weights_are_missing(
    tmp_path: pathlib.Path, server: InferenceServer, backends: dict[str, Any]
) -> None:
    url = server.add("/asr", Reply({"text": "remote words"}))
    spec = ModelSpec(
        id="acme/asr", task="automatic-speech-recognition", local_path=str(tmp_path / "nowhere"), endpoint=url
    )
    out, attempts = run_with_fallback(
        "automatic-speech-recognition",
        [spec],
        {"audio": sine()},
        backends=backends,
        choose=hybrid_offline(),
        max_attempts=1,
    )
    assert out.text == "remote words" and [(a.backend, a.ok) for a in attempts] == [("remote", True)]


def test_all_candidates_failed_lists_every_attempt(
    broken_model: pathlib.Path, tmp_path: pathlib.Path, backends: dict[str, Any]
) -> None:
    candidates = [
        ModelSpec(id="acme/broken", task="text-classification", local_path=str(broken_model)),
        ModelSpec(id="acme/missing", task="text-classification", local_path=str(tmp_path / "nowhere")),
        ModelSpec(id="acme/broken-2", task="text-classification", local_path=str(broken_model)),
    ]
    with pytest.raises(AllCandidatesFailed) as info:
        run_with_fallback(
            "text-classification",
            candidates,
            {"text": "hi"},
            backends=backends,
            choose=hybrid_offline(),
            max_attempts=5,
        )
    error = info.value
    assert isinstance(error, ExpertError)
    assert [(a.model, a.skipped) for a in error.attempts] == [
        ("acme/broken", False),
        ("acme/missing", True),
        ("acme/broken-2", False),
    ]
    message = str(error)
    assert message.startswith("every model candidate for text-classification failed: 1) acme/broken [local]: failed")
    assert "2) acme/missing: skipped (local: the local weights folder" in message
    assert "3) acme/broken-2 [local]: failed" in message and "could not load" in message


def test_attempts_are_bounded(broken_model: pathlib.Path, backends: dict[str, Any]) -> None:
    candidates = [
        ModelSpec(id=f"acme/broken-{i}", task="text-classification", local_path=str(broken_model)) for i in range(4)
    ]
    with pytest.raises(AllCandidatesFailed, match="2 more not tried") as info:
        run_with_fallback(
            "text-classification",
            candidates,
            {"text": "hi"},
            backends=backends,
            choose=hybrid_offline(),
            max_attempts=2,
        )
    assert [a.model for a in info.value.attempts] == ["acme/broken-0", "acme/broken-1"]
    with pytest.raises(AllCandidatesFailed, match="no model candidates for text-classification"):
        run_with_fallback("text-classification", [], {}, backends=backends, choose=hybrid_offline(), max_attempts=1)
