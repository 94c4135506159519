"""``hugginggpt plan``: the plan the LLM makes for a request, printed without running it.

    hugginggpt plan "Caption photo.jpg, then read it aloud" -i photo.jpg --yaml > plan.yaml
    hugginggpt run "Caption photo.jpg, then read it aloud" -i photo.jpg --plan plan.yaml

Review or edit it, then run it with ``run --plan``. Exits 0 with a plan, 1 when planning failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from flows.cli_options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_inputs, add_llm_model, error, llm_settings


def register(subparsers: Any) -> None:
    """Add the ``plan`` subcommand; its handler is ``args.func``."""
    plan = subparsers.add_parser(
        "plan",
        help="print the plan the LLM makes for a request, without running it",
        description="Ask the LLM for the plan of a request and print it (HuggingGPT format) for review; "
        "run it later with 'hugginggpt run REQUEST --plan FILE'.",
    )
    plan.add_argument("request", help="what you want done, in plain language")
    add_inputs(plan)
    add_llm_model(plan)
    style = plan.add_mutually_exclusive_group()
    style.add_argument("--json", action="store_const", const="json", dest="format", help="print JSON (the default)")
    style.add_argument("--yaml", action="store_const", const="yaml", dest="format", help="print YAML")
    plan.set_defaults(func=cmd_plan, format="json")


def cmd_plan(args: argparse.Namespace) -> int:
    from tasks.llm import LLMError, LLMUnreachableError
    from tasks.plan import PlanningError, demos_for, plan_request
    from tasks.services import services_for

    settings = llm_settings("plan", llm_model=args.llm_model)
    if settings is None:
        return EXIT_USAGE
    from tasks.runs import RequestError, check_request

    try:
        check_request(args.request)
    except RequestError as exc:
        error("plan", str(exc))
        return EXIT_USAGE
    try:
        result = plan_request(
            services_for(settings).chat_model,
            args.request,
            inputs=args.inputs,
            demos=demos_for(settings, args.request),  # the demos a run would show
        )
    except (PlanningError, LLMError) as exc:
        error("plan", str(exc))
        return EXIT_USAGE if isinstance(exc, LLMUnreachableError) else EXIT_FAILED
    for repair in result.repairs:
        error("plan", f"repaired: {repair}")
    nodes = [{"id": n.id, "task": n.task, "dep": n.dep or [-1], "args": n.args} for n in result.nodes]
    if args.format == "yaml":
        import yaml

        print(yaml.safe_dump(nodes, sort_keys=False, allow_unicode=True), end="")
    else:
        print(json.dumps(nodes, indent=2, ensure_ascii=False))
    if not nodes:
        error("plan", "the plan is empty: the LLM would answer directly")
    return EXIT_OK
