"""``hugginggpt demos``: the planner's demo library.

    hugginggpt demos add FLOW_RUN_ID     # a completed run's request and plan become a demo, kept in the storage
    hugginggpt demos list                # the library: built-in, TaskBench's and the user's own demos

With ``HUGGINGGPT_DEMOS=similar`` (the default) every planning call shows the demos closest to its request
(``tasks/demos.py``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from flows.cli_options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, config_error, error


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demos`` subcommand; its handler is ``args.func``."""
    p = subparsers.add_parser(
        "demos",
        help="the planner's demo library: add a completed run as a demo, list the library",
        description="Planning shows the demos closest to each request (HUGGINGGPT_DEMOS=similar, "
        "HUGGINGGPT_N_DEMOS) from the library: the built-in demos, TaskBench's gold plans, and the user's own, "
        "added from completed runs and kept in the storage under demos/.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="turn a completed run's request and plan into a demo")
    add.add_argument("flow_run_id", metavar="FLOW_RUN_ID", help="the run (its summary says flow_run_id)")
    listing = actions.add_parser("list", help="list the demo library")
    listing.add_argument("--json", action="store_true", help="print the demos as JSON lines")
    p.set_defaults(func=cmd_demos)
    return p


def cmd_demos(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tasks.demos import DemoError, add_run_demo, demo_library
    from tasks.settings import load_settings
    from tasks.storage import StorageError, store_for

    try:
        settings = load_settings()
    except ValidationError as exc:
        return config_error("demos", exc)
    try:
        store = store_for(settings, "demos")
    except StorageError as exc:
        error("demos", str(exc))
        return EXIT_USAGE
    if args.action == "add":
        try:
            demo, uri = add_run_demo(store, args.flow_run_id)
        except DemoError as exc:
            error("demos add", str(exc))
            return EXIT_USAGE
        except StorageError as exc:
            error("demos add", str(exc))
            return EXIT_FAILED
        tasks = ", ".join(node["task"] for node in demo.plan) or "no task (answered directly)"
        print(f"demo added: {demo.request!r} -> {tasks}; kept at {uri}")
        return EXIT_OK
    try:
        demos = demo_library(store)
    except StorageError as exc:
        error("demos list", str(exc))
        return EXIT_FAILED
    for demo in demos:
        if args.json:
            print(json.dumps(demo.model_dump(), ensure_ascii=False))
        else:
            tasks = ", ".join(node["task"] for node in demo.plan) or "-"
            print(f"{demo.source:<24} {tasks:<60} {demo.request[:80]}")
    return EXIT_OK
