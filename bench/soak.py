"""`python -m bench.soak [--minutes 60] [--rate 500]`: does the `make run` setting stay bounded?

Starts what `make run` starts (test server live at `--rate` events/s over a backlog, `dagster dev`
with the sensors and the housekeeping schedule) in temporary folders and every minute records
the RSS of each process (test server, dagster's daemon, webserver, code servers, run workers),
the size of `dagster_home`, the lake's files and bytes (all, and live files per settled day),
and the warehouse's size. Prints one line per minute and a verdict against the targets: after
the first 10 minutes no long-lived process's RSS grows more than 10 %, `dagster_home` grows
≤ 50 MB/h, settled days hold ≤ 4 files per source. `--housekeeping-cron` runs the housekeeping
job more often than `make run` does (hourly), so a short soak sees it work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.scratch import scratch_dir
from rtds_pipeline.lake.live import live_files
from rtds_pipeline.lake.storage import open_lake

ROOT = Path(__file__).resolve().parent.parent
SETTLED_LIMIT = 4


def folder_bytes(path: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                size += os.path.getsize(os.path.join(dirpath, n))
                files += 1
            except OSError:
                pass
    return files, size


def role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    for needle, name in (("testserver", "testserver"), ("dagster._daemon", "daemon"),
                         ("dagster-daemon", "daemon"), ("code-server start", "code_server_proxy"),
                         ("dagster_webserver", "webserver"), ("dagster-webserver", "webserver"),
                         ("api grpc", "code_server"), ("execute_run", "run_worker"),
                         ("api execute", "run_worker"), ("spawn_main", "run_worker"),
                         ("resource_tracker", "mp_tracker"), ("dagster dev", "dagster_dev"),
                         ("rtds_pipeline.run", "run.py")):
        if needle in cmd:
            return name
    return proc.name()


def sample(root: psutil.Process, tmp: Path, sources: list[str]) -> dict[str, object]:
    rss: dict[str, int] = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            name = role(p)
            rss[name] = rss.get(name, 0) + p.memory_info().rss
        except psutil.Error:
            continue
    lake = open_lake(str(tmp / "lake"))
    today = dt.datetime.now(dt.UTC).date()
    settled_max = 0
    live = 0
    for s in sources:
        by_day: dict[str, int] = {}
        for f in live_files(lake, s):
            by_day[f.day] = by_day.get(f.day, 0) + 1
            live += 1
        settled = [n for d, n in by_day.items() if d < today.isoformat()]
        settled_max = max([settled_max, *settled])
    lake_files, lake_bytes = folder_bytes(tmp / "lake")
    _, home_bytes = folder_bytes(tmp / "dagster_home")
    home_parts = {p.name: round(folder_bytes(p)[1] / 1e6, 1) if p.is_dir() else
                  round(p.stat().st_size / 1e6, 1) for p in (tmp / "dagster_home").iterdir()}
    storage = tmp / "dagster_home" / "storage"
    run_dbs = list(storage.glob("*.db")) if storage.is_dir() else []
    wh = tmp / "warehouse.duckdb"
    return {"t": time.time(), "rss_mb": {k: round(v / 1e6) for k, v in sorted(rss.items())},
            "dagster_home_mb": round(home_bytes / 1e6, 1), "dagster_home_parts_mb": home_parts,
            "run_event_dbs": len(run_dbs),
            "index_db_mb": round(sum(p.stat().st_size for p in storage.glob("index.db*")) / 1e6, 1)
            if storage.is_dir() else 0.0,
            "housekept_max_files_settled_day": housekept_settled(tmp / "dagster_home", sources),
            "lake_files": lake_files,
            "lake_mb": round(lake_bytes / 1e6, 1), "live_files": live,
            "max_files_settled_day": settled_max,
            "warehouse_mb": round(wh.stat().st_size / 1e6, 1) if wh.exists() else 0.0,
            "load": round(os.getloadavg()[0], 2)}


def housekept_settled(home: Path, sources: list[str]) -> int | None:
    """Files per settled day right after the newest housekeeping run (its observation on the
    `landing/<source>` assets), the largest over sources; None before the first run. Late events
    add small files to settled days between runs, which the next run merges."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)  # dagster.yaml reads its folders from it
    with dg.DagsterInstance.from_config(str(home)) as instance:
        out = None
        for s in sources:
            page = instance.fetch_observations(dg.AssetKey(["landing", s]), limit=1)
            for record in page.records:
                obs = record.asset_observation
                value = obs.metadata.get("max_files_per_settled_day") if obs else None
                if value is not None:
                    out = max(out or 0, int(value.value))
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rate", type=float, default=500, help="live events per second")
    ap.add_argument("--backlog", type=int, default=50_000)
    ap.add_argument("--housekeeping-cron", default="*/10 * * * *")
    ap.add_argument("--out", type=Path, help="write the samples here as JSON lines")
    args = ap.parse_args()
    tmp = Path(scratch_dir("bench-soak-"))
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RTDS_LAKE_URL": str(tmp / "lake"),
           "RTDS_WAREHOUSE": str(tmp / "warehouse.duckdb"), "RTDS_TESTSERVER_PORT": "8741",
           "RTDS_UI_PORT": "3041", "RTDS_TESTSERVER_RATE": str(args.rate),
           "RTDS_TESTSERVER_BACKLOG": str(args.backlog),
           "RTDS_TESTSERVER_STATE_DIR": str(tmp / "testserver"),
           "RTDS_HOUSEKEEPING_CRON": args.housekeeping_cron}
    proc = subprocess.Popen([sys.executable, "-m", "rtds_pipeline.run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    root = psutil.Process(proc.pid)
    samples: list[dict[str, object]] = []
    out = args.out.open("w") if args.out else None
    try:
        start = time.time()
        next_at = start + 60
        while time.time() < start + args.minutes * 60 and proc.poll() is None:
            time.sleep(max(0.0, next_at - time.time()))
            next_at += 60
            s = sample(root, tmp, ["events", "compliance"])
            s["minute"] = round((s["t"] - start) / 60)
            samples.append(s)
            print(json.dumps(s), flush=True)
            if out:
                out.write(json.dumps(s) + "\n")
                out.flush()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)  # it stops within seconds, ending the runs in progress
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if out:
            out.close()
    ended_early = bool(samples) and float(samples[-1]["minute"]) < args.minutes - 1
    if ended_early:
        print(f"the pipeline stopped at minute {samples[-1]['minute']}, before the soak's end")
    return verdict(samples) or int(ended_early)


def verdict(samples: list[dict[str, object]]) -> int:
    # Samples taken while the pipeline ran (a stopped one has no processes left to measure).
    after = [s for s in samples if int(s["minute"]) >= 10 and "run.py" in s["rss_mb"]]
    if len(after) < 2:
        print("too short for a verdict: the targets count from minute 10")
        return 0
    first, last = after[0], after[-1]
    hours = (float(last["t"]) - float(first["t"])) / 3600
    ok = True
    # Run workers come and go; the long-lived processes must stay flat.
    for name in sorted(set(first["rss_mb"]) - {"run_worker", "python", "tail", "mp_tracker"}):
        a, b = first["rss_mb"][name], max(s["rss_mb"].get(name, 0) for s in after)
        growth = (b - a) / a if a else 0.0
        ok &= growth <= 0.10
        print(f"  {name}: {a} MB at minute {first['minute']}, at most {b} MB after "
              f"({growth:+.0%}; target ≤ +10 %)")
    home_rate = (float(last["dagster_home_mb"]) - float(first["dagster_home_mb"])) / hours
    ok &= home_rate <= 50
    settled = max(int(s["max_files_settled_day"]) for s in after[-1:])
    housekept = [int(s["housekept_max_files_settled_day"]) for s in after
                 if s.get("housekept_max_files_settled_day") is not None]
    ok &= bool(housekept) and max(housekept) <= SETTLED_LIMIT
    print(f"  dagster_home: {first['dagster_home_mb']} -> {last['dagster_home_mb']} MB "
          f"({home_rate:,.0f} MB/h; target ≤ 50)\n"
          f"  files per settled day after each housekeeping run: at most "
          f"{max(housekept) if housekept else 'n/a (no run)'} (target ≤ {SETTLED_LIMIT}); "
          f"at the end, with the late events since the last run: {settled}\n"
          f"  lake {last['lake_files']} files / {last['lake_mb']} MB ({last['live_files']} live), "
          f"warehouse {last['warehouse_mb']} MB\n  {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
