"""A screenshot of the chat page of ``hugginggpt serve`` after a two-turn conversation: a photo dropped on the page
and its depth map shown, then the description read aloud in an audio player.

    python deployments/chat_screenshot.py --out deployments/screenshots/chat-page.png

Runs the real server in this process with tiny random models and an in-process controller (nothing reaches the
network; the figures are noise from random weights, the page is what is shown), Prefect's temporary server, and
Debian's headless ``chromium``. Needs the test helpers (``tests/``) of a checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "deployments" / "screenshots" / "chat-page.png")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="hugginggpt-chat-"))
    os.environ.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HUGGINGGPT_STORAGE=str(work / "runs"),
        HUGGINGGPT_INPUT_ROOTS=json.dumps([str(work)]),
    )
    from PIL import Image

    from flows.serve import Server, serving_in_background
    from tasks.llm import FunctionModel
    from tasks.services import Services
    from tasks.serving.config import ServeSettings
    from tasks.settings import load_settings
    from tests.chat_page import chromium, page_controller, two_turns
    from tests.tiny_models import build_tiny_models, tiny_catalog_entries

    models = build_tiny_models(work / "models")
    wanted = {k: v for k, v in models.items() if k in ("depth-estimation", "text-to-speech")}
    catalog = work / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(e) + "\n" for e in tiny_catalog_entries(wanted)), encoding="utf-8")
    os.environ["HUGGINGGPT_CATALOG"] = str(catalog)
    photo = work / "photo.png"
    Image.open(ROOT / "deployments" / "examples" / "photo.jpg").convert("RGB").resize((320, 240)).save(photo)
    settings = load_settings()
    key = "screenshot-key-0123"
    server = Server(
        settings, ServeSettings(api_keys=[key]), services=Services(settings, chat_model=FunctionModel(page_controller))
    )
    with serving_in_background(server) as url, chromium(1280, 1180) as page:
        two_turns(page, url, key, photo.read_bytes())
        page.evaluate("window.scrollTo(0, 0); document.getElementById('log').scrollTop = 0; true")
        print(page.screenshot(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
