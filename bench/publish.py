"""`python -m bench.publish [--history 10000,260000,3000000] [--runs 6]`: does a publish cost
grow with the bookkeeping that gains a row per window?

For each size N: a writer state whose `landing_windows` and `load_log` hold N rows each (N
windows: 260k is 30 days of 10 s windows, 3M a year), then `--runs` writer sessions that each
add one window, load the one before and log its load, then publish. Side by side in one run:
`append` (the pipeline: those tables appended to the snapshot being brought up to date) and
`copy` (the baseline, as before: copied whole into it). Prints medians; the first two sessions
of each (the first files, the first marks) are left out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.scratch import scratch_dir
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.warehouse import store
from rtds_pipeline.warehouse.store import Warehouse

WINDOW = ("INSERT INTO landing_windows SELECT 'events', 'events', $seq, 1000, 0, '1', '2', now(), "
          "now(), 'max_seconds', NULL")
LOADED = "UPDATE landing_windows SET load_batch = $seq WHERE window_seq = $seq - 1"
LOGGED = ("INSERT INTO load_log SELECT 'events', DATE '2026-03-01', now(), $seq, 'window', 1000, "
          "1000, 0")


def sessions(n: int, runs: int, growing: dict) -> list[float]:
    store.GROWING = growing
    root = Path(scratch_dir("bench-publish-"))
    warehouse = Warehouse(root / "wh.duckdb", open_lake(str(root / "lake")))
    with warehouse.writer(publish=False) as con:
        con.execute("INSERT INTO landing_windows SELECT 'events', 'events', i, 1000, 0, '1', '2', "
                    "now(), now(), 'max_seconds', i FROM range($n) r(i)", {"n": n})
        con.execute("INSERT INTO load_log SELECT 'events', DATE '2026-01-01' + (i // 8640)::INTEGER, "
                    "now(), i, 'window', 1000, 1000, 0 FROM range($n) r(i)", {"n": n})
    took = []
    for seq in range(n, n + runs + 2):
        t0 = time.perf_counter()
        with warehouse.writer() as con:
            for statement in (WINDOW, LOADED, LOGGED):
                con.execute(statement, {"seq": seq})
        took.append(time.perf_counter() - t0)
    return took[2:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--history", default="10000,260000,3000000")
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    pipeline = dict(store.GROWING)
    print(f"{'windows':>10}  {'append':>8}  {'copy':>8}  copy / append")
    for n in (int(s) for s in args.history.split(",")):
        append = statistics.median(sessions(n, args.runs, pipeline))
        copy = statistics.median(sessions(n, args.runs, {}))
        print(f"{n:>10,}  {append:7.3f}s  {copy:7.3f}s  {copy / append:.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
