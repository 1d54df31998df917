"""`python -m bench.events [--events N] [--runs R]`: building `events` from landed Parquet.

One synthetic landing zone (N events of ~800 bytes over 7 days + 0.4 % up to 90 days late,
3 % duplicate copies with later offsets), written in the real layout with commit records, then
side by side, each in its own process, with the same DuckDB memory limit and threads:

(a) ours: sync the manifest, rebuild every day (`warehouse/sql/events_days.sql`);
(b) plain: one `row_number() OVER (PARTITION BY id ORDER BY occurred) = 1 … ORDER BY occurred`
    over all files, producing the same columns.

Reports medians of R interleaved runs: seconds, events/s, peak RSS, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.scratch import scratch_dir

MEMORY_LIMIT = "2GB"
THREADS = 2


def make_landing(root: Path, n: int, windows: int = 20) -> None:
    """Synthetic landing files + commit records, generated inside DuckDB (seconds, not minutes)."""
    import duckdb

    from rtds_pipeline.lake.commits import Commit, CommitLog, LandedFile
    from rtds_pipeline.lake.storage import open_lake

    lake = open_lake(str(root))
    con = duckdb.connect(config={"threads": THREADS, "memory_limit": MEMORY_LIMIT})
    unique = int(n / 1.03)
    con.execute(f"""
        CREATE TABLE base AS
        SELECT i, md5(i::VARCHAR)::UUID::VARCHAR AS id,
               (['OPEN','SEND','CUSTOM','SCREEN_VIEWED','CLOSE','IN_APP_MESSAGE_DISPLAY'])[1 + i % 6] AS type,
               TIMESTAMPTZ '2026-11-20 00:00:00+00'
                 + to_milliseconds((hash(i) % (7 * 86400000))::BIGINT)
                 - CASE WHEN hash(i * 7) % 1000 < 4 THEN to_days((hash(i) % 83)::INT + 1)
                        ELSE INTERVAL 0 DAY END AS occurred
        FROM range({unique}) t(i)""")
    # 3 % of events get a second copy, delivered later (a higher offset).
    con.execute(f"""
        CREATE TABLE stream AS
        WITH copies AS (
            SELECT *, 0 AS copy FROM base
            UNION ALL SELECT *, 1 FROM base WHERE hash(i * 13) % 10000 < 300)
        SELECT row_number() OVER (ORDER BY i + copy * 5000) AS seq, * EXCLUDE (i, copy)
        FROM copies LIMIT {n}""")
    per_window = n // windows + 1
    for w in range(windows):
        lo, hi = w * per_window, (w + 1) * per_window
        out = root / "tmp" / f"w{w}"
        out.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"""
            COPY (
              SELECT id, type, (1000000000000 + seq)::VARCHAR AS rtds_offset,
                     occurred, occurred + INTERVAL 2 SECOND AS processed,
                     'IOS' AS device_type, md5(id) AS channel, NULL::VARCHAR AS named_user_id,
                     md5(id || 'c') AS contact_id, NULL::VARCHAR AS push_id, NULL::VARCHAR AS group_id,
                     {w + 1}::BIGINT AS window_seq, seq::BIGINT AS window_pos,
                     json_object('id', id, 'type', type, 'occurred', occurred::VARCHAR,
                                 'offset', (1000000000000 + seq)::VARCHAR,
                                 'device', json_object('channel', md5(id), 'device_type', 'IOS',
                                     'attributes', json_object('app_version', '5.3.1',
                                         'locale_country_code', 'US', 'device_model', 'iPhone15,2',
                                         'push_opt_in', 'true', 'ua_sdk_version', '18.1.0')),
                                 'body', json_object('session_id', md5(id || 's'),
                                     'name', 'purchase', 'value', 12.5,
                                     'padding', repeat('x', 300)))::VARCHAR AS raw,
                     strftime(occurred, '%Y-%m-%d') AS occurred_date
              FROM stream WHERE seq > {lo} AND seq <= {hi} ORDER BY seq)
            TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (occurred_date))""")
        files = []
        for f in sorted(out.rglob("*.parquet")):
            day = f.parent.name.split("=", 1)[1]
            rel = f"landing/source=events/occurred_date={day}/w{w + 1:04d}.parquet"
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
            rows = con.execute(f"SELECT count(*) FROM '{dest}'").fetchall()[0][0]
            files.append(LandedFile(rel, rows, dest.stat().st_size, day, None, None))
        CommitLog(lake, "events").write(Commit(
            source="events", window_seq=w + 1, resume_offset=str(1000000000000 + hi),
            previous_offset=None, first_offset=str(1000000000000 + lo + 1), files=files,
            dead_letter_files=[], events=sum(f.rows for f in files), dead_letters=0,
            offset_updates=0, keepalives=0, reconnects=0, bytes_read=0, max_processed=None,
            committed_at=time.time(), stop_reason="bench"))


def run_variant(name: str, root: Path, work: Path) -> dict:
    import resource

    import duckdb

    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import SourceConfig
    from rtds_pipeline.warehouse import events as wh
    from rtds_pipeline.warehouse.store import Warehouse

    lake = open_lake(str(root))
    t0 = time.perf_counter()
    if name == "ours":
        warehouse = Warehouse(work / "ours.duckdb", lake, memory_limit=MEMORY_LIMIT,
                              threads=THREADS)
        with warehouse.writer(publish=False) as con:
            wh.sync_manifest(con, lake, [SourceConfig("events")])
            # A backfill of every day: the rebuild path (windows are marked loaded, not loaded).
            con.execute("UPDATE landing_windows SET load_batch = 0")
            rows = wh.rebuild_days(con, lake, "events", wh.landed_days(con, "events")).rows
    else:
        con = duckdb.connect(str(work / "plain.duckdb"),
                             config={"memory_limit": MEMORY_LIMIT, "threads": THREADS})
        con.execute(f"""
            CREATE TABLE events AS
            SELECT id, type, occurred, processed, occurred::DATE AS occurred_date, rtds_offset,
                   device_type, channel, named_user_id, contact_id, push_id, group_id,
                   raw->>'$.body.session_id' AS session_id, raw->>'$.body.name' AS custom_event_name,
                   TRY_CAST(raw->>'$.body.value' AS DOUBLE) AS custom_event_value,
                   raw->>'$.device.attributes.app_version' AS app_version, raw::JSON AS raw
            FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY occurred) AS rn
                  FROM read_parquet('{root}/landing/source=events/*/*.parquet'))
            WHERE rn = 1
            ORDER BY occurred""")
        rows = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        con.close()
    seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": name, "seconds": seconds, "rows": rows, "rss_mb": rss_mb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--landing", help="reuse a landing zone made by an earlier run (its path)")
    ap.add_argument("--keep-landing", action="store_true",
                    help="keep the landing zone this run makes (5M events: ~750 MB), for --landing")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        work = Path(scratch_dir("bench-events-"))
        print(json.dumps(run_variant(args.variant, Path(args.root), work)))
        return 0
    if args.landing:
        root = Path(args.landing)
    else:
        root = Path(tempfile.mkdtemp(prefix="bench-landing-") if args.keep_landing
                    else scratch_dir("bench-landing-"))
        t0 = time.perf_counter()
        make_landing(root, args.events)
        print(f"landing: {args.events:,} events in {time.perf_counter() - t0:.0f} s at {root}",
              flush=True)
    results: dict[str, list[dict]] = {"ours": [], "plain": []}
    for run in range(args.runs):
        for name in results:
            out = subprocess.run([sys.executable, "-m", "bench.events", "--variant", name,
                                  "--root", str(root)], capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": os.getcwd()})
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(r)
            print(f"run {run + 1} {name:5s} {r['seconds']:7.1f} s  {r['rows']:,} rows  "
                  f"peak RSS {r['rss_mb']:.0f} MB", flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    rows = {k: v[0]["rows"] for k, v in results.items()}
    rss = {k: max(r["rss_mb"] for r in v) for k, v in results.items()}
    print(f"\n| variant | seconds (median of {args.runs}) | events/s | rows | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for k in results:
        print(f"| {k} | {med[k]:.1f} | {args.events / med[k]:,.0f} | {rows[k]:,} | {rss[k]:.0f} |")
    print(f"\nours is {med['plain'] / med['ours']:.2f}x faster than plain row_number "
          f"(DuckDB memory_limit={MEMORY_LIMIT}, threads={THREADS})")
    assert rows["ours"] == rows["plain"], "the two variants disagree on the number of events"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
