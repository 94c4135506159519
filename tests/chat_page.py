"""The chat page of ``hugginggpt serve`` in headless Chromium, driven through the DevTools protocol.

:class:`Chromium` starts Debian's ``chromium`` with a DevTools port and speaks the protocol over a websocket
(``websockets`` comes with Prefect); :func:`two_turns` has a conversation on the page: a photo dropped on the box and
"show its depth" (an image comes back), then "read it aloud" (an audio player comes back). The tests check the DOM
(tests/test_serve_page.py); ``deployments/chat_screenshot.py`` takes the screenshot of the README.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.llm import ChatCall

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--hide-scrollbars",
    "--mute-audio",
    "--no-first-run",
)
DEPTH = [{"id": 0, "task": "depth-estimation", "dep": [-1], "args": {"image": "photo.png"}}]
SPEAK = [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "A depth map of an orange photo."}}]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def page_controller(call: ChatCall) -> str:
    """The controller of the page's conversation: the plan follows the last user message."""
    last = str(call.messages[-1].get("content", "")) if call.messages else ""
    if call.stage == "plan":
        return json.dumps({"tasks": SPEAK if "aloud" in last else DEPTH if "depth" in last else []})
    if call.stage == "select":
        return '{"choices": []}'
    text = json.dumps([m.get("content", "") for m in call.messages])
    if "text-to-speech" in text:
        return "Here is the description, read aloud."
    return "Here is the depth map of photo.png: nearer parts are brighter."


class Chromium:
    """One headless Chromium and one page of it, spoken to over the DevTools protocol."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        from websockets.sync.client import connect

        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium is not installed (Debian: apt-get install -y chromium)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.process = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        targets: list[dict[str, Any]] = []
        while not any(t.get("type") == "page" for t in targets):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as reply:
                    targets = json.loads(reply.read())
            except OSError:
                time.sleep(0.1)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self._id = 0
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression on the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120) -> Any:
        """Wait until ``expression`` is truthy on the page (checked every 100 ms, at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied: {expression}")
            time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('prompt')", 60)

    def screenshot(self, out: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Chromium]:
    browser = Chromium(width, height)
    try:
        yield browser
    finally:
        browser.close()


def ask(page: Chromium, text: str, turn: int) -> None:
    """Type ``text`` in the box, send it, and wait for the ``turn``-th answer (1-based) to finish."""
    page.evaluate(f"document.getElementById('prompt').value = {json.dumps(text)}; form.requestSubmit(); true")
    page.wait_for(
        f"(() => {{ const a = document.querySelectorAll('.msg.assistant'); "
        f"return a.length >= {turn} && a[{turn - 1}].dataset.status !== 'running'; }})()"
    )


def drop_file(page: Chromium, name: str, data: bytes, media_type: str) -> None:
    """Drop a file on the page's box, as a user dragging it there, and wait for its upload."""
    encoded = base64.b64encode(data).decode()
    page.evaluate(
        f"(() => {{ const bytes = Uint8Array.from(atob('{encoded}'), (c) => c.charCodeAt(0)); "
        f"const dt = new DataTransfer(); dt.items.add(new File([bytes], {json.dumps(name)}, "
        f"{{type: {json.dumps(media_type)}}})); "
        f"drop.dispatchEvent(new DragEvent('drop', {{dataTransfer: dt, bubbles: true, cancelable: true}})); "
        f"return true; }})()"
    )
    page.wait_for(f"[...document.querySelectorAll('#chips span')].some((s) => s.textContent === {json.dumps(name)})")


def two_turns(page: Chromium, base_url: str, key: str, photo: bytes) -> None:
    """The conversation: the photo and "show its depth", then "read it aloud"; waits for the media to load."""
    page.navigate(base_url + "/")
    page.evaluate(f"document.getElementById('key').value = {json.dumps(key)}; true")
    drop_file(page, "photo.png", photo, "image/png")
    ask(page, "Show the depth of photo.png", 1)
    ask(page, "Now read the description aloud", 2)
    page.wait_for("[...document.querySelectorAll('.output img')].every((i) => i.complete && i.naturalWidth > 0)")
    page.wait_for("[...document.querySelectorAll('.output audio')].every((a) => a.readyState >= 1)")
