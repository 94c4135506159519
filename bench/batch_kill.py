"""``python -m bench.batch_kill [--lines 1000] [--kills 3] [--in-flight 4]``: a batch killed with SIGKILL and rerun.

A batch of ``--lines`` explicit-plan lines (one text-classification node each, on a tiny local model; the scripted
LLM writes each answer) runs through the real ``hugginggpt batch`` command against a Prefect API on PostgreSQL (on
the bench's SQLite API when PostgreSQL is not installed). ``--kills`` times, at a moment chosen at random (after a
random share of the remaining lines completed, then a random fraction of a second), the batch process is killed
with SIGKILL and started again; the last run goes to the end. Printed: the records of the results file, the lines
completed by more than one run (each run's own ``summary.json`` in storage says which request it completed), and the
LLM answers asked for against the lines. Both counts must be zero for the batch to be exactly-once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_kill")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    from bench.harness import bench_environment, log
    from tests.tiny_models import build_tiny_models, tiny_catalog_entries

    with bench_environment(quick=True) as bench:
        url = bench.postgres_api()
        if url is None:
            import prefect.settings

            url = prefect.settings.PREFECT_API_URL.value()
        root = Path(tempfile.mkdtemp(prefix="batch-kill-"))
        models = build_tiny_models(root / "models", tasks=["text-classification"])
        catalog = root / "catalog.jsonl"
        catalog.write_text("".join(json.dumps(e) + "\n" for e in tiny_catalog_entries(models)))
        storage = root / "runs"
        requests = root / "requests.jsonl"
        requests.write_text(
            "".join(
                json.dumps(
                    {
                        "id": f"k{n}",
                        "request": f"Rate: review {n}",
                        "plan": [
                            {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": f"review {n}"}}
                        ],
                    }
                )
                + "\n"
                for n in range(args.lines)
            )
        )
        bench.llm.reset()
        bench.llm.set(respond="ok")
        environment = {
            **os.environ,
            "PREFECT_API_URL": url,
            "OPENAI_BASE_URL": bench.llm.base_url,
            "OPENAI_API_KEY": "sk-bench",
            "HUGGINGGPT_LLM_MODEL": "scripted",
            "HUGGINGGPT_CATALOG": str(catalog),
            "HUGGINGGPT_STORAGE": str(storage),
            "HUGGINGGPT_CACHE": "false",
        }
        command = [sys.executable, "-m", "flows.cli", "batch", str(requests), "--max-in-flight", str(args.in_flight)]

        def completed_runs() -> int:
            return sum(1 for p in storage.glob("*/summary.json") if '"status": "completed"' in p.read_text())

        t0 = time.perf_counter()
        for kill in range(args.kills):
            remaining = args.lines - completed_runs()
            target = completed_runs() + rng.randint(1, max(1, remaining // (args.kills - kill + 1)))
            proc = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while completed_runs() < target and proc.poll() is None:
                time.sleep(0.2)
            time.sleep(rng.uniform(0, 1.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log(f"batch_kill: SIGKILL {kill + 1} after {completed_runs()} line(s) completed")
        final = subprocess.run([*command, "--json"], env=environment, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if final.returncode != 0:
            print(final.stderr[-3000:], file=sys.stderr)
            return 1
        summary = json.loads(final.stdout)
        records = [json.loads(x) for x in Path(summary["results_uri"]).read_text().splitlines()]
        runs = [json.loads(p.read_text()) for p in storage.glob("*/summary.json")]
        completed = Counter(r["request"] for r in runs if r["status"] == "completed")
        twice = sorted(request for request, n in completed.items() if n > 1)
        never = [n for n in range(args.lines) if completed[f"Rate: review {n}"] == 0]
        figures = {
            "lines": args.lines,
            "kills": args.kills,
            "in_flight": args.in_flight,
            "records": len(records),
            "record_lines_unique": len({r["line"] for r in records}),
            "completed_records": sum(r["status"] == "completed" for r in records),
            "lines_completed_twice": len(twice),
            "lines_never_completed": len(never),
            "runs_started_without_completing": len(runs) - sum(completed.values()),
            "llm_answers": bench.llm.calls["respond"],
            "resumed_by_last_run": summary["resumed"],
            "seconds": round(seconds, 1),
        }
        print(json.dumps(figures, indent=1))
        return 0 if not twice and not never and len(records) == args.lines else 1


if __name__ == "__main__":
    raise SystemExit(main())
