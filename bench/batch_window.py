"""Memory of a batch's scheduling core (flows/batch_stream.py) against the lines it streams.

    python -m bench.batch_window [--lines 10000,100000,1000000]

Each size runs in a fresh process: the core over that many lines (each a request of about 150 characters), with the
default read-ahead window, 8 lines in flight, a line runner that completes at once, and the record spool the batch
writes its results from. Printed per size: the peak traced Python memory (tracemalloc) and, in a second run without
tracemalloc, the peak resident memory (RSS) and the seconds taken. The baseline is the smallest size of the same
run: a core that held every line would grow with the lines (about 3 KB a line), a bounded one by the spool's 8 bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import concurrent.futures, json, resource, sys, time, tracemalloc
from flows.batch_budget import BudgetMeter
from flows.batch_stream import RecordSpool, SharedPlan, run_stream
from tasks.batch_lines import BatchLine, ParsedLine, line_record

count, traced = int(sys.argv[1]), sys.argv[2] == "1"

def lines():
    for n in range(1, count + 1):
        request = f"Summarize document {n}: " + "words " * 20
        spec = BatchLine.model_construct(request=request, inputs=[], id=f"r{n}", models={}, plan=None, meta={})
        yield ParsedLine.model_construct(line=n, spec=spec, plan=None, error=None, id=spec.id, request=request,
                                         columns={})

class Runner:
    def _done(self, value):
        future = concurrent.futures.Future()
        future.set_result(value)
        return future
    def plan(self, first):
        return SharedPlan(first, self._done(None))
    def planned(self, plan):
        return 0, 0
    def start(self, p, shared):
        return self._done(f"answer {p.line}")
    def finish(self, p, future):
        return line_record(p.line, p.spec, status="completed", answer=future.result())

if traced:
    tracemalloc.start()
t0 = time.perf_counter()
with RecordSpool() as spool:
    tally = run_stream(lines(), Runner(), max_in_flight=8, meter=BudgetMeter(None),
                       on_record=lambda pos, p, record, ran: spool.add(pos, record, None))
    assert tally.completed == count == spool.count
out = {"seconds": time.perf_counter() - t0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if traced:
    out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
print(json.dumps(out))
"""


def measure(count: int, traced: bool) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(count), "1" if traced else "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="10000,100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--traced-up-to", type=int, default=100_000, help="largest size measured with tracemalloc")
    args = parser.parse_args()
    sizes = [int(s) for s in args.lines.split(",")]
    print("| lines | traced peak (MB) | peak RSS (MB) | seconds |")
    print("| ---: | ---: | ---: | ---: |")
    for count in sizes:
        traced = measure(count, True)["traced_peak_mb"] if count <= args.traced_up_to else None
        plain = measure(count, False)
        shown = f"{traced:.1f}" if traced is not None else "-"
        print(f"| {count:,} | {shown} | {plain['rss_mb']:.0f} | {plain['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
