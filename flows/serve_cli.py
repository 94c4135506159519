"""``hugginggpt serve``: the HTTP API and the chat page (:mod:`flows.serve`).

    hugginggpt serve                      # http://127.0.0.1:8000, OpenAI base URL http://127.0.0.1:8000/v1

Binds to 127.0.0.1 unless ``--host`` says otherwise; beyond this machine it needs ``HUGGINGGPT_API_KEYS``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flows.cli_options import EXIT_USAGE, add_catalog, add_device, add_llm_model, add_storage, config_error, error


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand; its handler is ``args.func``."""
    serve = subparsers.add_parser(
        "serve",
        help="serve HuggingGPT over HTTP: an OpenAI-compatible API, HuggingGPT's own endpoints and a chat page",
        description="An HTTP server: POST /v1/chat/completions (OpenAI's API, streamed or not), POST /v1/files, "
        "GET /v1/models; POST /hugginggpt, /tasks, /results (HuggingGPT's server); signed links to the files runs "
        "produce (GET /files/...); a chat page at /. Every request is one flow run of hugginggpt-request.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--deployment",
        metavar="NAME",
        help="run every request through this deployment (e.g. hugginggpt-request/request) on its work pool's workers",
    )
    for add in (add_storage, add_catalog, add_llm_model, add_device):
        add(serve)
    serve.add_argument("--no-cache", action="store_true", help="run every model, even for inputs seen before")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.cli_options import controller_ready
    from flows.serve import Server, serve_forever
    from tasks.serving.config import ServeSettings, is_loopback
    from tasks.settings import RunOptions, load_settings

    try:
        options = RunOptions(llm_model=args.llm_model, device=args.device, cache=False if args.no_cache else None)
        settings = load_settings(options, storage=args.storage, catalog=args.catalog)
        serve_settings = ServeSettings()
    except ValidationError as exc:
        return config_error("serve", exc)
    if not is_loopback(args.host) and not serve_settings.api_keys:
        error(
            "serve",
            f"--host {args.host} makes the server reachable from other machines: set HUGGINGGPT_API_KEYS "
            "(comma-separated bearer tokens, 8 characters or more) first",
        )
        return EXIT_USAGE
    if not 0 < args.port < 65536:
        error("serve", f"--port {args.port} is not a port number")
        return EXIT_USAGE
    if args.storage:
        os.environ["HUGGINGGPT_STORAGE"] = args.storage  # the runs of this process store there too
    if args.catalog:
        os.environ["HUGGINGGPT_CATALOG"] = args.catalog
    if args.deployment is None and not controller_ready("serve", settings):
        return EXIT_USAGE
    server = Server(settings, serve_settings, options=options, deployment=args.deployment)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    error(
        "serve",
        f"chat page http://{shown}:{args.port}/ · OpenAI base URL http://{shown}:{args.port}/v1"
        + (f" · runs on deployment {args.deployment}" if args.deployment else " · runs in this process"),
    )
    serve_forever(server, args.host, args.port)
    return 0
