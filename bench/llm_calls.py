"""Item 2, LLM calls and tokens per request, counted at the scripted OpenAI-compatible server.

Plans of 1, 5 and 20 nodes over text tasks, each task with several runnable candidates in the catalog, so every
node needs a model choice. The request goes through all three stages (the plan comes from the LLM). Beside each:
what HuggingGPT's scheme makes for the same plan (one planning call, one selection call per node with more than
one candidate, one response call), measured by sending those per-node selection prompts to the same server.
"""

from __future__ import annotations

import json
from typing import Any

from bench.harness import Bench, catalog_record, log, run_flow, sleeping_experts, write_catalog

TASKS: tuple[str, ...] = (
    "text-classification",
    "token-classification",
    "summarization",
    "translation",
    "text-generation",
)
CANDIDATES_PER_TASK = 3


def plan_of(size: int) -> list[dict[str, Any]]:
    """``size`` nodes cycling over :data:`TASKS`; every fifth node starts a new branch, the others follow the one
    before."""
    plan = []
    for i in range(size):
        task = TASKS[i % len(TASKS)]
        if i % len(TASKS) == 0:
            plan.append({"id": i, "task": task, "dep": [-1], "args": {"text": f"Paragraph {i} of the report."}})
        else:
            plan.append({"id": i, "task": task, "dep": [i - 1], "args": {"text": f"<GENERATED>-{i - 1}"}})
    return plan


def pick_second_candidate(body: dict[str, Any]) -> str:
    """A selection reply choosing each task's second candidate (the LLM's choice must win over the ranking)."""
    user = next(m["content"] for m in body["messages"] if m.get("role") == "user")
    tasks = json.loads(user.split("Tasks and candidates:\n", 1)[1])
    choices = [
        {"id": t["id"], "model": t["candidates"][min(1, len(t["candidates"]) - 1)]["model"], "reason": "fits best"}
        for t in tasks
    ]
    return json.dumps({"choices": choices})


def hugginggpt_selection(request: str, summary: Any, catalog_path: str) -> Any:
    """One selection call per node with several candidates (HuggingGPT's scheme), with the same prompt template,
    answered in process by a :class:`~tasks.llm.FunctionModel` that counts tokens as the scripted server does
    (words); returns the calls' usage."""
    from models_catalog.catalog import load_catalog
    from tasks.llm import FunctionModel
    from tasks.schemas import LLMUsage
    from tasks.select import SELECT_SCHEMA, build_select_messages

    catalog = load_catalog(catalog_path)
    model = FunctionModel(lambda call: pick_second_candidate({"messages": call.messages}))
    nodes = {n.id: n for n in summary.plan}
    usage = LLMUsage()
    for assignment in summary.assignments:
        if len(assignment.candidates) < 2:
            continue
        cands = [catalog.get(assignment.task, c) for c in assignment.candidates]
        messages = build_select_messages(request, [(nodes[assignment.node_id], [c for c in cands if c is not None])])
        usage = usage + model.chat(messages, stage="select", schema=SELECT_SCHEMA)[1]
    return usage


def run(bench: Bench, *, sizes: tuple[int, ...] = (1, 5, 20)) -> dict[str, Any]:
    from tests.llm_server import plan_json

    model_dir = bench.fresh_dir("llm-models")
    records = [
        catalog_record(f"bench/{task}-{chr(ord('a') + k)}", task, model_dir, downloads=100 - k)
        for task in TASKS
        for k in range(CANDIDATES_PER_TASK)
    ]
    catalog = write_catalog(bench.root / "llm-catalog.jsonl", records)
    rows = []
    for size in sizes:
        plan = plan_of(size)
        request = f"bench: a request whose plan has {size} task(s)"
        bench.llm.reset()
        bench.llm.set(plan=plan_json(*plan), select=pick_second_candidate, respond="Here is what the models found.")
        log(f"llm: {size}-node plan")
        with sleeping_experts(0.0):
            # the plan as one reply: a streamed plan asks for the choices of models in rolling batches as its
            # nodes arrive (1 to n selection calls, bench/streaming.py), which is not the scheme counted here
            result = run_flow(request, storage=bench.storage("llm"), catalog=catalog, max_workers=4, stream_plan=False)
        if not result.ok:
            raise RuntimeError(f"{size}-node plan ended {result.state_name}: {result.summary and result.summary.error}")
        summary = result.summary
        calls = dict(bench.llm.calls)
        prompt, completion = bench.llm.tokens()
        select_prompt, select_completion = bench.llm.tokens("select")
        multi = sum(len(a.candidates) > 1 for a in summary.assignments)
        # HuggingGPT's scheme for the same plan: our planning and response calls, and one selection call per
        # node with several candidates instead of our one for the whole plan
        hg = hugginggpt_selection(request, summary, str(catalog))
        hg_calls = calls.get("plan", 0) + calls.get("respond", 0) + hg.calls
        hg_prompt, hg_completion = hg.prompt_tokens, hg.completion_tokens
        rows.append(
            {
                "plan_nodes": size,
                "nodes_with_several_candidates": multi,
                "chosen_by_llm": sum(a.reason == "fits best" for a in summary.assignments),
                "calls": sum(calls.values()),
                "calls_by_stage": calls,
                "client_counted_calls": summary.llm.calls,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "hugginggpt_calls": 1 + multi + 1,
                "hugginggpt_calls_measured": hg_calls,
                "hugginggpt_prompt_tokens": prompt - select_prompt + hg_prompt,
                "hugginggpt_completion_tokens": completion - select_completion + hg_completion,
            }
        )
    return {
        "candidates_per_task": CANDIDATES_PER_TASK,
        "plans": rows,
        "target": {"max_calls": 3, "met": all(r["calls"] <= 3 for r in rows)},
    }
