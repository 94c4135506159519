"""The server's pure pieces: signed links, a conversation as a request, the chunks of a stream, uploads, limits."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tasks.schemas import NodeResult, PlanNode, RunSummary
from tasks.serving import shapes
from tasks.serving.config import InFlight, ServeSettings, is_loopback
from tasks.serving.signing import FileSigner, LinkError, PublicLinks, clean_path
from tasks.serving.uploads import FormError, parse_form
from tasks.settings import Settings

SECRET = b"0123456789abcdef0123"


def test_a_link_is_valid_for_its_path_until_its_expiry() -> None:
    signer = FileSigner(SECRET, seconds=100)
    link = signer.link("run-1/nodes/0-x/a b.png", base_url="http://h:1/", now=1000)
    assert link.startswith("http://h:1/files/run-1/nodes/0-x/a%20b.png?exp=1100&sig=")
    sig = link.rsplit("sig=", 1)[1]
    assert signer.check("run-1/nodes/0-x/a b.png", "1100", sig, now=1099) == "run-1/nodes/0-x/a b.png"
    with pytest.raises(LinkError, match="expired"):
        signer.check("run-1/nodes/0-x/a b.png", "1100", sig, now=1101)
    with pytest.raises(LinkError, match="signature"):
        signer.check("run-1/nodes/0-x/other.png", "1100", sig, now=1000)
    with pytest.raises(LinkError, match="signature"):
        signer.check("run-1/nodes/0-x/a b.png", "1200", sig, now=1000)
    with pytest.raises(LinkError, match="signature"):
        FileSigner(b"another secret of 20b", seconds=100).check("run-1/nodes/0-x/a b.png", "1100", sig, now=1000)
    with pytest.raises(LinkError, match="expiry"):
        signer.check("run-1/nodes/0-x/a b.png", "soon", sig)


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a\\b", "a\x00b", ""])
def test_paths_outside_the_store_are_never_signed(path: str) -> None:
    with pytest.raises(LinkError):
        clean_path(path)
    with pytest.raises(LinkError):
        FileSigner(SECRET).link(path)


def test_public_links_need_both_the_url_and_the_secret() -> None:
    assert PublicLinks.from_settings(Settings(public_url="https://h.example")) is None
    assert PublicLinks.from_settings(Settings(file_secret="s" * 16)) is None
    links = PublicLinks.from_settings(Settings(public_url="https://h.example/", file_secret="s" * 16, link_seconds=60))
    assert links is not None and links.link("r/a.png").startswith("https://h.example/files/r/a.png?exp=")


def _resolver(known: dict[str, tuple[str, str]]) -> Callable[[str], tuple[str, str]]:
    def resolve(file_id: str) -> tuple[str, str]:
        if file_id not in known:
            raise shapes.RequestShapeError(f"no file {file_id}")
        return known[file_id]

    return resolve


def test_a_conversation_becomes_one_request() -> None:
    messages = [
        shapes.ChatMessage(role="system", content="be nice"),
        shapes.ChatMessage(role="user", content="first question"),
        shapes.ChatMessage(role="assistant", content="first answer"),
        shapes.ChatMessage(
            role="user",
            content=[
                {"type": "text", "text": "Caption file-abcdef0123 and https://x.example/b.png."},
                {"type": "image_url", "image_url": {"url": "https://x.example/c.jpg"}},
                {"type": "file", "file": {"file_id": "file-9999999999"}},
            ],
        ),
    ]
    known = {"file-abcdef0123": ("/s/uploads/file-abcdef0123/a.png", "a.png"), "file-9999999999": ("/s/d.wav", "d.wav")}
    mapped = shapes.to_request(messages, _resolver(known), history_turns=5)
    assert mapped.request == "Caption a.png and https://x.example/b.png. (d.wav)"
    assert mapped.inputs == [
        "/s/d.wav",
        "/s/uploads/file-abcdef0123/a.png",
        "https://x.example/c.jpg",
        "https://x.example/b.png",
    ]
    assert [(t.role, t.content) for t in mapped.history] == [("user", "first question"), ("assistant", "first answer")]
    assert shapes.to_request(messages, _resolver(known), history_turns=1).history[0].content == "first answer"
    with pytest.raises(shapes.RequestShapeError, match="no file"):
        shapes.to_request([shapes.ChatMessage(role="user", content="see file-0000000000")], _resolver({}))
    with pytest.raises(shapes.RequestShapeError, match="no user message"):
        shapes.to_request([shapes.ChatMessage(role="assistant", content="hi")], _resolver({}))
    data_url = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(shapes.RequestShapeError, match="POST /v1/files"):
        shapes.to_request([shapes.ChatMessage(role="user", content=data_url)], _resolver({}))


def test_a_reply_lists_the_files_and_the_stream_says_what_happens() -> None:
    summary = RunSummary(
        request="r",
        answer="Done.",
        plan=[PlanNode(id=0, task="text-to-speech", dep=[], args={"text": "hi"})],
        results=[NodeResult(id=0, task="text-to-speech", status="completed", outputs={"audio": "/s/r/a.wav"})],
    )
    files = shapes.output_files(summary, lambda uri: "http://h/files/r/a.wav?sig=1" if uri == "/s/r/a.wav" else None)
    assert (
        shapes.reply_text(summary, files)
        == "Done.\n\nFiles:\n- text-to-speech#0 audio: [a.wav](http://h/files/r/a.wav?sig=1)"
    )
    assert shapes.output_files(summary, lambda uri: None) == []
    words, data = shapes.plan_event((("text-to-speech#0", "tiny/tts", "pinned"),))
    assert words == "Plan: text-to-speech#0 → tiny/tts\n" and data["nodes"][0]["model"] == "tiny/tts"
    assert shapes.node_event("text-to-speech#0", "done")[0] == "✓ text-to-speech#0 done\n"
    assert shapes.node_event("text-to-speech#0", "downloading")[0] is None  # data only
    event = shapes.sse(shapes.chunk("c1", "hi", event={"event": "node"}))
    assert event.startswith("data: ") and event.endswith("\n\n")
    body = json.loads(event[6:])
    assert body["object"] == "chat.completion.chunk" and body["choices"][0]["delta"] == {"content": "hi"}
    assert shapes.sse("[DONE]") == "data: [DONE]\n\n"
    results = shapes.jarvis_results(summary, files)
    assert results["0"]["inference result"] == {"audio": "http://h/files/r/a.wav?sig=1"}
    assert shapes.jarvis_tasks(summary.plan) == [
        {"task": "text-to-speech", "id": 0, "dep": [-1], "args": {"text": "hi"}}
    ]


def test_an_upload_form_is_read_and_its_name_kept_inside_its_folder() -> None:
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="../../photo.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG\r\n\x00\xff"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = parse_form(f"multipart/form-data; boundary={boundary}", body)
    assert form["purpose"].data == b"user_data"
    assert form["file"].data == b"\x89PNG\r\n\x00\xff"
    assert shapes.safe_filename(form["file"].filename or "") == "photo.png"
    assert shapes.safe_filename("..") == "upload" and shapes.safe_filename("a b<c>.wav") == "a_b_c_.wav"
    with pytest.raises(FormError):
        parse_form("application/json", b"{}")


def test_limits_keys_and_where_the_server_listens() -> None:
    flight = InFlight(2)
    assert flight.enter("a") and flight.enter("a") and not flight.enter("a") and flight.enter("b")
    flight.leave("a")
    assert flight.enter("a") and not flight.enter("a")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    assert ServeSettings(api_keys="key-one-1, key-two-2").keys() == ["key-one-1", "key-two-2"]
    with pytest.raises(ValueError, match="8 characters"):
        ServeSettings(api_keys="short")
