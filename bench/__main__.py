"""``python -m bench [--only dag,llm,reuse,batch,memory,coldstart,pool,stream,serve] [--out PATH] [--quick]
[--no-postgres]``

Runs the benchmarks in one process against Prefect's own API started for the run, prints progress on stderr,
the table of figures on stdout, and writes every figure with the machine's description to a JSON file
(``bench/results/<date>-<host>.json`` unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import Bench, bench_environment, log

SECTIONS: tuple[str, ...] = ("dag", "llm", "reuse", "batch", "memory", "coldstart", "pool", "stream", "serve")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _runner(name: str) -> Callable[[Bench], dict[str, Any]]:
    if name == "dag":
        from bench.dag import run
    elif name == "llm":
        from bench.llm_calls import run
    elif name == "reuse":
        from bench.reuse import run
    elif name == "batch":
        from bench.throughput import run
    elif name == "coldstart":
        from bench.coldstart import run
    elif name == "pool":
        from bench.pool import run
    elif name == "stream":
        from bench.streaming import run
    elif name == "serve":
        from bench.serve import run
    else:
        from bench.memory import run
    return run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated benchmarks to run, from {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: bench/results/...)")
    parser.add_argument("--quick", action="store_true", help="small sizes and short sleeps (a smoke run)")
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="measure against Prefect's SQLite test server only, even when PostgreSQL is installed",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        parser.error(f"--only takes names from {', '.join(SECTIONS)}; got {args.only!r}")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def default_out(info: dict[str, Any], quick: bool) -> Path:
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", str(info["host"]))[:40] or "host"
    suffix = "-quick" if quick else ""
    return RESULTS_DIR / f"{info['date'][:10]}-{host}{suffix}.json"


def run_benchmarks(sections: Sequence[str], *, quick: bool, postgres: bool = True) -> dict[str, Any]:
    """Every chosen benchmark in one bench environment; a benchmark that fails is reported with its error."""
    results: dict[str, Any] = {}
    with bench_environment(quick=quick, postgres=postgres) as bench:
        for name in sections:
            t0 = time.perf_counter()
            log(f"--- {name}")
            try:
                results[name] = _runner(name)(bench)
            except Exception as exc:
                log(f"{name} failed:\n{traceback.format_exc()}")
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results[name]["seconds"] = time.perf_counter() - t0
            log(f"--- {name} done in {results[name]['seconds']:.1f} s")
    return results


def build_document(info: dict[str, Any], results: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    """What the JSON file holds: the machine, every figure by benchmark, and the table's rows."""
    return {"machine": info, "results": results, "table": rows}


def main(argv: Sequence[str] | None = None) -> int:
    from bench.report import machine, markdown_table, table_rows

    args = parse_args(argv)
    started = time.perf_counter()
    info = machine()
    results = run_benchmarks(args.sections, quick=args.quick, postgres=not args.no_postgres)
    info["total_seconds"] = time.perf_counter() - started
    info["quick"] = args.quick
    info["command"] = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = table_rows(results)
    document = build_document(info, results, rows)
    out = args.out or default_out(info, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    print(
        f"{info['cpu_count']} CPUs, {info['platform']}, Python {info['python']}, {versions}; "
        f"{info['total_seconds']:.0f} s in all\n"
    )
    print(markdown_table(rows))
    log(f"figures written to {out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
