"""`python -m bench.freshness [--minutes M] [--rate R]`: how fresh is `events` in the `make run`
setting?

Starts what `make run` starts (test server live at R events/s, default 200, over a backlog, `dagster dev`
with the sensors, 10 s windows and ticks) in temporary folders, polls the published warehouse
every second (how many events of each `processed` second are visible), and for every live event
reports (time it became queryable in `events` − its
`processed` time): p50 / p95 / max over the whole run, then p95 over minutes 2–6 and over the
last 4 minutes (does the lag stay flat, or grow with the data?). The backlog (processed before the start) is left out.
`--no-quirks` runs the server without its quirks: one of them back-dates `processed` by up to
2 minutes for 20 % of events (out-of-order processed times), which this metric counts as delay.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from bench.scratch import scratch_dir

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=90, help="seconds before measuring")
    ap.add_argument("--no-quirks", action="store_true", help="test server without its quirks")
    ap.add_argument("--rate", type=float, default=200, help="live events per second")
    ap.add_argument("--server-port", type=int, default=8731, help="the test server's port")
    ap.add_argument("--ui-port", type=int, default=3031, help="the Dagster UI's port")
    args = ap.parse_args()
    tmp = Path(scratch_dir("bench-fresh-"))
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RTDS_LAKE_URL": str(tmp / "lake"),
           "RTDS_WAREHOUSE": str(tmp / "warehouse.duckdb"), "RTDS_TESTSERVER_PORT": str(args.server_port),
           "RTDS_UI_PORT": str(args.ui_port), "RTDS_TESTSERVER_BACKLOG": "20000",
           "RTDS_TESTSERVER_QUIRKS": "0" if args.no_quirks else "1",
           "RTDS_TESTSERVER_RATE": str(args.rate),
           # The server keeps the whole run: a slow pipeline shows as lag, not as expired events.
           "RTDS_TESTSERVER_RETENTION_EVENTS": str(max(300_000, int(
               args.rate * (args.warmup + args.minutes * 60) * 1.2)))}
    proc = subprocess.Popen([sys.executable, "-m", "rtds_pipeline.run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    warehouse = tmp / "warehouse.duckdb"
    try:
        time.sleep(args.warmup)
        start = time.time()
        # Events visible per `processed` second: a poll reads one aggregate (≤ 1 row per second
        # of the run), not every id, so the measuring costs the 2-core box little at 3,000/s.
        seen: dict[int, int] = {}
        delays: list[tuple[float, float]] = []  # (seconds since start, delay), one per event
        # (seconds since start, mart, newest processed in events − newest processed in the mart)
        behind: list[tuple[float, str, float]] = []
        while time.time() < start + args.minutes * 60:
            time.sleep(1)
            if not warehouse.exists():
                continue
            now = time.time()
            try:
                con = duckdb.connect(str(warehouse), read_only=True)
                rows = con.execute("SELECT floor(epoch(processed))::BIGINT AS s, count(*) FROM events "
                                   "WHERE processed > to_timestamp(?) GROUP BY s", [start]
                                   ).fetchall()
                newest = con.execute("SELECT epoch(max(processed)) FROM events").fetchall()[0][0]
                fresh = con.execute("SELECT mart, epoch(newest_processed) FROM mart_freshness"
                                    ).fetchall() if con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'mart_freshness'"
                ).fetchall()[0][0] else []
                con.close()
            except duckdb.Error:
                continue
            behind.extend((now - start, mart, newest - p) for mart, p in fresh if newest and p)
            for second, count in rows:
                new = count - seen.get(second, 0)
                if new > 0:  # newly visible events of that second (its middle: ±0.5 s)
                    seen[second] = count
                    delays.extend([(now - start, now - second - 0.5)] * new)
        if len(delays) < 20:
            print(f"only {len(delays)} live events became queryable: is the pipeline running?")
            return 1
        every = [d for _, d in delays]
        q = statistics.quantiles(every, n=100)
        print(f"{len(delays):,} live events over {args.minutes:g} min at {args.rate:g} events/s: "
              f"queryable − processed p50 {q[49]:.1f} s, p95 {q[94]:.1f} s, max {max(every):.1f} s")
        end = args.minutes * 60
        for label, lo, hi in (("minutes 2–6", 120, 360), ("last 4 minutes", end - 240, end)):
            part = [d for t, d in delays if lo <= t < hi]
            if len(part) >= 20:
                print(f"  {label}: p95 {statistics.quantiles(part, n=100)[94]:.1f} s "
                      f"({len(part):,} events)")
        print("marts behind events by mart_freshness (newest processed in events − in the mart):")
        for mart in sorted({m for _, m, _ in behind}):
            whole = [b for _, m, b in behind if m == mart]
            last = [b for t, m, b in behind if m == mart and t >= end - 240]
            if len(last) >= 20:
                print(f"  {mart}: p95 {statistics.quantiles(whole, n=100)[94]:.1f} s over the run, "
                      f"last 4 minutes p95 {statistics.quantiles(last, n=100)[94]:.1f} s, "
                      f"max {max(last):.1f} s")
        landing_summary(str(tmp / "lake"), start)
        return 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)  # it stops within seconds, ending the runs in progress
        except subprocess.TimeoutExpired:
            proc.kill()


def landing_summary(lake_url: str, since: float) -> None:
    """What the measured minutes cost the object store: windows committed, and per window the
    files written (one PUT each) and days touched, from the sources' commit logs."""
    from rtds_pipeline.lake.commits import CommitLog
    from rtds_pipeline.lake.storage import open_lake

    lake = open_lake(lake_url)
    for source in ("events", "compliance"):
        commits = [c for c in CommitLog(lake, source).all()
                   if c.committed_at >= since and c.files]
        if len(commits) < 2:
            continue
        minutes = (commits[-1].committed_at - commits[0].committed_at) / 60 or 1
        files = [len(c.files) + len(c.dead_letter_files) for c in commits]
        print(f"  landing/{source}: {len(commits)} windows ({len(commits) / minutes:.1f}/min), "
              f"{statistics.mean(c.events for c in commits):,.0f} events, "
              f"{statistics.mean(files):.1f} files (median {statistics.median(files):g}, "
              f"max {max(files)}), {statistics.mean(len(c.days) for c in commits):.1f} days "
              "per window")


if __name__ == "__main__":
    raise SystemExit(main())
