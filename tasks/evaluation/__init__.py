"""Planner evaluation: score the planner's plans against gold plans (TaskBench metrics), with the planning styles
compared (``plan_styles``) and the built-in gold set (``data/gold.jsonl``). Used by ``hugginggpt eval``; nothing in
the request path imports it."""
