"""Figures of the embedded controller (``tasks/local_llm.py``) on this machine's CPU.

Load time (from disk, into the model cache), decoding speed free and constrained to the plan schema, and the
time one request spends in the controller (planning, selection of a two-candidate task, the answer, through
the stage cores with the built-in prompts). Prints one JSON document.

    python -m bench.controller --model DIR [--threads N] [--max-new-tokens 256]

``DIR`` is any instruct checkpoint folder with a chat template (``HUGGINGGPT_LOCAL_LLM`` takes the same).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def measure(model_dir: str, *, max_new_tokens: int) -> dict[str, Any]:
    from models_catalog.catalog import Catalog, CatalogEntry
    from tasks.experts.cache import ModelCache
    from tasks.local_llm import LocalChatModel
    from tasks.plan import PLAN_SCHEMA, PlanningError, build_plan_messages, plan_request
    from tasks.respond import respond
    from tasks.schemas import PlanNode
    from tasks.select import select_models

    model = LocalChatModel(model_dir, max_new_tokens=max_new_tokens, cache=ModelCache(1))
    start = time.perf_counter()
    loaded = model.loaded().value
    load_seconds = time.perf_counter() - start
    params = sum(p.numel() for p in loaded.model.parameters())

    def speed(schema: dict[str, Any] | None, messages: list[dict[str, str]]) -> dict[str, float]:
        before = model.generate_seconds
        _, usage = model.chat(messages, stage="bench", schema=schema)
        seconds = model.generate_seconds - before
        return {
            "prompt_tokens": usage.prompt_tokens,
            "new_tokens": usage.completion_tokens,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(usage.completion_tokens / seconds, 2),
        }

    story = [{"role": "user", "content": "Write a long story about a cat who learns to play the piano."}]
    free = speed(None, story)
    plan_prompt = build_plan_messages("Caption photo.jpg, then read the caption aloud", ["photo.jpg"])
    constrained = speed(PLAN_SCHEMA, plan_prompt)

    request, inputs = "Is this review positive: 'The battery died after two days.'", []
    before = model.generate_seconds
    try:
        plan = plan_request(model, request, inputs=inputs)
        nodes, plan_error = plan.nodes, None
    except PlanningError as exc:
        nodes, plan_error = [], str(exc)
    planned = [n.task for n in nodes]
    if not nodes:  # the request's own plan failed or was empty: select for a one-node plan, as a run with it would
        nodes = [PlanNode(id=0, task="text-classification", args={"text": "The battery died after two days."})]
    catalog = Catalog(
        [
            CatalogEntry(id=f"bench/{n.task}-{k}", task=n.task, downloads=10 - k, local_path=model_dir)
            for n in nodes
            for k in range(2)
        ]
    )
    selection = select_models(nodes, catalog, llm=model, request=request)
    answer = respond(model, request, nodes, selection.assignments, [])
    request_seconds = model.generate_seconds - before
    return {
        "model": model_dir,
        "parameters": params,
        "load_seconds": round(load_seconds, 2),
        "free_decoding": free,
        "plan_schema_decoding": constrained,
        "request": {
            "text": request,
            "plan": planned,
            "plan_error": plan_error,
            "selection_reasons": [a.reason for a in selection.assignments],
            "answer_source": answer.source,
            "controller_calls": model.usage.calls - 2,
            "controller_seconds": round(request_seconds, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of an instruct checkpoint with a chat template")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    figures = measure(args.model, max_new_tokens=args.max_new_tokens)
    figures["torch_threads"] = torch.get_num_threads()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
